"""Albums: a person's own images, indexed with the app's model, kept apart from everyone else's.

Each album is a collection in the app's store under a name that starts with ``mine-`` and the owner's
namespace, so the shipped index can never be written to. On a public deployment the namespace is
a hash of a secret key that each browser (or API caller) keeps, so one visitor never sees another's
albums; locally there is one namespace and albums persist in the store. The public API calls them
"collections" (``/collection_add`` ...); the code does not, to keep them apart from Chroma's.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import AlbumLimits
from search.core.hits import Hit
from search.core.ids import collection_name, image_ids, visitor_key
from search.core.record import ADDED_AT
from search.embedders.base import Embedder
from search.embedders.precision import SAFE
from search.embedders.registry import load_embedder
from search.errors import BuildInterrupted, QueryError, ServiceUnavailable, StoreError, StoreUnavailableError
from search.images import ocr
from search.images.decode import MAX_PIXELS
from search.index import ImageIndex
from search.pipeline import text_queue
from search.pipeline.build import BuildOptions, Progress, build_index, yield_to_the_model
from search.pipeline.report import BuildReport
from search.pipeline.swap import ReembedReport, reembed
from search.service.store_size import RECHECK_S, StoreSize
from search.sources.uploads import upload_items
from search.stores.base import Collection, ModelInfo
from search.stores.store import Store
from search.stores.swaps import is_shadow, next_name, previous_name

log = logging.getLogger(__name__)
PREFIX = "mine-"
LOCAL_OWNER = "local"
SECRET = ".albums-secret"  # in the store folder: what makes album tokens (so they outlive a restart)
FULL = "The public demo is full ({}); try again later, or run the app on your own machine (see its README)."
FULL_RETRY_S = 3600  # room comes back only as visitors delete their collections
BUSY_RETRY_S = 30  # an album's upload or re-embedding under way: most take less than a minute
# What an album image adds to the store until the next walk of its folder says (store_size.py): its thumbnail,
# record and words, and the copy waiting for its text to be read; more than most take.
IMAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Removal:
    """What a delete did: the ids removed, and the well-formed ids that were not there."""

    removed: list[str]
    not_found: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The answer API callers get: how many went, and which ids were not found."""
        return {"removed": len(self.removed), "not_found": self.not_found}


@dataclass(eq=False)
class _Upload:
    """An upload under way: the album it fills, whether it (or one beside it) makes that album, and how many images
    it may still write, which the caps count as if written."""

    full: str
    new: bool
    images: int
    collection: Collection | None = None  # once made: to count what each write added

    def held(self, store: Store) -> int:
        """How many images the album holds now (0 before it is made), as the store's catalogue counts them: the
        caller holds the write lock, and a count from the backend took 3.5 of 50 s at 32 visitors."""
        try:
            if self.collection is None:
                self.collection = store.open(self.full)
            state = store.catalogue.state(self.collection.key)
        except StoreError:  # not made yet, or the store failed: the write's own error says which
            return 0
        return state.count if state else 0


@dataclass
class _Ledger:
    """Album images in the store (every visitor's), counted when stale and then kept as writes change them."""

    images: int | None = None
    at: float = -float("inf")


