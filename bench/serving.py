"""Serving figures (issue 16): query latency by each way in, and throughput of 1 user against 16.

    python bench/serving.py [--images 2000] [--repeat 30] [--seconds 20] [--rounds 2] [--versus VAR=VALUE]

ViT-B/32 compute (random weights, as bench/run.py makes it) over a synthetic store whose images each
have their own thumbnail. One app process serves every measurement; latencies are interleaved query
by query and throughput alternates 1 user and 16 users round by round, so noise from other work on
the machine falls on both sides. --versus starts a second app with one variable changed and measures
both in turn. Loopback only, bounded in count and time. Prints JSON.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import RunningApp
from bench.load import PROMPTS, QUERY_IMAGE, TLS, run_load
from bench.run import CACHE, machine, photo, vit_b32
from bench.stats import emit, percentiles
from search.core.record import RecordMeta
from search.stores.base import ModelInfo, Record
from search.stores.store import Store
from search.stores.thumbnails import relative

K = 12


def make_store(store: Path, model: str, n: int) -> None:
    """``n`` clustered unit vectors with valid ids, each with a thumbnail of its own (256x192 JPEG)."""
    from bench.workload import clip

    embedder = clip(model)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(10, n // 100), embedder.dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    opened = Store.connect(store, create=True)
    col = opened.open_or_create("images", ModelInfo.of(embedder))
    thumbnails = []
    for j in range(64):  # 64 distinct pictures, n distinct files: every hit's thumbnail is a real file
        out = io.BytesIO()
        photo(256, 192, j).save(out, "JPEG", quality=85)
        thumbnails.append(out.getvalue())
    records = []
    for j in range(n):
        image_id = f"{j:032x}"
        meta = RecordMeta(source=f"synthetic/{j}", label=f"cluster {j % 10}", caption=f"picture {j}",
                          thumbnail=relative(image_id))
        records.append(Record(image_id, vectors[j], meta))
    opened.add(col, records, {r.id: thumbnails[j % 64] for j, r in enumerate(records)})


def latencies(apps: dict[str, RunningApp], repeat: int) -> dict:
    """p50/p95 of each way in to each app, query by query in turn (warm-up first, untimed)."""
    ways = {name: _ways(app) for name, app in apps.items()}
    times: dict[str, dict[str, list[float]]] = {name: {way: [] for way in w} for name, w in ways.items()}
    for i in range(repeat + 3):
        for name, app_ways in ways.items():
            for way, call in app_ways.items():
                start = time.perf_counter()
                call(PROMPTS[i % len(PROMPTS)])
                if i >= 3:
                    times[name][way].append(time.perf_counter() - start)
    return {name: {way: percentiles(t) for way, t in app_times.items()} for name, app_times in times.items()}


def _ways(app: RunningApp) -> dict[str, Callable[[str], object]]:
    """Each way a text (or the example image) reaches ``app``, as a call taking the text."""
    import httpx
    from gradio_client import handle_file

    full, lean = app.client(), app.client(download_files=False)
    full_tls, lean_tls = app.client(ssl_verify=TLS), app.client(download_files=False, ssl_verify=TLS)
    image = handle_file(str(QUERY_IMAGE))
    http = httpx.Client(base_url=app.url, timeout=30)

    def api_search(text: str) -> list[dict]:
        answer = http.post("/api/search", json={"text": text, "k": K})
        answer.raise_for_status()
        return answer.json()["hits"]

    def api_search_and_thumbnails(text: str) -> None:
        for hit in api_search(text):
            http.get(hit["thumbnail"]).raise_for_status()

    return {
        "text_gradio_client_default": lambda t: full.predict(t, K, api_name="/search_by_text"),
        # /search answers thumbnail URLs, so the client's default settings download nothing
        "composed_text_gradio_client_default": lambda t: full.predict({"positive": [{"text": t}], "k": K}, [], "",
                                                                      api_name="/search"),
        "text_gradio_client_no_downloads": lambda t: lean.predict(t, K, api_name="/search_by_text"),
        "text_gradio_client_default_shared_tls": lambda t: full_tls.predict(t, K, api_name="/search_by_text"),
        "text_gradio_client_no_downloads_shared_tls": lambda t: lean_tls.predict(t, K, api_name="/search_by_text"),
        "image_gradio_client_no_downloads": lambda t: lean.predict(image, K, api_name="/search_by_image"),
        "text_json_api": api_search,
        "text_json_api_and_12_thumbnails": api_search_and_thumbnails,
    }


def thumbnail_fetches(app: RunningApp, repeat: int) -> dict:
    """One thumbnail fetched two ways, in turn: where a download's time goes (a connection each, or one kept)."""
    import httpx

    # The thumbnail's URL on the app's own route, as /search_by_text and POST /api/search answer it (Gradio's
    # file route serves no thumbnail since issue 31: nothing of the store is copied into its cache).
    ours = app.client(download_files=False).predict(PROMPTS[0], K, api_name="/search_by_text")[0]["image"]
    kept = httpx.Client(timeout=30)

    def fresh(url: str) -> None:  # as gradio_client downloads: a new connection (and client) per file
        with httpx.stream("GET", url) as answer:
            answer.raise_for_status()
            answer.read()

    ways: dict[str, Callable[[], object]] = {
        "json_api_thumbnail_new_connection": lambda: fresh(ours),
        "json_api_thumbnail_keep_alive": lambda: kept.get(ours).raise_for_status(),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeat):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    kept.close()
    return {name: percentiles(t) for name, t in times.items()}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughputs(apps: dict[str, RunningApp], seconds: float, rounds: int) -> dict:
    """``throughput`` of each app, round by round in turn."""
    runs: dict[str, dict[int, list[dict]]] = {name: {1: [], 16: []} for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            for users in (1, 16):
                before = cpu_seconds(app.proc.pid)
                report = run_load(app, users=users, seconds=seconds, rounds=1)
                report["server_cpu_ms_per_request"] = round(
                    1000 * (cpu_seconds(app.proc.pid) - before) / max(1, report["requests"]), 1)
                runs[name][users].append(report)
    return {name: throughput(app_runs) for name, app_runs in runs.items()}


def throughput(runs: dict[int, list[dict]]) -> dict:
    """1 user against 16 users: medians of req/s, their ratio, and server CPU per request."""

    def median(users: int, key: str) -> float:
        return round(float(np.median([r[key] for r in runs[users]])), 1)

    one, sixteen = median(1, "throughput_rps"), median(16, "throughput_rps")
    return {"one_user_rps": one, "sixteen_users_rps": sixteen, "ratio": round(sixteen / one, 2),
            "server_cpu_ms_per_request": {"one": median(1, "server_cpu_ms_per_request"),
                                          "sixteen": median(16, "server_cpu_ms_per_request")},
            "errors": sum(r["errors"] for rs in runs.values() for r in rs),
            "runs": {str(u): [{k: r[k] for k in ("requests", "throughput_rps", "p50_ms", "p95_ms")} for r in rs]
                     for u, rs in runs.items()}}


def cpu_flags() -> str:
    """The vector extensions the figures depend on."""
    flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags"))
    return " ".join(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))


