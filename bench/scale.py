"""Scale: a collection grown to N records through the store's own write path, the app measured on it, and the
store's write rate beside bare Chroma's, with HNSW settings candidates.

    python bench/scale.py grow --store DIR --images N [--model PATH] [--collection NAME]
    python bench/scale.py measure --store DIR [--model PATH] [--collection NAME] [--repeat 20]
    python bench/scale.py writes --store DIR --images N [--queries 200]

grow writes records as a build does (``Store.add``: vectors, metadata as the builder makes it, thumbnails,
words), in batches of BATCH; record j is a function of j alone, so a re-run continues where the last one
stopped. The data: unit vectors around CLUSTERS centres, LABELS labels with a Zipf spread, captions drawn
(Zipf) from a vocabulary of WORDS made-up words, capture dates over ten years, and real thumbnail JPEGs
(crops of examples/*.jpg) each with a comment of its own, so that each record has its own content id.

measure starts the app on the store and times start-up, every kind of query through POST /api/search (the
first of each, then warm rounds, kind by kind in turn), gradio_client's /search, the page's first load, an
album of 10 images and its first query, and index_builder.py adding 50 images (after the app stops).
Saves the figures in bench/scale.json by size and commit.

writes measures Store.add beside a bare Chroma collection of the same HNSW configuration, batch by batch
in turn, then HNSW candidates (build rate, query time, recall@10 against exact search). Saves
bench/scale_writes.json. The machine is shared: every figure carries the load average around it.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import ROOT, RunningApp
from bench.run import CACHE, machine, probes, vit_b32
from bench.serving import cpu_flags
from bench.startup import commit
from bench.stats import percentiles
from bench.workload import photo, with_comment
from search.core.dates import seconds_of
from search.core.ids import content_id
from search.core.metrics import METRICS
from search.core.record import TAKEN, RecordMeta
from search.errors import SearchError
from search.stores.base import DEFAULT_COLLECTION, ModelInfo, Record, model_reference
from search.stores.store import Store
from search.stores.thumbnails import relative

BATCH = 2000  # records per Store.add
BLOCK = 1000  # records drawn together from one seed: record j depends on j alone, whatever the batches
CLUSTERS, LABELS, WORDS = 2000, 1000, 3000
FIRST_DAY, DAYS = datetime.date(2015, 1, 1), 3653  # capture dates over ten years
UNDATED = 0.1  # share of records without a capture date (no camera date, none in the name)
THUMBNAILS = 48
SOURCE = "bench/scale.py synthetic"
RESULTS, WRITES = ROOT / "bench" / "scale.json", ROOT / "bench" / "scale_writes.json"


class Synthetic:
    """The collection's contents: record j is the same whenever and in whatever batch it is made."""

    def __init__(self, dimension: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.dimension = dimension
        self.centres = rng.normal(size=(CLUSTERS, dimension)).astype(np.float32)
        syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
        picked = rng.choice(len(syllables), size=(WORDS * 2, 3))
        # Made-up words of 2-3 syllables, most popular first; duplicates dropped.
        words = dict.fromkeys("".join(syllables[s] for s in row[: 2 + i % 2]) for i, row in enumerate(picked))
        self.words = list(words)[:WORDS]
        self.word_odds = zipf(len(self.words), 1.0)
        self.labels = [f"{self.words[i]} {self.words[-1 - i]}" for i in range(LABELS)]
        self.cluster_label = rng.choice(LABELS, size=CLUSTERS, p=zipf(LABELS, 1.1))

    @cached_property
    def thumbnails(self) -> list[bytes]:
        """Real thumbnails (the builder's encoding) of crops of the shipped example photos."""
        from PIL import Image

        from search.images.decode import make_thumbnail

        photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples").glob("*.jpg"))]
        out = []
        for i in range(THUMBNAILS):
            image = photos[i % len(photos)]
            w, h = image.size
            scale = 0.5 + 0.5 * ((i // len(photos)) % 4) / 3  # crops from half the photo to all of it
            left, top = int((w - w * scale) * (i % 3) / 2), int((h - h * scale) * (i % 2))
            out.append(make_thumbnail(image.crop((left, top, left + int(w * scale), top + int(h * scale)))))
        return out

    def thumbnail(self, j: int) -> bytes:
        """Record j's thumbnail: a shared picture with j in a comment, so its bytes (and id) are its own."""
        return with_comment(self.thumbnails[j % THUMBNAILS], f"scale {self.seed} {j}")

    def image_id(self, j: int) -> str:
        """Record j's content id."""
        return content_id(self.thumbnail(j))

    def records(self, start: int, stop: int) -> Iterator[tuple[Record, bytes]]:
        """Records start..stop-1 with their thumbnails, as a build writes them."""
        for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            made = self._block(block)
            first = block * BLOCK
            yield from made[max(start, first) - first: min(stop, first + BLOCK) - first]

    def _block(self, block: int) -> list[tuple[Record, bytes]]:
        rng = np.random.default_rng([self.seed, block])
        clusters = rng.integers(0, CLUSTERS, BLOCK)
        vectors = self.centres[clusters] + 0.35 * rng.normal(size=(BLOCK, self.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        lengths = rng.integers(4, 13, BLOCK)
        words = rng.choice(len(self.words), size=(BLOCK, 12), p=self.word_odds)
        days = rng.integers(0, DAYS, BLOCK)
        seconds = rng.integers(0, 86400, BLOCK)
        dated = rng.random(BLOCK) >= UNDATED
        added = int(time.time())
        out = []
        for i in range(BLOCK):
            j = block * BLOCK + i
            thumb = self.thumbnail(j)
            image_id = content_id(thumb)
            # As stages._metadata makes it: source, thumbnail, added_at, label, caption, then the file's facts.
            meta = RecordMeta(source=f"/photos/{j // 1000:04d}/IMG_{j:07d}.jpg", thumbnail=relative(image_id),
                              added_at=added, label=self.labels[self.cluster_label[clusters[i]]],
                              caption=" ".join(self.words[w] for w in words[i, : lengths[i]]))
            if dated[i]:
                meta[TAKEN] = seconds_of(FIRST_DAY + datetime.timedelta(days=int(days[i]))) + int(seconds[i])
            out.append((Record(image_id, vectors[i], meta), thumb))
        return out


def zipf(n: int, exponent: float) -> np.ndarray:
    """Odds of ranks 1..n under Zipf's law."""
    odds = 1.0 / np.arange(1, n + 1) ** exponent
    return odds / odds.sum()


# --- grow -----------------------------------------------------------------------------------------------------


def grow(folder: Path, images: int, model: str, collection: str) -> int:
    """Grow ``collection`` to ``images`` records of ours; returns how many it holds now (all records)."""
    store = Store.connect(folder, create=True)
    with store.write_lock():  # as a build holds it (taking it settles what a killed grow left in flight)
        col = store.open_or_create(collection, model_info(store, collection, model), SOURCE)
        data = Synthetic(col.dimension or 0)
        done = resume_point(col, data)
        print(f"{col.count()} records in {folder} ({collection}), {done} of them ours; growing to {images}", flush=True)
        began, start = time.perf_counter(), done
        while done < images:
            stop = min(images, (done // BATCH + 1) * BATCH)
            made = list(data.records(done, stop))
            t = time.perf_counter()
            store.add(col, [r for r, _ in made], {r.id: thumb for r, thumb in made})
            batch_s = time.perf_counter() - t
            done = stop
            print(f"{done}/{images}: {len(made) / batch_s:.0f} records/s in Store.add, "
                  f"{(done - start) / (time.perf_counter() - began):.0f} records/s overall; load {load()}", flush=True)
        return col.count()


def model_info(store: Store, collection: str, model: str) -> ModelInfo:
    """What the collection records of ``model``: read from the collection where it exists (a re-run need not
    load the model; ``open_or_create`` still refuses another one), else from the model itself."""
    if collection in store.names():
        col = store.open(collection)
        return ModelInfo(model_reference(model), col.dimension or 0, col.normalized)
    from bench.workload import clip

    return ModelInfo.of(clip(model))


def resume_point(col: Any, data: Synthetic) -> int:
    """How many of our records the collection holds: they are a prefix of ours, whatever else was added."""
    count = col.count()
    window = range(max(0, count - BATCH), count)  # a re-run after an interrupted batch, or a build beside ours
    ids = [data.image_id(j) for j in window]
    held = set(col.held(ids))
    return next((j for j, i in zip(window, ids) if i not in held), count)


# --- measure --------------------------------------------------------------------------------------------------


class Api:
    """POST /api/search on a running app, timed."""

    def __init__(self, app: RunningApp):
        import httpx

        self.http = httpx.Client(base_url=app.url, timeout=300)

    def search(self, query: dict[str, Any], **fields: Any) -> tuple[float, dict]:
        start = time.perf_counter()
        answer = self.http.post("/api/search", json={"query": {"k": 12, **query}, **fields})
        seconds = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f"{query}: {answer.status_code} {answer.text[:300]}")
        return seconds, answer.json()


def query_kinds(data: Synthetic, count: int) -> dict[str, Callable[[int], dict[str, Any]]]:
    """Each kind of query, as the i-th of its kind (texts and ids vary, so no cache answers twice)."""
    def text(i: int) -> str:  # words of middling popularity, two at a time
        return f"{data.words[50 + 7 * i % 400]} {data.words[100 + 13 * i % 800]}"

    def plain(i: int, **more: Any) -> dict[str, Any]:
        return {"positive": [{"text": text(i)}], **more}

    common_label = data.labels[int(np.bincount(data.cluster_label).argmax())]
    kinds: dict[str, Callable[[int], dict[str, Any]]] = {
        "text_fused": plain,
        "vectors_only": lambda i: plain(i, keywords=0),
        "label_filter": lambda i: plain(i, labels={"include": [common_label]}),
        "date_range_one_year": lambda i: plain(i, taken={"from": f"{2015 + i % 10}-01-01", "to": f"{2015 + i % 10}-12-31"}),
        "date_sort_newest": lambda i: plain(i, sort="newest"),
        "by_id": lambda i: {"positive": [{"id": data.image_id((i * 7919) % count)}]},
        "second_page": lambda i: plain(i, offset=12),
    }
    kinds.update({f"metric_{m}": (lambda i, m=m: plain(i, metric=m)) for m in METRICS})
    kinds["keyword_common"] = lambda i: {"positive": [{"text": data.words[i % 3]}]}
    kinds["keyword_rare"] = lambda i: {"positive": [{"text": data.words[-1 - i % 20]}]}
    return kinds


def measure(folder: Path, model: str, collection: str, repeat: int, profile: Path | None) -> dict[str, Any]:
    """Every figure of one store; the builder's run is last, once the app has stopped. ``profile``: py-spy
    samples the app's start-up, its first query of each kind and the page's loads, and the builder's run."""
    store = Store.connect(folder)
    col = store.open(collection)
    count = col.count()
    data = Synthetic(col.dimension or 0)
    ours = resume_point(col, data)
    out: dict[str, Any] = {"records": count, "commit": commit(ROOT), "machine": machine("cpu"), "cpu_flags": cpu_flags(),
                           "model": model, "collection": collection, "load_average_before": load(),
                           # the first start on a store measures the model's precisions; later ones read them
                           "precisions_known_before_start": Path(store.precision_file).exists()}
    began = time.perf_counter()
    app = RunningApp(folder, loaded=False, IMAGE_SEARCH_MODEL=model, IMAGE_SEARCH_COLLECTION=collection)
    with app:
        out["start_to_page_s"] = round(time.perf_counter() - began, 2)
        with sampled(app.proc.pid, profile and profile.with_suffix(".start.txt")):
            while (state := app.status())["state"] in ("loading", "building"):
                time.sleep(0.05)
        if state["state"] != "ready":
            raise RuntimeError(f"the app is {state}")
        out["start_to_ready_s"] = round(time.perf_counter() - began, 2)
        out["rss_ready_mb"] = round(app.rss_mb(), 1)
        out["queries"] = queries(app, query_kinds(data, ours), repeat, profile and profile.with_suffix(".first.txt"))
        out["gradio_client_search"] = gradio_search(app, data, repeat)
        with sampled(app.proc.pid, profile and profile.with_suffix(".page.txt")):
            out["page_first_load"] = page_load(app, repeat=3)
        out["album_of_10"] = album(app, Path(tempfile.mkdtemp(prefix="scale-album-", dir=folder.parent)))
        out["rss_after_mb"] = round(app.rss_mb(), 1)
    out["builder_adds_50"] = builder(folder, model, collection, profile and profile.with_suffix(".builder.txt"))
    out["load_average_after"] = load()
    return out


def queries(app: RunningApp, kinds: dict[str, Callable[[int], dict[str, Any]]], repeat: int,
            profile: Path | None) -> dict[str, Any]:
    """The first of each kind (in this order, right after start-up; sampled into ``profile`` where given), then
    ``repeat`` rounds of all kinds in turn."""
    api = Api(app)
    with sampled(app.proc.pid, profile):
        first = {kind: api.search(make(0))[0] for kind, make in kinds.items()}
    warm: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(1, repeat + 1):
        for kind, make in kinds.items():
            warm[kind].append(api.search(make(i))[0])
    return {kind: {"first_ms": round(first[kind] * 1000, 1), **percentiles(warm[kind]), "runs": len(warm[kind])}
            for kind in kinds}


def gradio_search(app: RunningApp, data: Synthetic, repeat: int) -> dict[str, Any]:
    """/search through gradio_client (thumbnail URLs only, as it answers them), after one untimed call."""
    client = app.client()
    seconds = []
    for i in range(repeat + 1):
        text = f"{data.words[60 + i]} {data.words[300 + i]}"
        start = time.perf_counter()
        client.predict({"positive": [{"text": text}], "k": 12}, [], "", api_name="/search")
        if i:
            seconds.append(time.perf_counter() - start)
    return {**percentiles(seconds), "runs": len(seconds)}


def page_load(app: RunningApp, repeat: int) -> dict[str, Any]:
    """The page as a browser first loads it: GET /, then every event the page runs on load, in one session
    through Gradio's queue (the examples, the index list and the label filters come in these)."""
    import httpx

    seconds: list[float] = []
    for _ in range(repeat):
        with httpx.Client(base_url=app.url, timeout=300) as http:
            start = time.perf_counter()
            http.get("/").raise_for_status()
            config = http.get("/config").json()
            events = on_load(http, config)
            seconds.append(time.perf_counter() - start)
    return {**percentiles(seconds[1:] or seconds), "first_ms": round(seconds[0] * 1000, 1), "runs": len(seconds),
            "events_on_load": events}


def on_load(http: Any, config: dict[str, Any]) -> int:
    """Run the page's load events, and the events that follow them, as the page's script does; how many ran."""
    components = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    root = config["layout"]["id"]
    dependencies = {d["id"]: d for d in config["dependencies"]}
    todo = [d for d in dependencies.values() if [root, "load"] in d["targets"] or (root, "load") in d["targets"]]
    session = secrets.token_hex(8)
    ran = 0
    while todo:
        for d in todo:
            http.post("/gradio_api/queue/join", json={
                "data": [components.get(i) for i in d["inputs"]], "fn_index": d["id"], "trigger_id": root,
                "session_hash": session, "event_data": None}).raise_for_status()
        done = wait(http, session, len(todo))
        for d in todo:
            for output, value in zip(d["outputs"], done.get(d["id"], [])):
                if not isinstance(value, dict) or value.get("__type__") != "update":
                    components[output] = value
        ran += len(todo)
        todo = [d for d in dependencies.values() if d.get("trigger_after") in done and d.get("backend_fn")]
    return ran


def wait(http: Any, session: str, events: int) -> dict[int, list[Any]]:
    """The outputs of ``events`` queued events of ``session``, by event (fn_index), read from the queue's stream."""
    done: dict[int, list[Any]] = {}
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                if not message.get("success"):
                    raise RuntimeError(f"a load event failed: {message}")
                done[message.get("fn_index", len(done))] = message["output"].get("data", [])
            if len(done) == events or message.get("msg") == "close_stream":
                break
    return done


def album(app: RunningApp, folder: Path) -> dict[str, Any]:
    """A visitor's album of 10 photos (640x480 JPEGs) through /collection_add, then its first search."""
    from gradio_client import handle_file

    paths = fresh_jpegs(folder, 10)
    key = secrets.token_urlsafe(24)
    name = f"scale-{secrets.token_hex(4)}"  # a new album each run: a local app's albums outlive it
    client = app.client()
    start = time.perf_counter()
    report = client.predict([handle_file(str(p)) for p in paths], name, key, api_name="/collection_add")
    added = time.perf_counter() - start
    seconds, answer = Api(app).search({"positive": [{"text": "a photo"}], "index": f"mine/{name}"}, key=key)
    return {"upload_and_index_s": round(added, 2), "indexed": report.get("indexed"),
            "first_query_ms": round(seconds * 1000, 1), "hits": len(answer["hits"])}


def fresh_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` photo-like 640x480 JPEGs whose bytes no earlier run made, so that they are indexed, not skipped."""
    run = secrets.token_hex(4)
    paths = []
    for i in range(n):
        made = io.BytesIO()
        photo(640, 480, i).save(made, "JPEG", quality=90)
        paths.append(folder / f"IMG_{i:04d}.jpg")
        paths[-1].write_bytes(with_comment(made.getvalue(), f"{run} {i}"))
    return paths


def builder(folder: Path, model: str, collection: str, profile: Path | None) -> dict[str, Any]:
    """index_builder.py adding 50 new 640x480 JPEGs to the collection: the whole command, and its own report
    (``profile``: run under py-spy, which slows it a little)."""
    jpegs = Path(tempfile.mkdtemp(prefix="scale-build-", dir=folder.parent))
    fresh_jpegs(jpegs, 50)
    report = jpegs.parent / f"{jpegs.name}.json"
    command = [sys.executable, str(ROOT / "index_builder.py"), "--dataset", str(jpegs), "--store", str(folder),
               "--collection", collection, "--model", model, "--report", str(report), "--quiet"]
    raw = profile and profile.with_suffix(".raw")
    start = time.perf_counter()
    done = subprocess.run([*spy_command(raw), "--", *command] if raw else command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"index_builder.py failed ({done.returncode}): {done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    r = json.loads(report.read_text())
    if raw and profile:
        profile.write_text(hottest(raw))
    return {"command_s": round(wall, 2), "indexed": r.get("indexed"), "build_s": r.get("seconds"),
            "stage_seconds": r.get("stage_seconds"), "profiled": bool(profile)}


def spy_command(raw: Path) -> list[str]:
    """py-spy sampling into ``raw`` (collapsed stacks, one line each), with the native frames left out."""
    return ["py-spy", "record", "--format", "raw", "--output", str(raw), "--rate", "50"]


@contextmanager
def sampled(pid: int, profile: Path | None) -> Iterator[None]:
    """py-spy on the process ``pid`` while the block runs; the hottest code in ``profile`` (none: no sampling)."""
    if profile is None:
        yield
        return
    raw = profile.with_suffix(".raw")
    spy = subprocess.Popen([*spy_command(raw), "--pid", str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled on an interrupt
        spy.wait(60)
        profile.write_text(hottest(raw))


def hottest(raw: Path, top: int = 25) -> str:
    """The functions most often on the stack (inclusive), and those most often running (self), as shares of
    the samples in py-spy's raw output."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # One entry per function (not per line), without py-spy's process and thread frames.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)

    def ranked(counts: dict[str, int]) -> str:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"{100 * n / max(1, total):5.1f}%  {frame}" for frame, n in best)

    return f"{total} samples\n\ninclusive:\n{ranked(inclusive)}\n\nself:\n{ranked(own)}\n"


def save(result: dict[str, Any], path: Path, size: str) -> None:
    """Add ``result`` to the runs kept in ``path`` under its size and commit, beside those of other sizes and commits."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.setdefault(size, {}).setdefault(result["commit"], []).append(result)
    path.write_text(json.dumps(saved, indent=2) + "\n")


# --- writes ---------------------------------------------------------------------------------------------------

# HNSW settings to weigh against the store's own (read from a collection the store made), as changes to it.
CANDIDATES: dict[str, dict[str, Any]] = {
    "chroma_default": {"ef_construction": 100, "max_neighbors": 16, "ef_search": 100},
    "m16_efc100": {"ef_construction": 100, "max_neighbors": 16},
    "m16": {"max_neighbors": 16},
    "efc100": {"ef_construction": 100},
    "efc400_m48": {"ef_construction": 400, "max_neighbors": 48},
    "buffered": {"batch_size": 2000, "sync_threshold": 10000},  # fewer, larger index updates and flushes
}


def writes(folder: Path, images: int, queries: int, candidates: list[str], hnsw_only: bool = False) -> dict[str, Any]:
    """Store.add beside bare Chroma of the same HNSW configuration (unless ``hnsw_only``), then the store's HNSW
    settings and each of ``candidates`` (names in CANDIDATES): build rate, query time and recall@10 against exact
    search; batch by batch and query by query in turn."""
    import chromadb
    from chromadb.config import Settings

    data = Synthetic(512)

    def batches() -> Iterator[list[tuple[Record, bytes]]]:  # made again for each pass: 100k records' bytes fill memory
        for start in range(0, images, BATCH):
            yield list(data.records(start, min(images, start + BATCH)))

    store = Store.connect(folder / "store", create=True)
    col = store.open_or_create(DEFAULT_COLLECTION, ModelInfo(SOURCE, data.dimension, True), SOURCE)

    def client(name: str) -> Any:
        return chromadb.PersistentClient(path=str(folder / name), settings=Settings(anonymized_telemetry=False))

    hnsw = {k: v for k, v in client("store").get_collection(DEFAULT_COLLECTION).configuration["hnsw"].items()
            if v is not None}
    settings = {"store": hnsw, **{name: {**hnsw, **CANDIDATES[name]} for name in candidates}}
    same, twin = (client(name).create_collection(DEFAULT_COLLECTION, configuration={"hnsw": hnsw}, embedding_function=None)
                  for name in ("bare-add", "bare-upsert"))
    out: dict[str, Any] = {"records": images, "batch": BATCH, "commit": commit(ROOT), "machine": machine("cpu"),
                           "cpu_flags": cpu_flags(), "store_hnsw": hnsw, "load_average_before": load()}
    # Store.add against the same write on bare Chroma; which goes first alternates batch by batch.
    spent = {"store_add": 0.0, "bare_chroma_add": 0.0, "bare_chroma_upsert": 0.0}
    for b, batch in enumerate(() if hnsw_only else batches()):
        records, thumbs = [r for r, _ in batch], {r.id: t for r, t in batch}
        writers = [("store_add", store.add, col, records, thumbs), ("bare_chroma_add", bare_add, same, batch),
                   ("bare_chroma_upsert", bare_add, twin, batch, True)]  # Store.add upserts
        for name, write, *args in writers[b % 3:] + writers[: b % 3]:
            spent[name] += seconds(write, *args)
    if not hnsw_only:
        out["write_records_per_s"] = {name: round(images / s) for name, s in spent.items()}
        out["store_add_over_bare"] = round(spent["store_add"] / spent["bare_chroma_add"], 2)
        print(json.dumps(out["write_records_per_s"]), flush=True)
    # Each candidate (the store's settings among them) built batch by batch in turn, the first to go rotating.
    cols = {name: client(f"hnsw-{name}").create_collection(DEFAULT_COLLECTION, configuration={"hnsw": hnsw_settings},
                                                           embedding_function=None)
            for name, hnsw_settings in settings.items()}
    built = {name: 0.0 for name in cols}
    names = list(cols)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for b, batch in enumerate(batches()):
        ids += [r.id for r, _ in batch]
        rows += [r.vector for r, _ in batch]
        for name in names[b % len(names):] + names[: b % len(names)]:
            built[name] += seconds(bare_add, cols[name], batch)
    vectors = np.stack(rows)
    probe = {"image_like": probes(vectors, queries // 2, 0.9, 1), "text_like": probes(vectors, queries - queries // 2, 0.4, 2)}
    found = search_all(cols, probe, ids, vectors)
    out["hnsw"] = {name: {"settings": settings[name], "build_records_per_s": round(images / built[name]), **found[name]}
                   for name in cols}
    out["load_average_after"] = load()
    return out


def bare_add(col: Any, batch: list[tuple[Record, bytes]], upsert: bool = False) -> None:
    """The batch's vectors and metadata, written straight to a Chroma collection (added, or upserted)."""
    (col.upsert if upsert else col.add)(ids=[r.id for r, _ in batch], embeddings=np.stack([r.vector for r, _ in batch]),
                                        metadatas=[r.metadata for r, _ in batch])


def search_all(cols: dict[str, Any], probe: dict[str, np.ndarray], ids: list[str],
               vectors: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each collection's query time (as the store queries: top 10 with metadata and distances) and recall@10
    against exact cosine; query by query, the collections in turn."""
    for col in cols.values():
        col.query(query_embeddings=probe["image_like"][:5], n_results=10)  # loads the index, untimed
    times: dict[str, list[float]] = {name: [] for name in cols}
    hits: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in probe} for name in cols}
    for kind, rows in probe.items():
        for p in rows:
            exact = {ids[i] for i in np.argpartition(-(vectors @ p), 10)[:10]}
            for name, col in cols.items():
                start = time.perf_counter()
                got = col.query(query_embeddings=p[None], n_results=10, include=["metadatas", "distances"])["ids"][0]
                times[name].append(time.perf_counter() - start)
                hits[name][kind].append(len(exact & set(got)) / 10)
    return {name: {"query": {**percentiles(times[name]), "runs": len(times[name])},
                   "recall_at_10": {kind: round(float(np.mean(h)), 4) for kind, h in hits[name].items()}}
            for name in cols}


def table(result: dict[str, Any]) -> str:
    """The writes figures as a text table."""
    lines = [f"{result['records']} records, batches of {result['batch']}; {result['machine']}; load "
             f"{result['load_average_before']} -> {result['load_average_after']}"]
    if rates := result.get("write_records_per_s"):
        lines.append(f"Store.add {rates['store_add']} records/s, bare Chroma add {rates['bare_chroma_add']} records/s "
                     f"(Store.add takes {result['store_add_over_bare']}x as long), upsert {rates['bare_chroma_upsert']} "
                     "records/s")
    lines += [f"{'candidate':<16} {'ef_c':>5} {'M':>3} {'ef_s':>5} {'batch':>6} {'sync':>6} {'build/s':>8} "
             f"{'p50 ms':>7} {'p95 ms':>7} {'recall img':>10} {'recall txt':>10}"]
    for name, r in result["hnsw"].items():
        s = r["settings"]
        lines.append(f"{name:<16} {s.get('ef_construction', ''):>5} {s.get('max_neighbors', ''):>3} "
                     f"{s.get('ef_search', ''):>5} {s.get('batch_size', '-'):>6} {s.get('sync_threshold', '-'):>6} "
                     f"{r['build_records_per_s']:>8} {r['query']['p50_ms']:>7} {r['query']['p95_ms']:>7} "
                     f"{r['recall_at_10']['image_like']:>10} {r['recall_at_10']['text_like']:>10}")
    return "\n".join(lines)


def seconds(call: Callable[..., object], *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


# --- the command line -----------------------------------------------------------------------------------------


def load() -> list[float]:
    """The machine's load average (1, 5, 15 minutes): other work on these cores inflates every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def existing(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path.absolute()  # as given: a store records the path it was built with, links and all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grow", help="grow a collection to N records through Store.add")
    g.add_argument("--store", type=Path, required=True, help="the store folder (made if missing)")
    g.add_argument("--images", type=positive, required=True)
    m = commands.add_parser("measure", help="start the app on the store and time it")
    m.add_argument("--store", type=existing, required=True)
    m.add_argument("--repeat", type=positive, default=20, help="warm runs of each kind of query")
    m.add_argument("--profile", type=Path, default=None,
                   help="write py-spy profiles (pip install py-spy): PROFILE.start.txt (page to ready), "
                        "PROFILE.first.txt (the first query of each kind), PROFILE.page.txt (the page's loads), "
                        "PROFILE.builder.txt")
    for sub in (g, m):
        sub.add_argument("--model", type=Path, default=CACHE / "vit-b-32-random",
                         help="a sentence-transformers CLIP (default: ViT-B/32 with random weights, made there if missing)")
        sub.add_argument("--collection", default=DEFAULT_COLLECTION)
    r = commands.add_parser("recall", help="l1 and correlation as re-ranked HNSW candidates, against a full scan")
    r.add_argument("--store", type=existing, required=True)
    r.add_argument("--collection", default=DEFAULT_COLLECTION)
    r.add_argument("--queries", type=positive, default=100)
    w = commands.add_parser("writes", help="Store.add beside bare Chroma, and HNSW candidates")
    w.add_argument("--store", type=Path, required=True, help="a new or empty folder for the stores it writes")
    w.add_argument("--images", type=positive, required=True)
    w.add_argument("--queries", type=positive, default=200)
    w.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES),
                   help="the HNSW settings to weigh against the store's (default: all)")
    w.add_argument("--hnsw-only", action="store_true", help="the HNSW candidates only, not Store.add beside bare Chroma")
    args = parser.parse_args()
    try:
        run(parser, args)
    except SearchError as exc:  # a store that is not one, a collection of another model: said, not traced
        parser.exit(1, f"scale.py {args.command}: {exc}\n")


def rerank_recall(folder: Path, collection: str, queries: int) -> dict[str, Any]:
    """Recall@10 of l1 and correlation as the index ranks them (HNSW's RERANK_DEPTH nearest by cosine, re-ranked)
    against every vector ranked alike, both from the catalogue's float16 copies: what the candidates miss."""
    from search.core import metrics
    from search.index import RERANK_DEPTH, ImageIndex

    store = Store.connect(folder)
    col = store.open(collection)
    index = ImageIndex(store, col, None)  # type: ignore[arg-type]  # ranks stored vectors: no model needed
    ids, matrix = store.catalogue_for(col).vectors(col.key)
    rng = np.random.default_rng(0)
    probes = matrix[rng.choice(len(ids), queries, replace=False)] + 0.05 * rng.normal(size=(queries, matrix.shape[1]))
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    exact, out = metrics.ExactSearch(matrix), {"records": len(ids), "rerank_depth": RERANK_DEPTH, "queries": queries}
    for metric in ("l1", "correlation"):
        hits = [len({h[0] for h in index._nearest(q, 10, metric)} & {ids[i] for i, _ in exact.top_k(q, metric, 10)}) / 10
                for q in probes]
        out[f"{metric}_recall_at_10"] = round(float(np.mean(hits)), 4)
    return out


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "recall":
        print(json.dumps(rerank_recall(args.store, args.collection, args.queries), indent=2))
        return
    if args.command == "writes":
        if args.store.exists() and any(args.store.iterdir()):
            parser.error(f"--store {args.store}: give a new or empty folder (writes makes its stores there)")
        result = writes(args.store, args.images, args.queries, args.candidates, args.hnsw_only)
        print(table(result))
        save(result, WRITES, str(args.images))
        return
    model = str(vit_b32(args.model) if args.model == CACHE / "vit-b-32-random" else existing_model(parser, args.model))
    if args.command == "grow":
        print(f"{grow(args.store, args.images, model, args.collection)} records in the collection")
        return
    result = measure(args.store, model, args.collection, args.repeat, args.profile)
    print(json.dumps(result, indent=2))
    save(result, RESULTS, str(result["records"]))


def existing_model(parser: argparse.ArgumentParser, path: Path) -> Path:
    if not (path / "modules.json").exists():
        parser.error(f"--model {path}: not a sentence-transformers checkpoint (no modules.json)")
    return path.absolute()  # as given: a store records the path it was built with, links and all


if __name__ == "__main__":
    main()
