"""The one module that speaks to Chroma: the store backend for an embedded database or a Chroma server.

``ChromaBackend`` holds the client (embedded in the store folder, or a server's, every call of which has a
deadline) and ``ChromaCollection`` one model's vectors with their metadata. Every Chroma failure that
means the store went away (a dead or hung server, a full or read-only disk, a collection dropped
meanwhile) comes out of ``guard`` as a StoreError for a person; nothing else in the project imports
chromadb, reads its dicts or builds its ``where`` filters. What the metadata holds, and its schema version, is
``core.record``'s: every record and collection read back passes through its ``read``.
"""
from __future__ import annotations

import atexit
import errno
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from search.config import ChromaServer
from search.core.record import (
    CHROMADB_VERSION,
    DIMENSION,
    FORMAT,
    LABEL,
    MODEL,
    NORMALIZED,
    STORE_FORMAT,
    TAKEN,
    CollectionMeta,
    RecordMeta,
    read,
    read_collection,
)
from search.errors import StoreError, StoreUnavailableError
from search.stores import thumbnails
from search.stores.base import (
    DISK_FULL,
    MAX_COLLECTION_NAME,
    NOT_ANSWERING,
    NOT_ANSWERING_RETRY_S,
    READ_ONLY,
    Filter,
    ModelInfo,
    Neighbour,
    Record,
    disk_problem,
    nearly_full,
    writable,
)
from search.stores.locking import LOCK_FILE

log = logging.getLogger(__name__)
DATABASE = "chroma.sqlite3"
PAGE = 5000  # records per read when a whole collection is scanned
# ef_search is read when a process first loads the index, so it is fixed at creation. On 100k
# clustered vectors (bench/run.py) 128 gave recall@10 0.87-0.95, 384 gives >= 0.99 at ~3.6 ms.
# M 16 and ef_construction 100 (bench/scale.py writes, 100k records in 2,000 clusters, both built batch by batch
# in turn): 2.9x the build rate of M 32 / 200 and half the query time, at the same recall@10 (1.0 image-like,
# 0.99 text-like queries); Chroma's add is nearly all of a build's write time. Each collection keeps the settings
# it was made with.
HNSW = {"space": "cosine", "ef_construction": 100, "ef_search": 384, "max_neighbors": 16}
# SQLite's result codes as Chroma's errors quote them: SQLITE_FULL and SQLITE_READONLY.
_SQLITE_FULL, _SQLITE_READ_ONLY = "(code: 13)", "(code: 8)"
BREAKER_S = 5.0  # after a call timed out, calls fail at once for this long instead of each waiting again


