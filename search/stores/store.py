"""A store: a folder (thumbnails, the catalogue, manifests, the write lock) and the backend that holds its vectors.

What belongs to every backend lives here: records, their thumbnails, their words and their catalogue rows
written together; what a killed writer left in flight settled from the catalogue's journal; a thumbnail
deleted once no collection holds its image; one writer at a time.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from search.config import ChromaServer
from search.core.record import THUMBNAIL, RecordMeta
from search.errors import StoreError, StoreUnavailableError
from search.stores import swaps, thumbnails
from search.stores.base import DISK_FULL, NEARLY_FULL_BYTES, READ_ONLY, Backend, Collection, ModelInfo, Record, nearly_full
from search.stores.catalogue import Catalogue
from search.stores.keywords import Keywords
from search.stores.locking import write_lock

log = logging.getLogger(__name__)
PRECISION_FILE = "precision.json"
RECHECK_S = 5.0  # how often a server's collection is checked against the catalogue: other machines may write to it


class Store:
    """A store folder and its backend."""

    def __init__(self, folder: Path, backend: Backend):
        self.folder = folder
        self.backend = backend
        self._keywords: Keywords | None = None
        self._keywords_lock = threading.Lock()
        self._catalogue: Catalogue | None = None
        self._checked: dict[str, float] = {}  # by collection key: when it last agreed with the catalogue
        self._private: dict[str, Catalogue] = {}  # by key: a scan of one the shared catalogue could not be brought to
        self._agreed = False  # every collection was checked against the catalogue under this process's write lock
        self._settled = 0  # ids settled from the journal when the write lock was last taken

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

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue of this store's collections (in memory where the store is read-only)."""
        with self._keywords_lock:
            if self._catalogue is None:
                with self.guard():
                    if not self.read_only:  # a server's store folder is made on first use
                        self.folder.mkdir(parents=True, exist_ok=True)
                    self._catalogue = Catalogue(None if self.read_only else self.folder)
            return self._catalogue

    def catalogue_for(self, collection: Collection) -> Catalogue:
        """A catalogue that holds ``collection`` as the backend does: the store's, checked against the backend's
        count once per process (on a server, every RECHECK_S seconds: other machines may write there) and
        brought into agreement where it is not; a scan of its own where another writer holds the store then."""
        key, now = collection.key, time.monotonic()
        checked = self._checked.get(key)
        if checked is not None and key not in self._private and (not self.server or now - checked < RECHECK_S):
            return self.catalogue
        catalogue = self.catalogue
        if not self._agrees(catalogue, collection):
            # Read again from the backend: a read-only store's catalogue is in memory, this process's alone; a
            # server's other writers, on other machines, write no catalogue here (each change of count costs a scan)
            if self.read_only or self.server:
                with self.guard():
                    catalogue.replace(key, collection.scan())
            else:
                try:
                    with self.write_lock():  # taking it checks every collection (``_agree``)
                        pass
                except StoreError as exc:
                    log.info("the catalogue of %r is not checked now: %s", collection.name, exc.for_operator())
                if not self._agrees(catalogue, collection):
                    private = self._private.get(key)
                    if private is None or not self._agrees(private, collection):
                        private = self._private[key] = Catalogue(None)
                        with self.guard():
                            private.replace(key, collection.scan())
                    return private
        self._private.pop(key, None)
        self._checked[key] = now
        return catalogue

    def _agrees(self, catalogue: Catalogue, collection: Collection) -> bool:
        """Whether the catalogue's count of ``collection`` is the backend's (or a live writer is changing it)."""
        state = catalogue.state(collection.key)
        return state is not None and (state.count == collection.count() or catalogue.in_flight(collection.key))

    def keywords_of(self, collection: Collection) -> Keywords:
        """The keyword index, agreeing with ``collection`` (rebuilt from its records' metadata where a kill or
        a switch left them apart: their counts differ)."""
        keywords, state = self.keywords, self.catalogue_for(collection).state(collection.key)
        with self.guard():
            if keywords.count(collection.name) != (state.count if state else collection.count()):
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
        """Delete a whole collection, its words, its catalogue rows, and its thumbnails no other collection uses.

        Its ids are named in the journal first, so a kill at any step leaves them for ``repair``."""
        key = self.open(name).key
        with self.guard():
            ids = self.catalogue.ids(key)
            self.catalogue.begin(key, ids)
        self.backend.drop(name)
        with self.guard():
            self.keywords.drop(name)
            self._forget_thumbnails(key, ids)
            self.catalogue.drop(key)

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

        The ids are named in the catalogue's journal first; thumbnails go before the records, so a record never
        lacks its own; where the records cannot be written, the thumbnails this call made go again. What a kill -9
        leaves between them, ``repair`` settles from the journal.
        """
        if records and nearly_full(self.folder):
            # Refused before any write: a database that runs out of room inside a transaction (Chroma's SQLite)
            # may be left unable to take the next one, while thumbnails and words that could not land are
            # cleaned up; with next to no room left, nothing is started.
            raise StoreUnavailableError(DISK_FULL, internals=f"store at {self.folder}: under "
                                        f"{NEARLY_FULL_BYTES // 1024**2} MB free")
        if not records:
            return
        ids = [r.id for r in records]
        made: list[str] = []
        with self.guard():  # named before anything is written: a kill from here on leaves them to ``repair``
            self.catalogue.begin(collection.key, ids)
        try:
            with self.guard():  # a full disk here is the store going away too
                made = thumbnails.write_many(self.folder, thumbs)
            collection.upsert(records)
            with self.guard():
                self.keywords.add(collection.name, [(r.id, r.metadata) for r in records])
                self.catalogue.settle(collection.key, records, [])
        except BaseException:
            # A backend may keep part of a write it failed (Chroma logs it, then fails to apply it): the records
            # of the images this call brought go too, as far as the store still lets them; the journal keeps
            # the rest for ``repair``.
            with contextlib.suppress(Exception):
                collection.delete(made)
            with contextlib.suppress(Exception):  # a full disk may refuse this too; the journal keeps them then
                thumbnails.delete_many(self.folder, made)
            with contextlib.suppress(Exception):
                self._settle(collection.key, collection, ids, pending=False)
            raise

    def repair(self) -> int:
        """Settle what writers that were killed (or whose disk filled) left in flight, as their journal entries
        name it: records whose thumbnail is missing go, thumbnails no record names go, words and catalogue rows
        follow the records. Returns how many ids were settled. Only where this process may write now: the write
        lock keeps other writers out (and taking it is what repairs)."""
        if self.read_only:
            return 0
        with self.write_lock():
            return self._settled

    def _settle_pending(self) -> int:
        """Settle every journal entry a gone writer left (the write lock held)."""
        pending = self.catalogue.pending()
        if not pending:
            return 0
        by_key = self._collections()
        for entry in pending:
            self._settle(entry.key, by_key.get(entry.key), entry.ids, pending=True)
        settled = sum(len(entry.ids) for entry in pending)
        log.info("settled %d images that stopped writers left in flight in %s", settled, self.folder)
        return settled

    def _settle(self, key: str, collection: Collection | None, ids: list[str], *, pending: bool) -> None:
        """Make thumbnails, words and catalogue agree with what the backend holds of ``ids`` (a record whose
        thumbnail is missing goes too); ``collection`` None: it is gone."""
        with self.guard():
            held = collection.records(ids) if collection is not None else {}
            lost = {i for i, r in held.items() if self._lacks_thumbnail(r.metadata)}
            if lost and collection is not None:
                collection.delete(sorted(lost))
            kept = [r for i, r in held.items() if i not in lost]
            gone = [i for i in ids if i not in held or i in lost]
            if collection is not None:
                self.keywords.add(collection.name, [(r.id, r.metadata) for r in kept])
                self.keywords.delete(collection.name, gone)
            self._forget_thumbnails(key, gone)
            self.catalogue.settle(key, kept, gone, pending=pending)
            if collection is None:
                self.catalogue.drop(key)

    def _lacks_thumbnail(self, meta: RecordMeta) -> bool:
        """Whether a record names a thumbnail the store does not hold."""
        thumbnail = meta.get(THUMBNAIL)
        if not thumbnail:
            return False
        named = thumbnails.id_of(thumbnail)
        return named is None or not thumbnails.exists(self.folder, named)

    def _forget_thumbnails(self, key: str, ids: list[str]) -> None:
        """Delete the thumbnails of ``ids`` (gone from the collection ``key``) that no other collection holds."""
        thumbnails.delete_many(self.folder, set(ids) - self.catalogue.held_elsewhere(key, ids))

    def _collections(self) -> dict[str, Collection]:
        """Every collection, by key."""
        opened = (self.open(name) for name in self.names())
        return {collection.key: collection for collection in opened}

    def _agree(self) -> None:
        """Bring the catalogue into agreement with every collection (the write lock held; once per process):
        one the catalogue does not hold yet, or whose count differs, is read whole; one gone is forgotten. A
        catalogue made now for a store that had collections also sweeps what killed writers of a version
        without the journal left."""
        catalogue = self.catalogue
        if not self.server:  # cut a killed thumbnail writer's dead tail, compact what a kill left half dead
            thumbnails.repair(self.folder)
        by_key = self._collections()
        for key, collection in by_key.items():
            state, count = catalogue.state(key), collection.count()
            if state is None or state.count != count:
                log.info("cataloguing %r (%d images) in %s", collection.name, count, self.folder)
                catalogue.replace(key, collection.scan())
            self._checked[key] = time.monotonic()
        for key in catalogue.keys() - set(by_key):
            self._settle(key, None, catalogue.ids(key), pending=True)
        if catalogue.fresh and by_key:
            self._sweep(list(by_key.values()))
        catalogue.fresh = False

    def _sweep(self, collections: list[Collection]) -> int:
        """Thumbnails no record names go, and records whose thumbnail is missing go too: a whole listing, for a
        store whose writers kept no journal."""
        held = thumbnails.ids(self.folder)
        named: set[str | None] = set()  # the images whose thumbnails records name
        broken = 0
        for collection in collections:
            thumbs = {i: thumbnails.id_of(m[THUMBNAIL]) for i, m in collection.scan_metadata() if m.get(THUMBNAIL)}
            lost = {i for i, thumb in thumbs.items() if thumb not in held}
            broken += len(self.remove(collection, sorted(lost))) if lost else 0
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
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        with self.guard():
            self.catalogue.begin(collection.key, ids)
        gone = collection.delete(ids)
        with self.guard():
            self.keywords.delete(collection.name, gone)
            self._forget_thumbnails(collection.key, gone)
            self.catalogue.settle(collection.key, [], ids)  # those not held were not there either
        return gone

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the embedded store's write lock, or fail at once: two processes must not write one folder."""
        if self.read_only:
            raise StoreError(READ_ONLY, internals=f"{self.folder} is not writable; searches read a snapshot")
        if self.server:  # the server serialises writers itself
            self._taken()
            yield
            return
        with write_lock(self.folder):
            self._taken()
            yield

    def _taken(self) -> None:
        """What whoever takes the write lock does first: finish a switch and settle writes that stopped halfway,
        and (once per process) bring the catalogue into agreement with every collection."""
        self._finish_swaps()
        with self.guard():
            self._settled = self._settle_pending()
            if not self._agreed:
                self._agree()
                self._agreed = True

    def _forget_words(self, name: str) -> None:
        """Drop the words of a switch's collections: each name now holds another's records (rebuilt on use)."""
        with self.guard():
            for each in (name, swaps.next_name(name), swaps.previous_name(name)):
                self.keywords.drop(each)

    def _finish_swaps(self) -> None:
        for name in swaps.finish(self.backend, self.folder):
            log.warning("finished switching %r, which a stopped process had begun", name)
            self._forget_words(name)
