"""The public API against a hostile visitor (issue 10): no identifier reaches the file system, nothing
private outlives its owner, uploads and collections are bounded, and nothing internal is shown.

Every test drives a real `python app.py` in public mode (IMAGE_SEARCH_PUBLIC=1) through gradio_client
or bare HTTP, as a visitor would. The store is a copy of `shapes_store`, with a canary folder beside it
(see tests/fixtures/hostile.py). At most one app runs at a time.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.app_process import ROOT
from search.stores import thumbnails
from tests.conftest import hostile_files, png_header_only
from tests.fixtures.hostile import (
    GENERIC,
    ID,
    KEY,
    METRICS,
    NAME,
    SHARED_INDEXES,
    AppPool,
    Deployment,
    Files,
    Outcome,
    call,
    file_ref,
    file_url,
    image_id,
    jpeg,
    raw_call,
    upload,
    valid_id,
    valid_key,
    valid_name,
)

OWNER = "owner-key-0123456789abcdef"  # holds the collection "own", the one delete examples may change
STRANGER = "stranger-key-0123456789"  # valid, never creates anything
ADDER = "adder-key-0123456789-abcd"  # the caller of the collection_add examples
DROPPER = "dropper-key-0123456789-ab"  # the caller of the list/drop examples; holds "dropme"
LEAVER = "leaver-key-0123456789-abcd"  # drops its collection, then probes every URL it was given
QUERY = "a red circle"

HYPOTHESIS = dict(deadline=None, database=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
                  suppress_health_check=list(HealthCheck))


# --- Fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Local files a visitor uploads: own images, fresh ones, junk, hostile names, a zip-slip archive."""
    root = tmp_path_factory.mktemp("hostile-uploads")
    out = Files()

    def put(key: str, name: str, data: bytes) -> None:
        path = root / key / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[key] = path

    for i in range(3):
        put(f"own{i}", f"own{i}.jpg", jpeg(1001 + i))
    put("own-shipped", "cat.jpg", (ROOT / "examples" / "cat.jpg").read_bytes())  # also in the shipped index
    for i in range(6):
        put(f"fresh{i}", f"fresh{i}.jpg", jpeg(2001 + i))
    put("shipped", "horse.jpg", (ROOT / "examples" / "horse.jpg").read_bytes())
    put("own-copy", "copy.jpg", out["own0"].read_bytes())
    junk = hostile_files()
    put("empty", "empty.jpg", junk["empty.jpg"])
    put("truncated", "truncated.jpg", junk["truncated.jpg"])
    put("text", "notes.txt", b"not an image\n" * 10)
    put("bomb", "bomb.png", png_header_only(60_000, 60_000))
    put("dotted-name", "..%2f..%2fvictim.jpg", jpeg(2101))
    put("backslash-name", "..\\..\\victim.jpg", jpeg(2102))
    put("long-name", "v" * 200 + ".jpg", jpeg(2103))
    put("dropme", "dropme.jpg", jpeg(3001))
    archive = root / "zipslip" / "zipslip.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for i, member in enumerate(["../../victim.jpg", "../canary/secret.jpg", "../../../victim.jpg",
                                    "..\\..\\victim.jpg", "ok/../../../srv/victim.jpg", "/tmp/victim.jpg",
                                    "../store/thumbnails/aa/victim.jpg"]):
            z.writestr(zipfile.ZipInfo(member), jpeg(2200 + i))
    out["zipslip"] = archive
    return out


@pytest.fixture(scope="module")
def pool(shapes_store, tmp_path_factory):
    """The deployments of this module; starting one stops the other (2 shared cores)."""
    def make(name: str) -> Deployment:
        capped = name == "capped"
        return Deployment.create(tmp_path_factory.mktemp(f"hostile-{name}"), shapes_store,
                                 IMAGE_SEARCH_MAX_COLLECTIONS_TOTAL="3" if capped else "200",
                                 IMAGE_SEARCH_UPLOAD_BUDGET_MB="100" if capped else "512")

    apps = AppPool(make)
    yield apps
    apps.close()


