"""Personal collections: a person's own images, indexed with the app's model, kept apart from everyone else's.

Each collection lives in the app's store under a name that starts with ``mine-`` and the owner's
namespace, so the shipped index can never be written to. On a public deployment the namespace is
a hash of a secret key that each browser (or API caller) keeps, so one visitor never sees another's
collections; locally there is one namespace and collections persist in the store.
"""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any

from .archives import upload_items
from .build import BuildReport, build_index
from .embedders import Embedder
from .errors import QueryError, StoreError
from .index import Hit, ImageIndex
from .store import connect, open_collection, read_all, write_lock

PREFIX = "mine-"
LOCAL_OWNER = "local"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,29}$")


class Collections:
    """Add to, search and delete from personal collections."""

    def __init__(self, store_dir: Path, embedder: Embedder, *, public: bool,
                 max_collections: int = 5, max_images: int = 2000, max_files: int = 500):
        self.store_dir = Path(store_dir)
        self.embedder = embedder
        self.public = public
        self.max_collections = max_collections
        self.max_images = max_images
        self.max_files = max_files
        self._lock = threading.Lock()  # threads queue here; other processes meet the store's file lock

    def namespace(self, key: str | None) -> str:
        """The owner's prefix: from the secret key on a public app, the same for everyone locally."""
        if not self.public:
            return f"{PREFIX}{LOCAL_OWNER}-"
        if not key or len(key) < 16:
            raise QueryError("This browser has no collection key yet; reload the page (API callers: pass a key of 16+ characters).")
        return f"{PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:16]}-"

    def names(self, key: str | None) -> list[str]:
        """The owner's collections, by the names they gave them."""
        prefix = self.namespace(key)
        return sorted(c.name[len(prefix):] for c in self._client().list_collections() if c.name.startswith(prefix))

    def add(self, key: str | None, name: str, files: list[str | Path], progress: bool = True) -> BuildReport:
        """Index uploaded images and zip archives into the owner's collection ``name``."""
        if not files:
            raise QueryError("Choose some images (or a zip of them) to add.")
        if len(files) > self.max_files:
            raise QueryError(f"{len(files)} files at once is over the limit of {self.max_files}; add them in parts.")
        full = self._full_name(key, name)
        with self._lock, write_lock(self.store_dir):
            client = self._client()
            existing = self.names(key)
            if self.public and name not in existing and len(existing) >= self.max_collections:
                raise QueryError(f"You have {len(existing)} collections, the most allowed here; delete one first.")
            items = list(upload_items(files))  # a zip is listed, not read
            if self.public:
                held = open_collection(client, full).count() if name in existing else 0
                if held + len(items) > self.max_images:
                    raise QueryError(f"This upload holds {len(items)} files and the collection {held} images; a "
                                     f"collection may hold {self.max_images}. Add fewer, or delete some first.")
            report = build_index(items, store_dir=self.store_dir, client=client, collection=full,
                                 embedder=self.embedder, source="upload", progress=progress)
        report.collection = name
        return report

    def index(self, key: str | None, name: str) -> ImageIndex:
        """The owner's collection, for searching."""
        full = self._full_name(key, name)
        try:
            col = open_collection(self._client(), full)
        except StoreError:
            raise QueryError(f"You have no collection named {name!r} yet; add images to it first.") from None
        return ImageIndex(self.store_dir, col, self.embedder)

    def browse(self, key: str | None, name: str, limit: int = 200) -> list[Hit]:
        """The collection's images, newest first (up to ``limit``), with no score."""
        col = self.index(key, name)
        rows = sorted(zip(*read_all(col.collection, "metadatas")), key=lambda r: -(r[1] or {}).get("added_at", 0))[:limit]
        return [col.hit(i, 0.0, m) for i, m in rows]

    def remove(self, key: str | None, name: str, ids: list[str]) -> int:
        """Delete images from the owner's collection; returns how many went."""
        with self._lock, write_lock(self.store_dir):
            return self.index(key, name).remove(ids)

    def drop(self, key: str | None, name: str) -> int:
        """Delete the owner's whole collection (thumbnails no other collection uses go too)."""
        with self._lock, write_lock(self.store_dir):
            index = self.index(key, name)
            ids = index.collection.get(include=[])["ids"]
            removed = index.remove(ids)
            self._client().delete_collection(index.collection.name)
            return removed

    def _full_name(self, key: str | None, name: str) -> str:
        name = (name or "").strip().lower()
        if not NAME.match(name):
            raise QueryError("A collection name has 1-30 characters: lower-case letters, digits, '-' or '_'.")
        return self.namespace(key) + name

    def _client(self) -> Any:
        return connect(self.store_dir, create=True)
