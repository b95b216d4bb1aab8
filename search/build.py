"""The indexing pipeline: read and hash, skip what is stored, decode in parallel, embed, write."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from .embedders import ClipEmbedder, Embedder
from .errors import InvalidImageError
from .images import decode_image, make_thumbnail
from .sources import Item
from .store import content_id, open_collection, write_thumbnail

CALIBRATION_IMAGES = 16
_DONE = object()


@dataclass
class BuildReport:
    """What a build did; written as JSON by ``index_builder.py --report``."""

    store: str
    collection: str
    model: str
    indexed: int = 0
    duplicates: int = 0
    already_indexed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    total_in_collection: int = 0
    precision: str = "fp32"
    bf16_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)

    def summary(self) -> str:
        """One paragraph for a person."""
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return (
            f"Indexed {self.indexed} new images into collection {self.collection!r} at {self.store} "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s, {self.precision}, model {self.model}). "
            f"{self.already_indexed} were already indexed, {self.duplicates} were duplicates, "
            f"skipped: {skipped}. The collection now holds {self.total_in_collection} images."
        )


@dataclass
class _Ready:
    item: Item
    image_id: str
    image: Image.Image
    thumbnail: bytes


def build_index(
    items: Iterable[Item],
    *,
    store_dir: Path,
    client: Any,
    collection: str,
    embedder: Embedder,
    source: str = "",
    batch_size: int = 32,
    precision: str = "auto",
    workers: int = 2,
    total: int | None = None,
    progress: bool = True,
) -> BuildReport:
    """Index ``items`` into ``collection``; bad images are skipped and reported, never fatal."""
    from tqdm import tqdm

    store_dir = Path(store_dir)
    col = open_collection(client, collection, embedder, source)
    report = BuildReport(str(store_dir), collection, embedder.name)
    if isinstance(embedder, ClipEmbedder):
        embedder.bf16 = precision == "bf16"
    max_write = max(1, int(client.get_max_batch_size()))
    start = time.perf_counter()
    bar = tqdm(total=total, unit="img", desc="indexing", disable=not progress, smoothing=0.1)
    stages = _Stages(col, embedder, report, workers)
    for batch in _prefetch(stages.batches(items, batch_size), bar):
        if not batch:
            continue
        images = [r.image for r in batch]
        if isinstance(embedder, ClipEmbedder) and precision == "auto" and report.bf16_agreement is None:
            report.bf16_agreement = round(embedder.calibrate_bf16(images[:CALIBRATION_IMAGES]), 6)
        vectors = embedder.embed_images(images)
        # Thumbnails first: a record that exists always has its thumbnail, even after kill -9.
        metadatas = [_metadata(r, write_thumbnail(store_dir, r.image_id, r.thumbnail)) for r in batch]
        for i in range(0, len(batch), max_write):
            col.upsert(
                ids=[r.image_id for r in batch[i : i + max_write]],
                embeddings=vectors[i : i + max_write],
                metadatas=metadatas[i : i + max_write],
            )
        report.indexed += len(batch)
    bar.close()
    report.precision = "bf16" if getattr(embedder, "bf16", False) else "fp32"
    report.seconds = round(time.perf_counter() - start, 3)
    report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
    report.total_in_collection = col.count()
    return report


class _Stages:
    """The producer side: runs on its own thread so the model never waits for decoding."""

    def __init__(self, col: Any, embedder: Embedder, report: BuildReport, workers: int):
        self.col = col
        self.embedder = embedder
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
        self.seen: set[str] = set()

    def batches(self, items: Iterable[Item], batch_size: int) -> Iterator[tuple[int, list[_Ready]]]:
        iterator = iter(items)
        try:
            while chunk := list(islice(iterator, batch_size)):
                yield len(chunk), self._prepare(chunk)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, chunk: list[Item]) -> list[_Ready]:
        hashed = []
        for item, result in zip(chunk, self.pool.map(_read_and_hash, chunk)):
            if isinstance(result, InvalidImageError):
                self._skip(item, result)
            elif result[0] in self.seen:
                self.report.duplicates += 1
            else:
                self.seen.add(result[0])
                hashed.append((item, *result))
        if not hashed:
            return []
        stored = set(self.col.get(ids=[h[1] for h in hashed], include=[])["ids"])
        self.report.already_indexed += sum(1 for h in hashed if h[1] in stored)
        todo = [h for h in hashed if h[1] not in stored]
        ready = []
        for (item, image_id, _), result in zip(todo, self.pool.map(self._decode, todo)):
            if isinstance(result, InvalidImageError):
                self._skip(item, result)
            else:
                ready.append(_Ready(item, image_id, *result))
        return ready

    def _decode(self, hashed: tuple[Item, str, bytes]) -> tuple[Image.Image, bytes] | InvalidImageError:
        try:
            img = decode_image(hashed[2], min_edges=self.embedder.min_edges)
            return self.embedder.prepare(img), make_thumbnail(img)
        except InvalidImageError as exc:
            return exc

    def _skip(self, item: Item, error: InvalidImageError) -> None:
        self.report.skipped.append({"source": item.source, "reason": error.reason, "detail": error.detail})


def _read_and_hash(item: Item) -> tuple[str, bytes] | InvalidImageError:
    try:
        data = item.read()
    except InvalidImageError as exc:
        return exc
    if not data:
        return InvalidImageError("empty", "no bytes")
    return content_id(data), data


def _prefetch(batches: Iterator[tuple[int, list[_Ready]]], bar: Any) -> Iterator[list[_Ready]]:
    """Run ``batches`` one step ahead on a thread; re-raise its errors here."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    break
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            batches.close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (got := q.get()) is not _DONE:
            if isinstance(got, BaseException):
                raise got
            read, ready = got
            yield ready
            bar.update(read)
    finally:
        stop.set()
        thread.join(timeout=5)


def _metadata(r: _Ready, thumbnail: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": r.item.source,
        "thumbnail": thumbnail,
        "added_at": int(time.time()),
    }
    if r.item.label:
        meta["label"] = r.item.label
    if r.item.caption:
        meta["caption"] = r.item.caption
    return meta