@pytest.fixture
def main(pool, files) -> Deployment:
    """The main public app: OWNER holds "own" (three fresh images and a copy of a shipped one)."""
    dep = pool.get("main")
    if not dep.state:
        client = dep.app.client(download_files=False)
        dep.state["client"] = client
        dep.state["own_files"] = [files[k] for k in ("own0", "own1", "own2", "own-shipped")]
        dep.state["own_all"] = {image_id(p.read_bytes()) for p in dep.state["own_files"]}
        _restore_own(dep)
        dep.state["baseline"] = _shipped_answers(dep, files)
        assert len(dep.state["baseline"][0]) == 50 and len(dep.state["baseline"][1]) >= 40  # pixels: shapes only
    dep.damage()  # put back what an earlier, failed test may have broken
    if _own_ids(dep) != dep.state["own_all"]:
        _restore_own(dep)
    return dep


def _restore_own(dep: Deployment) -> None:
    got = call(dep.state["client"], [handle_file(str(p)) for p in dep.state["own_files"]], "own", OWNER,
               api_name="/collection_add")
    assert got.ok, f"setting up OWNER's collection failed: {got}"
    dep.state["own"] = set(dep.state["own_all"])


def _shipped_answers(dep: Deployment, files: dict[str, Path]) -> tuple[list, list]:
    """The shipped indexes' answers to a fixed text query (main index) and image query (pixels)."""
    client = dep.state["client"]
    text = call(client, QUERY, 50, "cosine", "", OWNER, api_name="/search_by_text")
    pixels = call(client, handle_file(str(files["fresh0"])), 50, "cosine", "pixels", OWNER,
                  api_name="/search_by_image")
    assert text.ok and pixels.ok, (text, pixels)
    return [(h["id"], h["score"]) for h in text.value], [(h["id"], h["score"]) for h in pixels.value]


def _own_ids(dep: Deployment) -> set[str]:
    got = call(dep.state["client"], QUERY, 50, "cosine", "mine/own", OWNER, api_name="/search_by_text")
    assert got.ok, f"OWNER can no longer search their own collection: {got}"
    return {h["id"] for h in got.value}


# --- Oracles ----------------------------------------------------------------------------------------------


def assert_files_intact(dep: Deployment) -> None:
    """The canary and the shipped thumbnails and manifests are as they were (each difference is put back)."""
    damage = dep.damage()
    assert not damage, f"the request damaged files outside the caller's collection: {damage}"


def assert_answers_unchanged(dep: Deployment, files: dict[str, Path], own: set[str] | None = None) -> None:
    """The shipped indexes answer as before, and OWNER's collection holds ``own`` (default: what it held)."""
    assert _shipped_answers(dep, files) == dep.state["baseline"], "the shipped indexes answer differently"
    expected = dep.state["own"] if own is None else own
    held = _own_ids(dep)
    dep.state["own"] = held
    assert held == expected, f"OWNER's collection changed: lost {expected - held}, gained {held - expected}"


def assert_unharmed(dep: Deployment, files: dict[str, Path], own: set[str] | None = None) -> None:
    assert_files_intact(dep)
    assert_answers_unchanged(dep, files, own)


def assert_clear(dep: Deployment, out: Outcome, sent: list) -> None:
    """An error is clear (a message, not the catch-all for bugs) and carries no internals; an answer
    carries no server path."""
    if out.ok:
        leaked = dep.answer_internals(out.value)
        assert not leaked, f"the answer reveals server paths {leaked}: {out.value!r:.600}"
        return
    assert out.message and out.message.strip(), "an error without a message (a bare 500)"
    assert GENERIC not in out.message, f"an unexpected server error (a bug, not a rejection): {out.message!r}"
    leaked = dep.error_internals(out.message, sent)
    assert not leaked, f"the error message reveals internals {leaked}: {out.message!r:.600}"


def assert_refused(out: Outcome, why: str, mention: str | None = None) -> None:
    assert not out.ok, f"expected an error ({why}), got an answer: {out.value!r:.400}"
    if mention:
        assert mention in (out.message or "").lower(), f"the error for {why} should mention {mention!r}: {out.message!r}"


def assert_hits(value: object, limit: int = 50) -> None:
    assert isinstance(value, list) and len(value) <= limit, f"not a list of at most {limit} hits: {value!r:.300}"
    for hit in value:
        assert isinstance(hit, dict) and valid_id(hit.get("id")), f"malformed hit {hit!r:.300}"
        assert isinstance(hit.get("score"), (int, float)) and not isinstance(hit["score"], bool), hit


# --- Strategies (drawn at run time: some values come from the deployment) -------------------------------------


