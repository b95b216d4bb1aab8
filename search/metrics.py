"""Similarity measures, exact, with one convention: a higher score is more similar.

cosine: cosine similarity; ip: inner product; l2: minus the Euclidean distance;
l1: minus the Manhattan distance; correlation: Pearson's correlation coefficient.
"""
from __future__ import annotations

import numpy as np

METRICS = ("cosine", "ip", "l2", "l1", "correlation")
_CHUNK_ROWS = 8192  # bounds the temporary n x d array that l1 needs


def scores(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Score every row of ``matrix`` against ``query`` with ``metric``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if metric == "ip":
        return matrix @ query
    if metric == "cosine":
        return _unit_rows(matrix) @ _unit(query)
    if metric == "correlation":
        return _unit_rows(matrix - matrix.mean(axis=1, keepdims=True)) @ _unit(query - query.mean())
    if metric == "l2":
        sq = (matrix * matrix).sum(axis=1) - 2.0 * (matrix @ query) + float(query @ query)
        return -np.sqrt(np.maximum(sq, 0.0))
    if metric == "l1":
        return np.concatenate(
            [-np.abs(matrix[i : i + _CHUNK_ROWS] - query).sum(axis=1) for i in range(0, len(matrix), _CHUNK_ROWS)]
            or [np.zeros(0, dtype=np.float32)]
        )
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def top_k(matrix: np.ndarray, query: np.ndarray, metric: str, k: int) -> list[tuple[int, float]]:
    """Row numbers and scores of the ``k`` best rows, best first."""
    s = scores(matrix, query, metric)
    k = min(k, len(s))
    if k <= 0:
        return []
    best = np.argpartition(-s, k - 1)[:k]
    best = best[np.argsort(-s[best], kind="stable")]
    return [(int(i), float(s[i])) for i in best]


def score_from_cosine(cos: float, metric: str) -> float:
    """Convert the cosine similarity of two unit vectors into ``metric``'s score."""
    if metric in ("cosine", "ip"):
        return cos
    if metric == "l2":
        return -float(np.sqrt(max(2.0 - 2.0 * cos, 0.0)))
    raise ValueError(f"{metric} cannot be derived from a cosine distance")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _unit_rows(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)
