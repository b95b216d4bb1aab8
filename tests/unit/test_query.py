"""The query model without a store: parsing and its messages, the composition maths, the auto cut-off."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.core.cutoff import DEPTH, auto_cutoff
from search.core.query import MAX_PARTS, Part, Query, compose
from search.errors import QueryError

ID = "0" * 32
TEXT = {"text": "a red dress"}


def parse(payload, images=None) -> Query:
    """A query as the APIs read one: JSON, with the uploaded images its image parts name by position."""
    return Query.model_validate(payload, context={"images": images})


def test_a_full_query_parses_into_typed_parts_with_images_resolved():
    query = parse(
        {"positive": [{"text": " a red dress "}, {"image": 0, "weight": 0.5}, {"id": ID}],
         "negative": [{"text": "long sleeves"}], "k": 12, "offset": 24, "metric": "l1", "index": "pixels",
         "labels": {"include": ["dress"], "exclude": []}, "cutoff": 0.3, "fold": True},
        ["/tmp/q.jpg"])
    assert query.positive == (Part(kind="text", value="a red dress", weight=1.0, name="positive[0]"),
                              Part(kind="image", value="/tmp/q.jpg", weight=0.5, name="positive[1]"),
                              Part(kind="id", value=ID, weight=1.0, name="positive[2]"))
    assert query.negative == (Part(kind="text", value="long sleeves", weight=1.0, name="negative[0]"),)
    assert (query.k, query.offset, query.metric, query.index, query.include, query.exclude, query.cutoff, query.fold) == (
        12, 24, "l1", "pixels", ("dress",), (), 0.3, True)


def test_defaults_a_page_of_twelve_by_cosine_in_the_main_index_with_the_auto_cut_off():
    alone = Part(kind="text", value="a red dress", weight=1.0, name="positive[0]")
    assert parse({"positive": [TEXT]}) == Query(positive=(alone,))
    assert parse({"positive": [TEXT], "cutoff": None}).cutoff is None


@pytest.mark.parametrize(("payload", "images", "message"), [
    ("a red dress", None, "The query must be a JSON object, not str"),
    (None, None, "The query must be a JSON object, not null"),
    ({}, None, "The query is empty"),
    ({"positive": []}, None, "The query is empty"),
    ({"positive": [], "negative": [TEXT]}, None, "The query is empty"),
    ({"positive": [TEXT, {"image": 2}]}, ["a.jpg"], "positive[1]: image 2 was not given (1 image uploaded)"),
    ({"positive": [{"image": 0}]}, None, "positive[0]: image 0 was not given (0 images uploaded)"),
    ({"positive": [{"image": 0}]}, [None], "positive[0]: image 0 was not given"),
    ({"positive": [{"image": -1}]}, ["a.jpg"], "positive[0]: image must be the position of an uploaded image"),
    ({"positive": [{"image": True}]}, ["a.jpg"], "positive[0]: image must be the position"),
    ({"positive": [{"image": "a.jpg"}]}, ["a.jpg"], "positive[0]: image must be the position"),
    ({"positive": [{"id": "abc"}]}, None, "positive[0]: 'abc' is not an image id"),
    ({"positive": [{"text": "x", "weight": math.nan}]}, None, "positive[0]: weight must be a finite number"),
    ({"positive": [{"text": "x", "weight": math.inf}]}, None, "positive[0]: weight must be a finite number"),
    ({"positive": [{"text": "x", "weight": "2"}]}, None, "positive[0]: weight must be a finite number"),
    ({"positive": [{"text": "x", "weight": True}]}, None, "positive[0]: weight must be a finite number"),
    ({"positive": [TEXT], "negative": [{"text": "x", "weight": 0}]}, None, "negative[0]: weight must be above 0 and at most 10"),
    ({"positive": [{"text": "x", "weight": -1}]}, None, "weight must be above 0"),
    ({"positive": [{"text": "x", "weight": 10.5}]}, None, "weight must be above 0 and at most 10, not 10.5"),
    ({"positive": [TEXT] * 15, "negative": [TEXT] * 6}, None, f"The query has 21 parts; the limit is {MAX_PARTS}"),
    ({"positive": [TEXT], "sort": "date"}, None, "sort: 'date' is not one of relevance, newest, oldest"),
    ({"positive": [{"text": "x", "colour": "red"}]}, None, "positive[0]: unknown key 'colour'"),
    ({"positive": [{"text": "x", "id": ID}]}, None, "positive[0]: a part has exactly one of text, image or id"),
    ({"positive": [{"weight": 2}]}, None, "positive[0]: a part has exactly one of text, image or id"),
    ({"positive": ["a red dress"]}, None, "positive[0]: a part must be an object"),
    ({"positive": TEXT}, None, "positive must be a list of parts, not dict"),
    ({"positive": [{"text": "  "}]}, None, "positive[0]: Type a description to search for (a non-empty string)"),
    ({"positive": [{"text": 3}]}, None, "positive[0]: Type a description to search for (a non-empty string)"),
    ({"positive": [{"text": "x" * 1001}]}, None, "positive[0]: The description is 1001 characters long; the limit is 1000"),
    ({"positive": [{"text": "\ud800 red"}]}, None, "positive[0]: The description holds characters that are not valid Unicode"),
    ({"positive": [{"image": 0, "box": [0, 0, 4, 40]}]}, ["q.jpg"], "positive[0]: the box is too small to search by"),
    ({"positive": [{"image": 0, "box": [30, 0, 10, 40]}]}, ["q.jpg"], "positive[0]: the box is too small"),
    ({"positive": [{"image": 0, "box": [0, 0, 40]}]}, ["q.jpg"], "positive[0]: box must be [left, top, right, bottom]"),
    ({"positive": [{"image": 0, "box": [0, 0, 40.5, 40]}]}, ["q.jpg"], "box must be [left, top, right, bottom]"),
    ({"positive": [{"image": 0, "box": [0, -1, 40, 40]}]}, ["q.jpg"], "box must be [left, top, right, bottom]"),
    ({"positive": [{"text": "x", "box": [0, 0, 40, 40]}]}, None, "positive[0]: only an image part takes a box"),
    ({"positive": [TEXT], "k": 0}, None, "k must be a whole number from 1 to 50, not 0"),
    ({"positive": [TEXT], "k": 51}, None, "k must be a whole number from 1 to 50, not 51"),
    ({"positive": [TEXT], "k": "12"}, None, "k must be a whole number from 1 to 50"),
    ({"positive": [TEXT], "k": 12.0}, None, "k must be a whole number from 1 to 50"),
    ({"positive": [TEXT], "offset": -1}, None, "offset must be a whole number from 0"),
    ({"positive": [TEXT], "offset": 990, "k": 12}, None, "offset + k is 1002; results go no deeper than 1000"),
    ({"positive": [TEXT], "metric": "euclid"}, None, "metric: 'euclid' is not one of cosine, ip, l2, l1, correlation"),
    ({"positive": [TEXT], "index": 3}, None, "index must be a string, not int"),
    ({"positive": [TEXT], "labels": ["red"]}, None, "labels must be an object with include and exclude lists"),
    ({"positive": [TEXT], "labels": {"only": ["red"]}}, None, "labels: unknown key 'only'"),
    ({"positive": [TEXT], "labels": {"include": "red"}}, None, "labels.include must be a list of at most 100 label names"),
    ({"positive": [TEXT], "labels": {"exclude": [3]}}, None, "labels.exclude must be a list"),
    ({"positive": [TEXT], "labels": {"include": ["a"], "exclude": ["a"]}}, None, "labels: 'a' is both included and excluded"),
    ({"positive": [TEXT], "cutoff": "high"}, None, "cutoff must be \"auto\", null or a score, not 'high'"),
    ({"positive": [TEXT], "cutoff": math.nan}, None, "cutoff must be \"auto\", null or a score"),
    ({"positive": [TEXT], "fold": "yes"}, None, "fold must be true or false, not str"),
])
def test_every_bad_query_gets_a_message_that_names_the_part(payload, images, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        parse(payload, images)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 60) | st.floats() | st.sampled_from(["auto", "text", "image", "id", ID, "x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["positive", "negative", "text", "image", "id", "weight", "k", "offset", "labels", "include",
                         "exclude", "cutoff", "fold", "metric", "index", "other"]), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.lists(st.none() | st.just("q.jpg"), max_size=3))
def test_any_json_is_a_query_or_a_query_error_never_a_traceback(payload, images):
    try:
        assert isinstance(parse(payload, images), Query)
    except QueryError as exc:
        assert str(exc)


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["auto", "newest", "cosine", "2024-01-31", "2024-13-01", " ", ID, "mine/x", "pixels"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from([*Query.model_fields, "from", "to", "include", "exclude", "text", "image", "id", "weight", "box",
                         "kind", "value", "name", "start"]) | st.text(max_size=6), inner, max_size=6),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_ANY_JSON, st.lists(st.none() | st.just("q.jpg"), max_size=3))
def test_any_json_payload_is_a_query_or_a_query_error_by_either_entry_point(payload, images):
    """The JSON path (model_validate) and keyword construction: a Query, or a QueryError with a message;
    never a pydantic ValidationError, a TypeError or any other exception."""
    entries = [lambda: Query.model_validate(payload, context={"images": images})]
    if isinstance(payload, dict):
        entries.append(lambda: Query(**payload))
    for entry in entries:
        try:
            assert isinstance(entry(), Query)
        except QueryError as exc:
            assert str(exc) and "pydantic" not in str(exc)


LIBRARY_PART = {"kind": "text", "value": "a red dress"}


@pytest.mark.parametrize(("field", "bad"), [
    ("k", 0), ("k", "12"), ("k", 12.0), ("offset", -1), ("offset", True), ("metric", "euclid"), ("index", 3),
    ("labels", ["red"]), ("labels", {"include": "red"}), ("labels", {"include": ["a"], "exclude": ["a"]}),
    ("labels", {"only": []}), ("cutoff", "high"), ("cutoff", math.nan), ("fold", "yes"), ("keywords", -1),
    ("keywords", math.inf), ("taken", {"from": "2024-02-30"}), ("taken", {"from": 3}), ("taken", "2024"),
    ("taken", {"from": "2024-02-01", "to": "2024-01-01"}), ("sort", "date"), ("negative", TEXT), ("positive", []),
])
def test_a_query_rule_lives_once_json_and_library_give_the_same_message(field, bad):
    with pytest.raises(QueryError) as sent:
        Query.model_validate({"positive": [TEXT], field: bad})
    with pytest.raises(QueryError) as made:
        Query(**{"positive": (Part(**LIBRARY_PART),), field: bad})
    assert str(sent.value) == str(made.value)


@pytest.mark.parametrize(("field", "bad"), [
    ("value", "  "), ("value", 3), ("value", "x" * 1001), ("weight", 0), ("weight", 10.5), ("weight", math.nan),
    ("weight", "2"), ("weight", True), ("box", [0, 0, 40, 40]),
])
def test_a_part_rule_lives_once_json_and_library_give_the_same_message(field, bad):
    sent = {"text": bad} if field == "value" else {**TEXT, field: bad}
    with pytest.raises(QueryError) as parsed:
        Query.model_validate({"positive": [TEXT], "negative": [sent]})
    with pytest.raises(QueryError) as made:
        Part(**{**LIBRARY_PART, "name": "negative[0]", field: bad})
    assert str(parsed.value) == str(made.value) and str(made.value).startswith("negative[0]: ")


def test_a_json_part_names_no_server_file_and_a_query_is_built_by_keyword_only():
    with pytest.raises(QueryError, match=re.escape("positive[0]: unknown key 'kind'")):
        Query.model_validate({"positive": [{"kind": "image", "value": "/etc/passwd"}]})
    with pytest.raises(TypeError):
        Query((Part(**LIBRARY_PART),))  # type: ignore[misc]
    query = Query(positive=(Part(**LIBRARY_PART),))
    assert Query.model_validate(query) is query and hash(query) == hash(Query(positive=(Part(**LIBRARY_PART),)))
    with pytest.raises(Exception):  # frozen
        query.k = 24  # type: ignore[misc]


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def test_a_lone_positive_is_the_query_itself_bit_for_bit():
    v = np.array([0.3, 0.4, 0.1], np.float32)
    assert np.array_equal(compose([(v, 1.0)], [], normalized=True), v)
    assert np.array_equal(compose([(v, 0.5)], [], normalized=False), v)


def test_on_unit_vectors_parts_add_and_subtract_by_weight_and_the_sum_is_normalised():
    a, b = _unit(1, 0, 0), _unit(0, 1, 0)
    assert np.allclose(compose([(a, 1.0)], [(b, 1.0)], normalized=True), _unit(1, -1, 0))
    assert np.allclose(compose([(a, 2.0), (b, 1.0)], [], normalized=True), _unit(2, 1, 0))
    # every part counts as a unit vector, however long it came
    assert np.allclose(compose([(a * 7, 1.0), (b, 1.0)], [], normalized=True), _unit(1, 1, 0))


def test_negatives_that_cancel_the_positives_are_refused():
    a = _unit(1, 2, 3)
    with pytest.raises(QueryError, match="cancel"):
        compose([(a, 1.0)], [(a, 1.0)], normalized=True)


def test_on_raw_vectors_the_query_stays_a_point_among_the_images():
    a, b, c = np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array([1.0, 0.0])
    assert np.allclose(compose([(a, 1.0), (b, 3.0)], [], normalized=False), [0.75, 0.75])
    # mean of positives (0.5, 0.5), moved away from the negative by its share of the weight (1/3)
    assert np.allclose(compose([(a, 1.0), (b, 1.0)], [(c, 1.0)], normalized=False), [0.5 - 0.5 / 3, 0.5 + 0.5 / 3])


def test_the_cut_off_falls_at_the_largest_drop_in_the_top_scores():
    scores = np.array([0.95, 0.93, 0.92, 0.60, 0.58, 0.57, 0.55, 0.54, 0.52, 0.50])
    assert auto_cutoff(scores, 100) == 0.92
    assert auto_cutoff(np.array([]), 0) is None
    assert auto_cutoff(np.array([0.4]), 1) == 0.4


def test_a_vague_query_keeps_more_than_a_specific_one():
    rng = np.random.default_rng(0)
    tail = np.sort(rng.uniform(0.1, 0.3, 200))[::-1]
    specific = np.concatenate([[0.9, 0.88, 0.87], tail])
    vague = np.concatenate([np.linspace(0.8, 0.6, 40), tail])
    assert auto_cutoff(specific, 203) == 0.87
    assert auto_cutoff(vague, 240) == 0.6


def test_the_cut_off_reads_only_the_top_of_the_ranking():
    # the largest drop lies below DEPTH: not read, so the cut stays among the top scores
    scores = np.concatenate([[1.0, 0.95], np.linspace(0.8, 0.7, DEPTH), [-1.0]])
    assert auto_cutoff(scores, 10_000) == 0.95
    # and never below halfway down what the query ranks: relevant images are a minority
    few = np.array([0.9, 0.8, 0.75, 0.3, 0.2, -0.5])
    assert auto_cutoff(few, 6) == 0.75
    assert auto_cutoff(few, 4) == 0.9
