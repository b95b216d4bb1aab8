"""What the app serves, free of any UI: settings from the environment, the open indexes, timed queries."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .build import BuildReport
from .albums import Albums, Removal
from .duplicates import NEAR_DUPLICATE_SIMILARITY
from .errors import QueryError, SearchError
from .ids import shown
from .index import Hit, ImageIndex
from .served_files import discard_uploads, purge_cached_copies
from .settings import Settings
from .store import connect, thumbnail_path
from .urls import fetch

log = logging.getLogger(__name__)
MAX_RESULTS = 50
MINE = "mine/"  # an index value naming one of the caller's albums
BUILD_HINT = (
    "python index_builder.py --dataset ashraq/fashion-product-images-small --store data/store --limit 5000"
)


def _results(k: object) -> int:
    try:
        n = int(k)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_RESULTS or n != k:
        raise QueryError(f"The number of results must be a whole number from 1 to {MAX_RESULTS}.")
    return n


def _fold(index: ImageIndex, fold: bool) -> float | None:
    """Near-duplicate folding applies to CLIP vectors; raw pixels are all alike by cosine."""
    return NEAR_DUPLICATE_SIMILARITY if fold and index.metadata.get("normalized") else None


@dataclass(frozen=True)
class Results:
    """Hits of one query and how long it took."""

    hits: list[Hit]
    seconds: float

    def gallery(self) -> list[tuple[str, str]]:
        """(thumbnail, caption) pairs: rank, score, label or caption, and folded near-duplicates."""
        return [(h.image, f"#{rank} · {h.score:.3f} · {h.label or h.caption or Path(h.source or h.id).name}"
                          + (f" · +{len(h.similar)} similar" if h.similar else ""))
                for rank, h in enumerate(self.hits, 1) if h.image]

    def records(self) -> list[dict]:
        """Plain dicts, best first: id, score, label, caption, image (thumbnail path)."""
        return [{"id": h.id, "score": round(h.score, 6), "label": h.label, "caption": h.caption, "image": h.image}
                for h in self.hits]


class SearchService:
    """The indexes an app searches: the main one, and the pixel baseline where the store has it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.indexes: dict[str, ImageIndex] = {}
        self.problem: str | None = None
        self.albums: Albums | None = None
        try:
            main = ImageIndex.open(settings.store, settings.collection, model=settings.model,
                                   text_model=settings.text_model)
            self.indexes[main.collection.name] = main
            self.albums = Albums(settings.store, main.embedder, public=settings.public,
                                           limits=settings.limits)
            self._open_pixel_baseline(main)
            self._warm_up(main)
        except SearchError as exc:
            self.problem = f"{exc}"
            log.warning("no index to search: %s", exc.for_operator())

    @property
    def methods(self) -> list[tuple[str, str]]:
        """(label, value) for each shared index, the main one first."""
        return [(f"{name}: {'pixels (basic)' if not ix.supports_text else 'CLIP ' + _model_name(ix.embedder.name)}", name)
                for name, ix in self.indexes.items()]

    @property
    def personal(self) -> Albums:
        """Visitors' albums, which share the main index's model."""
        if self.albums is None:
            raise QueryError(f"No index to search yet: {self.problem}")
        return self.albums

    def personal_methods(self, key: str | None) -> list[tuple[str, str]]:
        """(label, value) for the caller's own collections."""
        if self.albums is None:
            return []
        return [(f"my collection: {name}", MINE + name) for name in self.albums.names(key)]

    def describe(self) -> str:
        """One line on what is being searched, or what to do when nothing is."""
        if self.problem:
            return (f"**No index to search yet.** {self.problem}\n\nBuild the default one with "
                    f"`{BUILD_HINT}`, or point `IMAGE_SEARCH_STORE` at a store, then restart the app.")
        main = next(iter(self.indexes.values()))
        return (f"Searching **{len(main):,} images** in collection `{main.collection.name}` "
                f"with `{_model_name(main.metadata.get('model', main.embedder.name))}`.")

    def add_images(self, key: str | None, name: str, files: list[str] | None) -> BuildReport:
        """Index a visitor's uploads into their collection; the uploaded files are deleted once read.

        (A query's upload is left to Gradio's cache expiry instead: Gradio stores equal uploads at one
        path, so deleting it could pull the file from under a concurrent query of the same image.)
        """
        try:
            return self.personal.add(key, name, list(files or []), progress=False)
        finally:
            discard_uploads(files or [])

    def delete_images(self, key: str | None, name: str, ids: object) -> Removal:
        """Delete images from a visitor's collection, and every copy the web server cached of them."""
        return self._forget(self.personal.remove(key, name, ids))

    def drop_collection(self, key: str | None, name: str) -> Removal:
        """Delete a visitor's collection, and every copy the web server cached of its images."""
        return self._forget(self.personal.drop(key, name))

    def _forget(self, removal: Removal) -> Removal:
        """Purge cached copies of removed images that no collection holds any longer (no thumbnail left)."""
        purge_cached_copies([i for i in removal.removed if not thumbnail_path(self.settings.store, i).exists()])
        return removal

    def search_image(self, image: str | bytes | Image.Image | None, k: int, metric: str, method: str | None = None,
                     *, key: str | None = None, fold: bool = False) -> Results:
        """Search by an uploaded image (path, bytes or PIL image)."""
        if image is None or image == "":
            raise QueryError("Upload, paste or photograph an image first (or give an image URL).")
        index = self._index(method, key)
        return self._timed(lambda: index.search_by_image(image, _results(k), metric, _fold(index, fold)))

    def search_url(self, url: str, k: int, metric: str, method: str | None = None,
                   *, key: str | None = None, fold: bool = False) -> Results:
        """Fetch an image URL safely, then search by it."""
        if not url or not url.strip():
            raise QueryError("Give an image URL (http or https).")
        data = fetch(url.strip(), allow_private=self.settings.allow_private_urls)
        return self.search_image(data, k, metric, method, key=key, fold=fold)

    def search_text(self, text: str, k: int, metric: str, method: str | None = None,
                    *, key: str | None = None, fold: bool = False) -> Results:
        """Search by a description."""
        index = self._index(method, key)
        if not index.supports_text:
            raise QueryError("The pixel method cannot read text: choose a CLIP index, or search by image.")
        return self._timed(lambda: index.search_by_text(text or "", _results(k), metric, _fold(index, fold)))

    def search_id(self, image_id: str, k: int, metric: str, method: str | None = None,
                  *, key: str | None = None, fold: bool = False) -> Results:
        """More like a stored image (ids are content hashes, so they hold across collections)."""
        index = self._index(method, key)
        return self._timed(lambda: index.search_by_id(image_id, _results(k), metric, _fold(index, fold)))

    def _index(self, method: str | None, key: str | None = None) -> ImageIndex:
        if self.problem:
            raise QueryError(f"No index to search yet: {self.problem}")
        if not method:
            return next(iter(self.indexes.values()))
        if isinstance(method, str) and method.startswith(MINE):
            return self.personal.index(key, method[len(MINE):])
        if not isinstance(method, str) or method not in self.indexes:
            raise QueryError(f"Unknown index {shown(method)}; choose one of {', '.join(self.indexes)}, "
                             f"or {MINE}NAME for one of your collections.")
        return self.indexes[method]

    @staticmethod
    def _timed(run) -> Results:
        start = time.perf_counter()
        hits = run()
        return Results(hits, time.perf_counter() - start)

    def _open_pixel_baseline(self, main: ImageIndex) -> None:
        name = self.settings.pixel_collection
        if name == main.collection.name:
            return
        try:
            if name in {c.name for c in connect(self.settings.store).list_collections()}:
                self.indexes[name] = ImageIndex.open(self.settings.store, name)
        except SearchError as exc:
            log.warning("pixel baseline %r not opened: %s", name, exc)

    @staticmethod
    def _warm_up(index: ImageIndex) -> None:
        """Run the model once so the first visitor's query is not the slow one."""
        index.embedder.embed_images([index.embedder.prepare(Image.new("RGB", (256, 256), "white"))])
        if index.supports_text:
            index.embedder.embed_texts(["warm up"])


def _model_name(reference: str) -> str:
    """A model as visitors see it: a Hub name as is, a local checkpoint by its folder's name only."""
    return Path(reference).name
