"""ImageIndex: search a built store by a composed query, by image, by text, or by a stored image's id."""
from __future__ import annotations

import os
import re
import threading
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from search.config import ChromaServer, Settings
from search.core import metrics
from search.core.cutoff import DEPTH as CUTOFF_DEPTH
from search.core.cutoff import auto_cutoff, match_floor
from search.core.dates import seconds_of
from search.core.duplicates import NEAR_DUPLICATE_SIMILARITY, fold_near_duplicates
from search.core.fusion import fuse
from search.core.hits import Hit, Ranked
from search.core.ids import image_id as checked_image_id
from search.core.ids import quoted
from search.core.query import CANNOT_READ_TEXT, MAX_K, Part, Query, checked_metric, compose, whole
from search.core.record import CAPTION, LABEL, SOURCE, THUMBNAIL, CollectionMeta, RecordMeta
from search.core.words import fold, found, query_words
from search.embedders.base import Embedder
from search.embedders.precision import AUTO
from search.embedders.registry import load_embedder
from search.errors import InvalidImageError, QueryError, StoreError
from search.images.decode import ImageInput, read_image
from search.stores.base import DEFAULT_COLLECTION, Collection, Filter, ModelInfo, Neighbour
from search.stores.catalogue import State
from search.stores.keywords import fields
from search.stores.store import Store
from search.stores.swaps import is_shadow

__all__ = ["ImageIndex"]
KEYWORD_DEPTH = 100  # keyword hits fused with the vector ranking (as deep as the cut-off reads)
# l1 and correlation on unit vectors rank this many of HNSW's cosine candidates exactly, instead of reading every
# vector (15 s for the first query at 100k, 2 GB at 1M): a collection no larger is ranked exactly; larger ones
# are held to a full scan by `bench/scale.py recall` (recall@10 1.0 at 300k)
RERANK_DEPTH = 1000
# A broad filter's HNSW candidate costs this many of a narrow filter's rows read from the catalogue (300k records:
# 11 us a candidate in HNSW and 9 to admit it, against 3.2 us a row read in file order): the crossing point
BROAD_COST = 6
OVERFETCH = 1.5  # how many times its share of the collection a broad filter's HNSW search reads first, for k admitted
DEEPEN = 4  # how much deeper a broad filter's HNSW search reads when too few of its nearest pass
FLOOR_LABELS = 32  # labels searched as text for the match floor, the most common first


