"""A bounded load test: N gradio_client users mixing text and image queries against a running app.

    python bench/load.py --store DIR [--users 16] [--seconds 60] [--rounds 6]

Loopback only, bounded in users and time. Prints requests, errors, p50/p95 latency and the app's
resident memory after each round (flat memory: no growth across rounds).
"""
from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.app_process import ROOT, RunningApp
from bench.stats import percentiles

QUERY_IMAGE = ROOT / "examples" / "astronaut.jpg"
PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow circle")
# gradio_client makes a new httpx client for every request and every file it downloads, and each one
# loads the CA bundle (5-100 ms of CPU on a busy 2-core machine, even for http://) unless it is given a
# context to share. Shared, the load measures the server instead of the clients beside it.
TLS = ssl.create_default_context()


def run_load(app: RunningApp, users: int = 16, seconds: float = 60, rounds: int = 6) -> dict:
    """Drive ``app`` with ``users`` concurrent clients for ``seconds``; memory sampled after each round."""
    from gradio_client import handle_file

    clients = [app.client(ssl_verify=TLS) for _ in range(users)]
    image = handle_file(str(QUERY_IMAGE))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def user(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                if (n + i) % 2:
                    clients[n].predict(image, 12, api_name="/search_by_image")
                else:
                    clients[n].predict(PROMPTS[i % len(PROMPTS)], 12, api_name="/search_by_text")
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as exc:  # counted, not raised: the report says what failed
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            i += 1

    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(users)]
    for t in threads:
        t.start()
    rss = []
    for r in range(1, rounds + 1):
        time.sleep(max(0.0, deadline - seconds + seconds * r / rounds - time.monotonic()))
        rss.append(round(app.rss_mb(), 1))
    for t in threads:
        t.join(timeout=60)
    return {
        "users": users, "seconds": seconds, "requests": len(latencies), "errors": len(errors),
        "error_samples": errors[:5], "throughput_rps": round(len(latencies) / seconds, 1),
        **percentiles(latencies), "rss_mb_per_round": rss,
    }


def main() -> None:
    """Start the app on a store and load it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with RunningApp(args.store) as app:
        print(json.dumps(run_load(app, args.users, args.seconds, args.rounds), indent=2))


if __name__ == "__main__":
    main()
