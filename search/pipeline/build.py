"""The local runner: ``build_index`` runs the stages (search/pipeline/stages.py) over a source's items.

identify and prepare run on a prefetch thread one batch ahead of the model, fanning out to a pool of
decoding threads at a lower OS priority; embed and write run on the caller's thread. The run's state
(which images it has seen, the manifest, the report) is ``RunState``'s alone: stages return their outcome
and the runner merges it, with each stage's seconds. The Ray engine (ray_engine.py) keeps its run in a
``RunState`` too, so both say the same of the same source; engines.py chooses between them by name.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, Protocol

from search.core.duplicates import NEAR_DUPLICATE_SIMILARITY
from search.embedders import precision
from search.embedders.base import Embedder
from search.embedders.deferred import Deferred, loaded
from search.embedders.precision import AUTO, BF16, FP32
from search.errors import BuildInterrupted, StoreUnavailableError
from search.pipeline import stages, text_queue
from search.pipeline.prefetch import prefetch
from search.pipeline.report import BuildReport
from search.sources.base import Item
from search.stores import manifests
from search.stores.base import Collection, ModelInfo, model_reference
from search.stores.store import Store

Progress = Callable[[int, "int | None"], Any]  # (items done, items in all where known)
Writing = Callable[[], AbstractContextManager[object]]  # entered around each write to the store


@dataclass(frozen=True)
class ModelSpec:
    """The model as whatever runs a build loads it (``load_embedder``'s arguments besides the options'): it
    travels to a cluster's processes, the weights do not."""

    name: str
    device: str | None = None  # None: CUDA where there are GPUs, else the CPU
    decisions: str | None = None  # the store's file of precision decisions (``Store.precision_file``)


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
    # Text inside the images (Tesseract): "now" reads it before each batch is written (the builder's --ocr);
    # "later" keeps an OCR-sized copy for a background reader (pipeline/text_queue.py: albums); None: no OCR.
    ocr: Literal["now", "later"] | None = None


def build_index(
    items: Iterable[Item],
    store: Store,
    collection: str,
    embedder: Embedder,
    options: BuildOptions = BuildOptions(),
    on_progress: Progress | None = None,
    writing: Writing = nullcontext,
) -> BuildReport:
    """Index ``items`` into ``collection``; bad images are skipped and reported, never fatal.

    A store that goes away mid-build (a dead server, a full disk) is a BuildInterrupted that says a
    re-run resumes: records and thumbnails written so far stay, and the manifest is saved only when
    the build completes. ``writing`` is entered around each write (the collection made, each batch, the
    manifest) and nothing else: where several builds share a store (visitors' albums), each holds the store
    only to write, while reading, decoding and embedding go on outside it.
    """
    run = None
    try:
        run = _Run(store, collection, embedder, options, on_progress, writing)
        return run.run(items)
    except StoreUnavailableError as exc:
        raise BuildInterrupted(exc, run.report.indexed if run else 0) from exc


def deferred_model(store: Store, collection: str, name: str, load: Callable[[], Embedder]) -> Embedder:
    """The model ``name``: loaded by ``load`` once an image needs embedding where ``collection`` already holds its
    vectors (a re-run over what did not change then never loads it), else loaded now."""
    if collection in store.names():
        held = store.open(collection)
        if held.model == model_reference(name) and held.dimension:
            return Deferred(name, held.dimension, held.normalized, load)
    return load()


class Model(Protocol):
    """What a run records of its model (an ``Embedder`` is one; precision and decision are read where it has them)."""

    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def normalized(self) -> bool: ...