@dataclass
class ChromaCollection:
    """One Chroma collection's vectors and metadata (``stores.base.Collection``)."""

    name: str
    metadata: CollectionMeta
    _chroma: Any = field(repr=False)
    _store: ChromaBackend = field(repr=False)

    @property
    def key(self) -> str:
        """The collection's own identity: another one under its name (a switch, a rollback) has another key."""
        return str(self._chroma.id)

    @property
    def model(self) -> str | None:
        """The model recorded when the collection was made."""
        return self.metadata.get(MODEL)

    @property
    def dimension(self) -> int | None:
        """The vectors' dimension, as recorded."""
        return self.metadata.get(DIMENSION)

    @property
    def normalized(self) -> bool:
        """Whether the vectors have unit length."""
        return self.metadata.get(NORMALIZED, False)

    def count(self) -> int:
        """How many records the collection holds."""
        with self._store.guard():
            return int(self._chroma.count())

    def held(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that the collection holds."""
        if not ids:
            return []
        with self._store.guard():
            return list(self._chroma.get(ids=list(ids), include=[])["ids"])

    def all_ids(self) -> list[str]:
        """Every record's id."""
        return self._scan(None)[0]

    def upsert(self, records: Sequence[Record]) -> None:
        """Write records (a record with a stored id replaces it), in batches the store accepts."""
        step = self._store.max_batch
        for i in range(0, len(records), step):
            part = records[i : i + step]
            with self._store.guard():
                self._chroma.upsert(ids=[r.id for r in part], embeddings=np.stack([r.vector for r in part]),
                                    metadatas=[r.metadata for r in part])

    def nearest(self, vectors: np.ndarray, k: int, where: Filter | None = None, *,
                with_metadata: bool = True) -> list[list[Neighbour]]:
        """For each query vector, up to ``k`` stored records by HNSW cosine, most similar first, among those
        ``where`` admits (filtered inside the search, so k still come back where that many pass). Without
        ``with_metadata`` their metadata is left empty: Chroma takes 5x longer to answer 1,000 with it."""
        if not len(vectors):
            return []
        include = ["distances", *(["metadatas"] if with_metadata else [])]
        with self._store.guard():
            found = self._chroma.query(query_embeddings=np.asarray(vectors, np.float32), n_results=k,
                                       where=_where(where), include=include)
        metas = found["metadatas"] if with_metadata else [[{}] * len(ids) for ids in found["ids"]]
        return [[Neighbour(i, 1.0 - float(d), read(m)) for i, d, m in zip(ids, distances, row)]
                for ids, distances, row in zip(found["ids"], found["distances"], metas)]

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``ids`` (those held)."""
        if not ids:
            return {}
        with self._store.guard():
            got = self._chroma.get(ids=list(ids), include=["embeddings"])
        return {i: np.asarray(v, np.float32) for i, v in zip(got["ids"], got["embeddings"])}

    def records(self, ids: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``ids`` (those held), vectors and metadata in one read."""
        if not ids:
            return {}
        with self._store.guard():
            got = self._chroma.get(ids=list(ids), include=["embeddings", "metadatas"])
        return {i: Record(i, np.asarray(v, np.float32), read(m))
                for i, v, m in zip(got["ids"], got["embeddings"], got["metadatas"])}

    def metadatas(self, ids: Sequence[str]) -> dict[str, RecordMeta]:
        """The stored metadata of ``ids`` (those held)."""
        if not ids:
            return {}
        with self._store.guard():
            got = self._chroma.get(ids=list(ids), include=["metadatas"])
        return {i: read(m) for i, m in zip(got["ids"], got["metadatas"])}

    def scan_metadata(self) -> list[tuple[str, RecordMeta]]:
        """Every record's id and metadata, read in pages the store can serve."""
        ids, values = self._scan("metadatas")
        return [(i, read(m)) for i, m in zip(ids, values)]

    def scan(self) -> Iterator[Record]:
        """Every record, vectors and metadata, read a page at a time as they are used."""
        for offset in range(0, self.count(), PAGE):
            with self._store.guard():
                got = self._chroma.get(include=["embeddings", "metadatas"], limit=PAGE, offset=offset)
            yield from (Record(i, np.asarray(v, np.float32), read(m))
                        for i, v, m in zip(got["ids"], got["embeddings"], got["metadatas"]))

    def scan_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every record's id and vector, as one matrix (rows in the order of the ids)."""
        ids, values = self._scan("embeddings")
        matrix = np.asarray(values, dtype=np.float32).reshape(len(ids), self.dimension or (len(values[0]) if values else 0))
        return ids, matrix

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete the records held among ``ids``; return those deleted."""
        held = self.held(ids)
        if held:
            with self._store.guard():
                self._chroma.delete(ids=held)
        return held

    def check_health(self) -> None:
        """Touch the vector index so damage shows now, as a StoreError, not mid-query."""
        import chromadb

        built_with = self.metadata.get(CHROMADB_VERSION, "")
        if self.metadata.get(FORMAT, STORE_FORMAT) > STORE_FORMAT or _major(built_with) > _major(chromadb.__version__):
            raise StoreError(
                f"the store was written by a newer version (chromadb {built_with}, store format "
                f"{self.metadata.get(FORMAT)}) than this one (chromadb {chromadb.__version__}, format {STORE_FORMAT}); "
                "upgrade, or rebuild the store",
                internals=str(self._store.folder),
            )
        try:
            count = self._chroma.count()
            if count and self.dimension:
                probe = np.zeros((1, self.dimension), np.float32)
                probe[0, 0] = 1.0
                self._chroma.query(query_embeddings=probe, n_results=1, include=["distances"])
        except Exception as exc:
            raise StoreError(
                "the store is damaged; rebuild it: python index_builder.py --dataset SOURCE --store NEW_DIR",
                internals=f"{self._store.folder}: {type(exc).__name__}: {str(exc)[:200]}",
            ) from exc

    def check_model(self, model: ModelInfo, *, strict: bool) -> None:
        """Refuse a model of another dimension; with ``strict``, any model other than the recorded one."""
        if self.dimension is not None and self.dimension != model.dimension:
            raise StoreError(
                f"the collection holds {self.dimension}-d vectors, but the model makes {model.dimension}-d vectors",
                internals=f"collection {self.name!r} from {self.model!r}, model {model.model!r}",
            )
        if strict and self.model and self.model != model.model:
            raise StoreError(
                "the collection was built with another model; add to it with the model it records, "
                "or choose another --collection",
                internals=f"collection {self.name!r} was built with --model {self.model}, not {model.model}",
            )

    def _scan(self, field_name: str | None) -> tuple[list[str], list[Any]]:
        ids: list[str] = []
        values: list[Any] = []
        total = self.count()
        for offset in range(0, total, PAGE):
            with self._store.guard():
                got = self._chroma.get(include=[field_name] if field_name else [], limit=PAGE, offset=offset)
            ids.extend(got["ids"])
            if field_name:
                values.extend(got[field_name])
        return ids, values


class ChromaBackend:
    """A Chroma client (embedded in the store folder, or a server's) as a store backend."""

    def __init__(self, folder: Path, client: Any, server: ChromaServer | None, *, read_only: bool = False):
        self.folder = folder
        self.server = server
        self.read_only = read_only  # a store on a read-only disk, searched from a snapshot of its database
        self._client = client
        self._max_batch: int | None = None
        self._down_until = 0.0  # monotonic time until which a server that timed out is not called again

    @classmethod
    def connect(cls, folder: Path, server: ChromaServer | None, create: bool) -> ChromaBackend:
        """The backend of the store at ``folder``; the vectors live on ``server`` if given, else in the folder."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        if server:
            return cls(folder, _server_client(server, settings), server)
        if not create and not cls.exists(folder, None):
            raise StoreError(
                "there is no index yet. Build one with: python index_builder.py --dataset SOURCE --store STORE",
                internals=f"no {DATABASE} in {folder}",
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not writable(folder):
                return cls(folder, chromadb.PersistentClient(path=_snapshot(folder), settings=settings), None,
                           read_only=True)
            client = chromadb.PersistentClient(path=str(folder), settings=settings)
        except Exception as exc:
            kind = _disk_problem(exc) or (DISK_FULL if nearly_full(folder) else None)
            if kind is not None:
                raise StoreUnavailableError(kind, internals=f"{folder}: {type(exc).__name__}: {exc}") from exc
            raise StoreError(
                "the store cannot be opened; it may be damaged or from another chromadb version: "
                "rebuild it with index_builder.py into a new --store",
                internals=f"{folder}: {type(exc).__name__}: {exc}",
            ) from exc
        return cls(folder, client, None)

    @staticmethod
    def exists(folder: Path, server: ChromaServer | None) -> bool:
        """Whether a store is there: on a server, always (its collections say the rest); else the database file."""
        return server is not None or (folder / DATABASE).exists()

    @property
    def answering(self) -> bool:
        """False while a server call timed out lately (calls then fail at once, see ``guard``)."""
        return not (self.server and time.monotonic() < self._down_until)

    @property
    def max_batch(self) -> int:
        """The most records one write may carry (it depends on the Chroma build)."""
        if self._max_batch is None:
            with self.guard():
                self._max_batch = max(1, int(self._client.get_max_batch_size()))
        return self._max_batch

    def names(self) -> list[str]:
        """The collections' names, sorted."""
        with self.guard():
            return sorted(c.name for c in self._client.list_collections())

    def open(self, name: str) -> ChromaCollection:
        """An existing collection, or a StoreError."""
        from chromadb.errors import NotFoundError

        _check_name(name)
        with self.guard():
            try:
                chroma = self._client.get_collection(name, embedding_function=None)
            except NotFoundError:
                raise StoreError(f"no collection {name!r} in the store",
                                 internals=f"collections: {', '.join(self.names()) or 'none'}") from None
        return ChromaCollection(name, read_collection(chroma.metadata), chroma, self)

    def create(self, name: str, model: ModelInfo, source: str) -> None:
        """Make the collection ``name`` for vectors of ``model``, unless it is there already."""
        import chromadb

        _check_name(name)
        metadata = CollectionMeta(model=model.model, dimension=model.dimension, normalized=model.normalized,
                                  source=source or "unknown", built_at=datetime.now(UTC).isoformat(timespec="seconds"),
                                  chromadb_version=chromadb.__version__, format=STORE_FORMAT)
        with self.guard():
            try:
                self._client.create_collection(name, configuration={"hnsw": HNSW}, metadata=metadata,
                                               embedding_function=None)
            except Exception as exc:
                if name not in {c.name for c in self._client.list_collections()}:
                    raise self._lost(exc) or StoreError("a new collection could not be made in the store",
                                                        internals=f"{name!r}: {type(exc).__name__}: {exc}") from exc
                # It exists already (made earlier, or by another builder a moment ago): use it.

    def drop(self, name: str) -> None:
        """Delete a whole collection."""
        with self.guard():
            self._client.delete_collection(name)

    def rename(self, name: str, new: str) -> None:
        """Give the collection ``name`` the name ``new`` (one write: it has one name or the other)."""
        _check_name(new)
        with self.guard():
            self._client.get_collection(name, embedding_function=None).modify(name=new)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run Chroma calls (and writes to the store folder), turning "the store went away" into a StoreError;
        anything else (bugs) passes.

        A server call that timed out opens a short breaker: calls meanwhile fail at once, so a hung server
        costs each visitor one answer within the deadline, not a queue of waits.
        """
        if not self.answering:
            raise StoreUnavailableError(NOT_ANSWERING, retry_after=NOT_ANSWERING_RETRY_S,
                                        internals=f"Chroma server at {self.server}: timed out lately")
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            error = self._lost(exc)
            if error is None:
                raise
            raise error from exc

    def _lost(self, exc: Exception) -> StoreError | None:
        """What ``exc`` means for the person waiting, where it means the store went away; None for a bug."""
        import httpx
        from chromadb.errors import InternalError, NotFoundError

        cause: BaseException = exc
        if type(exc) is Exception and isinstance(exc.__context__, httpx.HTTPStatusError):
            cause = exc.__context__  # chromadb's wrapping of an error answer that is not its own JSON
        detail = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"
        if isinstance(cause, (httpx.TimeoutException, TimeoutError)) and self.server:
            self._down_until = time.monotonic() + BREAKER_S
            return StoreUnavailableError(NOT_ANSWERING, retry_after=NOT_ANSWERING_RETRY_S,
                                         internals=f"Chroma server at {self.server}: {detail}")
        lost_server = isinstance(cause, (httpx.TransportError, ConnectionError, TimeoutError)) or (
            isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code >= 500
        )
        if lost_server or (isinstance(cause, InternalError) and self.server):
            return StoreUnavailableError("the Chroma server stopped answering",
                                         internals=f"Chroma server at {self.server}: {detail}")
        if isinstance(cause, NotFoundError):  # dropped while in use (an album deleted during its search)
            return StoreError("that collection is no longer in the store", internals=detail)
        kind = _disk_problem(cause) or (DISK_FULL if isinstance(cause, InternalError) and nearly_full(self.folder)
                                        else None)
        if kind == READ_ONLY:
            return StoreError(READ_ONLY, internals=f"store at {self.folder}: {detail}")
        if kind is not None:
            return StoreUnavailableError(kind, internals=f"store at {self.folder}: {detail}")
        if isinstance(cause, InternalError) or (isinstance(cause, OSError) and cause.errno == errno.EIO):
            return StoreUnavailableError("the store stopped working", internals=f"store at {self.folder}: {detail}")
        return None




def _where(where: Filter | None) -> dict[str, Any] | None:
    """A filter as Chroma's ``where`` on the records' label and capture time."""
    if where is None:
        return None
    clauses: list[dict[str, Any]] = ([{LABEL: {"$in": list(where.include)}}] if where.include else []) + (
        [{LABEL: {"$nin": list(where.exclude)}}] if where.exclude else [])
    if where.taken_from is not None:
        clauses.append({TAKEN: {"$gte": where.taken_from}})
    if where.taken_until is not None:
        clauses.append({TAKEN: {"$lt": where.taken_until}})
    return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _disk_problem(exc: BaseException) -> str | None:
    """DISK_FULL or READ_ONLY where ``exc`` (an OSError, or Chroma's SQLite error) says so, else None."""
    if _SQLITE_FULL in str(exc):
        return DISK_FULL
    if _SQLITE_READ_ONLY in str(exc):
        return READ_ONLY
    return disk_problem(exc)


def _snapshot(folder: Path) -> str:
    """A private, writable copy of a read-only store's database, for Chroma, which cannot open one read-only:
    one per store and process (every later open reuses it), deleted when the process ends.

    Only Chroma's files are copied (the database and its index folders); thumbnails are read in place.
    """
    with _SNAPSHOT_LOCK:
        if folder.resolve() not in _SNAPSHOTS:
            copy = Path(tempfile.mkdtemp(prefix="image-search-snapshot-"))
            atexit.register(shutil.rmtree, copy, ignore_errors=True)
            for entry in folder.iterdir():
                if entry.name not in (thumbnails.FOLDER, LOCK_FILE):
                    (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, copy / entry.name)
            log.warning("the store at %s is read-only: searching a snapshot of its database in %s", folder, copy)
            _SNAPSHOTS[folder.resolve()] = copy
        return str(_SNAPSHOTS[folder.resolve()])


_SNAPSHOTS: dict[Path, Path] = {}
_SNAPSHOT_LOCK = threading.Lock()


def _server_client(server: ChromaServer, settings: Any) -> Any:
    """A client of the Chroma server, every call of which has a deadline (``server.timeout``)."""
    import chromadb
    import httpx

    headers = {"x-chroma-token": server.token.get_secret_value()} if server.token else None
    timeout = httpx.Timeout(server.timeout, connect=min(server.timeout, 5.0))
    try:
        # chromadb's own client has no deadline and calls the server while it is made: ask first, briefly.
        httpx.get(f"http://{server.host}:{server.port}/api/v2/heartbeat", timeout=timeout, headers=headers).raise_for_status()
        client = chromadb.HttpClient(host=server.host, port=server.port, headers=headers, settings=settings)
        client._server._session.timeout = timeout  # type: ignore[attr-defined]  # the one place it can be set (chromadb 1.x)
        client.heartbeat()
    except Exception as exc:
        raise StoreError("cannot reach the Chroma server; check that it is running, then try again",
                         internals=f"{server}: {type(exc).__name__}: {exc}") from exc
    return client


def _check_name(name: str) -> None:
    if not 3 <= len(name) <= MAX_COLLECTION_NAME:
        raise StoreError(f"collection name {name!r} must have 3 to {MAX_COLLECTION_NAME} characters")


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0