def keys(base: str) -> st.SearchStrategy:
    return st.one_of(
        st.just(base),
        st.sampled_from([STRANGER, "", "short", "a" * 15, "a" * 16, "A_-9" * 32, "b" * 129, "k" * 5000,
                         base + " ", " " + base, base + "\n", base + "\x00", base.upper(), "é" * 20,
                         "../../" + "a" * 16, "a" * 16 + "/..", "%2e%2e%2f" + "a" * 16, base + "'; --", None]),
        st.text(max_size=140),
        st.from_regex(KEY.pattern, fullmatch=True),
    )


NAMES = st.one_of(
    st.sampled_from(["own", "Own", "OWN", " own", "own ", "own\n", "own\x00", "../own", "own/../own", "./own",
                     "images", "pixels", "mine", "mine/own", "a" * 30, "a" * 31, "-own", "_own", "", " ", ".",
                     "..", "%2e%2e", "ÖWN", "own\\..\\x", "x" * 5000, None]),
    st.text(max_size=35),
    st.from_regex(NAME.pattern, fullmatch=True),
)
INDEXES = st.one_of(
    st.sampled_from(["", "images", "pixels", "mine/own", "mine/../images", "mine/", "mine", "../", "../images",
                     "mine/own/../../images", "mine//own", "MINE/own", "mine/Own", "mine/own\n", "images\n",
                     " images", "images ", "a" * 5000, "mine/" + "a" * 31, "mine/%2e%2e", "mine/..",
                     "mine-0123456789abcdef-own", "chroma", "/tmp", "mine/own\x00"]),
    st.text(max_size=40),
    NAMES.map(lambda n: f"mine/{n}"),
)
KS = st.one_of(
    st.sampled_from([0, -1, 1, 50, 51, 10**30, 2**63, 10**400, 1.5, 0.4, 50.6, -0.0, 1e308, None, True]),
    st.integers(-10**6, 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
METRIC_VALUES = st.one_of(
    st.sampled_from([*METRICS, "COSINE", "Cosine", "l3", "", " cosine", "cosine\x00", "../cosine", "euclidean", None]),
    st.text(max_size=12),
)
TEXTS = st.one_of(
    st.sampled_from([QUERY, "blue square", "", " ", "../../../etc/passwd", "\x00", "a" * 1001,
                     "<img src=x onerror=alert(1)>", "%s%n%x", "{__import__('os')}", "mine/own"]),
    st.text(max_size=60),
)
QUERY_FILES = ["fresh1", "shipped", "empty", "truncated", "text", "bomb", "zipslip", "dotted-name"]
ADD_FILES = ["fresh1", "fresh2", "fresh3", "shipped", "own-copy", "empty", "truncated", "text", "bomb",
             "zipslip", "dotted-name", "backslash-name", "long-name"]


def _shallow(s: str) -> bool:
    """Random ids stay inside the test's tmp folder: at most one '..' and no absolute path."""
    return s.count("..") <= 1 and not s.startswith("/")


def hostile_ids(dep: Deployment) -> st.SearchStrategy:
    shipped, own = dep.shipped_ids(), sorted(dep.state["own_all"])
    targeted = [
        "../victim", "../../victim", "./../../victim", "../canary/victim", "../canary/secret",
        "../canary/thumbnails/aa/victim", str(dep.srv / "victim"), str(dep.srv / "canary" / "secret"),
        str(dep.root / "victim"), "..\\victim", "..\\..\\victim", "%2e%2e%2fvictim", "..%2fvictim",
        "%2e%2e/%2e%2e/victim", "../victim\x00", "\x00", "a" * 5000, "", " ", ".", "..", "/", "*", "thumbnails",
        *[f"./../thumbnails/{s[:2]}/{s}" for s in shipped[:3]], *[f"../thumbnails/{s[:2]}/{s}" for s in shipped[:2]],
        *[s.upper() for s in shipped[:2]], *[o.upper() for o in own],
        *[v for o in own[:2] for v in (o + ".jpg", o + "\n", " " + o, o[:31], o + "0", o + "/", "../" + o)],
    ]
    return st.one_of(st.sampled_from(targeted), st.sampled_from(shipped), st.sampled_from(own),
                     st.from_regex(ID.pattern, fullmatch=True), st.text(max_size=40).filter(_shallow))


def id_arguments(dep: Deployment) -> st.SearchStrategy:
    shipped, own = dep.shipped_ids(), sorted(dep.state["own_all"])
    well_formed = st.one_of(st.sampled_from(own), st.sampled_from(shipped), st.from_regex(ID.pattern, fullmatch=True))
    junk = st.one_of(st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                     st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    return st.one_of(
        st.lists(hostile_ids(dep), min_size=1, max_size=4),
        st.lists(well_formed, min_size=1, max_size=4),
        st.tuples(st.lists(well_formed, min_size=1, max_size=2), hostile_ids(dep)).map(lambda t: [*t[0], t[1]]),
        st.sampled_from(["../victim", own[0], 7, None, {"id": "../victim"}, True, 3.5, []]),
        st.lists(junk, min_size=1, max_size=3),
    )


def _index_must_fail(index: object) -> bool:
    if index is None:
        return False  # no value at all: the main index, or an error
    if not isinstance(index, str):
        return True
    if index.startswith("mine/"):
        return not valid_name(index[len("mine/"):])
    return index not in ("", *SHARED_INDEXES)


def _k_must_fail(k: object) -> bool:
    if k is None:
        return True
    if isinstance(k, bool):
        return False
    if isinstance(k, int):
        return not 1 <= k <= 50
    return k < 0.49 or k > 51  # floats: Gradio's Number rounds them first, so only far-out ones must fail


# --- 1. Property-based: every public endpoint ------------------------------------------------------------------


@settings(max_examples=25, **HYPOTHESIS)
@given(data=st.data())
def test_search_endpoints_survive_hostile_inputs(main, files, data):
    # each argument is valid about half the time, so that answers are checked as well as errors
    by = data.draw(st.sampled_from(["text", "image"]), label="by")
    query = data.draw(st.one_of(st.sampled_from([QUERY, "blue square"]), TEXTS) if by == "text"
                      else st.one_of(st.just("fresh1"), st.sampled_from(QUERY_FILES)), label="query")
    k = data.draw(st.one_of(st.integers(1, 50), KS), label="k")
    metric = data.draw(st.one_of(st.sampled_from(METRICS), METRIC_VALUES), label="metric")
    index = data.draw(st.one_of(st.sampled_from(["", "images", "pixels", "mine/own"]), INDEXES), label="index")
    key = data.draw(st.one_of(st.just(OWNER), keys(OWNER)), label="key")
    sent = [query, k, metric, index, key]
    arg = query if by == "text" else handle_file(str(files[query]))
    out = call(main.state["client"], arg, k, metric, index, key, api_name=f"/search_by_{by}")
    assert_files_intact(main)
    assert_clear(main, out, sent)
    if _k_must_fail(k):
        assert_refused(out, f"k={k!r}")
    if metric not in METRICS:
        assert_refused(out, f"metric={metric!r}")
    if _index_must_fail(index):
        assert_refused(out, f"index={index!r}")
    if isinstance(index, str) and index.startswith("mine/") and valid_name(index[5:]):
        if not valid_key(key):
            assert_refused(out, f"key={key!r}", "key" if not (_k_must_fail(k) or metric not in METRICS) else None)
        elif (key, index) != (OWNER, "mine/own"):
            assert_refused(out, f"{key!r} has no collection {index!r}")
    if out.ok:
        assert_hits(out.value, k if isinstance(k, int) and not isinstance(k, bool) else 50)
    assert_answers_unchanged(main, files)


def query_parts(dep: Deployment) -> st.SearchStrategy:
    weights = st.one_of(st.floats(0.1, 10), st.sampled_from([0, -1, 10.5, "1", "nan", "inf", None, True, [1]]))
    return st.one_of(
        st.fixed_dictionaries({"text": st.one_of(st.sampled_from([QUERY, "blue square"]), TEXTS)},
                              optional={"weight": weights}),
        st.fixed_dictionaries({"image": st.one_of(st.integers(-2, 3), st.sampled_from([None, "0", 0.5, True]))},
                              optional={"weight": weights}),
        st.fixed_dictionaries({"id": hostile_ids(dep)}),
        st.dictionaries(st.sampled_from(["text", "image", "id", "weight", "url", "path"]), st.text(max_size=8), max_size=3),
        st.sampled_from([None, QUERY, 3, [], {}, {"text": QUERY, "id": "x"}]),
    )


def composed_queries(dep: Deployment) -> st.SearchStrategy:
    parts = query_parts(dep)
    filters = {"include": st.lists(st.sampled_from(["red circle", "nope", ""]), max_size=2),
               "exclude": st.lists(st.sampled_from(["blue square", 3, None]), max_size=2)}
    labels = st.one_of(st.fixed_dictionaries({}, optional=filters), st.sampled_from([None, [], "red circle", {"other": []}]))
    options = {"k": KS, "offset": st.one_of(st.integers(-3, 1005), st.sampled_from([None, "0", 1.5])), "metric": METRIC_VALUES,
               "index": INDEXES, "labels": labels, "cutoff": st.sampled_from(["auto", None, 0.2, "nope", -1e9, [], True]),
               "fold": st.sampled_from([False, True, "yes", None]), "negative": st.lists(parts, max_size=3)}
    return st.one_of(
        st.fixed_dictionaries({"positive": st.lists(st.fixed_dictionaries({"text": st.sampled_from([QUERY, "blue square"])}),
                                                    min_size=1, max_size=2)}, optional=options),
        st.fixed_dictionaries({"positive": st.lists(parts, max_size=22)}, optional={"negative": st.lists(parts, max_size=3)}),
        st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
        st.sampled_from([None, [], QUERY, 7, {"positive": []}, {"positive": {"text": QUERY}}]),
    )


@settings(max_examples=30, **HYPOTHESIS)
@given(data=st.data())
def test_composed_search_survives_hostile_queries(main, files, data):
    query = data.draw(composed_queries(main), label="query")
    uploads = data.draw(st.lists(st.sampled_from(QUERY_FILES), max_size=2), label="images")
    key = data.draw(st.one_of(st.just(OWNER), keys(OWNER)), label="key")
    sent = [query, key]
    out = call(main.state["client"], query, [handle_file(str(files[f])) for f in uploads], key, api_name="/search")
    assert_files_intact(main)
    assert_clear(main, out, sent)
    if not isinstance(query, dict) or not query.get("positive"):
        assert_refused(out, f"query={query!r:.80}")
    if out.ok:
        assert set(out.value) == {"hits", "total", "offset", "cutoff", "no_match"}
        assert_hits(out.value["hits"], 50)
        assert all(set(h) == {"id", "score", "label", "caption", "image", "thumbnail", "relevant", "similar", "taken",
                              "matched"} for h in out.value["hits"])
    assert_answers_unchanged(main, files)


@settings(max_examples=30, **HYPOTHESIS)
@given(data=st.data())
def test_collection_delete_removes_only_what_the_caller_holds(main, files, data):
    before = _own_ids(main)
    if before != main.state["own_all"]:
        _restore_own(main)  # earlier examples may have deleted the caller's own images
        before = set(main.state["own_all"])
    main.state["own"] = set(before)
    ids = data.draw(id_arguments(main), label="ids")
    name = data.draw(st.one_of(st.just("own"), st.just("own"), NAMES), label="collection")
    key = data.draw(st.one_of(st.just(OWNER), st.just(OWNER), keys(OWNER)), label="key")
    out = call(main.state["client"], ids, name, key, api_name="/collection_delete")
    assert_files_intact(main)
    assert_clear(main, out, [ids, name, key])
    well_formed = isinstance(ids, list) and all(valid_id(i) for i in ids)
    expected = before
    if not valid_key(key):
        assert_refused(out, f"key={key!r}", "key" if valid_name(name) and well_formed and ids else None)
    elif not valid_name(name):
        assert_refused(out, f"collection={name!r}", "collection name" if well_formed and ids else None)
    elif not isinstance(ids, list) or not well_formed:
        assert_refused(out, f"malformed ids {ids!r:.200}")
    elif (key, name) != (OWNER, "own"):
        assert_refused(out, f"{key!r} has no collection {name!r}")
    elif ids:
        assert out.ok, f"well-formed ids {ids} in the caller's own collection: {out.message!r}"
        assert isinstance(out.value, dict) and "not_found" in out.value, \
            f"the answer must be {{'removed': n, 'not_found': [...]}}, got {out.value!r}"
        assert out.value["removed"] == len(set(ids) & before), \
            f"removed={out.value['removed']} but the collection held {len(set(ids) & before)} of {ids}"
        assert set(out.value["not_found"]) == set(ids) - before, f"not_found={out.value['not_found']} for {ids}"
        expected = before - set(ids)
    assert_answers_unchanged(main, files, expected)


@settings(max_examples=25, **HYPOTHESIS)
@given(data=st.data())
def test_collection_add_writes_only_into_the_callers_collection(main, files, data):
    key = data.draw(st.one_of(st.just(ADDER), keys(ADDER)), label="key")
    name = data.draw(st.one_of(st.sampled_from(["trip", "own", "images"]), NAMES), label="collection")
    chosen = data.draw(st.one_of(st.lists(st.sampled_from(ADD_FILES), min_size=1, max_size=3), st.just([])),
                       label="files")
    out = call(main.state["client"], [handle_file(str(files[c])) for c in chosen], name, key,
               api_name="/collection_add")
    assert_files_intact(main)
    assert_clear(main, out, [name, key, [files[c].name for c in chosen]])
    if not valid_key(key):
        assert_refused(out, f"key={key!r}", "key" if valid_name(name) and chosen else None)
    elif not valid_name(name):
        assert_refused(out, f"collection={name!r}", "collection name" if chosen else None)
    if out.ok:
        assert isinstance(out.value, dict) and isinstance(out.value.get("indexed"), int), out.value
        assert out.value.get("collection", name) == name, \
            f"the collection was renamed: {name!r} -> {out.value.get('collection')!r}"
    assert_answers_unchanged(main, files)


@settings(max_examples=30, **HYPOTHESIS)
@given(data=st.data())
def test_collection_list_and_drop_touch_nothing_else(main, files, data):
    if not main.state.get("dropme"):
        got = call(main.state["client"], [handle_file(str(files["dropme"]))], "dropme", DROPPER,
                   api_name="/collection_add")
        assert got.ok, got
        main.state["dropme"] = True
    op = data.draw(st.sampled_from(["list", "drop"]), label="op")
    key = data.draw(st.one_of(st.just(DROPPER), keys(DROPPER)), label="key")
    if op == "list":
        out = call(main.state["client"], key, api_name="/collection_list")
        assert_files_intact(main)
        assert_clear(main, out, [key])
        if valid_key(key):
            assert out.ok and isinstance(out.value, list) and all(valid_name(n) for n in out.value), out
            if key == DROPPER:
                assert out.value == ["dropme"], out.value
        else:
            assert_refused(out, f"key={key!r}", "key")
    else:
        name = data.draw(st.one_of(st.just("dropme"), NAMES), label="collection")
        out = call(main.state["client"], name, key, api_name="/collection_drop")
        assert_files_intact(main)
        assert_clear(main, out, [name, key])
        if not valid_key(key):
            assert_refused(out, f"key={key!r}", "key" if valid_name(name) else None)
        elif not valid_name(name):
            assert_refused(out, f"collection={name!r}", "collection name")
        elif (key, name) == (DROPPER, "dropme"):
            assert out.ok and out.value.get("removed") == 1, out
            main.state["dropme"] = False
        else:
            assert_refused(out, f"{key!r} has no collection {name!r}")
    assert_answers_unchanged(main, files)


# --- 1b. The attacks of issue 10, one by one (crisp failures) ------------------------------------------------------


def test_issue_10_traversal_and_removed_count(main, files):
    client, problems = main.state["client"], []
    shipped = main.shipped_ids()[0]
    attacks = {"../victim": ("the canary victim.jpg", (main.srv / "victim.jpg").exists),
               f"./../thumbnails/{shipped[:2]}/{shipped}": ("a shipped thumbnail",
                                                            lambda: thumbnails.exists(main.store, shipped))}
    for bad, (target, there) in attacks.items():
        out = call(client, [bad], "own", OWNER, api_name="/collection_delete")
        if out.ok:
            problems.append(f"delete {bad!r} answered {out.value} instead of an error")
        if not there():
            problems.append(f"delete {bad!r} deleted {target}")
    unknown = "0" * 32
    out = call(client, [unknown], "own", OWNER, api_name="/collection_delete")
    if not (out.ok and out.value == {"removed": 0, "not_found": [unknown]}):
        problems.append(f"delete of an id never stored answered {out}, not {{'removed': 0, 'not_found': [{unknown!r}]}}")
    problems += main.damage()  # puts back what went
    assert not problems, problems


def test_answers_carry_no_server_paths(main, files):
    plain, refs = main.app.client(), main.state["client"]  # the default client downloads thumbnails itself
    problems = []
    for client, label in ((plain, "default client"), (refs, "download_files=False")):
        for index in ("", "pixels", "mine/own"):
            by = "image" if index == "pixels" else "text"
            out = call(client, handle_file(str(files["fresh1"])) if by == "image" else QUERY, 5, "cosine", index,
                       OWNER, api_name=f"/search_by_{by}")
            assert out.ok, out
            problems += [f"{label} {index or 'main'}: {p}" for p in main.answer_internals(out.value)]
            for hit in out.value if client is refs else []:
                path = Path(hit["image"]["path"] if isinstance(hit["image"], dict) else hit["image"]).resolve()
                if main.store.resolve() in path.parents:
                    problems.append(f"{label} {index or 'main'}: the hit's file reference points into the store: {path}")
    report = call(refs, [handle_file(str(files["own0"]))], "own", OWNER, api_name="/collection_add")
    assert report.ok, report
    problems += [f"collection_add report: {p}" for p in main.answer_internals(report.value)]
    assert not problems, "\n".join(sorted(set(problems))[:12])


def test_add_cannot_read_files_of_the_server(main, files):
    """File references to server paths (never uploaded) are refused, or index nothing."""
    shipped = main.shipped_ids()[0]
    for path in (main.srv / "canary" / "secret.jpg", main.srv / "victim.jpg", main.store / "chroma.sqlite3",
                 thumbnails.path(main.store, shipped), main.store / "thumbnails" / thumbnails.INDEX,
                 *(main.store / "thumbnails").glob("pack-*.bin"), Path("/etc/hostname"),
                 Path(str(main.gradio_tmp) + "/../srv/canary/secret.jpg")):
        out = raw_call(main.url, "collection_add", [[file_ref(str(path))], "stolen", ADDER])
        assert_clear(main, out, [str(path)])
        assert not out.ok or out.value.get("indexed") == 0, f"indexed a server file it was never sent: {path}"
    assert_unharmed(main, files)


# --- 2. Nothing private outlives its owner ------------------------------------------------------------------


def _status(url: str) -> int:
    return httpx.get(url, timeout=30).status_code


def test_dropped_collection_leaves_no_reachable_file(main, files):
    client = main.state["client"]
    blobs = {f"leave{i}.jpg": jpeg(4001 + i) for i in range(3)}  # images no other collection holds
    uploaded: dict[str, str] = {}  # image id -> the server path the upload got
    for name, data in blobs.items():
        got = upload(main.url, name, data)
        assert got.status_code == 200, got.text
        uploaded[image_id(data)] = got.json()[0]
    added = raw_call(main.url, "collection_add", [[file_ref(p) for p in uploaded.values()], "leaving", LEAVER])
    assert added.ok and added.value["indexed"] == 3, added
    urls: dict[str, set[str]] = {i: {file_url(main.url, p)} for i, p in uploaded.items()}  # every URL given out, by image
    hits = call(client, QUERY, 50, "cosine", "mine/leaving", LEAVER, api_name="/search_by_text")
    assert hits.ok and {h["id"] for h in hits.value} == set(uploaded), hits
    thumbnail_urls = set()
    for hit in hits.value:
        ref = hit["image"]
        assert ref, f"a hit without its thumbnail: {hit}"
        if isinstance(ref, dict):
            url = ref.get("url") or file_url(main.url, ref["path"])
        else:
            url = ref if str(ref).startswith("http") else file_url(main.url, ref)
        urls[hit["id"]].add(url)
        thumbnail_urls.add(url)
    served = {u: _status(u) for u in thumbnail_urls}
    assert all(s == 200 for s in served.values()), f"thumbnails are not served before the drop: {served}"
    # any other server path an answer named counts as given out too
    named = {file_url(main.url, v) for v in _strings([added.value, hits.value]) if v.startswith("/")}
    others = named - {u for group in urls.values() for u in group}

    first = next(iter(uploaded))
    gone = call(client, [first], "leaving", LEAVER, api_name="/collection_delete")
    assert gone.ok and gone.value.get("removed") == 1, gone
    still = {u: _status(u) for u in urls[first]}
    assert all(s in (403, 404) for s in still.values()), f"after deleting the image its files are still served: {still}"

    dropped = call(client, "leaving", LEAVER, api_name="/collection_drop")
    assert dropped.ok and dropped.value.get("removed") == 2, dropped
    still = {u: _status(u) for u in others.union(*urls.values())}
    served = {u.split("file=", 1)[-1]: s for u, s in still.items() if s not in (403, 404)}
    assert not served, f"after the drop these files of the collection are still served: {served}"
    assert_unharmed(main, files)


def _strings(value: object):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# --- 4. Global caps -------------------------------------------------------------------------------------------


@pytest.fixture
def capped(pool) -> Deployment:
    """A second public app: IMAGE_SEARCH_MAX_COLLECTIONS_TOTAL=3, a 100 MB upload budget (the main one is stopped first)."""
    dep = pool.get("capped")
    dep.state.setdefault("client", dep.app.client(download_files=False))
    return dep


def test_public_demo_is_full_at_the_global_cap(capped, files):
    client = capped.state["client"]
    fresh = [f"fresh-visitor-{i}-0123456789" for i in range(5)]
    for i, key in enumerate(fresh[:3]):
        got = call(client, [handle_file(str(files[f"fresh{i}"]))], "c", key, api_name="/collection_add")
        assert got.ok, f"collection {i + 1} of 3 refused: {got}"
    full = call(client, [handle_file(str(files["fresh3"]))], "c", fresh[3], api_name="/collection_add")
    assert not full.ok and "public demo is full" in (full.message or ""), \
        f"a 4th collection (cap 3, fresh key) was not refused as 'public demo is full': {full}"
    assert_clear(capped, full, ["c", fresh[3]])
    assert call(client, fresh[3], api_name="/collection_list").value in ([], None)
    # a place freed is a place again
    assert call(client, "c", fresh[0], api_name="/collection_drop").ok
    again = call(client, [handle_file(str(files["fresh3"]))], "c", fresh[4], api_name="/collection_add")
    assert again.ok, f"after a drop, below the cap again, a new collection was refused: {again}"


# --- 3. Upload flood ------------------------------------------------------------------------------------------


def test_upload_flood_is_bounded(capped, files):
    chunk = 10 * 1024 * 1024
    sent, refused, deadline = 0, None, time.monotonic() + 60
    for i in range(30):  # at most 300 MB, at most ~60 s
        if time.monotonic() > deadline:
            break
        try:
            got = upload(capped.url, f"flood-{i}.bin", f"flood {i} ".encode() + bytes(chunk))
        except httpx.TransportError as err:
            pytest.fail(f"upload {i + 1} ({sent >> 20} MB sent) broke the connection instead of an HTTP error: {err!r}")
        if got.status_code >= 400:
            refused = got.status_code
            break
        sent += chunk
    assert refused, f"{sent >> 20} MB of bare uploads were all accepted (no upload budget)"
    out = call(capped.state["client"], QUERY, 3, "cosine", "", STRANGER, api_name="/search_by_text")
    assert out.ok and len(out.value) == 3, f"after the flood the app no longer answers searches: {out}"


# --- 5. The log: one line per rejection, no traceback --------------------------------------------------------------


def test_rejections_log_one_line_and_no_traceback(pool):
    dep = pool.running or pool.get("main")
    client = dep.state.get("client") or dep.app.client(download_files=False)
    before = dep.app.log.read_text(errors="replace").count("\n")
    rejections = [((QUERY, 0, "cosine", "", OWNER), "/search_by_text"),  # each refused before and after issue 10
                  ((QUERY, 5, "nope", "", OWNER), "/search_by_text"),
                  ((QUERY, 5, "cosine", "no-such-index", OWNER), "/search_by_text"),
                  (("short",), "/collection_list"),
                  (("../x", OWNER), "/collection_drop")]
    for args, api in rejections:
        out = call(client, *args, api_name=api)
        assert not out.ok and out.message, (api, args, out)
    time.sleep(0.5)
    added = dep.app.log.read_text(errors="replace").count("\n") - before
    tracebacks = {log.name: _tracebacks(log.read_text(errors="replace"))
                  for d in pool.deployments.values() for log in d.logs()}
    assert not any(tracebacks.values()), f"tracebacks in the app logs after the hostile runs: {tracebacks}"
    assert len(rejections) <= added <= 2 * len(rejections), \
        f"{len(rejections)} rejections wrote {added} log lines (one line each expected)"


def _tracebacks(log: str) -> list[str]:
    """The exception line of each traceback in a log, except Gradio's own refusal of a file reference that was
    never uploaded (test_add_cannot_read_files_of_the_server sends those over raw HTTP; the app never sees them)."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            last = next((x for x in lines[i + 1:] if x and not x[0].isspace()), "?")
            if not last.startswith("gradio.exceptions.InvalidPathError"):
                found.append(last[:200])
    return found