class RunState:
    """What one run over a source knows besides its batches, whatever runs the stages: the collection, the
    manifest of earlier builds and this one's, every image id seen (duplicates, sync), the report."""

    def __init__(self, store: Store, collection: str, model: Model, options: BuildOptions,
                 on_progress: Progress | None, writing: Writing = nullcontext):
        self.store = store
        self.model = model
        self.options = options
        self.on_progress = on_progress
        self.writing = writing
        with writing():
            self.collection: Collection = store.open_or_create(collection, ModelInfo.of(model), options.source)
        self.report = BuildReport(str(store.folder), collection, model.name)
        self.manifest_name = options.manifest or collection
        self.known = manifests.load(store.folder, self.manifest_name)
        self.manifest: manifests.Manifest = {}
        self.seen: dict[str, str] = {}  # every image id the source holds now, with its first source: duplicates, sync
        self._precision = None if options.precision == AUTO else options.precision
        self.near = options.near_duplicate_similarity if model.normalized else None
        self.done = 0
        self._lock = threading.Lock()  # an engine's threads merge into one report

    @property
    def precision(self) -> str:
        """What images embed at: the one asked for, else the model's own (a deferred model loads to say it)."""
        if self._precision is None:
            self._precision = str(getattr(loaded(self.model), "precision", FP32))
        return self._precision

    def still_needed(self, found: list[stages.Identified]) -> list[stages.Identified]:
        """What the run must still embed: not an exact duplicate of an image it has seen, nor held by the store.

        Called in the source's order, so the first of two copies is the one kept."""
        fresh = []
        for one in found:
            if one.image_id in self.seen:
                self.report.duplicates += 1
                self.report.exact_duplicates.append({"source": one.item.source, "same_as": self.seen[one.image_id]})
            else:
                self.seen[one.image_id] = one.item.source
                fresh.append(one)
        held = set(self.collection.held([f.image_id for f in fresh]))
        self.report.already_indexed += len(held)
        return [f for f in fresh if f.image_id not in held]

    def merge(self, outcome: stages.Outcome) -> None:
        """Add a stage's outcome to the run's report and manifest."""
        with self._lock:
            self.report.indexed += outcome.indexed
            self.report.skipped += outcome.skipped
            self.report.near_duplicates += outcome.near_duplicates
            self.manifest.update(outcome.manifest)
            for image_id in outcome.failed:
                self.seen.pop(image_id, None)

    def advance(self, items: int) -> None:
        """``items`` more of the source are done (embedded and written, or not needed)."""
        self.done += items
        if self.on_progress:
            self.on_progress(self.done, self.options.total)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time what runs inside as ``name``'s."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.report.timed(name, time.perf_counter() - start)

    def complete(self, started: float) -> BuildReport:
        """Save the manifest (only a complete build does), sync where asked, and finish the report
        (``started``: ``time.perf_counter()`` when the run began)."""
        with self.writing():
            manifests.save(self.store.folder, self.manifest_name, self.manifest)
            if self.options.sync_root is not None:
                with self.stage("sync"):
                    self.report.removed = stages.sync(self.store, self.collection, self.options.sync_root,
                                                      set(self.seen))
        report = self.report
        if self._precision is not None:  # else nothing was embedded, and a deferred model never loaded
            report.precision = self._precision
        # a CLIP embedder's, where auto measured bf16 (a model that embedded nothing measured nothing)
        decision = getattr(loaded(self.model), "decision", None) if report.indexed else None
        bf16 = decision.trial(BF16) if decision else None
        if bf16:
            report.bf16_agreement, report.bf16_speedup = bf16.cosine, bf16.speedup
        if decision and decision.precision == report.precision:  # what the race timed the bare model at
            report.predicted_rate = decision.rate
            embedded = report.stage_seconds["embed"]
            # Three batches at least: a first batch pays the model's warm-up, one batch is one moment
            if report.indexed >= 3 * self.options.batch_size and embedded and \
                    precision.drifted(decision.rate, report.indexed / embedded):
                precision.reopen(self.store.precision_file, self.model.name, getattr(loaded(self.model), "device", ""),
                                 self.options.batch_size)
                report.precision_reopened = True
        report.seconds = round(time.perf_counter() - started, 3)
        report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
        report.total_in_collection = self.collection.count()
        return report


class _Run(RunState):
    """One run of the pipeline over a source on this machine: the stages in order."""

    def __init__(self, store: Store, collection: str, embedder: Embedder, options: BuildOptions,
                 on_progress: Progress | None, writing: Writing):
        super().__init__(store, collection, embedder, options, on_progress, writing)
        self.embedder = embedder

    def run(self, items: Iterable[Item]) -> BuildReport:
        start = time.perf_counter()
        for ready in prefetch(self._produce(items), self.advance):
            if ready:
                with self.stage("embed"):
                    vectors = stages.embed(ready, self.embedder, self.options.batch_size, self.precision)
                with self.writing(), self.stage("write"):  # the wait for the store is no stage's time
                    self.merge(stages.write(self.store, self.collection, ready, vectors, self.near))
                    if self.options.ocr == "later":
                        self.report.texts_queued += text_queue.enqueue(self.store, self.collection.name, ready)
        return self.complete(start)

    def _produce(self, items: Iterable[Item]) -> Generator[tuple[int, list[stages.Ready]], None, None]:
        """(items read, images ready to embed) for each batch of the source, on the prefetch thread."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.workers), thread_name_prefix="decode",
                                  initializer=yield_to_the_model)
        iterator = iter(items)
        try:
            while chunk := list(islice(iterator, self.options.batch_size)):
                with self.stage("identify"):
                    found, outcome = stages.identify(chunk, self.known, pool.map)
                    self.merge(outcome)
                    todo = self.still_needed(found)
                if todo:  # the model's input size: a deferred model loads here, not on a decoding thread
                    self.embedder = loaded(self.embedder)
                with self.stage("decode"):
                    ready, outcome = stages.prepare(todo, self.embedder, pool.map, keep_data=bool(self.options.ocr))
                    self.merge(outcome)
                    if self.options.ocr == "later":  # made here, so that writing the batch only saves them
                        ready = text_queue.copies(ready, pool.map)
                if self.options.ocr == "now":
                    with self.stage("ocr"):
                        ready = stages.read_texts(ready, pool.map)
                yield len(chunk), ready
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def yield_to_the_model() -> None:
    """Lower this decoding thread's priority, so it runs when the model's threads leave a core free.

    On a CPU the model's threads already fill every core; decoding at equal priority slows each of
    its parallel steps down more than the decoding itself costs.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: decode at normal priority
        pass
