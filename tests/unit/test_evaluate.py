"""search.evaluate: its numbers equal a brute-force computation here, metric by metric; its refusals are plain."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search.config import Settings
from search.core.metrics import METRICS, ExactSearch
from search.embedders.registry import load_embedder
from search.errors import QueryError, StoreError
from search.evaluate import (
    TEXT_TEMPLATES,
    Labelled,
    Options,
    evaluate,
    main,
    markdown,
    query_rows,
    read_collection,
    read_prompts,
    run_queries,
)
from search.pipeline.build import BuildOptions, build_index
from search.sources.base import open_source
from search.stores.base import ModelInfo
from search.stores.store import Store
from tests.fixtures.shapes import CLASSES, write_folder
from tests.fixtures.tiny_multilingual import vietnamese

KS = (1, 3, 5)


def brute_scores(matrix: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Each metric from its textbook definition, in float64."""
    m, q = matrix.astype(np.float64), q.astype(np.float64)
    if metric == "ip":
        return m @ q
    if metric == "cosine":
        return m @ q / np.linalg.norm(m, axis=1) / np.linalg.norm(q)
    if metric == "l2":
        return -np.sqrt(((m - q) ** 2).sum(axis=1))
    if metric == "l1":
        return -np.abs(m - q).sum(axis=1)
    mc, qc = m - m.mean(axis=1, keepdims=True), q - q.mean()
    return mc @ qc / np.linalg.norm(mc, axis=1) / np.linalg.norm(qc)


def brute_measures(matrix, labels, queries, wanted, own, metric) -> dict[str, float]:
    """Rank every row for every query, drop the query and its identical copies, then count."""
    per_query = []
    for n, q in enumerate(queries):
        keep = np.ones(len(matrix), bool) if own is None else ~(matrix == matrix[own[n]]).all(axis=1)
        order = [i for i in np.argsort(-brute_scores(matrix, q, metric), kind="stable") if keep[i]]
        hits = [labels[i] == wanted[n] for i in order]
        relevant = sum(labels[i] == wanted[n] for i in range(len(matrix)) if keep[i])
        depth = max(KS)
        ap = sum(np.mean(hits[: i + 1]) for i in range(depth) if hits[i]) / min(relevant, depth)
        per_query.append({**{f"p@{k}": sum(hits[:k]) / k for k in KS},
                          **{f"recall@{k}": sum(hits[:k]) / relevant for k in KS}, f"map@{depth}": ap})
    return {key: float(np.mean([p[key] for p in per_query])) for key in per_query[0]}


def labelled_rows(store: Store, name: str) -> tuple[np.ndarray, list[str | None]]:
    """A collection's vectors and labels, sorted by id (the order ties are broken in)."""
    collection = store.open(name)
    ids, matrix = collection.scan_vectors()
    label_of = {i: m.get("label") for i, m in collection.scan_metadata()}
    order = np.argsort(ids)
    return matrix[order], [label_of[ids[i]] for i in order]


@pytest.fixture(scope="module")
def report(local_store) -> dict:
    return evaluate(local_store, Options(ks=KS))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name", ["images", "pixels"])
def test_image_to_image_equals_brute_force(local_store, report, name, metric):
    matrix, labels = labelled_rows(Store.connect(local_store), name)
    queries = [i for i, label in enumerate(labels) if label is not None]
    expected = brute_measures(matrix, labels, matrix[queries], [labels[i] for i in queries], queries, metric)
    got = report["collections"][name]["image_to_image"][metric]
    assert report["collections"][name]["queries"] == len(queries)
    assert {key: got[key] for key in expected} == pytest.approx(expected, abs=1e-9)
    assert got["ms_per_query"] > 0


@pytest.mark.parametrize("metric", METRICS)
def test_text_to_image_equals_brute_force(local_store, report, metric):
    store = Store.connect(local_store)
    matrix, labels = labelled_rows(store, "images")
    names = sorted({label for label in labels if label})
    texts = [template.format(label) for label in names for template in TEXT_TEMPLATES]
    vectors = load_embedder(store.open("images").model or "").embed_texts(texts)
    wanted = [label for label in names for _ in TEXT_TEMPLATES]
    expected = brute_measures(matrix, labels, vectors, wanted, None, metric)
    got = report["collections"]["images"]["text_to_image"][metric]
    assert report["collections"]["images"]["text_queries"] == 2 * 12
    assert {key: got[key] for key in expected} == pytest.approx(expected, abs=1e-6)


