"""The default index, built in the background on a first start, so a fresh app searches something real.

When it runs: ``IMAGE_SEARCH_DEFAULT_DATASET`` is not ``none``, and either the store holds no collection
at all (a first start) or its marker file says an earlier default build did not finish (a restart after
a crash or kill: the build resumes; ids are content hashes and the builder skips what the store holds).

How a start knows the default build is complete: the marker file ``default-build.json`` in the store
folder. It says ``"state": "building"`` from before the first image is written and ``"complete"`` once
both collections are built. No marker and a store with collections: an operator's store, never touched.

First, before the store is made, ``pipeline.hub.check`` asks the Hub once (a few seconds at most) where the
dataset or the model is named by Hub name: out of reach, what the local cache lacks is said at once, the
dataset and the model together, each with its offline choice (the page and ``/api/status`` show it).

What it builds, through the builder's own code (``open_source`` + ``build_index``, under the store's
write lock): the first ``IMAGE_SEARCH_DEFAULT_LIMIT`` images of the dataset with ``IMAGE_SEARCH_MODEL``
(default ``clip-ViT-B-32``) into the main collection, then the pixel baseline from the same images.
Each collection is handed to the service as soon as it exists, so searches answer on what is indexed so far.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from search.config import Settings
from search.core.atomic import write_atomically
from search.embedders.base import DEFAULT_MODEL, Embedder
from search.embedders.pixels import PIXELS
from search.embedders.precision import SAFE
from search.embedders.registry import load_embedder
from search.errors import ModelError, OfflineError, SearchError, SourceError
from search.index import ImageIndex
from search.pipeline import hub
from search.pipeline.build import BuildOptions, build_index
from search.pipeline.report import BuildReport
from search.sources.base import Source, open_source
from search.stores.base import DEFAULT_COLLECTION, ModelInfo
from search.stores.store import Store

log = logging.getLogger(__name__)
MARKER = "default-build.json"
DATASET_HINT = ("Where the Hugging Face Hub cannot be reached, set IMAGE_SEARCH_DEFAULT_DATASET to a local copy of "
                "the dataset (a folder with data/train-*.parquet) or to a folder of images, or build an index with "
                "`python index_builder.py --dataset SOURCE --store STORE`; then restart the app.")
MODEL_HINT = ("Where the Hugging Face Hub cannot be reached, set IMAGE_SEARCH_MODEL to a local copy of the model (a "
              "folder written by SentenceTransformer.save), or build an index where the model can be loaded with "
              "`python index_builder.py --dataset SOURCE --store STORE --model MODEL`; then restart the app.")
OTHER_HINT = ("The server log has the details; `python index_builder.py --dataset SOURCE --store STORE` builds an "
              "index by hand.")


@dataclass(frozen=True)
class BuildState:
    """Where the default build stands: ``stage`` is starting, images, pixels, done or failed."""

    stage: str = "starting"
    done: int = 0  # images of the current stage read so far (indexed, already held, or skipped)
    total: int | None = None
    seconds: float = 0.0  # since the current stage began
    problem: str | None = None  # why it failed, fit to show anyone
    hint: str = ""  # what the operator can do about it

    @property
    def finished(self) -> bool:
        """Whether the build is over (done or failed)."""
        return self.stage in ("done", "failed")

    @property
    def rate(self) -> float:
        """Images per second in the current stage."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """The current stage's time left at its rate so far, where it can be told."""
        if not self.total or not self.rate:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def message(self) -> str:
        """One line for anyone, API callers included: what is being built and how far it is."""
        if self.stage == "starting":
            return ("The default index is being prepared: loading the dataset and the model (on a first start they "
                    "are downloaded). Searches start as soon as the first images are indexed; try again in a minute.")
        total = f"{self.total:,}" if self.total else "?"
        what = "the pixel baseline" if self.stage == "pixels" else "the index"
        return (f"Building {what}: {self.done:,} of {total} images so far. Searches start as soon as the "
                "first images are indexed; try again in a few seconds.")


def marker_path(store: Path) -> Path:
    """The marker file that records the default build's state."""
    return Path(store) / MARKER


def read_marker(store: Path) -> dict[str, Any] | None:
    """The marker's content, or None where there is none (or it is unreadable)."""
    try:
        data = json.loads(marker_path(store).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(store: Path, **fields: Any) -> None:
    """Write the marker atomically (a kill leaves the old one or the new one, never half of one)."""
    path = marker_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)  # a Chroma server's store folder holds thumbnails only
    write_atomically(path, json.dumps({**fields, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}, indent=2))


def wanted(settings: Settings) -> bool:
    """Whether this start should build (or resume) the default index: see the module's docstring."""
    if not settings.default_dataset:
        return False
    marker = read_marker(settings.store)
    if marker is not None:
        return marker.get("state") != "complete"
    return _empty_store(settings)


def _empty_store(settings: Settings) -> bool:
    if not Store.exists(settings.store, settings.chroma):
        return True
    try:
        return not Store.connect(settings.store, server=settings.chroma).names()
    except SearchError:
        return False  # a store that cannot be opened is the operator's to fix; the page says why


