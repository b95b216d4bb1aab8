"""The indexing pipeline: identify, skip what is stored, decode in parallel, embed, write."""
from __future__ import annotations

import errno
import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from .duplicates import NEAR_DUPLICATE_SIMILARITY, find_near_duplicates
from .embedders import ClipEmbedder, Embedder
from .errors import InvalidImageError, StoreError
from .ids import content_id
from .images import decode_image, make_thumbnail
from .prefetch import prefetch
from .sources import Item
from .store import load_manifest, open_collection, read_all, remove_images, save_manifest, write_thumbnail

CALIBRATION_IMAGES = 16
KEEP_BYTES = 4 * 1024 * 1024  # per image, between hashing and decoding (32 images: 128 MB at most)


@dataclass
class BuildReport:
    """What a build did; written as JSON by ``index_builder.py --report``."""

    store: str
    collection: str
    model: str
    indexed: int = 0
    duplicates: int = 0
    already_indexed: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    total_in_collection: int = 0
    precision: str = "fp32"
    bf16_agreement: float | None = None
    bf16_speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)

    def for_visitor(self) -> dict[str, Any]:
        """The report without the server's internals: no store folder, the model by its name only."""
        report = self.to_dict()
        del report["store"]
        report["model"] = Path(self.model).name
        return report

    def summary(self) -> str:
        """One paragraph for a person."""
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return (
            f"Indexed {self.indexed} new images into collection {self.collection!r} "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s, {self.precision}, "
            f"model {Path(self.model).name}). "
            f"{self.already_indexed} were already indexed, {self.duplicates} were exact duplicates, "
            f"{len(self.near_duplicates)} near-duplicates, {self.removed} removed; skipped: {skipped}. "
            f"The collection now holds {self.total_in_collection} images."
        )


@dataclass
class _Ready:
    item: Item
    image_id: str
    image: Image.Image
    thumbnail: bytes


def _store_failures(build: Any) -> Any:
    """Turn the store going away mid-build (a dead server, a full disk) into a StoreError for a person.

    One place for every Chroma call of a build, the producer thread's included (``prefetch`` re-raises
    them here). Nothing is lost: records and thumbnails written so far stay, the manifest is only saved
    when the build completes, and a re-run skips what is stored.
    """
    @functools.wraps(build)
    def run(items: Iterable[Item], **options: Any) -> BuildReport:
        try:
            return build(items, **options)
        except Exception as exc:
            error = _lost_store_error(exc, options.get("client"), options.get("store_dir"))
            if error is None:
                raise
            raise error from exc
    return run


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def _lost_store_error(exc: Exception, client: Any, store_dir: Any) -> StoreError | None:
    """The StoreError for an exception that means the store stopped answering; None for anything else (bugs)."""
    import httpx
    from chromadb.errors import InternalError

    cause: BaseException = exc
    if type(exc) is Exception and isinstance(exc.__context__, httpx.HTTPStatusError):
        cause = exc.__context__  # chromadb's wrapping of an error answer that is not its own JSON
    server = _server_address(client)
    lost_server = isinstance(cause, (httpx.TransportError, ConnectionError, TimeoutError)) or (
        isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code >= 500
    )
    full_disk = isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS  # the thumbnails folder, say
    detail = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"
    if lost_server or (isinstance(cause, InternalError) and server):
        return StoreError(
            "the Chroma server stopped answering during the build. What was written so far is kept: "
            "once the server is back, run the same command again and it resumes where this build stopped.",
            internals=f"Chroma server at {server or '?'}: {detail}",
        )
    if not (full_disk or isinstance(cause, InternalError)):
        return None
    return StoreError(
        "the store stopped working during the build (a full disk, or another program holding its database, "
        "can cause this). What was written so far is kept: once that is fixed, run the same command again "
        "and it resumes where this build stopped.",
        internals=f"store at {store_dir}: {detail}",
    )


def _server_address(client: Any) -> str | None:
    """``host:port`` of a Chroma server client; None for the embedded store."""
    try:
        settings = client.get_settings()
    except Exception:
        return None
    if not str(getattr(settings, "chroma_api_impl", "")).endswith("FastAPI"):
        return None
    return f"{settings.chroma_server_host}:{settings.chroma_server_http_port}"


