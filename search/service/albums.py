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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import AlbumLimits
from search.core.hits import Hit
from search.core.ids import collection_name, image_ids, visitor_key
from search.embedders.base import Embedder
from search.embedders.registry import load_embedder
from search.errors import BuildInterrupted, QueryError, StoreError, StoreUnavailableError
from search.images import ocr
from search.images.decode import MAX_PIXELS
from search.index import ImageIndex
from search.pipeline import text_queue
from search.pipeline.build import BuildOptions, Progress, build_index, yield_to_the_model
from search.pipeline.report import BuildReport
from search.pipeline.swap import ReembedReport, reembed
from search.sources.uploads import upload_items
from search.stores.base import Collection, ModelInfo, folder_bytes
from search.stores.store import Store
from search.stores.swaps import is_shadow, next_name, previous_name

log = logging.getLogger(__name__)
PREFIX = "mine-"
LOCAL_OWNER = "local"
SECRET = ".albums-secret"  # in the store folder: what makes album tokens (so they outlive a restart)
FULL = "The public demo is full ({}); try again later, or run the app on your own machine (see its README)."


@dataclass(frozen=True)
class Removal:
    """What a delete did: the ids removed, and the well-formed ids that were not there."""

    removed: list[str]
    not_found: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The answer API callers get: how many went, and which ids were not found."""
        return {"removed": len(self.removed), "not_found": self.not_found}


class Albums:
    """Add to, search and delete from albums."""

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
        self._lock = threading.Lock()  # threads queue here; other processes meet the store's file lock
        self._secret = _secret(store.folder)

    def namespace(self, key: str | None) -> str:
        """The owner's prefix: from the secret key on a public app, the same for everyone locally."""
        if not self.public:
            return f"{PREFIX}{LOCAL_OWNER}-"
        return f"{PREFIX}{hashlib.sha256(visitor_key(key).encode()).hexdigest()[:16]}-"

    def names(self, key: str | None) -> list[str]:
        """The owner's albums, by the names they gave them."""
        prefix = self.namespace(key)  # a swap's shadows (NAME.next, NAME.previous) are not albums of their own
        return [n[len(prefix):] for n in self.store.names() if n.startswith(prefix) and not is_shadow(n)]

    def add(self, key: str | None, name: str, files: list[str | Path], on_progress: Progress | None = None) -> BuildReport:
        """Index uploaded images and zip archives into the owner's collection ``name``."""
        if not files:
            raise QueryError("Choose some images (or a zip of them) to add.")
        if len(files) > self.limits.files:
            raise QueryError(f"{len(files)} files at once is over the limit of {self.limits.files}; add them in parts.")
        full = self._full_name(key, name)
        with self._lock, self.store.write_lock():
            existing = self.names(key)
            embedder = self._embedder(self.store.open(full)) if name in existing else self.embedder
            # A zip is listed, not read; a public app holds uploads to the query limits, a local one to the builder's.
            items = list(upload_items(files, min_edges=embedder.min_edges) if self.public else
                         upload_items(files, max_pixels=MAX_PIXELS, total_pixels=None, min_edges=embedder.min_edges))
            if self.public:
                self._check_room(full, name in existing, len(items), len(existing))
            options = BuildOptions(source="upload", total=len(items), ocr="later" if self.read_texts else None)
            try:
                report = build_index(items, self.store, full, embedder, options, on_progress)
            except BaseException as exc:
                if name not in existing:
                    self._drop_if_empty(full)  # a failed upload leaves no empty collection to count against a cap
                if isinstance(exc, BuildInterrupted):  # in a visitor's words, not the builder's
                    kept = f"the first {exc.indexed} images of it were added" if exc.indexed else "nothing was added"
                    raise StoreUnavailableError(f"{exc.reason[:1].upper()}{exc.reason[1:]}. The upload stopped: {kept}.",
                                                internals=exc.internals) from exc
                raise
            if not report.total_in_collection and name not in existing:
                self.store.drop(full)  # nothing usable came: no empty collection either
        report.collection = name
        if report.texts_queued:
            self.start_reading()
        return report

    def start_reading(self) -> bool:
        """Read the text in the images waiting for it, on a background thread (one at a time); whether one started."""
        with self._lock:
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
                read = text_queue.drain(self.store, self._writing)
            except Exception:  # never a visitor's problem: what is left stays queued for the next start
                log.exception("reading the text in album images stopped")
                return
            log.info("read the text in %d album images", read)
            before, left = left, text_queue.waiting(self.store)
            if left >= before:  # another writer holds the store: the next upload or start goes on from here
                return

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock, self.store.write_lock():
            yield

    def _drop_if_empty(self, full: str) -> None:
        try:
            if full in self.store.names() and not self.store.open(full).count():
                self.store.drop(full)
        except StoreError as exc:  # the store is what failed: the next start's sweep and caps still hold
            log.warning("an empty collection could not be dropped after a failed upload: %s", exc.for_operator())

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
        return load_embedder(col.model or "", text_model=self.text_model, decisions=self.store.precision_file)

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
        with self._lock:
            if not self.behind(key, name):
                raise QueryError(f"“{name}” is already searched with the app's model.")
            with self.store.write_lock():
                if previous_name(full) in self.store.names():  # left by a swap killed after its switch
                    self.store.drop(previous_name(full))
                report = reembed(self.store, full, self.embedder, on_progress=on_progress)
                if report.failed:
                    self.store.drop(next_name(full))  # no half-made shadow left to count against the caps
                    raise QueryError(f"{len(report.failed)} images of “{name}” could not be read again; the "
                                     "collection is unchanged.")
            self.store.switch(full)
            with self.store.write_lock():  # the old vectors: their thumbnails are the new collection's too
                self.store.drop(previous_name(full))
        report.collection = name
        return report

    def browse(self, key: str | None, name: str, offset: int = 0, limit: int = 200) -> tuple[list[Hit], int]:
        """A page of the collection's images, newest first, with no score; and how many it holds."""
        col = self._stored(key, name)
        rows = sorted(col.collection.scan_metadata(), key=lambda r: -r[1].get("added_at", 0))
        return [col.hit(i, 0.0, m) for i, m in rows[offset:offset + limit]], len(rows)

    def remove(self, key: str | None, name: str, ids: object) -> Removal:
        """Delete images from the owner's collection; every id must be well-formed, or nothing is removed."""
        wanted = image_ids(ids, self.limits.images)
        with self._lock, self.store.write_lock():
            gone = self._stored(key, name).remove(wanted)
        return Removal(gone, [i for i in wanted if i not in set(gone)])

    def drop(self, key: str | None, name: str) -> Removal:
        """Delete the owner's whole collection (thumbnails no other collection uses go too)."""
        with self._lock, self.store.write_lock():
            index = self._stored(key, name)
            removed = index.remove(index.collection.all_ids())
            self.store.drop(index.collection.name)
            return Removal(removed, [])

    def _check_room(self, full: str, exists: bool, incoming: int, owned: int) -> None:
        """Refuse an upload that would pass a visitor's caps or the deployment's."""
        limits = self.limits
        everyone = [n for n in self.store.names() if n.startswith(PREFIX) and not is_shadow(n)]
        if not exists:
            if owned >= limits.albums:
                raise QueryError(f"You have {owned} collections, the most allowed here; delete one first.")
            if len(everyone) >= limits.albums_total:
                raise QueryError(FULL.format("no room for more collections"))
        held = self.store.open(full).count() if exists else 0
        if held + incoming > limits.images:
            raise QueryError(f"This upload holds {incoming} files and the collection {held} images; a "
                             f"collection may hold {limits.images}. Add fewer, or delete some first.")
        total = sum(self.store.open(n).count() for n in everyone)
        if total + incoming > limits.images_total:
            raise QueryError(FULL.format("no room for more images"))
        if folder_bytes(self.store.folder) >= limits.store_bytes:
            raise QueryError(FULL.format("no room left on its disk"))

    def _full_name(self, key: str | None, name: str) -> str:
        return self.namespace(key) + collection_name(name)


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
