"""What every store backend speaks: typed records and results, a neutral filter, the collection's
protocol, and the words for a store that went away. No backend is imported here."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from search.core.record import LABEL, TAKEN, CollectionMeta, RecordMeta

DEFAULT_COLLECTION = "images"
MAX_COLLECTION_NAME = 63  # the longest collection name a store holds (Chroma's limit, the tightest backend's)
DISK_FULL = "the server's disk is full; free some space, then try again (nothing stored was lost)"
READ_ONLY = "the store is read-only here: searching works, adding or removing images does not"
NOT_ANSWERING = "the store is not answering; try again in a moment"
NOT_ANSWERING_RETRY_S = 10  # what callers are told to wait (Retry-After): a few breaker periods of the Chroma store
NEARLY_FULL_BYTES = 32 * 1024**2  # free space under which a failed write is put down to a full disk
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
SQLITE_BUSY_S = 10.0  # how long a write to a store's SQLite database waits for another process's


@dataclass(frozen=True)
class Record:
    """One image as stored: its content id, its vector and its metadata (source, label, thumbnail, ...)."""

    id: str
    vector: np.ndarray
    metadata: RecordMeta


@dataclass(frozen=True)
class Neighbour:
    """A stored record near a query: ``similarity`` is the cosine similarity the index measured."""

    id: str
    similarity: float
    metadata: RecordMeta


@dataclass(frozen=True)
class ModelInfo:
    """What a collection records of the model that filled it."""

    model: str  # a Hub name, or a local checkpoint's absolute path
    dimension: int
    normalized: bool  # unit-length vectors: cosine, ip and l2 rank alike

    @classmethod
    def of(cls, embedder: Any) -> ModelInfo:
        """What to record of an embedder (anything with ``name``, ``dimension`` and ``normalized``)."""
        return cls(model_reference(embedder.name), int(embedder.dimension), bool(embedder.normalized))


@dataclass(frozen=True)
class Filter:
    """Which records a search ranks: labels to keep (none: all) and to drop, and a capture-time range.

    A record without a label passes unless ``include`` is set; with a range set, a record without a capture
    time (``taken``, seconds) does not pass. Backends translate it into their own filter language (``admits``
    is the meaning they must keep)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    taken_from: int | None = None  # seconds, inclusive
    taken_until: int | None = None  # seconds, exclusive

    def admits(self, meta: Mapping[str, object]) -> bool:
        """Whether a record with metadata ``meta`` passes."""
        label, taken = meta.get(LABEL), meta.get(TAKEN)
        return self.passes(label if isinstance(label, str) else None, taken if isinstance(taken, int) else None)

    def passes(self, label: str | None, taken: int | None) -> bool:
        """Whether a record with ``label`` (None: none) and capture time ``taken`` (None: unknown) passes."""
        if (self.include and label not in self.include) or label in self.exclude:
            return False
        if self.taken_from is None and self.taken_until is None:
            return True
        return taken is not None and (self.taken_from is None or taken >= self.taken_from) and (
            self.taken_until is None or taken < self.taken_until)


class Collection(Protocol):
    """One collection's vectors and metadata, as every backend serves them."""

    name: str
    metadata: CollectionMeta

    @property
    def key(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def dimension(self) -> int | None: ...
    @property
    def normalized(self) -> bool: ...
    def count(self) -> int: ...
    def held(self, ids: Sequence[str]) -> list[str]: ...
    def all_ids(self) -> list[str]: ...
    def upsert(self, records: Sequence[Record]) -> None: ...
    def nearest(self, vectors: np.ndarray, k: int, where: Filter | None = None, *,
                with_metadata: bool = True) -> list[list[Neighbour]]: ...
    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def metadatas(self, ids: Sequence[str]) -> dict[str, RecordMeta]: ...
    def records(self, ids: Sequence[str]) -> dict[str, Record]: ...
    def scan_metadata(self) -> list[tuple[str, RecordMeta]]: ...
    def scan(self) -> Iterator[Record]: ...
    def scan_vectors(self) -> tuple[list[str], np.ndarray]: ...
    def delete(self, ids: Sequence[str]) -> list[str]: ...
    def check_health(self) -> None: ...
    def check_model(self, model: ModelInfo, *, strict: bool) -> None: ...


def disk_problem(exc: BaseException) -> str | None:
    """DISK_FULL or READ_ONLY where an OSError says the disk is full or cannot be written, else None."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return DISK_FULL
    if isinstance(exc, OSError) and exc.errno in READ_ONLY_ERRNOS:
        return READ_ONLY
    return None


def nearly_full(folder: Path) -> bool:
    """Whether the disk under ``folder`` has next to no room left (for errors that carry no errno)."""
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def writable(folder: Path) -> bool:
    """Whether files can be made in ``folder`` (a read-only mount says no even to root)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError as exc:
        if exc.errno in READ_ONLY_ERRNOS:
            return False
        raise


def model_reference(name: str) -> str:
    """How a model is recorded: a local checkpoint by absolute path, a Hub model by name."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def sqlite_database(path: Path | None) -> sqlite3.Connection:
    """A SQLite database beside the vectors (``path``; in memory for None), shared by a process's threads (callers
    lock around it), in autocommit (callers open their own transactions), WAL, waiting for other processes' writes."""
    db = sqlite3.connect(":memory:" if path is None else str(path), timeout=SQLITE_BUSY_S, check_same_thread=False,
                         isolation_level=None)
    if path is not None:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
    return db


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (the store's size on disk, or a cache's)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # deleted while we walked
                pass
    return total


class Backend(Protocol):
    """Where a store's vectors live (one module per kind: stores/chroma.py is Chroma, embedded or a server).

    ``guard`` turns the backend's own failures into StoreErrors for a person (a store that went away, a
    full or read-only disk, a collection dropped meanwhile); anything else, a bug, passes through.
    """

    server: Any  # the server it talks to, or None where the vectors are in the store folder
    read_only: bool

    @property
    def answering(self) -> bool: ...
    def guard(self) -> AbstractContextManager[None]: ...
    def names(self) -> list[str]: ...
    def open(self, name: str) -> Collection: ...
    def create(self, name: str, model: ModelInfo, source: str) -> None: ...
    def drop(self, name: str) -> None: ...
    def rename(self, name: str, new: str) -> None: ...