class Albums:
    """Add to, search and delete from albums.

    Changes meet at ``_lock`` only to write (each batch of an upload, a delete, a text read), with the store's
    write lock taken inside it; reading, decoding and embedding happen outside, so visitors' uploads overlap.
    What the caps need to stay true under that (uploads under way, the albums they make) is kept under the lock.
    """

    def __init__(self, store: Store, embedder: Embedder, *, public: bool, limits: AlbumLimits = AlbumLimits(),
                 text_model: str | None = None, read_texts: bool = True):
        self.store = store
        # Text inside the images, read after they are searchable (pipeline/text_queue.py), where Tesseract is here
        self.read_texts = read_texts and not ocr.missing() and not store.read_only
        self._reader: threading.Thread | None = None
        self.embedder = embedder
        self.text_model = text_model  # the main index's pairing, for albums that keep an older model
        self.public = public
        self.limits = limits
        self._lock = FairLock()  # in front of the store's write lock, which fails at once: threads queue here
        self._uploads: list[_Upload] = []  # under way; with ``_swapping`` and ``_ledger``, held under ``_lock``
        self._swapping: set[str] = set()
        self._ledger = _Ledger()
        self._size = StoreSize(store.folder)
        self._starting = threading.Lock()  # one reader at a time
        self._secret = _secret(store.folder)

    def namespace(self, key: str | None) -> str:
        """The owner's prefix: from the secret key on a public app, the same for everyone locally."""
        if not self.public:
            return f"{PREFIX}{LOCAL_OWNER}-"
        return f"{PREFIX}{hashlib.sha256(visitor_key(key).encode()).hexdigest()[:16]}-"

    def names(self, key: str | None) -> list[str]:
        """The owner's albums, by the names they gave them."""
        prefix = self.namespace(key)
        return [n[len(prefix):] for n in self._all() if n.startswith(prefix)]

    def add(self, key: str | None, name: str, files: list[str | Path], on_progress: Progress | None = None) -> BuildReport:
        """Index uploaded images and zip archives into the owner's collection ``name``."""
        if not files:
            raise QueryError("Choose some images (or a zip of them) to add.")
        if len(files) > self.limits.files:
            raise QueryError(f"{len(files)} files at once is over the limit of {self.limits.files}; add them in parts.")
        full = self._full_name(key, name)
        embedder = self._embedder(self.store.open(full)) if name in self.names(key) else self.embedder
        # A zip is listed, not read; a public app holds uploads to the query limits, a local one to the builder's.
        items = list(upload_items(files, min_edges=embedder.min_edges) if self.public else
                     upload_items(files, max_pixels=MAX_PIXELS, total_pixels=None, min_edges=embedder.min_edges))
        upload = self._begin(key, name, len(items))
        options = BuildOptions(source="upload", total=len(items), ocr="later" if self.read_texts else None)
        try:
            report = build_index(items, self.store, full, embedder, options, on_progress,
                                 writing=lambda: self._writing(upload))
        except BuildInterrupted as exc:  # in a visitor's words, not the builder's
            kept = f"the first {exc.indexed} images of it were added" if exc.indexed else "nothing was added"
            raise StoreUnavailableError(f"{exc.reason[:1].upper()}{exc.reason[1:]}. The upload stopped: {kept}.",
                                        internals=exc.internals) from exc
        finally:
            self._end(upload)
        report.collection = name
        if report.texts_queued:
            self.start_reading()
        return report

    def _begin(self, key: str | None, name: str, incoming: int) -> _Upload:
        """Count an upload of ``incoming`` items into ``name`` as under way, where the caps leave room for it."""
        full = self._full_name(key, name)
        too_big = self.public and self._size.bytes() >= self.limits.store_bytes  # a walk, the first time: unlocked
        with self._lock:
            self._refuse_while_swapping(full, name)
            stored = set(self._all())
            made = {u.full for u in self._uploads if u.new}  # by uploads under way: albums already, for the caps
            if self.public:
                self._check_room(key, full, stored, stored | made, incoming)
                if too_big:
                    raise ServiceUnavailable(FULL.format("no room left on its disk"), retry_after=FULL_RETRY_S)
            upload = _Upload(full, full not in stored or full in made, incoming)
            self._uploads.append(upload)
            return upload

    def _end(self, upload: _Upload) -> None:
        """The upload is over: its room goes back, and the album it made goes if it holds nothing (a failed upload,
        or one with nothing usable, leaves no empty collection to count against a cap) once no other fills it."""
        with self._lock:
            self._uploads.remove(upload)
            if upload.new and not any(u.full == upload.full for u in self._uploads):
                self._drop_if_empty(upload.full)

    @contextlib.contextmanager
    def _writing(self, upload: _Upload | None = None) -> Iterator[None]:
        """Hold what a write needs (the lock, then the store's write lock); for an upload, count what it added."""
        with self._lock, self.store.write_lock():
            before = upload.held(self.store) if upload else 0
            try:
                yield
            finally:
                if upload:
                    added = max(0, upload.held(self.store) - before)
                    upload.images = max(0, upload.images - added)
                    self._changed(added)

    def _changed(self, images: int) -> None:
        """``images`` more (fewer, where negative) album images are in the store; the caller holds the lock."""
        if self._ledger.images is not None:
            self._ledger.images = max(0, self._ledger.images + images)
        if images > 0:
            self._size.add(images * IMAGE_BYTES)
        elif images < 0:  # what a delete frees is not known here (thumbnails other albums share stay)
            self._size.stale()

    def start_reading(self) -> bool:
        """Read the text in the images waiting for it, on a background thread (one at a time); whether one started."""
        with self._starting:
            if not self.read_texts or (self._reader and self._reader.is_alive()) or not text_queue.waiting(self.store):
                return False
            self._reader = threading.Thread(target=self._read, name="read-texts", daemon=True)
            self._reader.start()
            return True

    def _read(self) -> None:
        yield_to_the_model()  # searches first: text that arrives a little later is no one's wait
        left = text_queue.waiting(self.store)
        while left:
            try:
                read = text_queue.drain(self.store, self._writing_text, stop=lambda: bool(self._swapping))
            except Exception:  # never a visitor's problem: what is left stays queued for the next start
                log.exception("reading the text in album images stopped")
                return
            log.info("read the text in %d album images", read)
            before, left = left, text_queue.waiting(self.store)
            if left >= before:  # another writer holds the store: the next upload or start goes on from here
                return

    @contextlib.contextmanager
    def _writing_text(self) -> Iterator[None]:
        """``_writing``, for the text reader: not while an album is embedded again (its new collection would miss
        the text), said as a busy store, so that the copy waits for the next read (``swap`` starts one)."""
        with self._writing():
            if self._swapping:
                raise StoreError("an album is being embedded again; text is stored once that is done")
            yield

    def _drop_if_empty(self, full: str) -> None:
        """Drop ``full`` where it holds nothing; the caller holds the lock."""
        try:
            with self.store.write_lock():
                if full in self.store.names() and not self.store.open(full).count():
                    self.store.drop(full)
        except StoreError as exc:  # the store is what failed: the next start's sweep and caps still hold
            log.warning("an empty collection could not be dropped after an upload: %s", exc.for_operator())

    def token(self, key: str | None, name: str) -> str:
        """The unguessable part of the URLs that serve the album's thumbnails (the same after a restart)."""
        return self._token(self._full_name(key, name))

    def by_token(self, token: str) -> ImageIndex | None:
        """The album whose thumbnails ``token`` serves, or None."""
        for full in self.store.names():
            if full.startswith(PREFIX) and hmac.compare_digest(self._token(full), token):
                return ImageIndex(self.store, self.store.open(full), self.embedder)  # for its thumbnails: no model
        return None

    def repair(self) -> int:
        """Settle what a killed upload (or build) left in flight (``Store.repair``); 0 where another writer works."""
        with self._lock:
            try:
                return self.store.repair()
            except StoreError as exc:
                log.info("the store is not repaired now: %s", exc.for_operator())
                return 0

    def _token(self, full: str) -> str:
        return hmac.new(self._secret, full.encode(), hashlib.sha256).hexdigest()[:32]

    def index(self, key: str | None, name: str) -> ImageIndex:
        """The owner's collection, for searching (with the model it was filled with)."""
        col = self._open(key, name)
        return ImageIndex(self.store, col, self._embedder(col))

    def _stored(self, key: str | None, name: str) -> ImageIndex:
        """The owner's collection, to browse or delete from: no model is loaded for that."""
        return ImageIndex(self.store, self._open(key, name), self.embedder)

    def _open(self, key: str | None, name: str) -> Collection:
        try:
            return self.store.open(self._full_name(key, name))
        except StoreError:
            raise QueryError(f"You have no collection named {name!r} yet; add images to it first.") from None

    def _embedder(self, col: Collection) -> Embedder:
        """The model an album was filled with: the main index's, or (made before the main index was switched to
        another model) the one the album records."""
        if not self._older(col):
            return self.embedder
        return load_embedder(col.model or "", text_model=self.text_model, precision=SAFE)  # a visitor never waits for a race

    def _older(self, col: Collection) -> bool:
        """Whether ``col`` records another model than the main index's (an album with none recorded is the main's)."""
        return bool(col.model) and col.model != ModelInfo.of(self.embedder).model

    def model(self, key: str | None, name: str) -> str:
        """The model the owner's album ``name`` was filled with."""
        return self._open(key, name).model or self.embedder.name

    def behind(self, key: str | None, name: str) -> bool:
        """Whether the album was filled with another model than the main index's (it was made before a switch)."""
        return self._older(self._open(key, name))

    def swap(self, key: str | None, name: str, on_progress: Callable[[int, int], None] | None = None) -> ReembedReport:
        """Embed the album again with the main index's model, then switch to that in one step (the old
        collection goes): as ``index_builder.py --reembed`` and ``--switch`` do, from the stored thumbnails,
        since an upload's files are not kept. Searches of the album answer from the old model until the switch.
        """
        full = self._full_name(key, name)
        if not self.behind(key, name):
            raise QueryError(f"“{name}” is already searched with the app's model.")
        with self._lock:  # nothing else changes the album meanwhile: its new collection would not have it
            self._refuse_while_changing(full, name)
            self._swapping.add(full)
        try:
            with self._writing():
                if previous_name(full) in self.store.names():  # left by a swap killed after its switch
                    self.store.drop(previous_name(full))
            report = reembed(self.store, full, self.embedder, on_progress=on_progress, writing=self._writing)
            if report.failed:
                with self._writing():
                    self.store.drop(next_name(full))  # no half-made shadow left to count against the caps
                raise QueryError(f"{len(report.failed)} images of “{name}” could not be read again; the "
                                 "collection is unchanged.")
            with self._lock:
                self.store.switch(full)  # which takes the write lock
            with self._writing():  # the old vectors: their thumbnails are the new collection's too
                self.store.drop(previous_name(full))
        finally:
            with self._lock:
                self._swapping.discard(full)
            self.start_reading()  # text to store meanwhile waited for the swap to end
        report.collection = name
        return report

    def browse(self, key: str | None, name: str, offset: int = 0, limit: int = 200) -> tuple[list[Hit], int]:
        """A page of the collection's images, newest first, with no score; and how many it holds."""
        col = self._stored(key, name)
        rows = sorted(col.collection.scan_metadata(), key=lambda r: -r[1].get(ADDED_AT, 0))
        return [col.hit(i, 0.0, m) for i, m in rows[offset:offset + limit]], len(rows)

    def remove(self, key: str | None, name: str, ids: object) -> Removal:
        """Delete images from the owner's collection; every id must be well-formed, or nothing is removed."""
        wanted = image_ids(ids, self.limits.images)
        index = self._stored(key, name)
        with self._lock:
            self._refuse_while_swapping(index.collection.name, name)
            with self.store.write_lock():
                gone = index.remove(wanted)
            self._changed(-len(gone))
        return Removal(gone, [i for i in wanted if i not in set(gone)])

    def drop(self, key: str | None, name: str) -> Removal:
        """Delete the owner's whole collection (thumbnails no other collection uses go too)."""
        index = self._stored(key, name)
        with self._lock:
            self._refuse_while_changing(index.collection.name, name)
            with self.store.write_lock():
                removed = index.remove(index.collection.all_ids())
                self.store.drop(index.collection.name)
            self._changed(-len(removed))
        return Removal(removed, [])

    def _refuse_while_swapping(self, full: str, name: str) -> None:
        if full in self._swapping:
            raise ServiceUnavailable(f"“{name}” is being embedded again with the app's model; change it once that is "
                                     "done.", retry_after=BUSY_RETRY_S)

    def _refuse_while_changing(self, full: str, name: str) -> None:
        """Refuse to replace or delete an album that uploads are still filling, or that is being swapped."""
        self._refuse_while_swapping(full, name)
        if any(u.full == full for u in self._uploads):
            raise ServiceUnavailable(f"Images are still being added to “{name}”; try again once they are in.",
                                     retry_after=BUSY_RETRY_S)

    def _check_room(self, key: str | None, full: str, stored: set[str], albums: set[str], incoming: int) -> None:
        """Refuse an upload that would pass a visitor's caps or the deployment's; the caller holds the lock.

        ``stored``: the albums in the store; ``albums``: those and the ones uploads under way are making. Uploads
        under way count as if every image they hold were written (they give back what they did not write at the end).
        """
        limits = self.limits
        if full not in albums:
            owned = sum(1 for n in albums if n.startswith(self.namespace(key)))
            if owned >= limits.albums:
                raise QueryError(f"You have {owned} collections, the most allowed here; delete one first.")
            if len(albums) >= limits.albums_total:
                raise ServiceUnavailable(FULL.format("no room for more collections"), retry_after=FULL_RETRY_S)
        held = (self.store.open(full).count() if full in stored else 0) + sum(
            u.images for u in self._uploads if u.full == full)
        if held + incoming > limits.images:
            raise QueryError(f"This upload holds {incoming} files and the collection {held} images; a "
                             f"collection may hold {limits.images}. Add fewer, or delete some first.")
        if self._images(stored) + sum(u.images for u in self._uploads) + incoming > limits.images_total:
            raise ServiceUnavailable(FULL.format("no room for more images"), retry_after=FULL_RETRY_S)

    def _images(self, stored: set[str]) -> int:
        """Album images in the store: counted again when stale (every album: another process may write them too),
        else as writes have changed them since; the caller holds the lock."""
        ledger = self._ledger
        if ledger.images is None or time.monotonic() - ledger.at >= RECHECK_S:
            ledger.images, ledger.at = sum(self.store.open(n).count() for n in stored), time.monotonic()
        return ledger.images

    def _all(self) -> list[str]:
        """Every visitor's albums in the store (a swap's shadows, NAME.next and NAME.previous, are not albums)."""
        return [n for n in self.store.names() if n.startswith(PREFIX) and not is_shadow(n)]

    def _full_name(self, key: str | None, name: str) -> str:
        return self.namespace(key) + collection_name(name)


