"""ImageIndex: search a built store by a composed query, by image, by text, or by a stored image's id."""
from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from search.config import ChromaServer, Settings
from search.core import metrics
from search.core.cutoff import DEPTH as CUTOFF_DEPTH
from search.core.cutoff import auto_cutoff
from search.core.duplicates import NEAR_DUPLICATE_SIMILARITY, fold_near_duplicates
from search.core.hits import Hit, Ranked
from search.core.ids import image_id as checked_image_id
from search.core.ids import shown
from search.core.query import CANNOT_READ_TEXT, MAX_K, Part, Query, checked_metric, compose, whole
from search.embedders.base import Embedder
from search.embedders.registry import load_embedder
from search.errors import InvalidImageError, QueryError, StoreError
from search.images.decode import ImageInput, read_image
from search.stores.base import DEFAULT_COLLECTION, Collection, LabelFilter, ModelInfo, Neighbour
from search.stores.store import Store
from search.stores.swaps import is_shadow

__all__ = ["ImageIndex"]


@dataclass(frozen=True)
class Catalogue:
    """Every record's label, and how many records hold each: what label filters and totals read."""

    labels: dict[str, str | None]  # by id
    counts: Counter[str | None]

    def total(self, labels: LabelFilter) -> int:
        """How many records pass ``labels``."""
        return sum(n for label, n in self.counts.items() if labels.admits(label))