def test_prompts_are_measured_language_by_language_with_the_apps_text_pairing(local_store, multilingual):
    prompts = {"en": {c: (f"a photo of a {c}",) for c in CLASSES}, "vi": {c: (vietnamese(c),) for c in CLASSES},
               "fr": {"no such label": ("rien",)}}
    options = {"collections": ("images",), "metrics": ("cosine",), "ks": KS, "prompts": prompts}
    alone = evaluate(local_store, Options(**options, text_model=None))["collections"]["images"]["by_language"]
    paired = evaluate(local_store, Options(**options, text_model=str(multilingual)))
    by = paired["collections"]["images"]["by_language"]
    assert set(by) == set(alone) == {"en", "vi"} and by["vi"]["text_queries"] == 12  # fr names no label here
    p1 = {language: measured["text_to_image"]["cosine"]["p@1"] for language, measured in by.items()}
    # English goes to CLIP's own tower with or without the pairing; Vietnamese is read only by the paired model
    english, english_alone = by["en"]["text_to_image"]["cosine"], alone["en"]["text_to_image"]["cosine"]
    assert {k: v for k, v in english.items() if k != "ms_per_query"} == pytest.approx(
        {k: v for k, v in english_alone.items() if k != "ms_per_query"}, abs=1e-9)
    assert p1["vi"] >= alone["vi"]["text_to_image"]["cosine"]["p@1"] + 0.3 and p1["vi"] >= 0.8
    store = Store.connect(local_store)
    matrix, labels = labelled_rows(store, "images")
    texts = [vietnamese(c) for c in CLASSES]
    vectors = load_embedder(store.open("images").model or "", text_model=str(multilingual)).embed_texts(texts)
    expected = brute_measures(matrix, labels, vectors, CLASSES, None, "cosine")
    got = by["vi"]["text_to_image"]["cosine"]
    assert {key: got[key] for key in expected} == pytest.approx(expected, abs=1e-6)
    table = markdown(paired)
    assert "| images | text to image (vi) | cosine |" in table and "12 vi prompts" in table


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read"), ("{", "not UTF-8 JSON"), ("[]", "holds no languages"), ("{}", "holds no languages"),
    ('{"Vietnamese": {"a": ["b"]}}', "not a language code"), ('{"vi": {"a": "b"}}', "a list of descriptions"),
    ('{"vi": ["b"]}', "a list of descriptions"), ('{"vi": {"a": [1]}}', "a list of descriptions"),
    ('{"vi": {"a": ["' + "x" * 1001 + '"]}}', "longer than 1000"),
    ('{"vi": {"a": ' + '["b"]' * 0 + '[' + ",".join(['"b"'] * 10_001) + ']}}', "more than 10,000"),
])
def test_a_prompts_file_is_checked_before_any_work(tmp_path, content, message):
    path = tmp_path / "prompts.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(QueryError, match=message):
        read_prompts(path)
    if content is None:
        return
    assert main(["--store", str(tmp_path / "no-store"), "--prompts", str(path), "--out", str(tmp_path)]) == 2