class ImageIndex:
    """A collection in a store plus the model that built it.

    Metrics: ``cosine`` runs on Chroma's HNSW index. ``ip`` and ``l2`` run on it too when the vectors
    have unit length (CLIP), where they rank exactly as cosine does; on pixel vectors they are exact.
    ``l1`` and ``correlation`` are computed exactly: over HNSW's ``RERANK_DEPTH`` nearest by cosine where the
    vectors have unit length (all of a collection that small), over every stored vector where they do not.
    """

    def __init__(self, store: Store, collection: Collection, embedder: Embedder):
        self.store = store
        self.store_dir = store.folder.resolve()
        self.collection = collection
        self.embedder = embedder
        self.metadata: CollectionMeta = collection.metadata.copy()
        # Caches are keyed by the collection's version in the store's catalogue, which every write changes
        self._exact_cache: tuple[int, list[str], metrics.ExactSearch] | None = None
        self._labels_cache: tuple[int, Counter[str | None]] | None = None
        self._floor_cache: tuple[int, float | None] | None = None
        self._words_checked: int | None = None  # the version when its words were last checked
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
        precision: str = AUTO,
    ) -> ImageIndex:
        """Open a store; the model comes from the collection's metadata unless ``model`` overrides it.

        ``server``: a Chroma server holding the vectors (default: the one CHROMA_HOST names, if any).
        ``precision``: as ``of``'s.
        """
        opened = Store.connect(store, server=server or Settings().chroma)
        return cls.of(opened, opened.open(collection or _default_collection(opened)), model=model,
                      text_model=text_model, device=device, precision=precision)

    @classmethod
    def of(cls, store: Store, collection: Collection, *, model: str | None = None, text_model: str | None = None,
           device: str | None = None, precision: str = AUTO) -> ImageIndex:
        """An opened collection of an opened store, searched with its model (or ``model``), loaded here.

        ``precision``: ``auto`` decides the model's precisions for queries now, where the store remembers no
        decision by racing them (``load_embedder``); the app passes SAFE and decides in the background."""
        collection.check_health()
        if not (model or collection.model):
            raise StoreError(f"collection {collection.name!r} does not record its model; pass model=")
        embedder = load_embedder(model or collection.model or "", device, text_model, precision,
                                 decisions=store.precision_file)
        collection.check_model(ModelInfo.of(embedder), strict=False)
        return cls(store, collection, embedder)

    def __len__(self) -> int:
        return self._state().count

    def _state(self) -> State:
        """The collection's count and version, as the store's catalogue keeps them (no scan, no backend call)."""
        catalogue = self.store.catalogue_for(self.collection)
        return catalogue.state(self.collection.key) or State(0, -1)

    def label_counts(self) -> Counter[str | None]:
        """How many images carry each label (None: those without one), read once per version of the collection."""
        version = self._state().version
        with self._cache_lock:
            if self._labels_cache is None or self._labels_cache[0] != version:
                self._labels_cache = (version, self.store.catalogue_for(self.collection).labels(self.collection.key))
            return self._labels_cache[1]

    def first_images(self, labels: list[str], n: int) -> list[tuple[str, RecordMeta]]:
        """Up to ``n`` images (id, metadata): the first, by sorted id, of each of ``labels`` in turn; where
        ``labels`` is empty, the first ``n`` by id."""
        catalogue, key = self.store.catalogue_for(self.collection), self.collection.key
        firsts = catalogue.first_of(key, labels[:n])
        ids = [firsts[label] for label in labels[:n] if label in firsts] if labels else catalogue.first_ids(key, n)
        metas = self.collection.metadatas(ids)
        return [(i, metas[i]) for i in ids if i in metas]

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

    def search_by_text(self, text: str, k: int = 10, metric: str = "cosine", fold: bool = False) -> list[Hit]:
        """The ``k`` stored images that best match a description: by its vector and its words, as ``search``
        ranks a query of this one text part (without a cut-off)."""
        query = Query(positive=(Part(kind="text", value=text),), metric=metric, cutoff=None, fold=fold)
        return self._search(query, 0, whole("k", k, 1, MAX_K)).hits

    def search_by_id(self, image_id: str, k: int = 10, metric: str = "cosine", fold: float | None = None) -> list[Hit]:
        """Images like a stored one, using its stored vector."""
        return self.search_by_vector(self._embed((Part(kind="id", value=image_id),))[0], k, metric, fold)

    def search_by_vector(self, vector: np.ndarray, k: int = 10, metric: str = "cosine",
                         fold: float | None = None) -> list[Hit]:
        """The ``k`` stored vectors nearest ``vector`` under ``metric``, best first.

        With ``fold`` (a cosine similarity, e.g. 0.95), near-duplicates of a better hit are folded
        into it (``Hit.similar``) instead of taking places of their own.
        """
        k, metric = whole("k", k, 1, MAX_K), checked_metric(metric)
        return self._rank(np.asarray(vector, dtype=np.float32), k, 0, metric, fold)

    def search(self, query: Query) -> Ranked:
        """A page of ``query``'s ranking (see search/core/query.py), with each hit marked against its cut-off.

        Text parts search two channels: the vectors and the records' words (caption, label, file name, photo
        text, text in the image), fused by rank (``core.fusion``); a query none of whose words is found ranks
        by its vector alone. Filters run inside the search, so a full page comes back wherever enough images
        pass. Unknown ids and labels, and text parts on an index that cannot read text, are QueryErrors.
        """
        return self._search(query, query.offset, query.k)

    def _search(self, query: Query, offset: int, k: int) -> Ranked:
        """Hits ``offset`` to ``offset + k`` of ``query``'s ranking (``search``; the library's calls rank deeper)."""
        where = self._filter(query)
        vector = self._compose(query)
        state = self._state()
        count = state.count
        fold = NEAR_DUPLICATE_SIMILARITY if query.fold and self.collection.normalized else None
        dated = query.sort != "relevance"
        words = self._words(query)
        # A fused ranking reads both channels as deep as the keyword one goes, whatever page is asked for
        depth = max(offset + k, CUTOFF_DEPTH if query.cutoff == "auto" or dated else 0, KEYWORD_DEPTH if words else 0)
        scored = self._nearest(vector, depth * 4 + 8 if fold else depth, query.metric, where)
        top = np.array([score for _, score in scored], dtype=np.float64)
        metas: dict[str, RecordMeta] = {}
        matched: dict[str, dict[str, list[str]]] = {}  # only what the keyword channel found holds any of the words
        if words:
            by_words, metas = self._keyword_hits(words, where, vector, query.metric, dict(scored), state.version)
            matched = {i: _matched(metas[i], words) for i, _ in by_words}
            scored = self._fused(scored, by_words, query.keywords)
        total = self.store.catalogue_for(self.collection).total(self.collection.key, where) if where else count
        cutoff = auto_cutoff(top, total) if query.cutoff == "auto" else query.cutoff
        scores = dict(scored)
        ranked = [i for i, _ in scored]
        relevant = {} if cutoff is None else {
            i: scores[i] >= cutoff or _all_found(matched.get(i, {}), words) for i in ranked}
        if dated:
            ranked = self._by_date(ranked, relevant, newest=query.sort == "newest")
        no_match = self._nothing_stands_out(query, top, state) and not any(_all_found(m, words) for m in matched.values())
        page = self._folded(ranked, fold)[offset: offset + k]
        hits = self._hits(page, scores, metas)
        hits = [replace(h, relevant=relevant.get(h.id), matched=matched.get(h.id, {})) for h in hits]
        return Ranked(hits, total, cutoff, no_match)

    def labels(self) -> list[str]:
        """The labels this index holds, sorted."""
        return sorted(label for label in self.label_counts() if label is not None)

    def _compose(self, query: Query) -> np.ndarray:
        """Embed every part in this index's space, then combine them (``query.compose``)."""
        vectors = self._embed(query.parts)
        weighted = [(vectors[i], part.weight) for i, part in enumerate(query.parts)]
        return compose(weighted[: len(query.positive)], weighted[len(query.positive):], self.collection.normalized)

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

    def _rank(self, vector: np.ndarray, k: int, offset: int, metric: str, fold: float | None) -> list[Hit]:
        """Hits ``offset`` to ``offset + k`` of ``vector``'s ranking."""
        wanted = offset + k
        scored = self._nearest(vector, wanted * 4 + 8 if fold else wanted, metric)
        ranked = [i for i, _ in scored]
        return self._hits(self._folded(ranked, fold)[offset:wanted], dict(scored), {})

    def _hits(self, page: list[tuple[str, tuple[str, ...]]], scores: dict[str, float],
              metas: dict[str, RecordMeta]) -> list[Hit]:
        """The page's hits (each id with those folded into it), their metadata read now where ``metas`` lacks it:
        only a page's is ever read (a ranking reads hundreds of candidates; at 300k records, 0.3-1 ms each)."""
        metas = metas | self.collection.metadatas([i for i, _ in page if i not in metas])
        # one deleted since it was ranked is gone
        return [replace(self.hit(i, scores[i], metas[i]), similar=similar) for i, similar in page if i in metas]

    def _folded(self, ranked: list[str], fold: float | None) -> list[tuple[str, tuple[str, ...]]]:
        """``ranked`` with each near-duplicate of a better one folded into it (with ``fold``, a cosine similarity):
        (id, the ids folded into it)."""
        if not fold:
            return [(i, ()) for i in ranked]
        held, matrix = self.store.catalogue_for(self.collection).vectors_of(self.collection.key, ranked)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        vectors = dict(zip(held, matrix))
        ranked = [i for i in ranked if i in vectors]  # one deleted since it was ranked is gone
        return [(head, tuple(members)) for head, members in fold_near_duplicates(ranked, vectors, fold)]

    def _by_date(self, ranked: list[str], relevant: dict[str, bool], *, newest: bool) -> list[str]:
        """The relevant ids by capture date (those without one after them), then the rest as ranked."""
        taken = self.store.catalogue_for(self.collection).taken(self.collection.key, ranked)
        kept = [i for i in ranked if relevant.get(i) is not False]
        dated = sorted((i for i in kept if taken.get(i) is not None), key=lambda i: taken[i] or 0, reverse=newest)
        return dated + [i for i in kept if taken.get(i) is None] + [i for i in ranked if relevant.get(i) is False]

    def _nothing_stands_out(self, query: Query, top: np.ndarray, state: State) -> bool:
        """Whether a text query's best score is below the collection's match floor (``cutoff.match_floor``)."""
        if not len(top) or query.metric not in ("cosine", "ip") or not self.collection.normalized or any(
                p.kind != "text" for p in query.positive):
            return False
        floor = self._match_floor(state)
        return floor is not None and float(top[0]) < floor

    def warm(self) -> None:
        """Work out now what the first query would (the label counts; a text index's words checked and its match
        floor), so it is not the slow one."""
        state = self._state()
        self.label_counts()
        if self.supports_text:
            self.store.keywords_of(self.collection)
            self._words_checked = state.version
            if self.collection.normalized:
                self._match_floor(state)

    def _match_floor(self, state: State) -> float | None:
        """The collection's match floor from its most common labels (at least two), read once per version."""
        with self._cache_lock:
            if self._floor_cache is not None and self._floor_cache[0] == state.version:
                return self._floor_cache[1]
        count = state.count
        labels = [label for label, _ in self.label_counts().most_common(FLOOR_LABELS) if label]
        floor = None
        if len(labels) >= 2 and count > len(labels):
            texts = [" ".join(re.split(r"[/_\-]+", label)).strip() for label in labels]
            found = self.collection.nearest(self.embedder.embed_texts(texts), min(CUTOFF_DEPTH, count), with_metadata=False)
            tops = [f[0].similarity for f in found if f]
            floor = match_floor(np.array(tops), np.array([f[-1].similarity for f in found if f])) if tops else None
        with self._cache_lock:
            self._floor_cache = (state.version, floor)
        return floor

    def _filter(self, query: Query) -> Filter | None:
        """The query's label and date filters, its labels checked against those the index holds."""
        if not (query.include or query.exclude or query.taken_from or query.taken_to):
            return None
        held = self.label_counts()
        for name in (*query.include, *query.exclude):
            if name not in held:
                raise QueryError(f"labels: this index holds no label {quoted(name)}.")
        until = query.taken_to + timedelta(days=1) if query.taken_to else None
        return Filter(query.include, query.exclude, _day(query.taken_from), _day(until))

    def _words(self, query: Query) -> list[str]:
        """The words the keyword channel looks for: those of a query whose positive parts are all text (an image
        or id part asks for images like it, which words cannot say); none with ``keywords=0``."""
        if not query.keywords or not self.supports_text or any(p.kind != "text" for p in query.positive):
            return []
        return query_words(" ".join(p.value for p in query.positive))

    def _keyword_hits(self, words: list[str], where: Filter | None, vector: np.ndarray, metric: str,
                      ranked: dict[str, float], version: int) -> tuple[list[tuple[str, float]], dict[str, RecordMeta]]:
        """The records holding the query's words that ``where`` admits, best first, each with its score under
        ``metric`` against ``vector`` (what the hit shows, whichever channel found it), and their metadata;
        ``ranked``: the vector search's scores, by id (computed here only where it has none); ``version``: the
        collection's now (the words are checked against the records again when it changes)."""
        if self._words_checked != version:
            self.store.keywords_of(self.collection)
            self._words_checked = version
        ids = [h.id for h in self.store.keywords.search(self.collection.name, words, KEYWORD_DEPTH)]
        missing = [i for i in ids if i not in ranked]
        if missing:  # their vectors from the catalogue (Chroma's are 10x slower to read)
            catalogue, key = self.store.catalogue_for(self.collection), self.collection.key
            if where is not None:
                admitted = catalogue.admitted(key, missing, where)
                missing = [i for i in missing if i in admitted]
            held, matrix = catalogue.vectors_of(key, missing)
            ranked = ranked | dict(zip(held, metrics.scores(matrix, vector, metric).tolist())) if held else ranked
        metas = self.collection.metadatas([i for i in ids if i in ranked])  # which words each holds, and where
        return [(i, ranked[i]) for i in ids if i in metas], metas

    @staticmethod
    def _fused(scored: list[tuple[str, float]], keyword: list[tuple[str, float]], weight: float) -> list[tuple[str, float]]:
        """The vector ranking and the keyword channel's, fused (``core.fusion.fuse``)."""
        if not keyword:
            return scored
        by_id = {s[0]: s for s in (*keyword, *scored)}
        return [by_id[i] for i in fuse([s[0] for s in scored], [s[0] for s in keyword], weight)]

    def _nearest(self, vector: np.ndarray, k: int, metric: str,
                 where: Filter | None = None) -> list[tuple[str, float]]:
        """The ``k`` records nearest ``vector`` under ``metric`` among those ``where`` admits: (id, score), best first
        (their metadata is read for the page they make, ``_hits``)."""
        normalized = self.collection.normalized
        if not (metric == "cosine" or normalized):  # pixel vectors under l1, l2, ip, correlation: float32, exactly
            catalogue, key = self.store.catalogue_for(self.collection), self.collection.key
            return self._exact_all(vector, metric, k, None if where is None else set(catalogue.ids(key, where)))
        if where is not None:
            catalogue, key = self.store.catalogue_for(self.collection), self.collection.key
            admitted = catalogue.total(key, where)
            # A broad filter is served by the nearest over everything, as deep as its share of the collection calls
            # for, that it admits; a narrow one by ranking all it admits exactly, from the catalogue's vectors;
            # whichever reads less (the backend's own filtered search reads every record's metadata)
            # l1 and correlation re-rank as many admitted candidates as they would without a filter
            wanted = k if metric in ("cosine", "ip", "l2") else max(k, RERANK_DEPTH)
            count = self._state().count
            depth = int(wanted * count / max(admitted, 1) * OVERFETCH) + 32
            while admitted > BROAD_COST * depth and depth < count:
                found = self._approximate(vector, k, metric, depth=depth, admit=where)
                if len(found) >= min(k, admitted):
                    return found
                # Too few near this query pass (the filter's images lie elsewhere): deeper, as pgvector's iterative
                # scans do, while that still reads less than ranking all it admits
                depth *= DEEPEN
            ids, matrix = catalogue.vectors(key, where)
            return self._exact(ids, metrics.ExactSearch(matrix), vector, metric, k)
        return self._approximate(vector, k, metric)

    def _exact_all(self, vector: np.ndarray, metric: str, k: int, admitted: set[str] | None) -> list[tuple[str, float]]:
        """The ``k`` best of every stored vector (of those ``admitted``), as stored: pixel vectors are not unit
        length, and their float16 copies would put an image at a distance from itself."""
        ids, exact = self._all_vectors()
        return self._exact(ids, exact, vector, metric, k,
                           None if admitted is None else np.flatnonzero([i in admitted for i in ids]))

    def _approximate(self, vector: np.ndarray, k: int, metric: str, *, depth: int = 0,
                     admit: Filter | None = None) -> list[tuple[str, float]]:
        """HNSW's ``k`` nearest (of its ``depth`` nearest, those ``admit`` admits): cosine, and ip and l2 on unit
        vectors, from its cosine; l1 and correlation by ranking its RERANK_DEPTH nearest exactly.

        Chroma is asked for ids and distances only (with metadata 5x longer for 1,000, with vectors 25x): the
        catalogue admits and holds the vectors, and the metadata of the ``k`` chosen is read by id."""
        cosine = metric == "cosine" or (metric in ("ip", "l2") and self.collection.normalized)
        depth = max(depth, k if cosine else RERANK_DEPTH)
        catalogue, key = self.store.catalogue_for(self.collection), self.collection.key
        near: list[Neighbour] = self.collection.nearest(vector[None, :], depth, with_metadata=False)[0]
        if admit is not None:
            keep = catalogue.admitted(key, [n.id for n in near], admit)
            near = [n for n in near if n.id in keep]
        if not cosine:
            ids, matrix = catalogue.vectors_of(key, [n.id for n in near])
            return self._exact(ids, metrics.ExactSearch(matrix), vector, metric, k)
        return [(n.id, metrics.score_from_cosine(n.similarity, metric)) for n in near[:k]]

    def _exact(self, ids: list[str], exact: metrics.ExactSearch, vector: np.ndarray, metric: str, k: int,
               rows: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The ``k`` best of ``ids`` (the rows of ``exact``; of ``rows`` only, where given) under ``metric``: (id,
        score)."""
        if not ids:
            return []
        return [(ids[i], s) for i, s in exact.top_k(vector, metric, k, rows)]

    def remove(self, ids: list[str]) -> list[str]:
        """Delete images from this collection (their thumbnails too, once no collection holds them).

        Returns the ids that were held and are now gone; every id must be well-formed.
        """
        return self.store.remove(self.collection, [checked_image_id(i) for i in ids])

    def _all_vectors(self) -> tuple[list[str], metrics.ExactSearch]:
        """Every stored vector, read once per version of the collection, with what exact metrics precompute on them."""
        version = self._state().version
        with self._cache_lock:
            if self._exact_cache is None or self._exact_cache[0] != version:
                ids, matrix = self.collection.scan_vectors()
                self._exact_cache = (version, ids, metrics.ExactSearch(matrix))
            return self._exact_cache[1], self._exact_cache[2]

    def hit(self, image_id: str, score: float, meta: RecordMeta | None) -> Hit:
        """A Hit from a record's id, score and metadata."""
        meta = meta or RecordMeta()
        thumb = meta.get(THUMBNAIL)
        return Hit(
            id=image_id,
            score=float(score),
            label=meta.get(LABEL),
            caption=meta.get(CAPTION),
            # normpath, not resolve(): no file system calls on the query path
            image=os.path.normpath(self.store_dir / thumb) if thumb else None,
            source=meta.get(SOURCE),
            metadata=meta,
        )


def _matched(meta: RecordMeta, words: list[str]) -> dict[str, list[str]]:
    """The query's words in each of a record's fields, as written there (only the fields holding some)."""
    where = {name: found(text, words) for name, text in fields(meta).items()}
    return {name: hits for name, hits in where.items() if hits}


def _all_found(matched: dict[str, list[str]], words: list[str]) -> bool:
    """Whether the words ``matched`` found (by field) are every one of the query's (with or without accents)."""
    if not words:
        return False
    have = {fold(w) for hits in matched.values() for w in hits}
    return all(fold(w) in have for w in words)


def _day(day: date | None) -> int | None:
    return seconds_of(day) if day else None


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