def main() -> None:
    """Build the store (once per --work folder), start the app, measure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keeps the store between runs")
    parser.add_argument("--model", type=Path, default=CACHE / "vit-b-32-random", help="made there if missing")
    parser.add_argument("--versus", default="", help="VAR=VALUE: also measure an app with this variable set")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = str(vit_b32(args.model))
    work = args.work or Path(tempfile.mkdtemp(prefix="serving-"))
    store = work / "store"
    if not (store / "thumbnails").exists():
        make_store(store, model, args.images)
    result: dict = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "model": "ViT-B/32 (random weights)",
                    "images": args.images}
    with ExitStack() as stack:
        apps = {"app": stack.enter_context(RunningApp(store, IMAGE_SEARCH_MODEL=model))}
        if args.versus:  # the same app with one variable changed, measured in turn with the first
            variable, _, value = args.versus.partition("=")
            apps[args.versus] = stack.enter_context(RunningApp(store, IMAGE_SEARCH_MODEL=model, **{variable: value}))
        result["latency"] = latencies(apps, args.repeat)
        print(json.dumps(result["latency"]), flush=True)
        result["one_thumbnail"] = thumbnail_fetches(apps["app"], args.repeat * 2)
        result["throughput"] = throughputs(apps, args.seconds, args.rounds)
        result["app_rss_mb"] = {name: round(app.rss_mb(), 1) for name, app in apps.items()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
