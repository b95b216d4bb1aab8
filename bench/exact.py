"""Exact search latency: every metric at 100k CLIP-sized vectors (512-d float32), per query.

    python bench/exact.py [--rows 100000] [--dim 512] [--queries 50]

Prints p50/p95 per metric for ``ExactSearch`` (derived rows worked out once, then one pass per query,
top 10 by argpartition) beside the one-off ``metrics.top_k`` that works them out on every query. The
goal (issue #16): l1 and correlation at <= 100 ms p50 on a 2-core machine. Clustered unit vectors,
like CLIP's; the scores do not depend on the values, only the layout does.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.stats import percentiles
from search.core.metrics import METRICS, ExactSearch, top_k

K = 10


def vectors(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows around 100 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, dim)).astype(np.float32)
    m = centres[rng.integers(0, 100, rows)] + 0.5 * rng.normal(size=(rows, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def timed(fn, queries: np.ndarray) -> dict:
    """Latency of ``fn(query)`` over the queries, after one untimed warm-up call."""
    fn(queries[0])
    seconds = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def main() -> None:
    """Measure and print one line per metric."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=50)
    args = p.parse_args()
    matrix = vectors(args.rows, args.dim)
    queries = vectors(args.queries, args.dim, seed=1)
    print(f"{args.rows} x {args.dim} float32, {args.queries} queries, top {K}; "
          f"{os.cpu_count()} cores, {_cpu_model()}, numpy {np.__version__}; load average {_load()}")
    search = ExactSearch(matrix)
    print(f"{'metric':<12} {'ExactSearch p50/p95 ms':>24} {'one-off top_k p50/p95 ms':>26}  prepare ms")
    for metric in METRICS:
        start = time.perf_counter()
        search.top_k(queries[0], metric, K)  # the first call derives what the metric needs
        prepare_ms = (time.perf_counter() - start) * 1000
        fast = timed(lambda q, m=metric: search.top_k(q, m, K), queries)
        slow = timed(lambda q, m=metric: top_k(matrix, q, m, K), queries[:10])
        print(f"{metric:<12} {fast['p50_ms']:>12.1f} / {fast['p95_ms']:<9.1f} "
              f"{slow['p50_ms']:>14.1f} / {slow['p95_ms']:<9.1f} {prepare_ms:>10.0f}")
    print(f"load average at the end {_load()} (other processes on these cores inflate every figure)")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
