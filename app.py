"""Image search by image and by text: the Gradio app (a Hugging Face Space, or `python app.py`).

Three parts, in this order: the UI's event handlers (``Page``, all private), the public API's handlers
(``Api``, six named endpoints returning JSON), and ``build_app``, the layout that wires components to
them. What is searched and how lives in ``search.service``; how answers look, in ``search.views``.
"""
from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from starlette.middleware import Middleware

from search import QueryError, SearchError
from search.config import configure_logging, load_settings
from search.core.ids import KEY
from search.errors import InvalidImageError
from search.index import MAX_K, MAX_TEXT_CHARS, Hit
from search.service.albums import Removal
from search.service.service import MAX_RESULTS, Examples, Results, SearchService
from search.web import regions, views
from search.web.evaluation_tab import evaluation_tab
from search.web.files import UploadBudget, VisitorFiles
from search.web.http_api import json_api, thumbnail_url
from search.web.page_query import MAX_PARTS, PageQuery, Part, image_part

log = logging.getLogger("app")
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_IMAGES = sorted(EXAMPLES.glob("*.jpg"))  # shown where the index holds them (see SearchService.examples)
EXAMPLE_PROMPTS = [line.strip() for line in (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
BUILD_REFRESH_SECONDS = 2.0
MAX_FILE_SIZE = "20mb"
# Every 5 minutes, Gradio deletes what it cached more than 30 minutes ago (uploads nobody used included).
DELETE_CACHE = (300, 1800)
PRIVATE: dict[str, Any] = dict(api_visibility="private")
DEFAULT_K = 12
# Result grids follow the width (Gradio's galleries keep a fixed number of columns).
CSS = """
#results .grid-container { grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)) !important;
  grid-template-rows: none !important; }
#mine .grid-container { grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)) !important;
  grid-template-rows: none !important; }
#example-images .grid-container { grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)) !important; }
#query-image img { max-height: 300px; object-fit: contain; }
#results .grid-wrap { overflow-y: visible !important; max-height: none !important; height: auto !important; }
#evaluate-table { overflow-x: auto; }
#evaluate-table table { white-space: nowrap; }
#results .caption-label { white-space: normal; overflow-wrap: anywhere; }
#detail-image img { width: 100%; height: 100%; object-fit: contain; }
@media (max-width: 640px) {
  #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #results .caption-label { font-size: 11px; }
  #evaluate-table:has(table)::before, #ingest-notes:has(table)::before {
    content: "Scroll the table sideways to see every column."; display: block; font-size: 12px; opacity: 0.7; }
}
"""

# On a phone the results are below the query panel: bring them into view once a search has run.
REVEAL_RESULTS = ("() => { if (window.innerWidth < 700) "
                  "document.getElementById('status')?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")

Handler = TypeVar("Handler", bound=Callable[..., Any])
Update = dict[str, Any]  # what gr.update() returns: new properties for a component
# What every search event returns, in this order (``searched`` in build_app): the query, the query panel
# (text, image), the results (gallery, hits, next offset, status, "more" button), the detail view
# (closed, nothing selected) and the query's other parts.
SEARCHED_NAMES = ("query", "text", "image", "results", "shown", "next_offset", "status", "more", "detail",
                  "selected", "chips", "undo")
MORE_LIKE, LESS_LIKE = "more like this", "less like this"
OPEN = "open it"  # what clicking a result does, unless the person chose to mark results instead
Searched = tuple[Any, ...]
# What every album event returns, in this order (``album_view`` in build_app).
ALBUM_VIEW = ("gallery", "ids", "picked", "picked_id", "offset", "where", "newer", "older", "drop", "armed")
CLEARED_REPORT = ("", gr.update(value=[], visible=False))  # the last upload's summary and notes, once they are stale
ShownAlbum = tuple[Any, ...]
ALBUM_PAGE = 60
DROP = "Delete this collection"


BUG = "Something went wrong on our side; the server log has the details."


def public_message(where: str, exc: Exception) -> str:
    """What a person is told of ``exc``, raised in ``where`` (call it while handling ``exc``); the log
    gets one line for a refused input, and the traceback only for an unexpected error (a bug)."""
    if isinstance(exc, SearchError):
        log.info("refused in %s: %s", where, exc.for_operator())
        return str(exc)
    log.exception("unexpected error in %s", where)
    return BUG


def user_errors(fn: Handler) -> Handler:
    """Show library errors as a message in the UI and an error to API callers; hide internals."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(public_message(fn.__qualname__, exc), print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def album_errors(outputs: int, at: int) -> Callable[[Handler], Handler]:
    """For handlers with ``outputs`` outputs: a refusal becomes a message at output ``at``, and the other
    outputs stay as they are (a bug is logged with its traceback and gets the generic message)."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                out: list[Any] = [gr.skip()] * outputs
                out[at] = views.problem(public_message(fn.__qualname__, exc))
                return tuple(out)

        return wrapper  # type: ignore[return-value]

    return decorate


# --- The page: the UI's event handlers ------------------------------------------------------------------
# One search state: the query (``PageQuery``) and the controls. Every search event returns the same
# outputs (SEARCHED), so the query panel always shows what was searched and nothing stale stays.


@dataclass(frozen=True)
class Controls:
    """The search controls, in the order the page passes them (``controls`` in ``build_app``)."""

    index: str
    metric: str
    k: int
    fold: bool
    include: list[str]
    exclude: list[str]
    strong: bool  # show only the hits above the relevance cut-off
    key: str | None


def query_image(**kwargs: Any) -> gr.Image:
    """The query image box, whose uploaded file reaches the project's decoder untouched.

    Gradio's own preprocessing decodes the upload first and answers a bad or huge file with its own
    error; ``search.images`` says what is wrong instead. (Set on the instance: a subclass of a Gradio
    component makes Gradio write a .pyi file beside this one at import.)
    """
    box = gr.Image(type="filepath", **kwargs)
    box.preprocess = _upload_path  # type: ignore[method-assign]
    return box


def _upload_path(payload: Any) -> str | None:
    return str(payload.path) if payload is not None and getattr(payload, "path", None) else None


class Page:
    """What the page's events do. Every one is private: the browser calls them, API clients cannot."""

    def __init__(self, service: SearchService, files: VisitorFiles | None = None):
        self.service = service
        self.files = files or VisitorFiles(service.settings.upload_budget_bytes)
        self._examples: Examples | None = None

    def examples(self) -> Examples:
        """Examples that fit the main index, worked out once it is complete (none while it is built)."""
        if self._examples is None:
            examples = self.service.examples(EXAMPLE_IMAGES, EXAMPLE_PROMPTS)
            state = self.service.build_state()
            if state is not None and not state.finished:
                return examples
            self._examples = examples
        return self._examples

    def building(self) -> bool:
        """Whether the default index is being built now (the page then refreshes its progress)."""
        state = self.service.build_state()
        return state is not None and not state.finished

    def refresh(self, key: str | None, index: str | None) -> tuple[Any, ...]:
        """The overview (progress while the default index is built); once it is complete, the Index
        dropdown, the label filters and the examples too, and the timer stops."""
        overview = views.overview(self.service.overview())
        if self.building():
            return overview, gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        choices = self._index_choices(key)
        values = [value for _, value in choices]
        chosen = index if index in values else (values[0] if values else None)
        examples = self.examples()
        return (overview, gr.Timer(active=False), gr.update(choices=choices, value=chosen),
                *self._label_filters(chosen, key),
                gr.update(value=self.shown(examples.images), visible=bool(examples.images)),
                [image for image, _ in examples.images],
                gr.Dataset(samples=[[p] for p in examples.prompts], visible=bool(examples.prompts)))

    def shown(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Gallery items whose pictures Gradio may serve (store files go through ``VisitorFiles.shown``)."""
        return [(self.files.shown(picture), caption) for picture, caption in items]

    def _index_choices(self, key: str | None) -> list[tuple[str, str]]:
        return views.index_choices(self.service.shared_indexes() + self.service.album_indexes(key))

    def _label_filters(self, index: str | None, key: str | None) -> tuple[Update, Update]:
        """The include and exclude filters' choices: the labels ``index`` holds (emptied selections)."""
        try:
            labels = self.service.labels(index or None, key) if index is not None else []
        except SearchError:
            labels = []
        return (gr.update(choices=labels, value=[], interactive=bool(labels)),
                gr.update(choices=labels, value=[], interactive=bool(labels)))

    @user_errors
    def first_visit(self, key: str | None) -> tuple[str, Update, Update]:
        """Give a new browser its secret key; list its albums under Index and under Collection."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            key = secrets.token_urlsafe(24)
        albums = self.service.album_indexes(key)
        return key, gr.update(choices=self._index_choices(key)), gr.update(choices=[a.name for a in albums])

    # --- Searching: every handler returns SEARCHED's outputs ----------------------------------------------

    def search_text(self, text: str, *controls: Any) -> Searched:
        """Search by a description."""
        return self._search(PageQuery().starting(Part("text", (text or "").strip())), Controls(*controls))

    def search_prompt(self, sample: Any, *controls: Any) -> Searched:
        """Search by the example description that was clicked."""
        text = str(sample[0] if isinstance(sample, (list, tuple)) and sample else sample or "")
        return self.search_text(text, *controls)

    def search_image(self, image: str | None, *controls: Any) -> Searched:
        """Search by the image put in the query box; removing it clears the search."""
        if not image:
            return self._cleared()
        return self._search_file(image, None, Controls(*controls))

    def _search_file(self, path: str, name: str | None, c: Controls) -> Searched:
        """A new search by an image file: the query panel shows a copy fitted to it (taps map back)."""
        try:
            shown = regions.shown(path, self.files)
        except SearchError as exc:
            return self._failed(PageQuery(), exc)
        return self._search(PageQuery().starting(image_part(path, shown.preview, shown.scale, name)), c)

    def search_example(self, paths: list[str], index: str, metric: str, k: int, fold: bool, include: list[str],
                       exclude: list[str], strong: bool, key: str | None, evt: gr.SelectData) -> Searched:
        """Search by the example image that was clicked."""
        controls = (index, metric, k, fold, include, exclude, strong, key)
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(paths or []):
            return self._failed(PageQuery(), QueryError("That example is no longer shown; reload the page."))
        return self.search_image(paths[evt.index], *controls)

    def search_url(self, url: str, *controls: Any) -> Searched:
        """Fetch an image URL once, then search by the image it gave (shown in the query box)."""
        try:
            path = self.files.keep(self.service.fetch_url(url))
        except SearchError as exc:
            return self._failed(PageQuery(), exc)
        name = (url or "").rstrip("/").rsplit("/", 1)[-1][:80]
        return self._search_file(path, name, Controls(*controls))

    def search_selected(self, selected: Hit | None, *controls: Any) -> Searched:
        """Search by the result open in the detail view."""
        if selected is None or not selected.image:
            return self._failed(PageQuery(), QueryError("Click a result first."))
        try:
            shown = regions.shown(selected.image, self.files)
        except SearchError as exc:
            return self._failed(PageQuery(), exc)
        part = Part("id", selected.id, preview=shown.preview, scale=shown.scale, name=views.name(selected),
                    thumbnail=selected.image)
        return self._search(PageQuery().starting(part), Controls(*controls))

    def rerun(self, query: PageQuery, *controls: Any) -> Searched:
        """Run the current query again: a control changed."""
        if not query.parts:
            return _unchanged()
        return self._search(query, Controls(*controls))

    def change_index(self, query: PageQuery, *controls: Any) -> tuple[Any, ...]:
        """Another index: its labels under the filters (none chosen), and the query run on it."""
        c = Controls(*controls)
        c = Controls(c.index, c.metric, c.k, c.fold, [], [], c.strong, c.key)
        return (*self._label_filters(c.index, c.key), *self.rerun(query, *astuple(c)))

    def more(self, query: PageQuery, shown: list[Hit], offset: int, *controls: Any) -> Searched:
        """The next page of results, after the ones shown."""
        return self._search(query, Controls(*controls), offset=offset, before=shown)

    def _search(self, query: PageQuery, c: Controls, offset: int = 0, before: list[Hit] | None = None) -> Searched:
        before = before or []
        try:
            request, images = query.request()
            request.update(k=c.k, offset=offset, metric=c.metric, index=c.index or "", fold=bool(c.fold),
                           labels={"include": list(c.include or []), "exclude": list(c.exclude or [])},
                           cutoff="auto")
            answer = self.service.search(request, images, c.key)
        except Exception as exc:
            return self._failed(query, exc)
        hits = [h for h in answer.hits if h.relevant is not False] if c.strong else answer.hits
        shown = before + hits
        marks = {p.value: not p.negative for p in query.feedback}
        items, kept = views.result_gallery(shown, c.metric, marks=marks)
        relevant = sum(1 for h in kept if h.relevant) if answer.cutoff is not None else None
        next_offset = offset + len(answer.hits)
        more = next_offset < min(answer.total, MAX_K) and len(answer.hits) == c.k
        # selected_index: after a re-ranking the selection frame must not stay on a slot holding another result
        return (query, *_query_panel(query), gr.update(value=self.shown(items), selected_index=None), kept, next_offset,
                views.status(len(kept), answer.total, answer.seconds, relevant),
                gr.update(visible=more), gr.update(visible=False), None, _chips(query), _undo(query))

    def _failed(self, query: PageQuery, exc: Exception) -> Searched:
        """The library's message in the status line (call it while handling ``exc``, which it logs); no
        results left from an earlier search."""
        message = public_message("a search", exc)
        if isinstance(exc, InvalidImageError) or isinstance(exc.__cause__, InvalidImageError) or not query.parts:
            query = PageQuery()  # the image could not be read: nothing of it stays in the query box
        if query.size <= 1:  # the library names the part at fault ("positive[0]: ..."); here there is one
            message = message.removeprefix("positive[0]: ")
        text, image = _query_panel(query)
        return _emptied(query, gr.skip() if not query.parts else text, image, views.problem(message))

    def _cleared(self) -> Searched:
        return _emptied(PageQuery(), gr.skip(), None, "")

    # --- Refining: the composer, feedback, regions --------------------------------------------------------

    def add_part(self, query: PageQuery, text: str, image: str | None, sign: str, weight: float,
                 *controls: Any) -> tuple[Any, ...]:
        """The composer: add a description or an image, "more like" or "less like", and search again.

        Also returns the composer's cleared text and image boxes.
        """
        negative = sign == LESS_LIKE
        if text and text.strip():
            part = Part("text", text.strip(), weight, negative)
        elif image:
            part = image_part(image, image, 1.0, negative=negative, weight=weight)  # a chip: never shown
        else:
            return (*_noted(views.problem("Type a description or put an image to add first.")), gr.skip(), gr.skip())
        if query.size >= MAX_PARTS:
            return (*self._failed(query, QueryError(f"A query holds at most {MAX_PARTS} parts; remove one first.")),
                    gr.skip(), gr.skip())
        return (*self._search(query.adding(part), Controls(*controls)), "", None)

    def remove_part(self, query: PageQuery, chips: list[str] | None, *controls: Any) -> Searched:
        """A part's chip was removed: search without it."""
        kept = set(chips or [])
        gone = [i for i, chip in enumerate(query.chips()) if chip not in kept]
        if not gone:
            return _unchanged()
        return self._search(query.without(gone[0]), Controls(*controls))

    def click_result(self, mode: str, query: PageQuery, shown: list[Hit], index: str, metric: str, k: int, fold: bool,
                     include: list[str], exclude: list[str], strong: bool, key: str | None,
                     evt: gr.SelectData) -> tuple[Any, ...]:
        """A click on a result opens it in the detail view, or marks it "more like" / "less like" and searches
        again, as the person chose. Returns SEARCHED's outputs, then the detail view's picture and text."""
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(shown or []):
            return (*_unchanged(), gr.skip(), gr.skip())
        hit = shown[evt.index]
        if mode not in (MORE_LIKE, LESS_LIKE):
            opened = list(_unchanged())
            opened[SEARCHED_NAMES.index("detail")] = gr.update(visible=True)
            opened[SEARCHED_NAMES.index("selected")] = hit
            return (*opened, self.files.shown(hit.image) if hit.image else None, views.detail(evt.index + 1, hit, metric))
        controls = Controls(index, metric, k, fold, include, exclude, strong, key)
        return (*self._mark(query, hit, mode == MORE_LIKE, controls), gr.skip(), gr.skip())

    def more_like_selected(self, query: PageQuery, selected: Hit | None, *controls: Any) -> Searched:
        """Feedback from the detail view: more like the selected result."""
        return self._mark(query, selected, True, Controls(*controls))

    def less_like_selected(self, query: PageQuery, selected: Hit | None, *controls: Any) -> Searched:
        """Feedback from the detail view: less like the selected result."""
        return self._mark(query, selected, False, Controls(*controls))

    def _mark(self, query: PageQuery, hit: Hit | None, good: bool, c: Controls) -> Searched:
        if hit is None or not query.parts:
            return self._failed(query, QueryError("Search first, then mark results as more or less like what you want."))
        if query.size >= MAX_PARTS:
            return self._failed(query, QueryError(f"A query holds at most {MAX_PARTS} parts; undo a mark first."))
        return self._search(query.marking(hit.id, good, hit.image, views.mark_name(hit)), c)

    def undo(self, query: PageQuery, *controls: Any) -> Searched:
        """Take back the latest mark and search again."""
        return self._search(query.undoing(), Controls(*controls)) if query.feedback else _unchanged()

    def pick_corner(self, query: PageQuery, corner: tuple[float, float] | None, index: str, metric: str, k: int,
                    fold: bool, include: list[str], exclude: list[str], strong: bool, key: str | None,
                    evt: gr.SelectData) -> tuple[Any, ...]:
        """A tap on the query image: the first marks a corner of a region, the second the opposite corner,
        and the search runs on that region alone. Returns SEARCHED's outputs, then the corner kept."""
        main = query.main
        if main is None or main.picture is None:
            return (*_unchanged(), None)
        controls = Controls(index, metric, k, fold, include, exclude, strong, key)
        try:
            point = regions.to_original(evt.index, main.scale)
            picture = main.picture
            if corner is None:
                marked = regions.mark_corner(picture, point, self.files)
                shown = replace(main, preview=marked.preview, scale=marked.scale)
                return (*_noted("Now tap the opposite corner of the region to search.",
                                query=query.with_main(shown), image=marked.preview), point)
            box, marked = regions.cut(picture, corner, point, self.files)
        except SearchError as exc:
            return (*self._failed(query, exc), None)
        name = main.name.removeprefix("region of ")
        part = Part("image", picture, main.weight, main.negative, preview=marked.preview, scale=marked.scale,
                    name=f"region of {name}", box=box)
        return (*self._search(query.with_main(part), controls), None)

    # --- My collection --------------------------------------------------------------------------------------
    # Every handler returns the album view (ALBUM_VIEW's outputs), and its refusals show in the view's
    # status line (``album_errors``) rather than as pop-ups that blank the tab's components.

    @album_errors(len(ALBUM_VIEW), ALBUM_VIEW.index("where"))
    def show_album(self, key: str | None, name: str, offset: int = 0, note: str = "") -> ShownAlbum:
        """A page of the album chosen under Collection (nothing when there is no such album yet).

        ``note`` goes first in the status line (what the last action did)."""
        offset = max(0, int(offset or 0))
        hits, total = self.service.browse_album(key, name, offset, ALBUM_PAGE)
        if hits == [] and offset and total:  # the page emptied (deletions): show the last one
            offset = max(0, (total - 1) // ALBUM_PAGE * ALBUM_PAGE)
            hits, total = self.service.browse_album(key, name, offset, ALBUM_PAGE)
        items, ids = views.album_gallery(hits)
        where = views.album_page(len(items), offset, total) if name else ""
        # selected_index: the selection frame must not stay on a slot that now shows another image
        return (gr.update(value=self.shown(items), selected_index=None), ids, "", None, offset,
                " ".join(filter(None, (note, where))),
                gr.update(interactive=offset > 0), gr.update(interactive=offset + ALBUM_PAGE < total),
                gr.update(value=DROP, variant="stop"), None)

    def album_newer(self, key: str | None, name: str, offset: int) -> ShownAlbum:
        """The previous page of the album (newer images)."""
        return self.show_album(key, name, max(0, int(offset or 0) - ALBUM_PAGE))

    def album_older(self, key: str | None, name: str, offset: int) -> ShownAlbum:
        """The next page of the album (older images)."""
        return self.show_album(key, name, int(offset or 0) + ALBUM_PAGE)

    @album_errors(5 + len(ALBUM_VIEW), 0)
    def add_to_album(self, key: str | None, name: str, files: list[str] | None,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Index the uploaded files into the album, showing progress with the total and the time left.

        Returns the report (summary, notes on files), None to clear the upload, the Collection and Index
        dropdowns' updates, and the album as ``show_album`` shows it.
        """
        started = time.monotonic()

        def report(done: int, total: int | None) -> None:
            progress((done, total) if total else None, desc=views.upload_progress(done, total, time.monotonic() - started),
                     unit="images")

        with self.files.consumed(files or []):
            report_ = self.service.add_images(key, name, files, on_progress=report)
        names = self.service.album_names(key)
        chosen = report_.collection if report_.collection in names else None
        rows = views.ingest_rows(report_)
        return (views.ingest_summary(report_), gr.update(value=rows, visible=bool(rows)), None,
                gr.update(choices=names, value=chosen), gr.update(choices=self._index_choices(key)),
                *self.show_album(key, chosen or ""))

    @user_errors
    def pick_image(self, ids: list[str], evt: gr.SelectData) -> tuple[str, str | None]:
        """Select the album image that was clicked: its file's name to show, and its id to delete it by."""
        if not (isinstance(evt.index, int) and 0 <= evt.index < len(ids or [])):
            return "", None
        caption = evt.value.get("caption") if isinstance(evt.value, dict) else None
        return str(caption or ids[evt.index]), ids[evt.index]

    def forget(self, removal: Removal) -> Removal:
        """The web server's copies of what ``removal`` took from the store go too."""
        return forget(self.service, self.files, removal)

    @album_errors(len(ALBUM_VIEW) + 2, ALBUM_VIEW.index("where"))
    def delete_picked(self, key: str | None, name: str, image_id: str | None, offset: int) -> tuple[Any, ...]:
        """Delete the selected image from the album, then show the album again (the last upload's report,
        which counted it, goes)."""
        if not image_id:
            raise QueryError("Click an image in the collection first.")
        self.forget(self.service.delete_images(key, name, [image_id]))
        return (*self.show_album(key, name, offset, note="Deleted the selected image."), *CLEARED_REPORT)

    @album_errors(6 + len(ALBUM_VIEW), 2 + ALBUM_VIEW.index("where"))
    def drop_album(self, key: str | None, name: str, index: str, armed: str | None) -> tuple[Any, ...]:
        """Delete the whole album, on a second click (the first asks): the Collection and Index dropdowns
        (searching the main index again where the album was chosen there), an empty album view, and the
        label filters of the index chosen now."""
        if name not in self.service.album_names(key):
            raise QueryError("There is no such collection to delete: choose one under Collection.")
        if armed != name:
            held = self.service.browse_album(key, name, 0, 1)[1]
            out = [gr.skip()] * (6 + len(ALBUM_VIEW))
            out[2 + ALBUM_VIEW.index("drop")] = gr.update(value=f"Click again to delete “{name}” and its {held:,} "
                                                                f"image{'' if held == 1 else 's'}", variant="stop")
            out[2 + ALBUM_VIEW.index("armed")] = name
            return tuple(out)
        removed = len(self.forget(self.service.drop_album(key, name)).removed)
        choices = self._index_choices(key)
        values = [v for _, v in choices]
        chosen = index if index in values else (values[0] if values else None)
        filters = self._label_filters(chosen, key) if chosen != index else (gr.skip(), gr.skip())
        return (gr.update(choices=self.service.album_names(key), value=None), gr.update(choices=choices, value=chosen),
                *self.show_album(key, "", note=views.dropped(name, removed)), *filters, *CLEARED_REPORT)


def _query_panel(query: PageQuery) -> tuple[Any, Any]:
    """What the query panel shows: the description searched, or the image (a result's picture)."""
    main = query.main
    if main is None:
        return "", None
    if main.kind == "text":
        return main.value, None
    return "", main.preview


def _emptied(query: PageQuery, text: Any, image: Any, status: str) -> Searched:
    """A search with no results to show: the query panel, the status line, and nothing left of the last one."""
    return (query, text, image, [], [], 0, status, gr.update(visible=False), gr.update(visible=False), None,
            _chips(query), _undo(query))


def _chips(query: PageQuery) -> Update:
    """The query's other parts as removable chips (hidden while there are none)."""
    chips = query.chips()
    return gr.update(choices=chips, value=chips, visible=bool(chips))


def _undo(query: PageQuery) -> Update:
    """The undo button, there while the query holds feedback."""
    return gr.update(visible=bool(query.feedback))


def _unchanged() -> Searched:
    return tuple(gr.skip() for _ in range(len(SEARCHED_NAMES)))


def _noted(status: str, **changed: Any) -> Searched:
    """The search as it is, with a word in the status line (and any outputs named in ``changed``)."""
    out = list(_unchanged())
    for name, value in {"status": status, **changed}.items():
        out[SEARCHED_NAMES.index(name)] = value
    return tuple(out)


# --- The public API: seven named endpoints returning JSON ---------------------------------------------------
# `index` may name one of the caller's albums ("mine/NAME"), with the caller's `key` (16+ characters) on a
# public deployment. The API calls albums "collections".


class Api:
    """What the public endpoints do; each method's name is its endpoint's name."""

    def __init__(self, service: SearchService, files: VisitorFiles | None = None):
        self.service = service
        self.files = files or VisitorFiles(service.settings.upload_budget_bytes)

    @user_errors
    def search_by_image(self, image: str | None, k: int, metric: str, index: str, key: str) -> list[dict[str, Any]]:
        """The k stored images most like ``image``, best first."""
        return self._hits(self.service.search_image(image, k, metric, index or None, key=key))

    @user_errors
    def search_by_text(self, text: str, k: int, metric: str, index: str, key: str) -> list[dict[str, Any]]:
        """The k stored images that best match ``text``, best first."""
        return self._hits(self.service.search_text(text, k, metric, index or None, key=key))

    @user_errors
    def search(self, query: object, request: gr.Request, images: list[str] | None = None,
               key: str = "") -> dict[str, Any]:
        """A composed query (see search/query.py): parts to look for and to avoid, filters, a page, a cut-off.

        Answers ``{"hits": [{id, score, label, caption, relevant, similar, thumbnail, image}...], "total",
        "offset", "cutoff"}``, where ``thumbnail`` is the thumbnail's URL (as POST /api/search gives it) and
        ``image`` the same relative to the app: a caller fetches only what it shows (a client that downloads
        every file spends more on the files than on the search).
        """
        answer = self.service.search(query, list(images or []), key or None)
        base = str(request.base_url).rstrip("/") if request else ""
        hits = []
        for r in answer.records():
            url = thumbnail_url(r["id"], answer.album) if r["image"] else None
            hits.append({**r, "thumbnail": base + url if url else None, "image": url})
        return {"hits": hits, "total": answer.total, "offset": answer.offset, "cutoff": answer.cutoff}

    @user_errors
    def collection_add(self, files: list[str] | None, collection: str, key: str) -> dict[str, Any]:
        """Index images and zips into the caller's collection; the ingestion report, without internals."""
        with self.files.consumed(files or []):
            return self.service.add_images(key, collection, files).for_visitor()

    @user_errors
    def collection_list(self, key: str) -> list[str]:
        """The caller's collections."""
        return self.service.album_names(key)

    @user_errors
    def collection_delete(self, ids: object, collection: str, key: str) -> dict[str, Any]:
        """Delete images by id: ``{"removed": n, "not_found": [...]}``."""
        return forget(self.service, self.files, self.service.delete_images(key, collection, ids)).to_dict()

    @user_errors
    def collection_drop(self, collection: str, key: str) -> dict[str, int]:
        """Delete the caller's whole collection: ``{"removed": n}``."""
        return {"removed": len(forget(self.service, self.files, self.service.drop_album(key, collection)).removed)}

    def _hits(self, results: Results) -> list[dict[str, Any]]:
        """Hits for API callers; a FileData dict makes Gradio serve a copy of the thumbnail (never the store's
        file) and the client download it."""
        return [{**r, "image": {"path": self.files.shown(r["image"]), "meta": {"_type": "gradio.FileData"}}
                 if r["image"] else None} for r in results.records()]


def forget(service: SearchService, files: VisitorFiles, removal: Removal) -> Removal:
    """After a delete: purge the web server's copies of the images whose thumbnails went from the store."""
    files.purge(service.without_thumbnail(removal.removed))
    return removal


# --- The layout -----------------------------------------------------------------------------------------


def build_app(service: SearchService, files: VisitorFiles | None = None) -> gr.Blocks:
    """Lay out the page and wire its events to ``Page``, and the named API endpoints to ``Api``; ``files``
    holds what the web server keeps for visitors (by default under the settings' upload budget)."""
    files = files or VisitorFiles(service.settings.upload_budget_bytes)
    page, api = Page(service, files), Api(service, files)
    shared = views.index_choices(service.shared_indexes())
    with gr.Blocks(title="Image search", delete_cache=DELETE_CACHE) as demo:
        key = gr.BrowserState(None, storage_key="image-search-key")  # this browser's secret for its albums
        gr.Markdown("# Image search\nFind images by description, by example, or by a part of a photo.")
        overview = gr.Markdown(views.overview(service.overview()), elem_id="overview")
        timer = gr.Timer(BUILD_REFRESH_SECONDS, active=page.building())  # progress, while the default index is built
        examples = page.examples()
        query = gr.State(PageQuery())  # what the page searches by
        shown = gr.State([])  # the Hit behind each results item
        next_offset = gr.State(0)  # where "More results" continues
        selected = gr.State(None)  # the Hit open in the detail view
        corner = gr.State(None)  # the first corner of a region being drawn on the query image
        with gr.Tabs():
            with gr.Tab("Search", id="search"), gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320, elem_id="query-panel"):
                    with gr.Row(equal_height=True):
                        text = gr.Textbox(label="Description", placeholder="a red dress", scale=4, min_width=160,
                                          max_length=MAX_TEXT_CHARS, elem_id="text-query")
                        text_button = gr.Button("Search", variant="primary", scale=1, min_width=90)
                    # No height=: with one, Gradio stops reporting taps on an image the server sent back (regions).
                    image = query_image(sources=["upload", "clipboard", "webcam"],
                                        label="Query image (drop, paste or take a photo; tap two corners to search a region)",
                                        elem_id="query-image")
                    with gr.Row(equal_height=True):
                        url = gr.Textbox(label="…or an image URL", placeholder="https://…", scale=4, min_width=160)
                        url_button = gr.Button("Search URL", scale=1, min_width=90)
                    chips = gr.Dropdown([], value=[], multiselect=True, label="Also in this query",
                                        info="Remove a part with its ×", visible=False, elem_id="parts")
                    with gr.Accordion("Refine: more like, less like", open=False, elem_id="composer"):
                        gr.Markdown("Add a description or an image to the query. Tap two opposite corners on the "
                                    "query image to search by that region alone.")
                        add_text = gr.Textbox(label="Description to add", placeholder="long sleeves",
                                              max_length=MAX_TEXT_CHARS, elem_id="add-text")
                        add_image = query_image(sources=["upload", "clipboard"], height=120, label="…or an image to add",
                                                elem_id="add-image")
                        with gr.Row(equal_height=True):
                            add_sign = gr.Radio([MORE_LIKE, LESS_LIKE], value=MORE_LIKE, show_label=False, min_width=200)
                            add_weight = gr.Slider(0.1, 3.0, value=1.0, step=0.1, label="Weight", min_width=140)
                        add_button = gr.Button("Add to the query", elem_id="add-part")
                    with gr.Accordion("Options", open=True):
                        index = gr.Dropdown(shared, value=shared[0][1] if shared else None, label="Index",
                                            allow_custom_value=True)
                        metric = gr.Dropdown(views.METRIC_CHOICES, value="cosine", label="Similarity",
                                             info=views.METRIC_INFO)
                        k = gr.Slider(1, MAX_RESULTS, value=DEFAULT_K, step=1, label="Results per page")
                        with gr.Row():
                            fold = gr.Checkbox(False, label="Fold near-duplicates", min_width=140)
                            strong = gr.Checkbox(False, label="Only strong matches", min_width=140)
                        include = gr.Dropdown([], value=[], multiselect=True, label="Only these labels",
                                              interactive=False)
                        exclude = gr.Dropdown([], value=[], multiselect=True, label="Not these labels",
                                              interactive=False)
                    example_gallery = gr.Gallery(examples.images, label="Example images (click one to search by it)",
                                                 columns=8, rows=1, height=110, allow_preview=False,
                                                 visible=bool(examples.images), elem_id="example-images")
                    example_paths = gr.State([image for image, _ in examples.images])
                    prompt_examples = gr.Dataset(components=[text], samples=[[p] for p in examples.prompts],
                                                 label="Example descriptions (click one to search)",
                                                 samples_per_page=20, visible=bool(examples.prompts),
                                                 elem_id="example-prompts")
                with gr.Column(scale=3, min_width=320, elem_id="results-panel"):
                    status = gr.Markdown(elem_id="status")
                    with gr.Row(equal_height=True):
                        click_mode = gr.Radio([OPEN, MORE_LIKE, LESS_LIKE], value=OPEN, label="Clicking a result will",
                                              elem_id="click-mode", scale=4, min_width=240)
                        undo = gr.Button("Undo the last mark", visible=False, size="sm", scale=1, min_width=120)
                    with gr.Column(visible=False, elem_id="detail") as detail, gr.Row(equal_height=False):
                        detail_image = gr.Image(type="filepath", label="Selected result", height=320,
                                                interactive=False, min_width=200, elem_id="detail-image")
                        with gr.Column(min_width=200):
                            detail_text = gr.Markdown()
                            search_this = gr.Button("Search by this image", variant="primary")
                            with gr.Row():
                                more_like = gr.Button("👍 More like this", min_width=100)
                                less_like = gr.Button("👎 Less like this", min_width=100)
                            close = gr.Button("Close")
                    results = gr.Gallery(label="Results", columns=6, object_fit="contain",
                                         height="auto", allow_preview=False, elem_id="results")
                    more = gr.Button("More results", visible=False, elem_id="more")
            with gr.Tab("My collection"):
                gr.Markdown(views.albums_intro(service.settings.public))
                with gr.Row():
                    album = gr.Dropdown([], label="Collection", allow_custom_value=True, value="photos", scale=2, min_width=160)
                    uploads = gr.File(file_count="multiple", type="filepath", label="Images or a .zip", scale=3, min_width=200,
                                    elem_id="album-files")
                album_add = gr.Button("Add to collection", variant="primary")
                ingest_summary = gr.Markdown()
                ingest_table = gr.Dataframe(headers=views.INGEST_HEADERS, label="Notes on your files",
                                            interactive=False, wrap=True, visible=False, elem_id="ingest-notes",
                                            column_widths=["30%", "22%", "48%"])
                album_where = gr.Markdown()
                album_gallery = gr.Gallery(label="In this collection (click one to select it)", columns=8,
                                           height="auto", allow_preview=False, object_fit="contain", elem_id="mine")
                with gr.Row():
                    newer = gr.Button("◀ Newer", interactive=False, min_width=90)
                    older = gr.Button("Older ▶", interactive=False, min_width=90)
                with gr.Row():
                    picked = gr.Textbox(label="Selected image", interactive=False, min_width=200)
                    delete_button = gr.Button("Delete selected image", variant="stop", min_width=140)
                    drop_button = gr.Button(DROP, variant="stop", min_width=140)
                album_ids = gr.State([])  # the id behind each album_gallery item
                picked_id = gr.State(None)  # the id of the image selected in it
                album_offset = gr.State(0)
                drop_armed = gr.State(None)  # the album a first click on "Delete this collection" asked about
            with gr.Tab("Evaluate"):
                evaluation_tab(service.settings)

        controls = [index, metric, k, fold, include, exclude, strong, key]
        searched = [query, text, image, results, shown, next_offset, status, more, detail, selected, chips, undo]
        shown_album = [album_gallery, album_ids, picked, picked_id, album_offset, album_where, newer, older, drop_button,
                       drop_armed]

        demo.load(page.first_visit, [key], [key, index, album], **PRIVATE)
        refreshed = [overview, timer, index, include, exclude, example_gallery, example_paths, prompt_examples]
        gr.on([demo.load, timer.tick], page.refresh, [key, index], refreshed, **PRIVATE)
        running = dict(show_progress_on=results, **PRIVATE)  # the spinner on the results, not on every output

        def new_search(triggers: list[Any], handler: Callable[..., Searched], source: Any) -> None:
            """Wire a search the person starts from the query panel (on a phone, then show the results)."""
            gr.on(triggers, handler, [source, *controls], searched, **running).then(None, js=REVEAL_RESULTS, **PRIVATE)

        new_search([text.submit, text_button.click], page.search_text, text)
        new_search([prompt_examples.click], page.search_prompt, prompt_examples)
        new_search([image.input], page.search_image, image)
        new_search([example_gallery.select], page.search_example, example_paths)
        new_search([url.submit, url_button.click], page.search_url, url)
        new_search([search_this.click], page.search_selected, selected)
        gr.on([metric.input, k.release, fold.input, strong.input, include.input, exclude.input],
              page.rerun, [query, *controls], searched, **running)
        index.input(page.change_index, [query, *controls], [include, exclude, *searched], **running)
        more.click(page.more, [query, shown, next_offset, *controls], searched, **running)
        results.select(page.click_result, [click_mode, query, shown, *controls], [*searched, detail_image, detail_text],
                       **running)
        add_button.click(page.add_part, [query, add_text, add_image, add_sign, add_weight, *controls],
                         [*searched, add_text, add_image], **running)
        chips.input(page.remove_part, [query, chips, *controls], searched, **running)
        more_like.click(page.more_like_selected, [query, selected, *controls], searched, **running)
        less_like.click(page.less_like_selected, [query, selected, *controls], searched, **running)
        undo.click(page.undo, [query, *controls], searched, **running)
        image.select(page.pick_corner, [query, corner, *controls], [*searched, corner], **running)
        close.click(lambda: (gr.update(visible=False), None), None, [detail, selected], **PRIVATE)

        album_add.click(page.add_to_album, [key, album, uploads],
                         [ingest_summary, ingest_table, uploads, album, index, *shown_album], **PRIVATE)
        album.change(page.show_album, [key, album], shown_album, **PRIVATE)
        newer.click(page.album_newer, [key, album, album_offset], shown_album, **PRIVATE)
        older.click(page.album_older, [key, album, album_offset], shown_album, **PRIVATE)
        album_gallery.select(page.pick_image, [album_ids], [picked, picked_id], **PRIVATE)
        delete_button.click(page.delete_picked, [key, album, picked_id, album_offset],
                            [*shown_album, ingest_summary, ingest_table], **PRIVATE)
        drop_button.click(page.drop_album, [key, album, index, drop_armed],
                          [album, index, *shown_album, include, exclude, ingest_summary, ingest_table], **PRIVATE)

        # The public API's inputs: hidden components, one per parameter, with the API's defaults.
        with gr.Row(visible=False):
            api_image = gr.File(type="filepath", label="image")  # bytes reach our decoder untouched
            api_files = gr.File(type="filepath", file_count="multiple", label="files")
            api_text = gr.Textbox(label="text")
            api_k = gr.Number(value=DEFAULT_K, precision=0, label="k")
            api_metric = gr.Textbox(value="cosine", label="metric")  # checked by the library, which says why
            api_index = gr.Textbox(value="", label="index")
            api_key = gr.Textbox(value="", label="key")
            api_collection = gr.Textbox(value="", label="collection")
            api_ids = gr.JSON(value=[], label="ids")
            api_query = gr.JSON(value={}, label="query")
            api_images = gr.File(type="filepath", file_count="multiple", label="images")
            api_out = gr.JSON(label="result")
            search_options = [api_k, api_metric, api_index, api_key]
            endpoints: list[tuple[Callable[..., Any], list[gr.components.Component]]] = [  # method name = endpoint name
                (api.search_by_image, [api_image, *search_options]),
                (api.search_by_text, [api_text, *search_options]),
                (api.search, [api_query, api_images, api_key]),
                (api.collection_add, [api_files, api_collection, api_key]),
                (api.collection_list, [api_key]),
                (api.collection_delete, [api_ids, api_collection, api_key]),
                (api.collection_drop, [api_collection, api_key]),
            ]
            for handler, inputs in endpoints:  # an endpoint needs an event to hang on: a hidden button's click
                gr.Button().click(handler, inputs, api_out, api_name=handler.__name__)
    return demo


def main() -> None:
    """Load the model and the store once, then serve (GRADIO_SERVER_NAME/PORT choose the address)."""
    configure_logging()
    service = SearchService(load_settings())
    if service.start_default_build():
        log.info("serving at once; the default index is built in the background")
    elif (main := service.main_index()) is not None:
        log.info("opened the index: %d images in collection %r", len(main), main.collection.name)
    files = VisitorFiles(service.settings.upload_budget_bytes)
    demo = build_app(service, files)
    demo.queue(max_size=service.settings.queue_size, default_concurrency_limit=service.settings.concurrency)
    # Thumbnails only: the store's own files (vectors, every album's metadata) are never served.
    # The shipped example photos only: store files reach Gradio as copies (VisitorFiles.shown), so that no
    # path into the store (an album's thumbnails, its database) is ever served.
    allowed = [str(EXAMPLES)]
    budget = Middleware(UploadBudget, files=files)
    demo.launch(css=CSS, max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=True,
                app_kwargs={"middleware": [budget], "routes": json_api(service).routes})  # /api/search


if __name__ == "__main__":
    main()
