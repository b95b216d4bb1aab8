"""A bounded load test against a running app, in one of two modes.

    python bench/load.py --store DIR [--users 16] [--seconds 60] [--rounds 6]
    python bench/load.py --mode mixed --store DIR [--model PATH] [--images 2000] [--users 32] [--seconds 60]

search (the default): N gradio_client users mixing text and image queries. Prints requests, errors, p50/p95
latency and the app's resident memory after each round (flat memory: no growth across rounds).

mixed: N visitors of a public app (IMAGE_SEARCH_PUBLIC=1), each with a key and an album of its own, loop over
uploading 1-3 small photos (crops of examples/*.jpg, each file made unique), searching its album (POST
/api/search), deleting one of its images and searching the public index (/search_by_text); uploads and deletes
go through gradio_client. Every album search is checked against what that visitor holds: a hit it never
uploaded is an isolation violation, one it deleted a stale hit, a total other than what it holds a count
mismatch. An upload's wait is its latency less its own work, the stage seconds the app reports for it
(identify, decode, embed, write: the lock and queue waits are no stage's time); the wait beyond a quiet
app's upload of as many images is given too. Where ``--store`` does not exist it is made with ``--images``
vectors of ``--model`` (bench/serving.py make_store). Saves the figures in bench/load.json by mode and commit.

Loopback only, bounded in users and time (a request under way at the deadline is waited for, up to 120 s).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import secrets
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.app_process import ROOT, RunningApp
from bench.stats import percentiles

QUERY_IMAGE = ROOT / "examples" / "astronaut.jpg"
PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow circle")
RESULTS = ROOT / "bench" / "load.json"
ALBUM = "load"  # each visitor's album (a key each: the same name never meets another's)
ALBUM_K = 50  # an album search's page (the most a query may ask for): it pages on until it has seen the whole album
JOIN_S = 120  # a request under way at the deadline may take this long to finish before the run gives up on it
# gradio_client makes a new httpx client for every request and every file it downloads, and each one
# loads the CA bundle (5-100 ms of CPU on a busy 2-core machine, even for http://) unless it is given a
# context to share. Shared, the load measures the server instead of the clients beside it.
TLS = ssl.create_default_context()


def drive(app: RunningApp, threads: list[threading.Thread], deadline: float, seconds: float, rounds: int, *,
          join_s: float) -> list[float]:
    """Start ``threads`` (each runs until ``deadline``, ``seconds`` from now), sample the app's resident memory at
    the end of each of ``rounds`` equal rounds, then wait up to ``join_s`` for each thread; the samples (MB)."""
    for t in threads:
        t.start()
    rss = []
    for r in range(1, rounds + 1):
        time.sleep(max(0.0, deadline - seconds + seconds * r / rounds - time.monotonic()))
        rss.append(round(app.rss_mb(), 1))
    for t in threads:
        t.join(timeout=join_s)
    return rss


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
    rss = drive(app, threads, deadline, seconds, rounds, join_s=60)
    return {
        "users": users, "seconds": seconds, "requests": len(latencies), "errors": len(errors),
        "error_samples": errors[:5], "throughput_rps": round(len(latencies) / seconds, 1),
        **percentiles(latencies), "rss_mb_per_round": rss,
    }


# --- mixed: visitors uploading to, searching and deleting from albums of their own ---------------------------


class Photos:
    """Small real photos: random crops of examples/*.jpg, 160-320 px, each file's bytes its own (a comment of its
    own), so that every upload is indexed and every id names one visitor's image."""

    def __init__(self, folder: Path):
        from PIL import Image

        self.folder = folder
        self.originals = []
        for path in sorted((ROOT / "examples").glob("*.jpg")):
            with Image.open(path) as image:
                self.originals.append(image.convert("RGB"))
        self._made = 0
        self._lock = threading.Lock()

    def make(self, rng: random.Random, tag: str) -> tuple[Path, str]:
        """A new JPEG on disk, and the id the store will give it."""
        from bench.workload import with_comment
        from search.core.ids import content_id

        with self._lock:
            self._made += 1
            n = self._made
        original = rng.choice(self.originals)
        w, h = original.size
        cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.4, 0.9))
        x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
        crop = original.crop((x, y, x + cw, y + ch))
        crop.thumbnail((rng.randint(160, 320),) * 2)
        out = io.BytesIO()
        crop.save(out, "JPEG", quality=85)
        data = with_comment(out.getvalue(), f"{tag} {n}")
        path = self.folder / f"{tag}-{n:06d}.jpg"
        path.write_bytes(data)
        return path, content_id(data)


@dataclass
class Tally:
    """What the visitors saw, merged under one lock."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    http_5xx: int = 0
    uploads: list[dict[str, Any]] = field(default_factory=list)  # latency, images, own work, build seconds
    album_hits_checked: int = 0
    isolation_violations: int = 0
    violation_samples: list[str] = field(default_factory=list)
    stale_hits: int = 0
    count_mismatches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)

    def failed(self, kind: str, exc: BaseException) -> None:
        name, status = _failure(exc)
        with self.lock:
            counts = self.errors.setdefault(kind, {})
            counts[name] = counts.get(name, 0) + 1
            self.http_5xx += status >= 500
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: {name}: {exc}"[:300])


class HTTPFailure(Exception):
    """A JSON API answer other than 200."""

    def __init__(self, status: int, text: str):
        super().__init__(f"{status} {text[:200]}")
        self.status = status


def _failure(exc: BaseException) -> tuple[str, int]:
    """What kind of failure ``exc`` is, and its HTTP status (0 where it came with none)."""
    import httpx

    status = exc.status if isinstance(exc, HTTPFailure) else (
        exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0)
    return (f"http_{status}" if status else type(exc).__name__), status


class Visitor:
    """One visitor: a key, an album, the ids it holds there and those it deleted, its own clients."""

    def __init__(self, app: RunningApp, n: int, photos: Photos, tally: Tally):
        import httpx

        self.n = n
        self.key = secrets.token_urlsafe(24)
        self.rng = random.Random(n)
        self.photos = photos
        self.tally = tally
        self.client = app.client(ssl_verify=TLS, download_files=False)
        self.http = httpx.Client(base_url=app.url, timeout=JOIN_S)
        self.held: list[str] = []
        self.uploaded: set[str] = set()
        self.deleted: set[str] = set()
        self.tokens: set[str] = set()  # the album token its hits' thumbnail URLs carry: one, its own

    def loop(self, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            self.timed("upload", self.upload)
            self.timed("album_search", self.search_album)
            if self.held:
                self.timed("delete", self.delete)
            self.timed("public_search", lambda prompt=PROMPTS[(self.n + i) % len(PROMPTS)]: self.client.predict(
                prompt, 12, api_name="/search_by_text"))
            i += 1

    def timed(self, kind: str, call: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # counted, not raised: the report says what failed
            self.tally.failed(kind, exc)
        else:
            self.tally.ok(kind, time.perf_counter() - start)

    def upload(self, images: int | None = None) -> float:
        """Upload ``images`` new photos (1-3 at random where None) to the album; the seconds it took."""
        from gradio_client import handle_file

        made = [self.photos.make(self.rng, f"v{self.n:02d}") for _ in range(images or self.rng.randint(1, 3))]
        start = time.perf_counter()
        try:
            report = self.client.predict([handle_file(str(p)) for p, _ in made], ALBUM, self.key,
                                         api_name="/collection_add")
        finally:
            for path, _ in made:
                path.unlink(missing_ok=True)
        latency = time.perf_counter() - start
        ids = [i for _, i in made]
        self.uploaded.update(ids)
        if report.get("indexed") != len(ids):
            raise RuntimeError(f"{len(ids)} images uploaded, {report.get('indexed')} indexed: {report}"[:300])
        self.held += ids
        with self.tally.lock:
            self.tally.uploads.append({"latency_s": latency, "images": len(ids), "build_s": report["seconds"],
                                       "own_s": sum(report["stage_seconds"].values()),
                                       "stages": report["stage_seconds"]})
        return latency

    def search_album(self) -> None:
        """Search the album, page by page until every image it ranks is seen, and check what came back."""
        hits: list[dict[str, Any]] = []
        total = 1
        while len(hits) < total:
            query = {"positive": [{"text": PROMPTS[self.n % 4]}], "k": ALBUM_K, "offset": len(hits),
                     "index": f"mine/{ALBUM}"}
            answer = self.http.post("/api/search", json={"query": query, "key": self.key})
            if answer.status_code != 200:
                raise HTTPFailure(answer.status_code, answer.text)
            found = answer.json()
            hits += found["hits"]
            total = found["total"] if found["hits"] else 0
        ids = [h["id"] for h in hits]
        foreign = [i for i in ids if i not in self.uploaded]
        self.tokens.update(h["thumbnail"].split("/api/albums/")[1].split("/")[0] for h in hits if h.get("thumbnail"))
        with self.tally.lock:
            self.tally.isolation_violations += len(foreign)
            if foreign and len(self.tally.violation_samples) < 10:
                self.tally.violation_samples.append(f"visitor {self.n}: {len(foreign)} foreign of {len(ids)} hits")
            self.tally.album_hits_checked += len(ids)
            self.tally.stale_hits += sum(i in self.deleted for i in ids)
            self.tally.count_mismatches += len(ids) != len(self.held) or set(ids) != set(self.held)

    def delete(self) -> None:
        gone = self.held.pop(self.rng.randrange(len(self.held)))
        answer = self.client.predict([gone], ALBUM, self.key, api_name="/collection_delete")
        self.deleted.add(gone)
        if answer.get("removed") != 1:
            raise RuntimeError(f"deleting one image removed {answer}"[:300])

    def finish(self) -> dict[str, Any]:
        """After the run: the albums it lists (its own one only) and its album dropped, so that runs do not fill
        the store's caps."""
        names = self.client.predict(self.key, api_name="/collection_list")
        dropped = self.client.predict(ALBUM, self.key, api_name="/collection_drop") if ALBUM in names else {}
        return {"names": names, "removed": dropped.get("removed", 0)}


def quiet_uploads(app: RunningApp, photos: Photos, repeat: int = 3) -> dict[int, float]:
    """A lone visitor's upload of 1, 2 and 3 photos on the idle app: the median seconds of each size (after one
    upload to warm up), what an upload under load is compared with."""
    visitor = Visitor(app, 999, photos, Tally())
    visitor.upload(1)
    times: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for _ in range(repeat):
        for size, seconds in times.items():
            seconds.append(visitor.upload(size))
    visitor.finish()
    return {size: sorted(t)[len(t) // 2] for size, t in times.items()}


def run_mixed(app: RunningApp, users: int = 32, seconds: float = 60, rounds: int = 6, *, baseline: bool = True) -> dict:
    """``users`` visitors of ``app`` (a public one) uploading to, searching and deleting from their own albums and
    searching the public index for ``seconds``; memory sampled after each round. ``Visitor`` says what each does.
    ``baseline``: time a lone visitor's uploads first (``quiet_uploads``), to compare uploads under load with."""
    from bench.scale import load

    with tempfile.TemporaryDirectory(prefix="load-mixed-") as folder:
        photos = Photos(Path(folder))
        quiet = quiet_uploads(app, photos) if baseline else {}
        tally = Tally()
        visitors = [Visitor(app, n, photos, tally) for n in range(users)]
        load_before = load()
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=v.loop, args=(deadline,), daemon=True) for v in visitors]
        rss = drive(app, threads, deadline, seconds, rounds, join_s=JOIN_S)
        load_after = load()
        stuck = sum(t.is_alive() for t in threads)
        ends = [v.finish() for v in visitors] if not stuck else []
    tokens = [v.tokens for v in visitors]
    shared_tokens = len(set.union(set(), *tokens)) != sum(len(t) for t in tokens)
    return {
        "mode": "mixed", "users": users, "seconds": seconds, "load_average_before": load_before,
        "load_average_after": load_after, "visitors_still_waiting_at_join": stuck,
        "requests": {kind: len(t) for kind, t in sorted(tally.latencies.items())},
        "errors": tally.errors, "http_5xx": tally.http_5xx, "error_samples": tally.samples,
        "latency_ms": {kind: {**percentiles(t), "max_ms": round(max(t) * 1000, 1)}
                       for kind, t in sorted(tally.latencies.items())},
        "uploads": upload_waits(tally.uploads, quiet),
        "isolation_violations": tally.isolation_violations + shared_tokens + sum(
            e["names"] != [ALBUM] for e in ends if e["names"]),
        "violation_samples": tally.violation_samples, "album_hits_checked": tally.album_hits_checked,
        "album_tokens_per_visitor_max": max((len(t) for t in tokens), default=0),
        "stale_hits": tally.stale_hits, "count_mismatches": tally.count_mismatches,
        "rss_mb_per_round": rss, "rss_mb_max": max(rss, default=0.0),
    }


def upload_waits(uploads: list[dict[str, Any]], quiet: dict[int, float]) -> dict[str, Any]:
    """How long uploads waited beyond their own work (the stages the app timed), and beyond a quiet app's upload
    of as many images; where the worst one's time went: outside the build (the HTTP upload, Gradio's queue) or
    inside it outside its stages (the albums' lock and the store's write lock)."""
    if not uploads:
        return {"count": 0, "quiet_upload_s": quiet}
    waits = [u["latency_s"] - u["own_s"] for u in uploads]
    beyond_quiet = [u["latency_s"] - quiet[u["images"]] for u in uploads if u["images"] in quiet]
    worst = max(uploads, key=lambda u: u["latency_s"] - u["own_s"])

    def spread(values: list[float]) -> dict[str, float]:
        return {**{k.replace("_ms", "_s"): round(v / 1000, 3) for k, v in percentiles(values).items()},
                "max_s": round(max(values), 3)}

    return {"count": len(uploads), "images": sum(u["images"] for u in uploads),
            "quiet_upload_s": {str(k): round(v, 3) for k, v in quiet.items()},
            "own_work_s": spread([u["own_s"] for u in uploads]),
            "wait_beyond_own_work_s": spread(waits),
            "wait_beyond_quiet_upload_s": spread(beyond_quiet) if beyond_quiet else None,
            "over_10_s_beyond_own_work": sum(w > 10 for w in waits),
            "worst": {"latency_s": round(worst["latency_s"], 3), "images": worst["images"],
                      "outside_the_build_s": round(worst["latency_s"] - worst["build_s"], 3),
                      "in_the_build_outside_its_stages_s": round(worst["build_s"] - worst["own_s"], 3),
                      "stages_s": worst["stages"]}}


def main() -> None:
    """Start the app on a store and load it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("search", "mixed"), default="search")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", help="IMAGE_SEARCH_MODEL for the app (and the vectors of a store made here)")
    parser.add_argument("--images", type=int, default=2000, help="the size of a store made here (mixed)")
    parser.add_argument("--users", type=int, help="16 searching, 32 mixed")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--profile", type=Path, help="mixed: py-spy samples the app meanwhile; its hottest code here")
    args = parser.parse_args()
    env = {"IMAGE_SEARCH_MODEL": args.model} if args.model else {}
    if args.mode == "search":
        with RunningApp(args.store, **env) as app:
            print(json.dumps(run_load(app, args.users or 16, args.seconds, args.rounds), indent=2))
        return
    from bench.run import cpu_flags, machine
    from bench.scale import sampled, save
    from bench.serving import make_store
    from bench.startup import commit

    if not args.store.exists():
        if not args.model:
            parser.error("--model is needed to make a store")
        make_store(args.store, args.model, args.images)
    # A Gradio cache of its own: a delete walks the whole cache (VisitorFiles.purge), and the machine's shared
    # /tmp/gradio holds whatever other apps and test runs left there.
    with tempfile.TemporaryDirectory(prefix="load-gradio-") as cache:
        with RunningApp(args.store, IMAGE_SEARCH_PUBLIC="1", GRADIO_TEMP_DIR=cache, **env) as app:
            status = app.status()
            with sampled(app.proc.pid, args.profile):
                result = run_mixed(app, args.users or 32, args.seconds, args.rounds)
        cached = len(os.listdir(cache))
    result = {"commit": commit(ROOT), "machine": machine("cpu"), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
              "store": {"images": status["images"], "model": status["model"]}, "profiled": bool(args.profile),
              "concurrency": int(os.environ.get("IMAGE_SEARCH_CONCURRENCY", 4)), **result,
              "gradio_cache_entries_at_end": cached}
    save(result, RESULTS, "mixed")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
