"""Latency summaries shared by the benchmarks."""
from __future__ import annotations

import numpy as np


def percentiles(seconds: list[float]) -> dict:
    """p50 and p95 in milliseconds (zeros when nothing was measured)."""
    ms = np.array(seconds or [0.0]) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}