def failed(exc: SearchError | None) -> BuildState:
    """The state of a build that failed with ``exc`` (None: a bug): why, in words for anyone (a dataset or
    model error's text may name server paths), and what to do about it."""
    if isinstance(exc, OfflineError):  # the dataset and the model together, each with its choices
        return BuildState("failed", problem=exc.problem, hint=" ".join(exc.steps))
    if isinstance(exc, SourceError):
        problem = "the default dataset could not be loaded (the Hub may be out of reach, or the dataset gone)"
        return BuildState("failed", problem=problem, hint=DATASET_HINT)
    if isinstance(exc, ModelError):
        return BuildState("failed", problem="the model could not be loaded (the Hub may be out of reach, or no "
                                            "such model)", hint=MODEL_HINT)
    problem = str(exc) if exc else "something went wrong on our side"
    return BuildState("failed", problem=problem, hint=OTHER_HINT)


class DefaultBuild:
    """The default build on its own thread; ``state()`` says how far it is."""

    def __init__(self, settings: Settings, opened: Callable[[], ImageIndex | None], attach: Callable[[ImageIndex], None]):
        """``opened``: the main index the app already serves, if any (a resumed build embeds with its model);
        ``attach``: hands each collection to the app as soon as it exists."""
        self.settings = settings
        self._opened = opened
        self._attach = attach
        self._lock = threading.Lock()
        self._state = BuildState(total=self.settings.default_limit)
        self._started = time.monotonic()
        self._logged = -1  # the last tenth of the way logged
        self.thread = threading.Thread(target=self.run, name="default-build", daemon=True)

    def start(self) -> None:
        """Start building in the background."""
        self.thread.start()

    def state(self) -> BuildState:
        """Where the build stands now."""
        with self._lock:
            state = self._state
        if not state.finished:
            state = replace(state, seconds=time.monotonic() - self._started)
        return state

    def run(self) -> None:
        """Build both collections; a failure is kept for the page and logged with its internals."""
        s = self.settings
        dataset = s.default_dataset or ""
        log.info("building the default index: the first %d images of %s, in the background", s.default_limit, dataset)
        try:
            # Before the store is made or anything downloaded: what the Hub cannot give now, said at once, all of it.
            resumed = self._opened()
            plan = hub.check(dataset, [] if resumed else [s.model or DEFAULT_MODEL], app=True)
            store = Store.connect(s.store, server=s.chroma, create=True)
            with store.write_lock():
                source = open_source(plan.dataset or dataset, limit=s.default_limit, name=plan.name)
                model = resumed.embedder if resumed else self._main_embedder(store)
                name = s.collection or DEFAULT_COLLECTION
                info = dict(state="building", dataset=dataset, limit=s.default_limit, model=model.name,
                            collection=name, pixel_collection=s.pixel_collection)
                write_marker(store.folder, **info)
                images = self._build(store, name, model, "images", source)
                pixels = (self._build(store, s.pixel_collection, load_embedder(PIXELS), "pixels",
                                     open_source(plan.dataset or dataset, limit=s.default_limit, name=plan.name))
                      if s.pixel_collection != name else None)
                write_marker(store.folder, **{**info, "state": "complete", "images": images.total_in_collection,
                                              "pixels": pixels.total_in_collection if pixels else None})
        except SearchError as exc:
            log.warning("the default index was not built: %s", exc.for_operator())
            self._set(failed(exc))
            return
        except Exception:
            log.exception("the default index was not built")
            self._set(failed(None))
            return
        log.info("the default index is complete: %d images, and the pixel baseline", images.total_in_collection)
        self._set(BuildState("done", done=images.total_in_collection, total=images.total_in_collection))

    def _main_embedder(self, store: Store) -> Embedder:
        """The configured model at SAFE precision: the service decides its precisions once it serves it, in the
        background (a resumed build embeds with the model of the index the service opened)."""
        return load_embedder(self.settings.model or DEFAULT_MODEL, None, self.settings.text_model, SAFE,
                             decisions=store.precision_file)

    def _build(self, store: Store, collection: str, embedder: Embedder, stage: str, source: Source) -> BuildReport:
        s = self.settings
        self._started = time.monotonic()
        self._logged = -1
        self._set(BuildState(stage, 0, source.total or s.default_limit))
        made = store.open_or_create(collection, ModelInfo.of(embedder), source.description)
        self._attach(ImageIndex(store, made, embedder))
        report = build_index(source.items, store, collection, embedder,
                             BuildOptions(source=source.description, total=source.total),
                             on_progress=lambda done, total: self._progress(stage, done, total or s.default_limit))
        log.info("default index, %s: %s", stage, report.summary())
        return report

    def _progress(self, stage: str, done: int, total: int | None) -> None:
        self._set(BuildState(stage, done, total))
        tenth = done * 10 // total if total else -1
        if tenth != self._logged:
            self._logged = tenth
            state = self.state()
            log.info("default index, %s: %d of %s images (%.1f images/s)", stage, done, total or "?", state.rate)

    def _set(self, state: BuildState) -> None:
        with self._lock:
            self._state = state
