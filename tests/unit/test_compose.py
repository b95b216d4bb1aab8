"""Composed queries against the shapes store: arithmetic, feedback, filters, pages, the cut-off, refusals."""
from __future__ import annotations

import random
import re

import pytest

from search.errors import QueryError
from search.service.service import Answer, SearchService, Settings
from tests.fixtures.shapes import CLASSES, draw_shape


@pytest.fixture(scope="module")
def service(local_store) -> SearchService:
    return SearchService.open(Settings(store=local_store, default_dataset=None))


def _text(text: str, **rest) -> dict:
    return {"positive": [{"text": text}], **rest}


def _labels(answer: Answer) -> list[str | None]:
    return [h.label for h in answer.hits]


def _ids(service: SearchService, label: str, n: int) -> list[str]:
    return [h.id for h in service.search(_text("a shape", k=n, labels={"include": [label]})).hits]


@pytest.mark.parametrize("metric", ["cosine", "l1"])
def test_one_text_part_answers_exactly_what_search_by_text_does(service, metric):
    composed = service.search(_text("a red circle", k=10, metric=metric))
    plain = service.main_index().search_by_text("a red circle", 10, metric)  # the library's own, by the text's vector
    assert [(h.id, round(h.score, 6)) for h in composed.hits] == [(h.id, round(h.score, 6)) for h in plain]
    assert set(composed.records()[0]) == {"id", "score", "label", "caption", "image", "relevant", "similar", "taken",
                                          "matched"}


def test_an_image_part_by_position_finds_its_own_class_as_search_by_image_does(service, tmp_path):
    path = tmp_path / "q.png"
    draw_shape("blue triangle", random.Random(3)).save(path)
    composed = service.search({"positive": [{"image": 0}], "k": 4}, [str(path)])
    assert _labels(composed) == ["blue triangle"] * 4
    plain = service.main_index().search_by_image(str(path), 4, "cosine")
    assert [(h.id, h.score) for h in composed.hits] == [(h.id, h.score) for h in plain]


def test_a_negative_part_steers_away_from_its_meaning(service):
    answer = service.search({"positive": [{"text": "a red circle"}], "negative": [{"text": "a green circle"}], "k": 10})
    labelled = [label for label in _labels(answer) if label]
    assert all(label.startswith("red ") for label in labelled)
    assert {"red square", "red triangle"} <= set(labelled)  # not only circles: "circle" cancelled out


def test_stored_ids_as_parts_are_relevance_feedback(service):
    before = service.search(_text("a red circle", k=12, keywords=0))  # by the vector alone, as the feedback is
    squares = _ids(service, "red square", 3)
    after = service.search({"positive": [{"text": "a red circle"}, *({"id": i} for i in squares)], "k": 12})
    assert _labels(after).count("red square") > _labels(before).count("red square")
    assert _labels(after).index("red square") < _labels(before).index("red square")


@pytest.mark.parametrize(("metric", "index"), [("cosine", ""), ("l1", ""), ("l2", "pixels")])
def test_an_exclude_filter_drops_its_label_and_still_fills_the_page(service, metric, index):
    query = {"positive": [{"text": "a red circle"}] if not index else [{"id": _ids(service, "red circle", 1)[0]}],
             "k": 10, "metric": metric, "index": index, "labels": {"exclude": ["red circle"]}}
    answer = service.search(query)
    assert len(answer.hits) == 10 and "red circle" not in _labels(answer)
    unfiltered = service.search({**query, "labels": {}})
    assert answer.total == unfiltered.total - 4


@pytest.mark.parametrize("metric", ["cosine", "correlation"])
def test_an_include_filter_keeps_only_its_labels(service, metric):
    answer = service.search(_text("a red circle", k=12, metric=metric, labels={"include": ["blue square", "green triangle"]}))
    assert sorted(_labels(answer)) == ["blue square"] * 4 + ["green triangle"] * 4
    assert answer.total == 8


def test_pages_follow_each_other_and_total_counts_what_the_query_ranks(service):
    whole = service.search(_text("a yellow square", k=10))
    first, second = (service.search(_text("a yellow square", k=5, offset=o)) for o in (0, 5))
    assert [h.id for h in first.hits + second.hits] == [h.id for h in whole.hits]
    assert second.offset == 5 and first.total == second.total == whole.total == len(service.main_index() or [])
    assert first.cutoff == second.cutoff  # the cut-off does not depend on the page
    assert service.search(_text("a yellow square", k=10, offset=whole.total)).hits == []


def test_the_cut_off_keeps_fewer_for_a_specific_query_and_those_it_keeps_fit(service):
    specific = service.search(_text("a red circle", k=30))
    vague = service.search({"positive": [{"text": f"a red {s}"} for s in ("circle", "square", "triangle")], "k": 30})
    kept, kept_vague = ([h for h in a.hits if h.relevant] for a in (specific, vague))
    assert 4 <= len(kept) < len(kept_vague)
    assert sum(h.label == "red circle" for h in kept) >= 0.75 * len(kept)
    assert sum(bool(h.label and h.label.startswith("red ")) for h in kept_vague) >= 0.75 * len(kept_vague)
    assert all(h.relevant == (h.score >= specific.cutoff) for h in specific.hits)


def test_a_fixed_cut_off_is_a_score_threshold_and_none_marks_nothing(service):
    fixed = service.search(_text("a red circle", k=10, cutoff=0.9))
    assert fixed.cutoff == 0.9 and [h.relevant for h in fixed.hits] == [h.score >= 0.9 for h in fixed.hits]
    unmarked = service.search(_text("a red circle", k=10, cutoff=None))
    assert unmarked.cutoff is None and {h.relevant for h in unmarked.hits} == {None}


def test_folding_near_duplicates_works_on_a_later_page(service):
    answer = service.search(_text("a red circle", k=5, offset=5, fold=True))
    assert len(answer.hits) == 5


def test_labels_lists_what_each_index_holds(service):
    assert service.labels() == sorted(CLASSES) == service.labels("pixels")


def test_the_pixel_index_takes_image_and_id_parts_only(service):
    with pytest.raises(QueryError, match=re.escape("negative[0]: the pixel method cannot read text")):
        service.search({"positive": [{"id": _ids(service, "red circle", 1)[0]}], "negative": [{"text": "green"}],
                        "index": "pixels"})
    answer = service.search({"positive": [{"id": i} for i in _ids(service, "red circle", 2)], "index": "pixels", "k": 3})
    assert len(answer.hits) == 3


@pytest.mark.parametrize(("query", "message"), [
    ({"positive": [{"id": "f" * 32}]}, f"positive[0]: no image with id {'f' * 32} in this index"),
    (_text("x", labels={"exclude": ["purple hexagon"]}), "labels: this index holds no label 'purple hexagon'"),
    (_text("x", index="nope"), "Unknown index 'nope'"),
    ({"positive": [{"image": 0}]}, "positive[0]: image 0 was not given (0 images uploaded)"),
])
def test_what_only_the_index_can_check_is_refused_with_a_message(service, query, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        service.search(query)


def test_an_unreadable_upload_is_named_by_its_part(service, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(QueryError, match=re.escape("positive[1]: ")):
        service.search({"positive": [{"text": "a red circle"}, {"image": 0}]}, [str(junk)])