class ImageIndex:
    """A collection in a store plus the model that built it.

    Metrics: ``cosine`` runs on Chroma's HNSW index. ``ip`` and ``l2`` run on it too when the vectors
    have unit length (CLIP), where they rank exactly as cosine does; on pixel vectors they are exact.
    ``l1`` and ``correlation`` are always computed exactly over every stored vector.
    """

    def __init__(self, store: Store, collection: Collection, embedder: Embedder):
        self.store = store
        self.store_dir = store.folder.resolve()
        self.collection = collection
        self.embedder = embedder
        self.metadata = dict(collection.metadata)
        self._exact_cache: tuple[int, list[str], metrics.ExactSearch] | None = None
        self._catalogue_cache: tuple[int, Catalogue] | None = None
        self._cache_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        store: str | Path,
        collection: str | None = None,
        *,
        model: str | None = None,
        text_model: str | None = None,
        device: str | None = None,
        server: ChromaServer | None = None,
    ) -> ImageIndex:
        """Open a store; the model comes from the collection's metadata unless ``model`` overrides it.

        ``server``: a Chroma server holding the vectors (default: the one CHROMA_HOST names, if any).
        """
        opened = Store.connect(store, server=server or Settings().chroma)
        name = collection or _default_collection(opened)
        col = opened.open(name)
        col.check_health()
        if not (model or col.model):
            raise StoreError(f"collection {name!r} does not record its model; pass model=")
        embedder = load_embedder(model or col.model or "", device, text_model, decisions=opened.precision_file)
        col.check_model(ModelInfo.of(embedder), strict=False)
        return cls(opened, col, embedder)

    def __len__(self) -> int:
        return self.collection.count()

    @property
    def supports_text(self) -> bool:
        """Whether this index can be searched by text (CLIP can, pixels cannot)."""
        return self.embedder.supports_text

    def search_by_image(self, image: ImageInput, k: int = 10, metric: str = "cosine",
                        fold: float | None = None) -> list[Hit]:
        """The ``k`` stored images most like ``image`` (a path, bytes or a PIL image)."""
        k, metric = whole("k", k, 1, MAX_K), checked_metric(metric)
        img = self.embedder.prepare(read_image(image, min_edges=self.embedder.min_edges))
        return self.search_by_vector(self.embedder.embed_images([img])[0], k, metric, fold)

    def search_by_text(self, text: str, k: int = 10, metric: str = "cosine", fold: float | None = None) -> list[Hit]:
        """The ``k`` stored images that best match a description."""
        return self.search_by_vector(self._embed((Part("text", text),))[0], k, metric, fold)

    def search_by_id(self, image_id: str, k: int = 10, metric: str = "cosine", fold: float | None = None) -> list[Hit]:
        """Images like a stored one, using its stored vector."""
        return self.search_by_vector(self._embed((Part("id", image_id),))[0], k, metric, fold)

    def search_by_vector(self, vector: np.ndarray, k: int = 10, metric: str = "cosine",
                         fold: float | None = None) -> list[Hit]:
        """The ``k`` stored vectors nearest ``vector`` under ``metric``, best first.

        With ``fold`` (a cosine similarity, e.g. 0.95), near-duplicates of a better hit are folded
        into it (``Hit.similar``) instead of taking places of their own.
        """
        k, metric = whole("k", k, 1, MAX_K), checked_metric(metric)
        return self._rank(np.asarray(vector, dtype=np.float32), k, 0, metric, fold)[0]

    def search(self, query: Query) -> Ranked:
        """A page of ``query``'s ranking (see search/query.py), with each hit marked against its cut-off.

        Label filters run inside the search, so a full page comes back wherever enough images pass.
        Unknown ids and labels, and text parts on an index that cannot read text, are QueryErrors.
        """
        labels = LabelFilter(query.include, query.exclude) if query.include or query.exclude else None
        if labels:
            held = self._catalogue().counts
            for name in (*labels.include, *labels.exclude):
                if name not in held:
                    raise QueryError(f"labels: this index holds no label {shown(name)}.")
        vector = self._compose(query)
        fold = NEAR_DUPLICATE_SIMILARITY if query.fold and self.metadata.get("normalized") else None
        hits, top = self._rank(vector, query.k, query.offset, query.metric, fold, labels,
                               CUTOFF_DEPTH if query.cutoff == "auto" else 0)
        # The label scan is read only for filters: counting is cheaper where there are none
        total = self._catalogue().total(labels) if labels else len(self)
        cutoff = auto_cutoff(top, total) if query.cutoff == "auto" else query.cutoff
        if cutoff is not None:
            hits = [replace(h, relevant=h.score >= cutoff) for h in hits]
        return Ranked(hits, total, cutoff)

    def labels(self) -> list[str]:
        """The labels this index holds, sorted."""
        return sorted(label for label in self._catalogue().counts if label is not None)

    def _compose(self, query: Query) -> np.ndarray:
        """Embed every part in this index's space, then combine them (``query.compose``)."""
        vectors = self._embed(query.parts)
        weighted = [(vectors[i], part.weight) for i, part in enumerate(query.parts)]
        return compose(weighted[: len(query.positive)], weighted[len(query.positive):], bool(self.metadata.get("normalized")))

    def _embed(self, parts: tuple[Part, ...]) -> list[np.ndarray]:
        """Each part's vector: texts and images in one batch each, ids from the store."""
        out: dict[int, np.ndarray] = {}
        texts = [(i, p) for i, p in enumerate(parts) if p.kind == "text"]
        if texts and not self.supports_text:
            raise QueryError(_at(texts[0][1], CANNOT_READ_TEXT))
        if texts:
            out.update(zip([i for i, _ in texts], self.embedder.embed_texts([p.value for _, p in texts])))
        images = [(i, p) for i, p in enumerate(parts) if p.kind == "image"]
        prepared = []
        for _, part in images:
            try:
                prepared.append(self.embedder.prepare(read_image(part.value, min_edges=self.embedder.min_edges,
                                                                 box=part.box)))
            except (InvalidImageError, QueryError) as exc:  # a region outside the image is a QueryError
                raise QueryError(_at(part, str(exc))) from exc
        if images:
            out.update(zip([i for i, _ in images], self.embedder.embed_images(prepared)))
        ids = [(i, p) for i, p in enumerate(parts) if p.kind == "id"]
        stored = self.collection.vectors(list(dict.fromkeys(p.value for _, p in ids)))
        for i, part in ids:
            if part.value not in stored:
                raise QueryError(_at(part, f"no image with id {part.value} in this index."))
            out[i] = stored[part.value]
        return [out[i] for i in range(len(parts))]

    def _rank(self, vector: np.ndarray, k: int, offset: int, metric: str, fold: float | None,
              labels: LabelFilter | None = None, depth: int = 0) -> tuple[list[Hit], np.ndarray]:
        """Hits ``offset`` to ``offset + k`` of the ranking, and the scores it ranked (at least ``depth``), best first."""
        wanted = offset + k
        scored = self._nearest(vector, max(wanted * 4 + 8 if fold else wanted, depth), metric, labels)
        top = np.array([s[1] for s in scored], dtype=np.float64)
        if not fold:
            return [self.hit(*s) for s in scored[offset:wanted]], top
        vectors = {i: v / (np.linalg.norm(v) or 1.0) for i, v in self.collection.vectors([s[0] for s in scored]).items()}
        by_id = {s[0]: s for s in scored}
        ranked = [s[0] for s in scored if s[0] in vectors]  # one deleted since it was ranked is gone from both
        folded = fold_near_duplicates(ranked, vectors, fold)[offset:wanted]
        return [replace(self.hit(*by_id[head]), similar=tuple(members)) for head, members in folded], top

    def _nearest(self, vector: np.ndarray, k: int, metric: str,
                 labels: LabelFilter | None = None) -> list[tuple[str, float, dict]]:
        if metric == "cosine" or (metric in ("ip", "l2") and self.metadata.get("normalized")):
            # No count() first: it costs more than the search at 100k vectors, and Chroma returns
            # fewer than k results (none from an empty collection) without complaint.
            found: list[Neighbour] = self.collection.nearest(vector[None, :], k, labels)[0]
            return [(n.id, metrics.score_from_cosine(n.similarity, metric), n.metadata) for n in found]
        ids, exact = self._all_vectors()
        rows = None
        if labels:  # rank only the rows the filter admits, so k results still come back
            catalogue = self._catalogue()
            rows = np.flatnonzero([labels.admits(catalogue.labels.get(i)) for i in ids])
        best = exact.top_k(vector, metric, k, rows)
        chosen = [ids[i] for i, _ in best]
        metas = self.collection.metadatas(chosen)
        return [(ids[i], s, metas.get(ids[i], {})) for i, s in best]

    def remove(self, ids: list[str]) -> list[str]:
        """Delete images from this collection (their thumbnails too, once no collection holds them).

        Returns the ids that were held and are now gone; every id must be well-formed.
        """
        removed = self.store.remove(self.collection, [checked_image_id(i) for i in ids])
        self.invalidate()
        return removed

    def invalidate(self) -> None:
        """Forget cached vectors after this process changed the collection."""
        with self._cache_lock:
            self._exact_cache = None
            self._catalogue_cache = None

    def _catalogue(self) -> Catalogue:
        """Every record's label, read once per collection size (a change of size re-reads them)."""
        with self._cache_lock:
            count = len(self)
            if self._catalogue_cache is None or self._catalogue_cache[0] != count:
                labels = {i: m.get("label") for i, m in self.collection.scan_metadata()}
                self._catalogue_cache = (count, Catalogue(labels, Counter(labels.values())))
            return self._catalogue_cache[1]

    def _all_vectors(self) -> tuple[list[str], metrics.ExactSearch]:
        """Every stored vector, read once per collection size, with what exact metrics precompute on them."""
        with self._cache_lock:
            count = len(self)
            if self._exact_cache is None or self._exact_cache[0] != count:
                ids, matrix = self.collection.scan_vectors()
                self._exact_cache = (count, ids, metrics.ExactSearch(matrix))
            return self._exact_cache[1], self._exact_cache[2]

    def hit(self, image_id: str, score: float, meta: dict | None) -> Hit:
        """A Hit from a record's id, score and metadata."""
        meta = meta or {}
        thumb = meta.get("thumbnail")
        return Hit(
            id=image_id,
            score=float(score),
            label=meta.get("label"),
            caption=meta.get("caption"),
            # normpath, not resolve(): no file system calls on the query path
            image=os.path.normpath(self.store_dir / thumb) if thumb else None,
            source=meta.get("source"),
            metadata=meta,
        )


def _at(part: Part, message: str) -> str:
    """``message`` about ``part``, headed by where the caller put it ("positive[1]: ...") where it has a name."""
    return f"{part.name}: {message}" if part.name else message[:1].upper() + message[1:]


def _default_collection(store: Store) -> str:
    names = [name for name in store.names() if not is_shadow(name)]
    if DEFAULT_COLLECTION in names or not names:
        return DEFAULT_COLLECTION
    if len(names) == 1:
        return names[0]
    raise StoreError("the store holds several collections; name one (IMAGE_SEARCH_COLLECTION, or collection=)",
                     internals=", ".join(names))
