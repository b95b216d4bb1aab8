"""Latency summaries and output shared by the benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def percentiles(seconds: list[float]) -> dict:
    """p50 and p95 in milliseconds (zeros when nothing was measured)."""
    ms = np.array(seconds or [0.0]) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def emit(result: dict, out: Path | None) -> None:
    """Print the figures as JSON, and write them to ``out`` where one is given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
