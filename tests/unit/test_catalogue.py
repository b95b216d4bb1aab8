"""Filters and exact metrics through the catalogue: the same hits as a brute-force computation, on every path.

A filter that admits few images ranks them exactly from the catalogue's float16 vectors; a broad one takes
HNSW's nearest over everything and keeps those it admits; l1 and correlation re-rank HNSW's candidates. Each
path is driven here (its thresholds moved where the store is small) and held to numpy over the stored vectors.
"""
from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from search import index as index_module
from search.core import metrics
from search.core.dates import seconds_of
from search.core.ids import content_id
from search.core.query import Part, Query
from search.index import ImageIndex
from search.stores import swaps
from search.stores.base import Filter, ModelInfo, Record
from search.stores.store import Store

DIM = 16
MODEL = ModelInfo("tiny-test-model", DIM, True)
IMAGES = 3000
DAY = 86_400


class _NoModel:
    """An index searched by stored ids only: nothing to embed."""

    name, dimension, normalized, supports_text, min_edges = "tiny-test-model", DIM, True, False, (1, 1)


def _records(count: int, seed: int = 0, start: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, DIM))
    rows = centres[rng.integers(0, 30, count)] + 0.7 * rng.normal(size=(count, DIM))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    labels = rng.zipf(1.6, count) % 40
    days = rng.integers(0, 4 * 365, count)
    return [Record(content_id(f"img{start + i}".encode()), rows[i],
                   {"source": f"s/{start + i}", "taken": seconds_of(date(2020, 1, 1)) + int(days[i]) * DAY}
                   | ({"label": f"l{labels[i]}"} if i % 11 else {}))  # every 11th without a label
            for i in range(count)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store.connect(tmp_path_factory.mktemp("catalogue") / "store", create=True)
    store.add(store.open_or_create("images", MODEL), _records(IMAGES), {})
    return store


@pytest.fixture
def index(store) -> ImageIndex:
    return ImageIndex(store, store.open("images"), _NoModel())  # type: ignore[arg-type]


def _brute_force(store: Store, query: np.ndarray, metric: str, where: Filter | None, k: int) -> np.ndarray:
    records = [r for r in store.open("images").scan() if where is None or where.admits(r.metadata)]
    scores = metrics.scores(np.stack([r.vector for r in records]), query, metric)
    return np.sort(scores)[::-1][:k]


def _search(index: ImageIndex, image_id: str, metric: str, **filters) -> list:
    query = Query(positive=(Part(kind="id", value=image_id),), k=50, metric=metric, cutoff=None, keywords=0, **filters)
    return index.search(query).hits


FILTERS = {
    "few labels": {"labels": {"include": ("l5", "l7")}},
    "one month": {"taken": {"from": date(2021, 3, 1), "to": date(2021, 3, 31)}},
    "all but the commonest": {"labels": {"exclude": ("l1",)}},
    "a year, two labels": {"labels": {"include": ("l1", "l2")}, "taken": {"from": date(2022, 1, 1), "to": date(2022, 12, 31)}},
}


@pytest.mark.parametrize("path", ["narrow", "broad"])
@pytest.mark.parametrize("metric", ["cosine", "l2", "l1", "correlation"])
@pytest.mark.parametrize("name", FILTERS)
def test_a_filtered_search_ranks_as_numpy_does(index, store, monkeypatch, path, metric, name):
    # narrow: everything the filter admits is ranked from the catalogue; broad: HNSW's nearest, then the filter
    monkeypatch.setattr(index_module, "BROAD_COST", 10**9 if path == "narrow" else 0)
    monkeypatch.setattr(index_module, "RERANK_DEPTH", IMAGES)  # the re-ranked candidates: all of them
    probe = store.open("images").all_ids()[17]
    query_vector = store.open("images").vectors([probe])[probe]
    hits = _search(index, probe, metric, **FILTERS[name])
    query = Query(positive=(Part(kind="id", value=probe),), **FILTERS[name])
    until = seconds_of(query.taken_to) + DAY if query.taken_to else None
    where = Filter(query.include, query.exclude, seconds_of(query.taken_from) if query.taken_from else None, until)
    expected = _brute_force(store, query_vector, metric, where, 50)
    assert len(hits) == len(expected) > 0
    assert all(where.admits(h.metadata) for h in hits)
    # float16 vectors on the narrow path: scores equal to a few thousandths, so near-ties may swap ids
    assert np.allclose([h.score for h in hits], expected, atol=0.02 if metric == "l1" else 2e-3)


def test_a_broad_filter_that_over_fetching_cannot_fill_ranks_all_it_admits(index, store, monkeypatch):
    monkeypatch.setattr(index_module, "BROAD_COST", 0)
    monkeypatch.setattr(index_module, "OVERFETCH", 0)  # 32 candidates: too few to find 50 of a few labels
    probe = store.open("images").all_ids()[3]
    hits = _search(index, probe, "cosine", labels={"include": ("l5", "l7")})
    where = Filter(("l5", "l7"))
    expected = _brute_force(store, store.open("images").vectors([probe])[probe], "cosine", where, 50)
    assert all(where.admits(h.metadata) for h in hits)
    assert np.allclose([h.score for h in hits], expected, atol=2e-3)


def test_a_broad_filter_reads_deeper_before_it_ranks_all_it_admits(index, store, monkeypatch):
    monkeypatch.setattr(index_module, "BROAD_COST", 0)
    monkeypatch.setattr(index_module, "OVERFETCH", 0)  # 32 candidates first: fewer than the 50 asked for
    depths: list[int] = []
    approximate = ImageIndex._approximate

    def spy(self, *args, depth: int = 0, **kwargs):
        depths.append(depth)
        return approximate(self, *args, depth=depth, **kwargs)

    monkeypatch.setattr(ImageIndex, "_approximate", spy)
    probe = store.open("images").all_ids()[3]
    hits = _search(index, probe, "cosine", labels={"exclude": ("l1",)})
    assert depths[:2] == [32, 32 * index_module.DEEPEN] and len(depths) < 6  # never deeper than the collection
    where = Filter(exclude=("l1",))
    expected = _brute_force(store, store.open("images").vectors([probe])[probe], "cosine", where, 50)
    assert all(where.admits(h.metadata) for h in hits)
    assert np.allclose([h.score for h in hits], expected, atol=2e-3)


def test_totals_and_labels_come_from_the_catalogue_and_agree_with_a_count(index, store):
    rows = store.open("images").scan_metadata()
    assert len(index) == IMAGES
    assert index.labels() == sorted({m["label"] for _, m in rows if "label" in m})
    probe = rows[0][0]
    for filters in FILTERS.values():
        query = Query(positive=(Part(kind="id", value=probe),), k=10, cutoff=None, keywords=0, **filters)
        until = seconds_of(query.taken_to) + DAY if query.taken_to else None
        where = Filter(query.include, query.exclude, seconds_of(query.taken_from) if query.taken_from else None, until)
        assert index.search(query).total == sum(where.admits(m) for _, m in rows)


def test_l1_and_correlation_rank_hnsw_candidates_exactly(index, store):
    probe = store.open("images").all_ids()[5]
    vector = store.open("images").vectors([probe])[probe]
    for metric in ("l1", "correlation"):
        hits = index.search_by_vector(vector, k=20, metric=metric)
        expected = _brute_force(store, vector, metric, None, 20)
        # RERANK_DEPTH (1,000) of 3,000 candidates by cosine: the true best 20 are among them here, scored from
        # the catalogue's float16 copies of their vectors
        assert np.allclose([h.score for h in hits], expected, atol=0.01 if metric == "l1" else 1e-3)


def test_the_catalogue_follows_a_switch_and_a_rollback(tmp_path):
    store = Store.connect(tmp_path / "store", create=True)
    old = _records(50, seed=1)
    store.add(store.open_or_create("images", MODEL), old, {})
    new = [Record(r.id, -r.vector, {**r.metadata, "label": "relabelled"}) for r in old]  # a new model's vectors
    store.add(store.open_or_create(swaps.next_name("images"), MODEL), new, {})
    store.switch("images")
    live = store.open("images")
    assert store.catalogue_for(live).labels(live.key) == {"relabelled": 50}
    ids, matrix = store.catalogue_for(live).vectors(live.key)
    by_id = {r.id: r.vector for r in new}
    assert np.allclose(matrix, [by_id[i] for i in ids], atol=1e-3)  # the new model's vectors, as float16
    store.rollback("images")
    live = store.open("images")
    assert store.catalogue_for(live).state(live.key).count == 50
    assert "relabelled" not in store.catalogue_for(live).labels(live.key)
