"""Exact metrics agree with their textbook definitions, and higher is always more similar."""
from __future__ import annotations

import numpy as np
import pytest

from search.core.metrics import METRICS, ExactSearch, best_of, score_from_cosine, scores, top_k

RNG = np.random.default_rng(0)
MATRIX = RNG.normal(size=(50, 16)).astype(np.float32)
QUERY = RNG.normal(size=16).astype(np.float32)


def reference(row: np.ndarray, q: np.ndarray, metric: str) -> float:
    if metric == "cosine":
        return float(row @ q / np.linalg.norm(row) / np.linalg.norm(q))
    if metric == "ip":
        return float(row @ q)
    if metric == "l2":
        return -float(np.sqrt(((row - q) ** 2).sum()))
    if metric == "l1":
        return -float(np.abs(row - q).sum())
    return float(np.corrcoef(row, q)[0, 1])


@pytest.mark.parametrize("metric", METRICS)
def test_scores_match_definitions(metric):
    expected = [reference(r, QUERY, metric) for r in MATRIX]
    assert np.allclose(scores(MATRIX, QUERY, metric), expected, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_top_k_is_best_first_and_finds_the_query_itself(metric):
    matrix = MATRIX.copy()
    matrix[17] = QUERY
    best = top_k(matrix, QUERY, metric, 5)
    assert best[0][0] == 17
    assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
    assert len(top_k(matrix, QUERY, metric, 500)) == len(matrix)


def test_top_k_of_empty_matrix_is_empty():
    assert top_k(np.zeros((0, 16), np.float32), QUERY, "l1", 3) == []


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        scores(MATRIX, QUERY, "hamming")


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_hnsw_cosine_converts_exactly_on_unit_vectors(metric):
    unit = MATRIX / np.linalg.norm(MATRIX, axis=1, keepdims=True)
    q = QUERY / np.linalg.norm(QUERY)
    similarities = unit @ q
    converted = [score_from_cosine(c, metric) for c in similarities]
    assert np.allclose(converted, scores(unit, q, metric), atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_gives_the_one_off_scores(metric):
    search = ExactSearch(MATRIX)
    assert np.allclose(search.scores(QUERY, metric), scores(MATRIX, QUERY, metric), atol=1e-5)
    assert np.allclose(search.scores(QUERY, metric), search.scores(QUERY, metric))  # derived once, reused
    queries = RNG.normal(size=(7, 16)).astype(np.float32)  # not rows: l2's expansion is coarse at distance 0
    many = search.scores_many(queries, metric)
    assert many.shape == (7, len(MATRIX))
    assert np.allclose(many, [scores(MATRIX, q, metric) for q in queries], atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_top_k_within_rows(metric):
    search = ExactSearch(MATRIX)
    assert search.top_k(QUERY, metric, 5) == top_k(MATRIX, QUERY, metric, 5)
    rows = np.arange(0, 50, 3)
    best = search.top_k(QUERY, metric, 4, rows=rows)
    expected = sorted(((int(r), reference(MATRIX[r], QUERY, metric)) for r in rows), key=lambda p: -p[1])[:4]
    assert [i for i, _ in best] == [i for i, _ in expected]
    assert np.allclose([s for _, s in best], [s for _, s in expected], atol=1e-4)


def test_exact_search_l1_spans_several_blocks():
    big = RNG.normal(size=(1300, 16)).astype(np.float32)
    assert np.allclose(ExactSearch(big).scores(QUERY, "l1"), -np.abs(big - QUERY).sum(axis=1), atol=1e-4)


def test_ties_keep_the_lower_row_first():
    assert [i for i, _ in best_of(np.array([1.0, 2.0, 2.0, 0.0, 2.0]), 3)] == [1, 2, 4]
