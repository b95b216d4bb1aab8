"""What the app serves, free of any UI: the open indexes, visitors' albums, timed queries, typed answers.

Words used throughout: ``index`` is the string that names what to search ("" for the main index, a
shared index's name such as "pixels", or "mine/NAME" for one of the caller's albums); the ``ImageIndex``
it opens is called ``target``. How any of this is shown (captions, dropdown labels, Markdown, status
lines) is the web layer's business: see ``search/web/views.py``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from search.config import Settings
from search.core.hits import Hit
from search.core.ids import quoted
from search.core.query import Query
from search.core.record import model_name
from search.embedders.base import Embedder
from search.embedders.batching import QueryBatcher
from search.embedders.precision import SAFE, Chooser, Tunable
from search.errors import InvalidImageError, QueryError, SearchError, ServiceUnavailable
from search.index import ImageIndex
from search.pipeline import hub
from search.pipeline.build import Progress
from search.pipeline.report import BuildReport
from search.pipeline.swap import ReembedReport
from search.service.albums import Albums, Removal
from search.service.examples import Examples, Shipped, examples_of
from search.service.first_run import BuildState, DefaultBuild, wanted
from search.sources.fetch import PrivateAddressError, fetch
from search.stores import thumbnails

log = logging.getLogger(__name__)
MINE = "mine/"  # an index value naming one of the caller's albums
FOLLOW_S = 5.0  # how often the shared indexes are checked for a switch or rollback made by the builder
QUERY_BATCH = 1  # a query embeds one input: the batch the precision race runs at for the app
LOAD_WAIT_S = 120.0  # how long a query that came while the model loads waits for it before it is refused
# What callers are told to wait before asking again (HTTP's Retry-After), by what they wait for:
LOADING_RETRY_S = 30  # the model, after a query already waited LOAD_WAIT_S for it
FIRST_IMAGES_RETRY_S = 10  # the default build's first images (searches answer on what is in as soon as some are)


@dataclass(frozen=True)
class Answer:
    """One page of a query's hits, how many images it ranks, its cut-off, and how long it took."""

    hits: list[Hit]
    total: int  # images the query ranks: the index's count after label filters
    offset: int  # the rank of the first hit (0 is the best)
    cutoff: float | None  # the score below which hits are marked not relevant; None: no cut-off
    seconds: float
    album: str | None = None  # the token that serves the thumbnails of an album's hits; None: a shared index
    no_match: bool = False  # nothing stands out for the query's text: the hits are only the nearest there are

    def records(self, *, relevance: bool = True) -> list[dict[str, Any]]:
        """The hits as plain data, best first (``Hit.record``)."""
        return [h.record(relevance=relevance) for h in self.hits]


@dataclass(frozen=True)
class IndexChoice:
    """Something a visitor can search: a shared index (searched by a model's vectors, CLIP or SigLIP: "model"; or by
    raw pixels: "pixels") or one of their albums."""

    name: str  # the shared index's name, or the album's name as its owner gave it
    kind: Literal["model", "pixels", "album"]
    model: str  # the model by its name only (never a server path)

    @property
    def index(self) -> str:
        """The value that selects it in a search (``index=``)."""
        return MINE + self.name if self.kind == "album" else self.name


@dataclass(frozen=True)
class Overview:
    """What the app searches (its main index), or, with ``problem`` set, why it searches nothing."""

    images: int = 0
    collection: str = ""
    model: str = ""
    problem: str | None = None
    building: BuildState | None = None  # the default build, while it runs or where it failed
    loading: bool = False  # the store and the model are being opened: nothing is known yet


