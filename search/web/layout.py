"""The page's layout, and the wiring of its components to the handlers and of the API to its endpoints.

Components are kept by name (``c``): handlers return their outputs by those names, and ``named`` turns
that into Gradio's own form of named outputs, a dict keyed by component.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import gradio as gr

from search.core.query import DEFAULT_K, MAX_PAGE, MAX_TEXT_CHARS
from search.service.examples import Shipped
from search.service.service import SearchService
from search.web import pictures, views
from search.web.albums_page import ALBUM_VIEW, DROP, FIRST_ALBUM, SWAP, AlbumPage
from search.web.api import ENDPOINTS, Api
from search.web.evaluation_tab import evaluation_tab
from search.web.files import KEEP_S, VisitorFiles, upload_box
from search.web.page import CONTROLS, LESS_LIKE, MORE_LIKE, OPEN, SEARCHED, PageQuery, SearchPage, query_image
from search.web.styles import REVEAL_RESULTS

BUILD_REFRESH_SECONDS = 2.0
# Every 5 minutes, Gradio deletes what it cached more than 30 minutes ago (uploads nobody used included).
DELETE_CACHE = (300, KEEP_S)
PRIVATE: dict[str, Any] = dict(api_visibility="private")
Components = dict[str, Any]


def named(handler: Callable[..., dict[str, Any]], c: Components) -> Callable[..., dict[Any, Any]]:
    """``handler``, whose outputs are by name, as Gradio takes named outputs: a dict keyed by component; its
    pictures' URLs are made under the root of the request it answers (``pictures.answering``).

    Gradio reads the signature for what it passes besides the inputs (event data, progress, the request): the
    wrapper's is the handler's, after the request Gradio passes first.
    """

    @functools.wraps(handler)
    def call(request: gr.Request, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        with pictures.answering(request):
            return {c[name]: value for name, value in handler(*args, **kwargs).items()}

    signature = inspect.signature(handler)
    call.__signature__ = signature.replace(parameters=[_REQUEST, *signature.parameters.values()])  # type: ignore[attr-defined]
    call.__annotations__ = {**handler.__annotations__, "request": gr.Request}
    return call


_REQUEST = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)


def build_app(service: SearchService, files: VisitorFiles | None = None, shipped: Shipped | None = None) -> gr.Blocks:
    """Lay out the page and wire its events to the handlers, and the named API endpoints to ``Api``.

    ``files``: what the web server keeps for visitors (by default under the settings' upload budget);
    ``shipped``: the examples shipped with the app (photos and descriptions).
    """
    files = files or VisitorFiles(service.settings.upload_budget_bytes)
    page = SearchPage(service, files, shipped)
    albums = AlbumPage(service, files, page)
    c: Components = {}
    shared = views.index_choices(service.shared_indexes())
    with gr.Blocks(title="Image search", delete_cache=DELETE_CACHE) as demo:
        c["key"] = gr.BrowserState(None, storage_key="image-search-key")  # this browser's secret for its albums
        gr.Markdown("# Image search\nFind images by description, by example, or by a part of a photo.")
        c["overview"] = gr.Markdown(views.overview(service.overview()), elem_id="overview")
        c["timer"] = gr.Timer(BUILD_REFRESH_SECONDS, active=page.building())  # while the model loads, or the default build runs
        examples = page.examples()
        c["query"] = gr.State(PageQuery())  # what the page searches by
        c["on_screen"] = gr.State([])  # the Hit behind each results item
        c["next_offset"] = gr.State(0)  # where "More results" continues
        c["selected"] = gr.State(None)  # the Hit open in the detail view
        c["corner"] = gr.State(None)  # the first corner of a region being drawn on the query image
        with gr.Tabs():
            with gr.Tab("Search", id="search"), gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320, elem_id="query-panel"):
                    with gr.Row(equal_height=True):
                        c["text"] = gr.Textbox(label="Description", placeholder="a red dress", scale=4, min_width=160,
                                               max_length=MAX_TEXT_CHARS, elem_id="text-query")
                        c["text_button"] = gr.Button("Search", variant="primary", scale=1, min_width=90)
                    # Each kind of example under the box it fills, above the options: a newcomer's first try,
                    # in sight on a 1000 px high screen (below the open Options, they were not).
                    c["prompt_examples"] = gr.Dataset(components=[c["text"]], samples=[[p] for p in examples.prompts],
                                                      label="Example descriptions (click one to search)",
                                                      samples_per_page=20, visible=bool(examples.prompts),
                                                      elem_id="example-prompts")
                    # No height=: with one, Gradio stops reporting taps on an image the server sent back (regions).
                    c["image"] = query_image(sources=["upload", "clipboard", "webcam"], show_label=False,
                                             elem_id="query-image")
                    gr.Markdown("Drop, paste or take a photo; tap two opposite corners on it to search a region.",
                                elem_id="query-image-help")
                    c["example_gallery"] = gr.Gallery(page.gallery(examples.images), columns=8, rows=1, height=110,
                                                      label="Example images (click one to search by it)",
                                                      allow_preview=False, visible=bool(examples.images),
                                                      elem_id="example-images")
                    c["example_paths"] = gr.State([image for image, _ in examples.images])
                    with gr.Row(equal_height=True):
                        c["url"] = gr.Textbox(label="…or an image URL", placeholder="https://…", scale=4, min_width=160)
                        c["url_button"] = gr.Button("Search URL", scale=1, min_width=90)
                    c["chips"] = gr.Dropdown([], value=[], multiselect=True, label="Also in this query",
                                             info="Remove a part with its ×", visible=False, elem_id="parts")
                    with gr.Accordion("Refine: more like, less like", open=False, elem_id="composer"):
                        gr.Markdown("Add a description or an image to the query. Tap two opposite corners on the "
                                    "query image to search by that region alone.")
                        c["add_text"] = gr.Textbox(label="Description to add", placeholder="long sleeves",
                                                   max_length=MAX_TEXT_CHARS, elem_id="add-text")
                        c["add_image"] = query_image(sources=["upload", "clipboard"], height=120,
                                                     label="…or an image to add", elem_id="add-image")
                        with gr.Row(equal_height=True):
                            c["add_sign"] = gr.Radio([MORE_LIKE, LESS_LIKE], value=MORE_LIKE, show_label=False,
                                                     min_width=200)
                            c["add_weight"] = gr.Slider(0.1, 3.0, value=1.0, step=0.1, label="Weight", min_width=140)
                        c["add_button"] = gr.Button("Add to the query", elem_id="add-part")
                    with gr.Accordion("Options", open=True):
                        c["index"] = gr.Dropdown(shared, value=shared[0][1] if shared else None, label="Index",
                                                 allow_custom_value=True)
                        c["metric"] = gr.Dropdown(views.METRIC_CHOICES, value="cosine", label="Similarity",
                                                  info=views.METRIC_INFO)
                        c["k"] = gr.Slider(1, MAX_PAGE, value=DEFAULT_K, step=1, label="Results per page")
                        with gr.Row():
                            c["fold"] = gr.Checkbox(False, label="Fold near-duplicates", min_width=140)
                            c["strong"] = gr.Checkbox(False, label="Only strong matches", min_width=140)
                        c["sort"] = gr.Dropdown(views.SORT_CHOICES, value="relevance", label="Order",
                                                info="By date: the strong matches by when they were taken, then the rest")
                        with gr.Row():
                            c["taken_from"] = gr.Textbox(label="Taken from", placeholder="2024-01-31, then Enter", min_width=120,
                                                         max_length=40, elem_id="taken-from")
                            c["taken_to"] = gr.Textbox(label="Taken until", placeholder="2024-12-31, then Enter", min_width=120,
                                                       max_length=40, elem_id="taken-to")
                        # allow_custom_value: Gradio would refuse, with its own red error, a filter the browser still
                        # shows while the server already lists another index's labels (a switch, a dropped
                        # collection); the handlers clear the filters the index does not hold and say so instead.
                        c["include"] = gr.Dropdown([], value=[], multiselect=True, label="Only these labels",
                                                   interactive=False, allow_custom_value=True)
                        c["exclude"] = gr.Dropdown([], value=[], multiselect=True, label="Not these labels",
                                                   interactive=False, allow_custom_value=True)
                with gr.Column(scale=3, min_width=320, elem_id="results-panel"):
                    c["status"] = gr.Markdown(elem_id="status")
                    with gr.Row(equal_height=True):
                        c["click_mode"] = gr.Radio([OPEN, MORE_LIKE, LESS_LIKE], value=OPEN, label="Clicking a result will",
                                                   elem_id="click-mode", scale=4, min_width=240)
                        c["undo"] = gr.Button("Undo the last mark", visible=False, size="sm", scale=1, min_width=120)
                    with gr.Column(visible=False, elem_id="detail") as c["detail"], gr.Row(equal_height=False):
                        # A gallery of one: it shows a URL as it is, where an image box would copy it into Gradio's cache.
                        c["detail_image"] = gr.Gallery(label="Selected result", height=320, columns=1, preview=True,
                                                       interactive=False, object_fit="contain", min_width=200,
                                                       elem_id="detail-image", buttons=["download", "fullscreen"])
                        with gr.Column(min_width=200):
                            c["detail_text"] = gr.Markdown()
                            c["search_this"] = gr.Button("Search by this image", variant="primary")
                            with gr.Row():
                                c["more_like"] = gr.Button("👍 More like this", min_width=100)
                                c["less_like"] = gr.Button("👎 Less like this", min_width=100)
                            c["close"] = gr.Button("Close")
                    c["results"] = gr.Gallery(label="Results", columns=6, object_fit="contain", height="auto",
                                              allow_preview=False, elem_id="results")
                    c["more"] = gr.Button("More results", visible=False, elem_id="more")
            with gr.Tab("My collection"):
                gr.Markdown(views.albums_intro(service.settings.public))
                with gr.Row():
                    c["album"] = gr.Dropdown([], label="Collection", allow_custom_value=True, value=FIRST_ALBUM,
                                             scale=2, min_width=160)
                    c["uploads"] = upload_box(file_count="multiple", label="Images or a .zip", scale=3, min_width=200,
                                              elem_id="album-files")
                c["album_add"] = gr.Button("Add to collection", variant="primary")
                c["summary"] = gr.Markdown()
                # Lines that wrap, not Gradio's table: its columns took the width of their longest cell, and a
                # long file name pushed the reasons out of sight, cut mid-phrase.
                c["notes"] = gr.Markdown(visible=False, elem_id="ingest-notes")
                c["where"] = gr.Markdown()
                c["swap"] = gr.Button(SWAP, visible=False, elem_id="album-swap")  # an album older than the app's model
                c["gallery"] = gr.Gallery(label="In this collection (click one to select it)", columns=8, height="auto",
                                          allow_preview=False, object_fit="contain", elem_id="mine")
                with gr.Row():
                    c["newer"] = gr.Button("◀ Newer", interactive=False, min_width=90)
                    c["older"] = gr.Button("Older ▶", interactive=False, min_width=90)
                with gr.Row():
                    c["picked"] = gr.Textbox(label="Selected image", interactive=False, min_width=200)
                    c["delete"] = gr.Button("Delete selected image", variant="stop", min_width=140)
                    c["drop"] = gr.Button(DROP, variant="stop", min_width=140)
                c["ids"] = gr.State([])  # the id behind each gallery item
                c["picked_id"] = gr.State(None)  # the id of the image selected in it
                c["offset"] = gr.State(0)
                c["armed"] = gr.State(None)  # the album a first click on DROP asked about
            with gr.Tab("Evaluate"):
                evaluation_tab(service.settings)
        _wire(demo, c, page, albums)
        _endpoints(Api(service, files))
    return demo


def _wire(demo: gr.Blocks, c: Components, page: SearchPage, albums: AlbumPage) -> None:
    """Every private event of the page: the handler, its inputs and its outputs, by component name."""

    def on(triggers: Any, handler: Callable[..., dict[str, Any]], inputs: Iterable[str], outputs: Iterable[str],
           **options: Any) -> Any:
        return gr.on(triggers, named(handler, c), [c[n] for n in inputs], [c[n] for n in outputs],
                     **{**PRIVATE, **options})

    controls = list(CONTROLS)
    searched = list(SEARCHED)
    running = dict(show_progress_on=c["results"])  # the spinner on the results, not on every output
    on(demo.load, page.first_visit, ["key"], ["key", "index", "album"]).then(
        named(albums.show, c), [c["key"], c["album"]], [c[n] for n in ALBUM_VIEW], **PRIVATE)
    on([demo.load, c["timer"].tick], page.refresh, ["key", "index"],
       ["overview", "timer", "index", "include", "exclude", "example_gallery", "example_paths", "prompt_examples"])

    def new_search(triggers: list[Any], handler: Callable[..., dict[str, Any]], source: str) -> None:
        """A search the person starts from the query panel (on a phone, then show the results)."""
        on(triggers, handler, [source, *controls], [*searched, "url"], **running).then(None, js=REVEAL_RESULTS, **PRIVATE)

    new_search([c["text"].submit, c["text_button"].click], page.search_text, "text")
    new_search([c["prompt_examples"].click], page.search_prompt, "prompt_examples")
    new_search([c["image"].input], page.search_image, "image")
    new_search([c["example_gallery"].select], page.search_example, "example_paths")
    new_search([c["url"].submit, c["url_button"].click], page.search_url, "url")
    new_search([c["search_this"].click], page.search_selected, "selected")
    on([c[n].input for n in ("metric", "fold", "strong", "include", "exclude", "sort")] + [c["k"].release]
       + [c[n].submit for n in ("taken_from", "taken_to")],
       page.rerun, ["query", *controls], searched, **running)
    on(c["index"].input, page.change_index, ["query", *controls], [*searched, "include", "exclude"], **running)
    on(c["more"].click, page.more, ["query", "on_screen", "next_offset", *controls], searched, **running)
    on(c["results"].select, page.click_result, ["click_mode", "query", "on_screen", *controls],
       [*searched, "detail_image", "detail_text"], **running)
    on(c["add_button"].click, page.add_part, ["query", "add_text", "add_image", "add_sign", "add_weight", *controls],
       [*searched, "add_text", "add_image"], **running)
    on(c["chips"].input, page.remove_part, ["query", "chips", *controls], searched, **running)
    on(c["more_like"].click, page.more_like_selected, ["query", "selected", *controls], searched, **running)
    on(c["less_like"].click, page.less_like_selected, ["query", "selected", *controls], searched, **running)
    on(c["undo"].click, page.undo, ["query", *controls], searched, **running)
    on(c["image"].select, page.pick_corner, ["query", "corner", *controls], [*searched, "corner"], **running)
    on(c["close"].click, lambda: {"detail": gr.update(visible=False), "selected": None}, [], ["detail", "selected"])

    view = list(ALBUM_VIEW)
    on(c["album_add"].click, albums.add, ["key", "album", "uploads"],
       [*view, "summary", "notes", "uploads", "album", "index"])
    on(c["album"].input, albums.show, ["key", "album"], view)  # the person's choice; the handlers set it themselves
    on(c["newer"].click, albums.newer, ["key", "album", "offset"], view)
    on(c["older"].click, albums.older, ["key", "album", "offset"], view)
    on(c["gallery"].select, albums.pick, ["ids"], ["picked", "picked_id"])  # the frame marks the picked one
    on(c["delete"].click, albums.delete_picked, ["key", "album", "picked_id", "offset"], [*view, "summary", "notes"])
    on(c["swap"].click, albums.swap, ["key", "album"], [*view, "summary", "notes", "index"])
    on(c["drop"].click, albums.drop, ["key", "album", "index", "armed"],
       [*view, "album", "index", "include", "exclude", "summary", "notes"])


def _endpoints(api: Api) -> None:
    """The public API: hidden components, one per parameter, with the API's defaults, and a hidden button's
    click per endpoint (an endpoint needs an event to hang on); each endpoint runs the Api method of its name."""
    with gr.Row(visible=False):
        # precision=None: Gradio itself would fail on NaN with its own words; the query's rule says what k may be
        search_options = [gr.Number(value=DEFAULT_K, precision=None, label="k"),
                          gr.Textbox(value="cosine", label="metric"),  # checked by the library, which says why
                          gr.Textbox(value="", label="index"), gr.Textbox(value="", label="key")]
        key = search_options[-1]
        collection = gr.Textbox(value="", label="collection")
        inputs: dict[str, list[Any]] = {
            "search_by_image": [upload_box(label="image"), *search_options],  # bytes reach our decoder
            "search_by_text": [gr.Textbox(label="text"), *search_options],
            "search": [gr.JSON(value={}, label="query"), upload_box(file_count="multiple", label="images"), key],
            "collection_add": [upload_box(file_count="multiple", label="files"), collection, key],
            "collection_list": [key],
            "collection_delete": [gr.JSON(value=[], label="ids"), collection, key],
            "collection_drop": [collection, key],
            "collection_swap": [collection, key],
        }
        result = gr.JSON(label="result")
        for name in ENDPOINTS:
            gr.Button().click(getattr(api, name), inputs[name], result, api_name=name)
