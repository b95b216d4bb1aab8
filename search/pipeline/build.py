"""The indexing pipeline, as named stages: identify, decode, embed, write, sync.

identify and decode run on worker threads one batch ahead of the model (``prefetch``), at a lower
OS priority; embed and write run on the caller's thread. Each stage's seconds go into the report.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

from PIL import Image

from search.core.duplicates import NEAR_DUPLICATE_SIMILARITY, find_near_duplicates
from search.core.ids import content_id
from search.embedders.models import Embedder
from search.embedders.precision import AUTO, BF16, FP32
from search.errors import BuildInterrupted, InvalidImageError, StoreUnavailableError
from search.images.decode import decode_image, make_thumbnail
from search.pipeline.prefetch import prefetch
from search.pipeline.report import BuildReport
from search.sources.base import Item
from search.stores import manifests, thumbnails
from search.stores.base import Collection, ModelInfo, Record
from search.stores.store import Store

KEEP_BYTES = 4 * 1024 * 1024  # per image, between hashing and decoding (32 images: 128 MB at most)
Progress = Callable[[int, "int | None"], Any]  # (items done, items in all where known)


@dataclass(frozen=True)
class BuildOptions:
    """How to build: every knob of ``build_index`` besides what to index and where."""

    source: str = ""  # a description of the source, recorded in a new collection
    batch_size: int = 32
    precision: str = "auto"  # auto: the embedder's own (decided when it was loaded); fp32, bf16 or int8 override it
    workers: int = 2  # threads reading and decoding
    total: int | None = None  # items in the source, where known (for progress)
    sync_root: str | None = None  # remove records from under this root that the source no longer holds
    near_duplicate_similarity: float | None = NEAR_DUPLICATE_SIMILARITY
    manifest: str | None = None  # the manifest's name (default: the collection's)


@dataclass
class _Ready:
    """An image past decoding: what the model and the writer need."""

    item: Item
    image_id: str
    image: Image.Image
    thumbnail: bytes


def build_index(
    items: Iterable[Item],
    store: Store,
    collection: str,
    embedder: Embedder,
    options: BuildOptions = BuildOptions(),
    on_progress: Progress | None = None,
) -> BuildReport:
    """Index ``items`` into ``collection``; bad images are skipped and reported, never fatal.

    A store that goes away mid-build (a dead server, a full disk) is a BuildInterrupted that says a
    re-run resumes: records and thumbnails written so far stay, and the manifest is saved only when
    the build completes.
    """
    build = None
    try:
        build = _Build(store, collection, embedder, options, on_progress)
        return build.run(items)
    except StoreUnavailableError as exc:
        raise BuildInterrupted(exc, build.report.indexed if build else 0) from exc


class _Build:
    """One run of the pipeline; its stages are methods named for them."""

    def __init__(self, store: Store, collection: str, embedder: Embedder, options: BuildOptions,
                 on_progress: Progress | None):
        self.store = store
        self.embedder = embedder
        self.options = options
        self.on_progress = on_progress
        self.collection: Collection = store.open_or_create(collection, ModelInfo.of(embedder), options.source)
        self.report = BuildReport(str(store.folder), collection, embedder.name)
        self.manifest_name = options.manifest or collection
        self.known = manifests.load(store.folder, self.manifest_name)
        self.manifest: manifests.Manifest = {}
        self.current_ids: set[str] = set()  # every image id the source holds now, for sync
        self.precision = getattr(embedder, "precision", FP32) if options.precision == AUTO else options.precision
        self.done = 0

    def run(self, items: Iterable[Item]) -> BuildReport:
        start = time.perf_counter()
        for batch in prefetch(self._prepared(items), self._advance):
            if batch:
                self._write(batch, self._embed(batch))
        manifests.save(self.store.folder, self.manifest_name, self.manifest)
        if self.options.sync_root is not None:
            self._sync(self.options.sync_root)
        report = self.report
        report.precision = self.precision
        decision = getattr(self.embedder, "decision", None)  # a CLIP embedder's, where auto measured bf16
        bf16 = decision.trial(BF16) if decision else None
        if bf16:
            report.bf16_agreement, report.bf16_speedup = bf16.cosine, bf16.speedup
        report.seconds = round(time.perf_counter() - start, 3)
        report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
        report.total_in_collection = self.collection.count()
        return report

    def _advance(self, items: int) -> None:
        self.done += items
        if self.on_progress:
            self.on_progress(self.done, self.options.total)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.report.timed(name, time.perf_counter() - start)

    # The producer side: on the prefetch thread, fanning out to the decode pool.

    def _prepared(self, items: Iterable[Item]) -> Generator[tuple[int, list[_Ready]], None, None]:
        """(items read, images ready to embed) for each batch of the source."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.workers), thread_name_prefix="decode",
                                  initializer=_yield_to_the_model)
        iterator = iter(items)
        try:
            while chunk := list(islice(iterator, self.options.batch_size)):
                with self._stage("identify"):
                    todo = self._identify(chunk, pool)
                with self._stage("decode"):
                    ready = self._decode(todo, pool)
                yield len(chunk), ready
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _identify(self, chunk: list[Item], pool: ThreadPoolExecutor) -> list[tuple[Item, str, bytes | None]]:
        """Hash each item (or trust the manifest), drop exact duplicates and what the store holds."""
        fresh: list[tuple[Item, str, bytes | None]] = []
        for item, result in zip(chunk, pool.map(self._identify_one, chunk)):
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
        stored = set(self.collection.held([f[1] for f in fresh]))
        self.report.already_indexed += sum(1 for f in fresh if f[1] in stored)
        return [f for f in fresh if f[1] not in stored]

    def _identify_one(self, item: Item) -> tuple[str, bytes | None] | InvalidImageError:
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

    def _decode(self, todo: list[tuple[Item, str, bytes | None]], pool: ThreadPoolExecutor) -> list[_Ready]:
        """Decode, scale for the model and make the thumbnail, on the pool; bad images are skipped."""
        ready = []
        for (item, image_id, _), result in zip(todo, pool.map(self._decode_one, todo)):
            if isinstance(result, InvalidImageError):
                self.current_ids.discard(image_id)
                self._skip(item, result)
            else:
                ready.append(_Ready(item, image_id, *result))
        return ready

    def _decode_one(self, todo: tuple[Item, str, bytes | None]) -> tuple[Image.Image, bytes] | InvalidImageError:
        item, _, data = todo
        try:
            img = decode_image(data if data is not None else item.read(), min_edges=self.embedder.min_edges)
            return self.embedder.prepare(img), make_thumbnail(img)
        except InvalidImageError as exc:
            return exc

    def _skip(self, item: Item, error: InvalidImageError) -> None:
        self.report.skipped.append({"source": item.source, "reason": error.reason, "detail": error.detail})

    # The consumer side: on the caller's thread.

    def _embed(self, batch: list[_Ready]) -> Any:
        with self._stage("embed"):
            return self.embedder.embed_images([r.image for r in batch], batch_size=self.options.batch_size,
                                              precision=self.precision)

    def _write(self, batch: list[_Ready], vectors: Any) -> None:
        with self._stage("write"):
            similarity = self.options.near_duplicate_similarity
            if similarity and self.embedder.normalized:
                ids, sources = [r.image_id for r in batch], [r.item.source for r in batch]
                self.report.near_duplicates += find_near_duplicates(self.collection, ids, sources, vectors, similarity)
            records = [Record(r.image_id, vector, _metadata(r, thumbnails.relative(r.image_id)))
                       for r, vector in zip(batch, vectors)]
            self.store.add(self.collection, records, {r.image_id: r.thumbnail for r in batch})
            self.report.indexed += len(batch)

    def _sync(self, root: str) -> None:
        """Remove the records from under ``root`` whose image the source no longer holds."""
        with self._stage("sync"):
            prefix = root.rstrip("/") + "/"
            stale = [i for i, m in self.collection.scan_metadata()
                     if str(m.get("source", "")).startswith(prefix) and i not in self.current_ids]
            self.report.removed = len(self.store.remove(self.collection, stale))


def _yield_to_the_model() -> None:
    """Lower this decoding thread's priority, so it runs when the model's threads leave a core free.

    On a CPU the model's threads already fill every core; decoding at equal priority slows each of
    its parallel steps down more than the decoding itself costs.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: decode at normal priority
        pass


def _metadata(r: _Ready, thumbnail: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": r.item.source, "thumbnail": thumbnail, "added_at": int(time.time())}
    if r.item.label:
        meta["label"] = r.item.label
    if r.item.caption:
        meta["caption"] = r.item.caption
    return meta