class FairLock:
    """A lock taken in the order it was asked for: ``threading.Lock`` lets any waiter in, and with 32 visitors
    uploading at once some waited 21 s while others went by."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._next = 0  # the ticket the next caller draws
        self._serving = 0  # the ticket whose turn it is
        self._gone: set[int] = set()  # tickets whose callers stopped waiting (an exception): their turns are skipped

    def __enter__(self) -> None:
        with self._turns:
            ticket = self._next
            self._next += 1
            try:
                self._turns.wait_for(lambda: self._serving == ticket)
            except BaseException:
                if self._serving == ticket:
                    self._pass(ticket)
                else:
                    self._gone.add(ticket)
                raise

    def __exit__(self, *_: object) -> None:
        with self._turns:
            self._pass(self._serving)

    def locked(self) -> bool:
        """Whether someone holds it (as ``threading.Lock.locked``)."""
        with self._turns:
            return self._serving < self._next  # the turn of a ticket drawn: its holder's (gone ones are skipped)

    def _pass(self, ticket: int) -> None:
        """The turn moves on from ``ticket`` where it is the one served, past any whose callers are gone."""
        if self._serving != ticket:
            return
        self._serving += 1
        while self._serving in self._gone:
            self._gone.discard(self._serving)
            self._serving += 1
        self._turns.notify_all()


def _secret(folder: Path) -> bytes:
    """The store's album secret, made once; a store that cannot be written gets one for this process only."""
    path = Path(folder) / SECRET
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    value = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value.hex())
    except FileExistsError:  # another process made it a moment ago
        return bytes.fromhex(path.read_text().strip())
    except OSError:
        log.warning("the album secret could not be saved in the store: album thumbnail URLs change on restart")
    return value