class SearchService:
    """The indexes an app searches: the main one, the pixel baseline where the store has it, and albums."""

    def __init__(self, settings: Settings, chooser: Chooser | None = None):
        """An app's service with nothing open yet: ``load`` opens the store and loads the model, and until
        it has, queries wait for it (so a server can take visitors before the model is in memory).

        ``chooser`` decides the main model's precisions (default: one remembering in the store's precision.json)."""
        self.settings = settings
        self._chooser = chooser
        self.tuning: threading.Thread | None = None  # the precision race running in the background, if one is
        self._shared: dict[str, ImageIndex] = {}  # by name, the main index first
        self._problem: SearchError | None = SearchError("nothing has been opened")
        self._albums: Albums | None = None
        self._build: DefaultBuild | None = None
        self._loaded = threading.Event()

    @classmethod
    def open(cls, settings: Settings) -> SearchService:
        """The service over the store ``settings`` name, loaded (``load``)."""
        service = cls(settings)
        service.load()
        return service

    def load(self, *, build_default: bool = False) -> None:
        """Open the main index (model loaded and run once, so the first visitor's query is not the slow one)
        and the pixel baseline; where there is none, keep the reason, for the page and for callers. With
        ``build_default``, then start the default build where this start calls for it (``wanted``).

        Queries that came meanwhile go on once this returns, or raises."""
        try:
            hub.reach()  # out of reach, models by Hub name load from the cache at once, not after minutes of retries
            try:
                main = ImageIndex.open(self.settings.store, self.settings.collection, model=self.settings.model,
                                       text_model=self.settings.text_model, server=self.settings.chroma,
                                       precision=SAFE)
                self.attach(main)
                self._open_pixel_baseline(main)
                _warm_up(main)
            except SearchError as exc:
                self._problem = exc
                log.warning("no index to search: %s", exc.for_operator())
            if build_default:  # before loading is over, so that the page goes from one to the other
                self.start_default_build()
        finally:
            self._loaded.set()

    @property
    def loading(self) -> bool:
        """True until ``load`` has run."""
        return not self._loaded.is_set()

    # --- What there is to search ------------------------------------------------------------------------

    def overview(self) -> Overview:
        """The main index's size, collection and model; or the problem that left nothing to search."""
        if self.loading:
            return Overview(loading=True)
        state = self.build_state()
        building = state if state and state.stage != "done" else None
        main = self.main_index()
        if main is None:
            return Overview(problem=None if building or self._problem is None else str(self._problem), building=building)
        return Overview(len(main), main.collection.name, model_name(main.collection.model or main.embedder.name),
                        building=building)

    def store_answering(self) -> bool:
        """False while the store's server does not answer (its calls time out)."""
        main = self.main_index()
        return main is None or main.store.answering

    def main_index(self) -> ImageIndex | None:
        """The main index, where there is one yet."""
        return next(iter(self._shared.values()), None)

    def examples(self, shipped: Shipped) -> Examples:
        """Examples that fit the main index (``examples.examples_of``); none while the default build runs."""
        main = self.main_index()
        state = self.build_state()
        if main is None or (state and not state.finished):
            return Examples([], [])
        return examples_of(main, shipped)

    # --- The default index, built in the background on a first start (search/service/first_run.py) -------------

    def start_default_build(self) -> bool:
        """Build (or resume) the default index in the background where this start calls for it."""
        if self._build is not None or not wanted(self.settings):
            return False
        self._build = DefaultBuild(self.settings, self.main_index, self.attach)
        self._build.start()
        return True

    def build_state(self) -> BuildState | None:
        """Where the default build stands; None where this start did not build."""
        return self._build.state() if self._build else None

    def attach(self, target: ImageIndex) -> None:
        """Serve a shared index from now on (the first becomes the main one); the default build calls this."""
        if not self._shared:  # the main index, its model shared by its albums
            target = self._serving(target)
            self._albums = Albums(target.store, target.embedder, public=self.settings.public,
                                  limits=self.settings.limits, text_model=self.settings.text_model,
                                  read_texts=self.settings.ocr)
            self._problem = None
            # What a killed upload left in flight (thumbnails without records are never served: see ``thumbnail``).
            threading.Thread(target=self._albums.repair, name="repair", daemon=True).start()
            self._albums.start_reading()  # text a stopped process left to read
            threading.Thread(target=self._follow, name="follow-switches", daemon=True).start()
        self._shared = {**self._shared, target.collection.name: target}  # readers iterate the old dict safely

    def follow_switch(self) -> list[str]:
        """Serve the collection now under a shared index's name where a switch or rollback (index_builder.py
        --switch, --rollback) put another one there; the names whose index changed.

        The new collection is searched with the model it records, loaded and run once before it replaces
        the old index, which answers until then. Albums keep the model they were built with; new ones get
        the main index's.
        """
        changed = []
        for name, target in list(self._shared.items()):
            try:
                now = target.store.open(name)
                if now.key == target.collection.key:
                    continue
                fresh = ImageIndex.of(target.store, now, text_model=self.settings.text_model, precision=SAFE)
                _warm_up(fresh)
            except SearchError as exc:  # mid-switch (the name is missing between two renames), or the store is down
                log.info("index %r not checked for a switch: %s", name, exc.for_operator())
                continue
            if name == next(iter(self._shared)):
                fresh = self._serving(fresh)
                if self._albums:  # new albums are made with the main index's model
                    self._albums.embedder = fresh.embedder
            self._shared = {n: fresh if n == name else t for n, t in self._shared.items()}
            log.info("serving %r with %s: the collection under that name was switched", name, now.model)
            changed.append(name)
        return changed

    def _serving(self, target: ImageIndex) -> ImageIndex:
        """``target`` as the main index is served: its model's precisions settled without waiting (``_tune``), and
        concurrent queries sharing its model calls (a QueryBatcher)."""
        self._tune(target.embedder, target.store.precision_file)
        return ImageIndex(target.store, target.collection, QueryBatcher(target.embedder))

    def _tune(self, embedder: Embedder, decisions: str) -> None:
        """Run each of ``embedder``'s towers at the precision the chooser recalls for queries, at once; where it
        recalls none (a first start), race on a background thread and switch once it has decided. Until then the
        tower serves at SAFE: nobody waits for a race. ``decisions``: the store's file of remembered decisions."""
        if not isinstance(embedder, Tunable):
            return
        if self._chooser is None:
            self._chooser = Chooser(decisions)
        chooser = self._chooser
        undecided = []
        for race in embedder.races(QUERY_BATCH):
            known = chooser.recalled(race)
            if known is None:
                undecided.append(race)
            else:
                embedder.use(race.tower, known)
        if undecided:
            def decide() -> None:
                try:
                    for race in undecided:
                        embedder.use(race.tower, chooser.choose(race))
                except Exception:  # the towers serve on at SAFE
                    log.exception("the precision race failed")

            self.tuning = threading.Thread(target=decide, name="precision-race", daemon=True)
            self.tuning.start()

    def _follow(self) -> None:
        while True:
            time.sleep(FOLLOW_S)
            try:
                self.follow_switch()
            except Exception:  # a bug here must not end the following for the process's life
                log.exception("checking for a switch failed")

    def shared_indexes(self) -> list[IndexChoice]:
        """The indexes every visitor may search, the main one first."""
        return [IndexChoice(name, "model" if target.supports_text else "pixels", model_name(target.embedder.name))
                for name, target in self._shared.items()]

    def album_indexes(self, key: str | None) -> list[IndexChoice]:
        """The caller's albums as searchable indexes; none where there is no main index (and so no album). While
        the model loads, this waits for it, as searches do: a page opened meanwhile lists the albums once loaded."""
        self._wait_loaded()
        if self._albums is None:
            return []
        albums = self._albums
        return [IndexChoice(name, "album", model_name(albums.model(key, name))) for name in self.album_names(key)]

    # --- Albums: a visitor's own images -----------------------------------------------------------------

    def album_names(self, key: str | None) -> list[str]:
        """The caller's albums, by the names they gave them."""
        return self._albums_or_refuse().names(key)

    def browse_album(self, key: str | None, name: str, offset: int = 0, limit: int = 200) -> tuple[list[Hit], int]:
        """A page of the album's images, newest first, and how many it holds (none without such an album)."""
        albums = self._albums_or_refuse()
        return albums.browse(key, name, offset, limit) if name in self.album_names(key) else ([], 0)

    def add_images(self, key: str | None, name: str, files: list[str] | None,
                   on_progress: Progress | None = None) -> BuildReport:
        """Index a visitor's uploaded files (images and zips) into their album."""
        return self._albums_to_change().add(key, name, list(files or []), on_progress)

    def delete_images(self, key: str | None, name: str, ids: object) -> Removal:
        """Delete images from a visitor's album."""
        return self._albums_to_change().remove(key, name, ids)

    def drop_album(self, key: str | None, name: str) -> Removal:
        """Delete a visitor's whole album."""
        return self._albums_to_change().drop(key, name)

    def album_behind(self, key: str | None, name: str) -> bool:
        """Whether a visitor's album was made with another model than the main index's (before a switch)."""
        albums = self._albums_or_refuse()
        return name in albums.names(key) and albums.behind(key, name)

    def swap_album(self, key: str | None, name: str, on_progress: Callable[[int, int], None] | None = None) -> ReembedReport:
        """Bring a visitor's album to the main index's model (``Albums.swap``)."""
        return self._albums_to_change().swap(key, name, on_progress)

    def thumbnail(self, image_id: str, album: str | None = None) -> bytes | None:
        """The JPEG bytes of the thumbnail of ``image_id`` that may be served: of a shared index's image, or,
        with ``album`` (the token in the album's thumbnail URLs), of that album's. None for anything else, alike."""
        if album is None:
            targets = list(self._shared.values())
        else:
            found = self._albums.by_token(album) if self._albums else None
            targets = [found] if found else []
        if any(t.collection.held([image_id]) for t in targets):
            return thumbnails.read(self.settings.store, image_id)
        return None

    def without_thumbnail(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` whose thumbnail is gone from the store (no collection holds them any longer)."""
        return [i for i in ids if not thumbnails.exists(self.settings.store, i)]

    # --- Queries ----------------------------------------------------------------------------------------

    def search(self, query: Query | object, images: list[str] | None = None, key: str | None = None) -> Answer:
        """Run a query: a checked ``Query``, or a composed query as API callers send it (JSON), whose image
        parts name ``images`` by position."""
        parsed = Query.model_validate(query, context={"images": images})
        target = self._target(parsed.index, key)
        start = time.perf_counter()
        ranked = target.search(parsed)
        album = self._albums.token(key, parsed.index[len(MINE):]) if parsed.index.startswith(MINE) and self._albums else None
        return Answer(ranked.hits, ranked.total, parsed.offset, ranked.cutoff, time.perf_counter() - start, album,
                      ranked.no_match)

    def labels(self, index: str | None = None, key: str | None = None) -> list[str]:
        """The labels the index holds, sorted (for label filters)."""
        return self._target(index, key).labels()

    def fetch_url(self, url: str) -> bytes:
        """An image URL's bytes, fetched safely (public addresses only, unless the operator allows more)."""
        if not isinstance(url, str) or not url.strip():
            raise QueryError("Give an image URL (http or https).")
        try:
            return fetch(url.strip(), allow_private=self.settings.allow_private_urls)
        except PrivateAddressError as exc:
            if self.settings.public:  # which internal address a name leads to is nobody's business on a public app
                raise InvalidImageError(exc.reason, "the address leads to a private or reserved network, which this "
                                        "app does not fetch from") from None
            raise InvalidImageError(exc.reason, f"{exc.detail}. To search images on your own network, "
                                    "start the app with IMAGE_SEARCH_ALLOW_PRIVATE_URLS=1") from None

    # --- Inside -----------------------------------------------------------------------------------------

    def _target(self, index: str | None, key: str | None) -> ImageIndex:
        """The ImageIndex that ``index`` names (see the module's docstring)."""
        self._wait_loaded()
        shared = self._shared
        if not shared:
            raise self._unavailable()
        if isinstance(index, str) and index.startswith(MINE):
            return self._albums_or_refuse().index(key, index[len(MINE):])
        if index and (not isinstance(index, str) or index not in shared):
            raise QueryError(f"Unknown index {quoted(index)}; choose one of {', '.join(shared)}, "
                             f"or {MINE}NAME for one of your collections.")
        target = shared[index] if index else next(iter(shared.values()))
        state = self.build_state()
        if state and not state.finished and not len(target):  # counted only while the default build runs
            raise ServiceUnavailable(state.message(), retry_after=FIRST_IMAGES_RETRY_S)
        return target

    def _albums_or_refuse(self) -> Albums:
        """Visitors' albums, which share the main index's model (so there are none without it)."""
        self._wait_loaded()
        if self._albums is None:
            raise self._unavailable()
        return self._albums

    def _albums_to_change(self) -> Albums:
        """Albums, for a change: not while the default build holds the store's write lock."""
        albums = self._albums_or_refuse()
        state = self.build_state()
        if state and not state.finished:
            raise ServiceUnavailable("The default index is being built; change your collections once it is done "
                                     "(the page shows its progress).", retry_after=_until_built(state))
        return albums

    def _wait_loaded(self) -> None:
        if not self._loaded.wait(LOAD_WAIT_S):
            raise ServiceUnavailable("The app is still loading its model; try again in a minute.",
                                     retry_after=LOADING_RETRY_S)

    def _unavailable(self) -> ServiceUnavailable:
        """Why there is nothing to search: the default build is under way (ask again soon), it failed, or there
        is no index (until the operator acts). Never the caller's to fix."""
        state = self.build_state()
        if state and not state.finished:
            return ServiceUnavailable(state.message(), retry_after=FIRST_IMAGES_RETRY_S)
        if state and state.problem:
            return ServiceUnavailable(f"No index to search yet: the default index could not be built: {state.problem}. "
                                      f"{state.hint}")
        retry = self._problem.retry_after if isinstance(self._problem, ServiceUnavailable) else None
        return ServiceUnavailable(f"No index to search yet: {self._problem}", retry_after=retry)

    def _open_pixel_baseline(self, main: ImageIndex) -> None:
        name = self.settings.pixel_collection
        if name == main.collection.name:
            return
        try:
            if name in main.store.names():
                self._shared[name] = ImageIndex.open(self.settings.store, name, server=self.settings.chroma)
        except SearchError as exc:
            log.warning("pixel baseline %r not opened: %s", name, exc)


def _until_built(state: BuildState) -> int:
    """Seconds to tell a caller to wait for the default build: its time left where known, within 10 s to 10 min."""
    return round(min(max(state.seconds_left or 60.0, 10.0), 600.0))


def _warm_up(target: ImageIndex) -> None:
    """Run the model once, and read what a first query reads, so the first visitor's query is not the slow one."""
    target.embedder.embed_images([target.embedder.prepare(Image.new("RGB", (256, 256), "white"))])
    if target.supports_text:  # both text towers where a multilingual one is paired, and the router
        target.embedder.embed_texts(["warm up", "khởi động"])
    target.warm()