def test_a_prompts_file_keeps_each_languages_descriptions(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text('{"vi": {"red circle": ["hình tròn màu đỏ", "  "]}, "pt-BR": {"red circle": ["círculo"]}}',
                    encoding="utf-8")
    assert read_prompts(path) == {"vi": {"red circle": ("hình tròn màu đỏ",)}, "pt-BR": {"red circle": ("círculo",)}}


def test_the_trained_clip_beats_pixels_image_to_image(report):
    for metric in METRICS:
        clip, pixels = (report["collections"][n]["image_to_image"][metric]["p@5"] for n in ("images", "pixels"))
        assert clip > pixels + 0.1, metric
    assert "text_to_image" not in report["collections"]["pixels"]


def test_identical_vectors_are_neither_results_nor_relevant():
    matrix = np.array([[1, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    data = Labelled("t", "pixels", matrix, np.array([0, 0, 0, 1, 1]), ["a", "b"], np.array([0, 0, 1, 2, 3]))
    assert data.relevant().tolist() == [1, 1, 2, 1, 1]
    got = run_queries(ExactSearch(matrix), data, matrix[[0]], np.array([0]), np.array([0]), "cosine", (1, 2), lambda: None)
    assert got["p@1"] == 1.0 and got["p@2"] == 0.5 and got["recall@2"] == 1.0  # row 1 is row 0's copy: skipped


def test_a_sample_is_deterministic_and_capped(local_store):
    data = read_collection(Store.connect(local_store), "pixels")
    sample = query_rows(data, 7, seed=3)
    assert len(sample) == 7 and np.array_equal(sample, query_rows(data, 7, seed=3))
    assert not np.array_equal(sample, query_rows(data, 7, seed=4))
    assert len(query_rows(data, 10_000, seed=3)) == 48
    sampled = evaluate(local_store, Options(("pixels",), ("l2",), (1,), queries=7, seed=3))
    assert sampled["collections"]["pixels"]["queries"] == 7


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory) -> Store:
    """A collection without labels and one with a single label."""
    root = tmp_path_factory.mktemp("odd")
    write_folder(root / "shapes", per_class=1, seed=2)
    store = Store.connect(root / "store", create=True)
    pixels = load_embedder("pixels")
    for folder, name in ((root / "shapes" / "red circle", "unlabelled"), (root / "shapes", "single")):
        source = open_source(str(folder))
        items = source.items if name == "unlabelled" else (i for i in source.items if i.label == "red circle")
        build_index(items, store, name, pixels, BuildOptions(source=source.description))
    return store


@pytest.mark.parametrize(("options", "error", "message"), [
    (Options(("unlabelled",)), QueryError, "has no labels"),
    (Options(("single",)), QueryError, "one label only"),
    (Options(("nope",)), StoreError, "no collection 'nope'"),
    (Options(metrics=("hamming",)), QueryError, "unknown metric hamming"),
    (Options(ks=(0, 5)), QueryError, "k must be"),
    (Options(queries=0), QueryError, "1 or more"),
])
def test_refusals_name_the_problem(odd_store, options, error, message):
    with pytest.raises(error, match=message):
        evaluate(odd_store, options)


@pytest.mark.parametrize("args", [["--collection", "unlabelled"], ["--metrics", "l1,bogus"], ["--k", "1,x"],
                                  ["--queries", "-3"], ["--queries", "many"], ["--collection", "nope"]])
def test_the_command_refuses_in_one_line_with_code_2(odd_store, tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(["--store", str(odd_store.folder), "--out", str(tmp_path), *args]))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "evaluation.json").exists()


def test_the_command_writes_json_markdown_and_chart(local_store, tmp_path, capsys):
    assert main(["--store", str(local_store), "--collection", "pixels", "--metrics", "l1,correlation", "--k", "1,5",
                 "--queries", "12", "--out", str(tmp_path), "--quiet"]) == 0
    written = json.loads((tmp_path / "evaluation.json").read_text())
    measured = written["collections"]["pixels"]["image_to_image"]
    assert set(measured) == {"l1", "correlation"}
    assert set(measured["l1"]) == {"p@1", "p@5", "recall@1", "recall@5", "map@5", "ms_per_query"}
    assert "| pixels | image to image | correlation |" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert "| pixels | image to image | l1 |" in capsys.readouterr().out


def test_the_tab_lists_shared_collections_only_and_refuses_plainly(odd_store, tmp_path):
    from search.web.evaluation_tab import run_evaluation, shared_collections

    odd_store.open_or_create("mine-someone-photos", ModelInfo.of(load_embedder("pixels")))  # an album
    settings = Settings(store=odd_store.folder, default_dataset=None)
    assert "mine-someone-photos" in odd_store.names()
    assert shared_collections(settings) == ["single", "unlabelled"]
    assert shared_collections(Settings(store=tmp_path / "nothing", default_dataset=None)) == []
    for collections, message in ((["mine-someone-photos"], "Choose at least one collection"),
                                 (["unlabelled"], "has no labels")):
        table, precision, latency, download = run_evaluation(settings, collections, ["cosine"], 10, lambda *a, **k: None)
        assert table.startswith("⚠️ ") and message in table and precision is latency is download is None


def test_the_tab_charts_one_row_per_point(report):
    from search.web.evaluation_tab import latency_frame, precision_frame

    points = precision_frame(report)
    assert len(points) == (2 * 5 + 5) * len(KS)  # images: image and text tasks; pixels: image only
    assert list(dict.fromkeys(points["top k"])) == ["top 1", "top 3", "top 5"]  # the legend's order
    assert len(latency_frame(report)) == 2 * 5


def test_the_tabs_download_names_no_server_path_and_a_bad_sample_gets_words(local_store):
    from search.web.evaluation_tab import run_evaluation

    settings = Settings(store=local_store, default_dataset=None)
    table, _, _, download = run_evaluation(settings, ["images"], ["cosine"], 5, lambda *a, **k: None)
    text = Path(download).read_text()
    assert "store" not in json.loads(text) and str(local_store) not in text and "/" not in json.dumps(
        {name: entry["model"] for name, entry in json.loads(text)["collections"].items()})
    for sample in (float("nan"), float("inf"), "many", 10**400):
        table, *rest = run_evaluation(settings, ["images"], ["cosine"], sample, lambda *a, **k: None)
        assert table.startswith("⚠️ The number of query images must be a whole number") and rest == [None] * 3
