"""What the search page's events do: searching, refining (composer, feedback, regions), the overview.

One search state: the query (``PageQuery``) and the controls. Handlers return their outputs by name (the
components of those names in ``layout.build_app``); a search returns every field of ``Searched``, so the
query panel always shows what was searched and nothing stale stays; a handler that changes less returns
only what changes. Every event is private: the browser calls them, API clients cannot.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import gradio as gr

from search.core.hits import Hit
from search.core.ids import KEY
from search.core.query import MAX_K, MAX_PARTS, Part, Query, checked_date
from search.errors import InvalidImageError, QueryError, SearchError, ServiceUnavailable
from search.service.examples import Examples, Shipped
from search.service.service import SearchService
from search.web import pictures, regions, views
from search.web.files import VisitorFiles
from search.web.messages import public_message, user_errors
from search.web.page_query import PageQuery, Shown, image_part

MORE_LIKE, LESS_LIKE = "more like this", "less like this"
OPEN = "open it"  # what clicking a result does, unless the person chose to mark results instead
Outputs = dict[str, Any]  # a handler's outputs by component name


@dataclass(frozen=True)
class Controls:
    """The search controls, in the order the page passes them (``CONTROLS`` in ``layout``)."""

    index: str
    metric: str
    k: int
    fold: bool
    include: list[str]
    exclude: list[str]
    strong: bool  # show only the hits above the relevance cut-off
    sort: str  # "relevance", "newest" or "oldest" (SORT_CHOICES)
    taken_from: str  # capture dates, as typed ("2024-01-31"); "" for no bound
    taken_to: str
    key: str | None


CONTROLS = tuple(f.name for f in fields(Controls))


@dataclass(frozen=True)
class Fields:
    """A handler's outputs as a dataclass: every event of a kind names the same components."""

    def outputs(self) -> Outputs:
        """Every field, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Searched(Fields):
    """What every search returns: the query, the query panel (text, image), the results (gallery, hits,
    next offset, status, "more" button), the detail view (closed, nothing selected) and the query's other
    parts (chips, undo)."""

    query: PageQuery
    text: Any
    image: Any
    results: Any
    on_screen: list[Hit]
    next_offset: int
    status: str
    more: Any
    detail: Any
    selected: Hit | None
    chips: Any
    undo: Any



SEARCHED = tuple(f.name for f in fields(Searched))


class SearchPage:
    """The Search tab's events, and the page-wide overview and first visit."""

    def __init__(self, service: SearchService, files: VisitorFiles, shipped: Shipped | None = None):
        self.service = service
        self.files = files
        self.shipped = shipped or Shipped()
        self._examples: Examples | None = None

    # --- The page as a whole --------------------------------------------------------------------------

    def examples(self) -> Examples:
        """Examples that fit the main index, worked out once it is complete (none while it loads or is built)."""
        if self._examples is None:
            complete = not self.building()  # asked first: loading may end while the examples are worked out
            examples = self.service.examples(self.shipped)
            if not complete:
                return examples
            self._examples = examples
        return self._examples

    def building(self) -> bool:
        """Whether the model is loading or the default index is being built now (the page then refreshes)."""
        state = self.service.build_state()
        return self.service.loading or (state is not None and not state.finished)

    def refresh(self, key: str | None, index: str | None) -> Outputs:
        """The overview (progress while the default index is built); once it is complete, the Index
        dropdown, the label filters and the examples too, and the timer stops."""
        overview = views.overview(self.service.overview())
        if self.building():
            return {"overview": overview}
        choices, chosen = self.index_choice(key, index)
        examples = self.examples()
        return {"overview": overview, "timer": gr.Timer(active=False), "index": gr.update(choices=choices, value=chosen),
                **self.label_filters(chosen, key),
                "example_gallery": gr.update(value=self.gallery(examples.images), visible=bool(examples.images)),
                "example_paths": [image for image, _ in examples.images],
                "prompt_examples": gr.Dataset(samples=[[p] for p in examples.prompts], visible=bool(examples.prompts))}

    @staticmethod
    def gallery(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Gallery items whose pictures the browser can fetch (stored thumbnails at the app's route: ``pictures``)."""
        return [(pictures.url(picture), caption) for picture, caption in items]

    def index_choices(self, key: str | None) -> list[tuple[str, str]]:
        """The Index dropdown's (label, value) pairs: the shared indexes, then the caller's albums (none
        before a new browser has its key, nor while the model loads)."""
        try:
            albums = self.service.album_indexes(key)
        except (QueryError, ServiceUnavailable):
            albums = []
        return views.index_choices(self.service.shared_indexes() + albums)

    def index_choice(self, key: str | None, index: str | None) -> tuple[list[tuple[str, str]], str | None]:
        """The Index dropdown's choices, and ``index`` if it is still one of them (else the first)."""
        choices = self.index_choices(key)
        values = [value for _, value in choices]
        return choices, index if index in values else (values[0] if values else None)

    def label_filters(self, index: str | None, key: str | None) -> Outputs:
        """The include and exclude filters' choices: the labels ``index`` holds (emptied selections)."""
        labels = self._labels(index, key)
        update = gr.update(choices=labels, value=[], interactive=bool(labels))
        return {"include": update, "exclude": update}

    def _labels(self, index: str | None, key: str | None) -> list[str]:
        """The labels ``index`` holds; none where it cannot be read (the search then says why)."""
        try:
            return self.service.labels(index or None, key) if index is not None else []
        except SearchError:
            return []

    @user_errors
    def first_visit(self, key: str | None) -> Outputs:
        """Give a new browser its secret key; list its albums under Index and under Collection."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            key = secrets.token_urlsafe(24)
        albums = self.service.album_indexes(key)
        return {"key": key, "index": gr.update(choices=self.index_choices(key)),
                "album": gr.update(choices=[a.name for a in albums])}

    # --- Searching: each handler returns a whole search (``Searched``), or what it changed ---------------

    def search_text(self, text: str, *controls: Any) -> Outputs:
        """Search by a description."""
        return self._new(lambda: Shown(Part(kind="text", value=text or "")), Controls(*controls), keep_text=True)

    def search_prompt(self, sample: Any, *controls: Any) -> Outputs:
        """Search by the example description that was clicked."""
        text = str(sample[0] if isinstance(sample, (list, tuple)) and sample else sample or "")
        return self.search_text(text, *controls)

    def search_image(self, image: str | None, *controls: Any) -> Outputs:
        """Search by the image put in the query box; removing it clears the search."""
        if not image:
            return _emptied(PageQuery(), None, "", keep_text=True).outputs()
        return self._new(lambda: self._image(image, None), Controls(*controls))

    def search_example(self, evt: gr.SelectData, paths: list[str], *controls: Any) -> Outputs:
        """Search by the example image that was clicked."""
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(paths or []):
            return self._failed(PageQuery(), QueryError("That example is no longer shown; reload the page."))
        return self.search_image(paths[evt.index], *controls)

    def search_url(self, url: str, *controls: Any) -> Outputs:
        """Fetch an image URL once, then search by the image it gave (shown in the query box)."""
        name = (url or "").rstrip("/").rsplit("/", 1)[-1][:80]
        return self._new(lambda: self._image(self.files.keep(self.service.fetch_url(url)), name), Controls(*controls),
                         from_url=True)

    def search_selected(self, selected: Hit | None, *controls: Any) -> Outputs:
        """Search by the result open in the detail view."""
        def part() -> Shown:
            if selected is None or not selected.image:
                raise QueryError("Click a result first.")
            copy = regions.marked_copy(selected.image, self.files)
            return Shown(Part(kind="id", value=selected.id), preview=copy.preview, label=views.name(selected), scale=copy.scale,
                         thumbnail=selected.image)
        return self._new(part, Controls(*controls))

    def rerun(self, query: PageQuery, *controls: Any) -> Outputs:
        """Run the current query again: a control changed."""
        return self._search(query, Controls(*controls)) if query.parts else {}

    def change_index(self, query: PageQuery, *controls: Any) -> Outputs:
        """Another index: its labels under the filters, the chosen ones it holds kept and the others cleared (the
        status line says which), and the query run on it."""
        c = Controls(*controls)
        labels = self._labels(c.index, c.key)
        chosen = [*(c.include or []), *(c.exclude or [])]
        c = replace(c, include=[x for x in c.include or [] if x in labels], exclude=[x for x in c.exclude or [] if x in labels])
        filters = {name: gr.update(choices=labels, value=getattr(c, name), interactive=bool(labels))
                   for name in ("include", "exclude")}
        cleared = [x for x in chosen if x not in labels]
        note = views.filters_cleared(cleared) if cleared else ""
        if not query.parts:
            return {**filters, "status": note} if note else filters
        searched = self._search(query, c)
        if note:
            searched["status"] = f"{note}\n\n{searched['status']}"
        return {**filters, **searched}

    def more(self, query: PageQuery, on_screen: list[Hit], offset: int, *controls: Any) -> Outputs:
        """The next page of results, after the ones shown."""
        return self._search(query, Controls(*controls), offset=offset, before=on_screen)

    def _image(self, path: str, name: str | None) -> Shown:
        """An image file as the main part: the query panel shows a copy fitted to it (taps map back)."""
        readable = self.files.readable(path)  # an example's thumbnail: a copy the app writes (the library reads files)
        copy = regions.marked_copy(readable, self.files)
        return image_part(readable, copy.preview, copy.scale, name or Path(path).name)

    def _new(self, make: Any, c: Controls, *, from_url: bool = False, keep_text: bool = False) -> Outputs:
        """A new search by the part ``make()`` makes (a refusal on the way is the search's message, and a
        refused description stays in its box to be mended); the URL box keeps a URL searched by, and empties
        for any other search."""
        url = {"url": gr.skip() if from_url else ""}
        try:
            part = make()
        except Exception as exc:
            return {**self._failed(PageQuery(), exc, keep_text=keep_text), **url}
        return {**self._search(PageQuery((part,)), c), **url}

    def _search(self, query: PageQuery, c: Controls, offset: int = 0, before: list[Hit] | None = None) -> Outputs:
        before = before or []
        try:
            asked = query.query(k=c.k, offset=offset, metric=c.metric, index=c.index or "", fold=bool(c.fold),
                                labels={"include": c.include or [], "exclude": c.exclude or []}, cutoff="auto",
                                sort=c.sort or "relevance", taken={"from": checked_date(c.taken_from, "Taken from"),
                                                                  "to": checked_date(c.taken_to, "Taken until")})
            answer = self.service.search(asked, key=c.key)
        except Exception as exc:
            return self._failed(query, exc)
        hits = [h for h in answer.hits if h.relevant is not False] if c.strong else answer.hits
        marks = {p.value: not p.negative for p in query.feedback}
        items, kept = views.result_gallery(before + hits, c.metric, marks=marks, dated=asked.sort != "relevance")
        relevant = sum(1 for h in kept if h.relevant) if answer.cutoff is not None else None
        next_offset = offset + len(answer.hits)
        # With only strong matches shown, a page that reached the cut-off has no more of them after it.
        more = (next_offset < min(answer.total, MAX_K) and len(answer.hits) == c.k
                and not (c.strong and any(h.relevant is False for h in answer.hits)))
        text, image = _query_panel(query)
        return Searched(query, text, image, self.gallery(items), kept, next_offset,
                        views.status(len(kept), answer.total, answer.seconds, relevant,
                                     _texts(asked) if answer.no_match else None), gr.update(visible=more),
                        gr.update(visible=False), None, _chips(query), _undo(query)).outputs()

    def _failed(self, query: PageQuery, exc: Exception, *, keep_text: bool = False) -> Outputs:
        """The library's message in the status line (call it while handling ``exc``, which it logs); no
        results left from an earlier search."""
        message = public_message("a search", exc)
        if isinstance(exc, InvalidImageError) or isinstance(exc.__cause__, InvalidImageError):
            query = PageQuery()  # the image could not be read: nothing of it stays in the query box
        text, image = _query_panel(query)
        return _emptied(query, image, views.problem(message), keep_text=keep_text, text=text).outputs()

    # --- Refining: the composer, feedback, regions --------------------------------------------------------

    def add_part(self, query: PageQuery, text: str, image: str | None, sign: str, weight: float,
                 *controls: Any) -> Outputs:
        """The composer: add a description or an image, "more like" or "less like", and search again
        (and clear the composer's boxes)."""
        negative = sign == LESS_LIKE
        if not (text and text.strip()) and not image:
            return {"status": views.problem("Type a description or put an image to add first.")}
        if query.size >= MAX_PARTS:
            return self._failed(query, QueryError(f"A query holds at most {MAX_PARTS} parts; remove one first."))
        try:
            part = (Shown(Part(kind="text", value=text, weight=weight), negative=negative) if text and text.strip()
                    else image_part(str(image), str(image), 1.0, negative=negative, weight=weight))  # a chip: never shown
        except SearchError as exc:
            return self._failed(query, exc)
        return {**self._search(query.adding(part), Controls(*controls)), "add_text": "", "add_image": None}

    def remove_part(self, query: PageQuery, chips: list[str] | None, *controls: Any) -> Outputs:
        """A part's chip was removed: search without it."""
        kept = set(chips or [])
        gone = [i for i, chip in enumerate(query.chips()) if chip not in kept]
        return self._search(query.without(gone[0]), Controls(*controls)) if gone else {}

    def click_result(self, evt: gr.SelectData, mode: str, query: PageQuery, on_screen: list[Hit], *controls: Any) -> Outputs:
        """A click on a result opens it in the detail view, or marks it "more like" / "less like" and searches
        again, as the person chose."""
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(on_screen or []):
            return {}
        hit = on_screen[evt.index]
        c = Controls(*controls)
        if mode not in (MORE_LIKE, LESS_LIKE):
            return {"detail": gr.update(visible=True), "selected": hit,
                    "detail_image": self.gallery([(hit.image, None)] if hit.image else []),
                    "detail_text": views.detail(evt.index + 1, hit, c.metric)}
        return self._mark(query, hit, mode == MORE_LIKE, c)

    def more_like_selected(self, query: PageQuery, selected: Hit | None, *controls: Any) -> Outputs:
        """Feedback from the detail view: more like the selected result."""
        return self._mark(query, selected, True, Controls(*controls))

    def less_like_selected(self, query: PageQuery, selected: Hit | None, *controls: Any) -> Outputs:
        """Feedback from the detail view: less like the selected result."""
        return self._mark(query, selected, False, Controls(*controls))

    def _mark(self, query: PageQuery, hit: Hit | None, good: bool, c: Controls) -> Outputs:
        if hit is None or not query.parts:
            return self._failed(query, QueryError("Search first, then mark results as more or less like what you want."))
        if query.size >= MAX_PARTS:
            return self._failed(query, QueryError(f"A query holds at most {MAX_PARTS} parts; undo a mark first."))
        return self._search(query.marking(hit.id, good, views.mark_name(hit)), c)

    def undo(self, query: PageQuery, *controls: Any) -> Outputs:
        """Take back the latest mark and search again."""
        return self._search(query.undoing(), Controls(*controls)) if query.feedback else {}

    def pick_corner(self, evt: gr.SelectData, query: PageQuery, corner: tuple[float, float] | None,
                    *controls: Any) -> Outputs:
        """A tap on the query image: the first marks a corner of a region (kept in ``corner``), the second the
        opposite corner, and the search runs on that region alone."""
        main = query.main
        if main is None or main.picture is None:
            return {"corner": None}
        picture = main.picture
        try:
            point = regions.to_original(evt.index, main.scale)
            if corner is None:
                marked = regions.mark_corner(picture, point, self.files)
                return {"status": "Now tap the opposite corner of the region to search.", "corner": point,
                        "query": query.with_main(replace(main, preview=marked.preview, scale=marked.scale)),
                        "image": marked.preview}
            box, marked = regions.cut(picture, corner, point, self.files)
            region = Shown(Part(kind="image", value=self.files.readable(picture), weight=main.part.weight, box=box),
                           negative=main.negative,
                           preview=marked.preview, label=f"region of {main.label.removeprefix('region of ')}",
                           scale=marked.scale)
        except SearchError as exc:
            return {**self._failed(query, exc), "corner": None}
        return {**self._search(query.with_main(region), Controls(*controls)), "corner": None}


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


def _query_panel(query: PageQuery) -> tuple[Any, Any]:
    """What the query panel shows: the description searched, or the image (a copy fitted to the panel)."""
    main = query.main
    if main is None:
        return "", None
    if main.kind == "text":
        return main.value, None
    return "", main.preview


def _emptied(query: PageQuery, image: Any, status: str, *, keep_text: bool = False, text: Any = "") -> Searched:
    """A search with no results to show: the query panel, the status line, and nothing left of the last one."""
    return Searched(query, gr.skip() if keep_text else text, image, [], [], 0, status, gr.update(visible=False),
                    gr.update(visible=False), None, _chips(query), _undo(query))


def _texts(query: Query) -> str:
    """A query's descriptions, as the no-match message quotes them."""
    return " + ".join(p.value for p in query.positive if p.kind == "text")


def _chips(query: PageQuery) -> Any:
    """The query's other parts as removable chips (hidden while there are none)."""
    chips = query.chips()
    return gr.update(choices=chips, value=chips, visible=bool(chips))


def _undo(query: PageQuery) -> Any:
    """The undo button, there while the query holds feedback."""
    return gr.update(visible=bool(query.feedback))
