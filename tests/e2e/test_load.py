"""A short bounded load test (bench/load.py runs the 60 s one and reports throughput): no errors, memory flat."""
from __future__ import annotations

from bench.load import run_load


def test_sixteen_concurrent_users_get_answers_and_memory_stays_flat(app):
    report = run_load(app, users=16, seconds=16, rounds=4)  # on the session's app: growth is measured from round 2
    print(report)
    assert report["errors"] == 0, report["error_samples"]
    assert report["requests"] > 0  # how many is throughput: bench/load.py measures it, no test floors it
    first, last = report["rss_mb_per_round"][1], report["rss_mb_per_round"][-1]
    assert last - first < 60, report["rss_mb_per_round"]  # warm-up done by round 2; no growth after
