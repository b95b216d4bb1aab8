"""A store: a folder (thumbnails, manifests, the write lock) and the backend that holds its vectors.

What belongs to every backend lives here: records and their thumbnails written together, thumbnails a
killed writer left swept, a thumbnail deleted once no collection holds its image, one writer at a time.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from search.config import ChromaServer
from search.errors import StoreError, StoreUnavailableError
from search.stores import swaps, thumbnails
from search.stores.base import DISK_FULL, NEARLY_FULL_BYTES, READ_ONLY, Backend, Collection, ModelInfo, Record, nearly_full
from search.stores.keywords import Keywords
from search.stores.locking import write_lock

log = logging.getLogger(__name__)
PRECISION_FILE = "precision.json"


class Store:
    """A store folder and its backend."""

    def __init__(self, folder: Path, backend: Backend):
        self.folder = folder
        self.backend = backend
        self._keywords: Keywords | None = None
        self._keywords_lock = threading.Lock()

    @classmethod
    def connect(cls, folder: str | Path, *, server: ChromaServer | None = None, create: bool = False) -> Store:
        """Open the store at ``folder``, its vectors on ``server`` where one is given; ``create`` makes a
        missing one. A StoreError says what is wrong (no index yet, damaged, unreachable, full disk)."""
        from search.stores.chroma import ChromaBackend

        store = cls(Path(folder), ChromaBackend.connect(Path(folder), server, create))
        if not store.read_only and any((store.folder / swaps.FOLDER).glob("*.json")):
            # Taking the lock finishes a switch a kill interrupted; a writer at work now finishes it itself.
            with contextlib.suppress(StoreError), store.write_lock():
                pass
        return store

    @staticmethod
    def exists(folder: str | Path, server: ChromaServer | None = None) -> bool:
        """Whether there is a store to open at ``folder`` (on ``server``), without making one."""
        from search.stores.chroma import ChromaBackend

        return ChromaBackend.exists(Path(folder), server)

    @property
    def precision_file(self) -> str:
        """Where the precision decisions made for this store's models on this machine are remembered."""
        return str(self.folder / PRECISION_FILE)

    @property
    def keywords(self) -> Keywords:
        """The keyword index of this store's collections (in memory where the store is read-only)."""
        with self._keywords_lock:
            if self._keywords is None:
                with self.guard():
                    self._keywords = Keywords(None if self.read_only else self.folder)
            return self._keywords

    def keywords_of(self, collection: Collection) -> Keywords:
        """The keyword index, agreeing with ``collection`` (rebuilt from its records' metadata where a kill or
        a switch left them apart: their counts differ)."""
        keywords = self.keywords
        with self.guard():
            if keywords.count(collection.name) != collection.count():
                keywords.reconcile(collection.name, collection.scan_metadata())
        return keywords

    @property
    def server(self) -> ChromaServer | None:
        """The server holding the vectors, or None where they are in the folder."""
        return self.backend.server

    @property
    def read_only(self) -> bool:
        """Whether the store can only be searched (its disk is read-only)."""
        return self.backend.read_only

    @property
    def answering(self) -> bool:
        """False while the backend does not answer (calls then fail at once)."""
        return self.backend.answering

    def guard(self) -> AbstractContextManager[None]:
        """Run calls that touch the store, turning "the store went away" into a StoreError."""
        return self.backend.guard()

    def names(self) -> list[str]:
        """The collections' names, sorted."""
        return self.backend.names()

    def open(self, name: str) -> Collection:
        """An existing collection, or a StoreError."""
        return self.backend.open(name)

    def open_or_create(self, name: str, model: ModelInfo, source: str = "") -> Collection:
        """The collection ``name`` for vectors of ``model``: created if missing, else checked to match it."""
        self.backend.create(name, model, source)
        collection = self.open(name)
        collection.check_model(model, strict=True)
        return collection

    def drop(self, name: str) -> None:
        """Delete a whole collection and its words (its thumbnails are the caller's business: see ``remove``)."""
        self.backend.drop(name)
        with self.guard():
            self.keywords.drop(name)

    def switch(self, name: str) -> None:
        """Make the re-embedded ``name`` (NAME.next) the collection ``name``, keeping the old one for ``rollback``."""
        with self.write_lock():
            swaps.switch(self.backend, self.folder, name)
            self._forget_words(name)

    def rollback(self, name: str) -> None:
        """Make the collection a switch replaced ``name`` again (the newer one is kept as NAME.next)."""
        with self.write_lock():
            swaps.rollback(self.backend, self.folder, name)
            self._forget_words(name)

    def add(self, collection: Collection, records: Sequence[Record], thumbs: Mapping[str, bytes]) -> None:
        """Write records with their thumbnails (``thumbs``: JPEG bytes by id) and their words, so that they
        appear together.

        Thumbnails go first, so a record never lacks its own; where the records cannot be written, the
        thumbnails this call made go again. What a kill -9 leaves between the two, ``sweep`` removes; words
        a kill kept from their records ``keywords_of`` writes again.
        """
        if records and nearly_full(self.folder):
            # Refused before any write: a database that runs out of room inside a transaction (Chroma's SQLite)
            # may be left unable to take the next one, while thumbnails and words that could not land are
            # cleaned up; with next to no room left, nothing is started.
            raise StoreUnavailableError(DISK_FULL, internals=f"store at {self.folder}: under "
                                        f"{NEARLY_FULL_BYTES // 1024**2} MB free")
        made: list[str] = []
        try:
            with self.guard():  # a full disk here is the store going away too
                made = thumbnails.write_many(self.folder, thumbs)
            collection.upsert(records)
            with self.guard():
                self.keywords.add(collection.name, [(r.id, r.metadata) for r in records])
        except BaseException:
            # A backend may keep part of a write it failed (Chroma logs it, then fails to apply it): the records
            # of the images this call brought go too, as far as the store still lets them; ``sweep`` does the rest.
            with contextlib.suppress(Exception):
                collection.delete(made)
            with contextlib.suppress(Exception):  # a full disk may refuse this too; ``sweep`` does it then
                thumbnails.delete_many(self.folder, made)
            raise

    def sweep(self) -> int:
        """Make records and thumbnails agree again after a writer was killed or its disk filled: thumbnails no
        record names go, and records whose thumbnail is missing (a write the store kept though it failed, and
        reported as not done) go too. Returns how many of both went.

        Only where this process may write the embedded store now: the write lock keeps other writers out
        (a server's other writers cannot be seen, so nothing is swept there).
        """
        if self.server or self.read_only:
            return 0
        with self.write_lock():
            thumbnails.repair(self.folder)
            held = thumbnails.ids(self.folder)
            named: set[str | None] = set()  # the images whose thumbnails records name
            broken = 0
            for name in self.names():
                collection = self.open(name)
                thumbs = {i: thumbnails.id_of(str(m["thumbnail"])) for i, m in collection.scan_metadata()
                          if m.get("thumbnail")}
                lost = {i for i, thumb in thumbs.items() if thumb not in held}
                broken += len(collection.delete(sorted(lost)))
                named.update(thumb for i, thumb in thumbs.items() if i not in lost)
            unnamed = held - named
            thumbnails.delete_many(self.folder, unnamed)
            files = len(unnamed)
        if files or broken:
            log.info("swept %d thumbnails without a record and %d records without a thumbnail from %s", files, broken,
                     self.folder)
        return files + broken

    def remove(self, collection: Collection, ids: Sequence[str]) -> list[str]:
        """Delete ``ids`` from ``collection``; a thumbnail goes too once no collection still holds its image."""
        gone = collection.delete(ids)
        if not gone:
            return []
        with self.guard():
            self.keywords.delete(collection.name, gone)
        still_used: set[str] = set()
        for name in self.names():
            if name != collection.name:
                still_used.update(self.open(name).held(gone))
        thumbnails.delete_many(self.folder, set(gone) - still_used)
        return gone

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the embedded store's write lock, or fail at once: two processes must not write one folder."""
        if self.read_only:
            raise StoreError(READ_ONLY, internals=f"{self.folder} is not writable; searches read a snapshot")
        if self.server:  # the server serialises writers itself
            self._finish_swaps()
            yield
            return
        with write_lock(self.folder):
            self._finish_swaps()
            yield

    def _forget_words(self, name: str) -> None:
        """Drop the words of a switch's collections: each name now holds another's records (rebuilt on use)."""
        with self.guard():
            for each in (name, swaps.next_name(name), swaps.previous_name(name)):
                self.keywords.drop(each)

    def _finish_swaps(self) -> None:
        for name in swaps.finish(self.backend, self.folder):
            log.warning("finished switching %r, which a stopped process had begun", name)
            self._forget_words(name)