@_store_failures
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
    sync_root: str | None = None,
    near_duplicate_similarity: float | None = NEAR_DUPLICATE_SIMILARITY,
    manifest: str | None = None,
) -> BuildReport:
    """Index ``items`` into ``collection``; bad images are skipped and reported, never fatal.

    With ``sync_root``, records whose source lies under it and whose image is no longer among
    ``items`` are removed afterwards (deleted or changed files). ``manifest`` names the file that
    remembers which files were seen (default: the collection's name).
    """
    from tqdm import tqdm

    store_dir = Path(store_dir)
    col = open_collection(client, collection, embedder, source)
    report = BuildReport(str(store_dir), collection, embedder.name)
    if isinstance(embedder, ClipEmbedder):
        embedder.bf16 = precision == "bf16"
    max_write = max(1, int(client.get_max_batch_size()))
    start = time.perf_counter()
    bar = tqdm(total=total, unit="img", desc="indexing", disable=not progress, smoothing=0.1)
    stages = _Stages(col, embedder, report, workers, load_manifest(store_dir, manifest or collection))
    calibrate = isinstance(embedder, ClipEmbedder) and precision == "auto"
    for batch in prefetch(stages.batches(items, batch_size), bar.update):
        if not batch:
            continue
        images = [r.image for r in batch]
        if calibrate:
            calibrate = False
            if measured := embedder.calibrate_bf16(images[:CALIBRATION_IMAGES]):
                report.bf16_agreement, report.bf16_speedup = round(measured[0], 6), round(measured[1], 2)
        vectors = embedder.embed_images(images)
        if near_duplicate_similarity and embedder.normalized:
            sources = [r.item.source for r in batch]
            ids = [r.image_id for r in batch]
            report.near_duplicates += find_near_duplicates(col, ids, sources, vectors, near_duplicate_similarity)
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
    save_manifest(store_dir, manifest or collection, stages.manifest)
    if sync_root is not None:
        report.removed = len(remove_images(client, col, _stale_ids(col, sync_root, stages.current_ids), store_dir))
    report.precision = "bf16" if getattr(embedder, "bf16", False) else "fp32"
    report.seconds = round(time.perf_counter() - start, 3)
    report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
    report.total_in_collection = col.count()
    return report


class _Stages:
    """The producer side, on its own thread so the model never waits for reading and decoding."""

    def __init__(self, col: Any, embedder: Embedder, report: BuildReport, workers: int, manifest: dict[str, list]):
        self.col = col
        self.embedder = embedder
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode",
                                       initializer=_yield_to_the_model)
        self.known = manifest
        self.manifest: dict[str, list] = {}
        self.current_ids: set[str] = set()  # every image id the source holds now, for --sync

    def batches(self, items: Iterable[Item], batch_size: int) -> Iterator[tuple[int, list[_Ready]]]:
        iterator = iter(items)
        try:
            while chunk := list(islice(iterator, batch_size)):
                yield len(chunk), self._prepare(chunk)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, chunk: list[Item]) -> list[_Ready]:
        fresh: list[tuple[Item, str, bytes | None]] = []
        for item, result in zip(chunk, self.pool.map(self._identify, chunk)):
            if isinstance(result, InvalidImageError):
                self._skip(item, result)
                continue
            image_id, data = result
            if item.fingerprint:
                self.manifest[item.source] = [*item.fingerprint, image_id]
            if image_id in self.current_ids:
                self.report.duplicates += 1
            else:
                self.current_ids.add(image_id)
                fresh.append((item, image_id, data))
        if not fresh:
            return []
        stored = set(self.col.get(ids=[f[1] for f in fresh], include=[])["ids"])
        self.report.already_indexed += sum(1 for f in fresh if f[1] in stored)
        todo = [f for f in fresh if f[1] not in stored]
        ready = []
        for (item, image_id, _), result in zip(todo, self.pool.map(self._decode, todo)):
            if isinstance(result, InvalidImageError):
                self.current_ids.discard(image_id)
                self._skip(item, result)
            else:
                ready.append(_Ready(item, image_id, *result))
        return ready

    def _identify(self, item: Item) -> tuple[str, bytes | None] | InvalidImageError:
        """The image's id: from the manifest when the file is unchanged (no read), else by hashing its bytes."""
        known = self.known.get(item.source)
        if item.fingerprint and known and tuple(known[:2]) == item.fingerprint:
            return known[2], None
        try:
            data = item.read()
        except InvalidImageError as exc:
            return exc
        if not data:
            return InvalidImageError("empty", "no bytes")
        # A batch holds its images' bytes from hashing to decoding: large files are read again instead.
        keep = len(data) <= KEEP_BYTES or not item.rereadable
        return content_id(data), data if keep else None

    def _decode(self, todo: tuple[Item, str, bytes | None]) -> tuple[Image.Image, bytes] | InvalidImageError:
        item, _, data = todo
        try:
            img = decode_image(data if data is not None else item.read(), min_edges=self.embedder.min_edges)
            return self.embedder.prepare(img), make_thumbnail(img)
        except InvalidImageError as exc:
            return exc

    def _skip(self, item: Item, error: InvalidImageError) -> None:
        self.report.skipped.append({"source": item.source, "reason": error.reason, "detail": error.detail})


def _yield_to_the_model() -> None:
    """Lower this decoding thread's priority, so it runs when the model's threads leave a core free.

    On a CPU the model's threads already fill every core; decoding at equal priority slows each of
    its parallel steps down more than the decoding itself costs.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: decode at normal priority
        pass


def _stale_ids(col: Any, root: str, current: set[str]) -> list[str]:
    """Ids of records from under ``root`` whose image the source no longer holds."""
    prefix = root.rstrip("/") + "/"
    ids, metadatas = read_all(col, "metadatas")
    return [i for i, m in zip(ids, metadatas) if (m or {}).get("source", "").startswith(prefix) and i not in current]


def _metadata(r: _Ready, thumbnail: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": r.item.source, "thumbnail": thumbnail, "added_at": int(time.time())}
    if r.item.label:
        meta["label"] = r.item.label
    if r.item.caption:
        meta["caption"] = r.item.caption
    return meta
