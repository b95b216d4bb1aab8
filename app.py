"""Image search by image and by text: the Gradio app (a Hugging Face Space, or `python app.py`).

Three parts, in this order: the UI's event handlers (``Page``, all private), the public API's handlers
(``Api``, six named endpoints returning JSON), and ``build_app``, the layout that wires components to
them. What is searched and how lives in ``search.service``; how answers look, in ``search.views``.
"""
from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from starlette.middleware import Middleware

from search import METRICS, QueryError, SearchError, views
from search.http_api import json_api
from search.ids import KEY
from search.index import MAX_TEXT_CHARS
from search.served_files import UploadBudget, served_copy
from search.service import MAX_RESULTS, Examples, Results, SearchService
from search.settings import Settings

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

Handler = TypeVar("Handler", bound=Callable[..., Any])
Update = dict[str, Any]  # what gr.update() returns: new properties for a component
ShownResults = tuple[list[tuple[str, str]], list[str], str]  # results gallery, the id behind each item, status
ShownAlbum = tuple[list[tuple[str, str | None]], list[str], str]  # album gallery, the id behind each item, selected id


def user_errors(fn: Handler) -> Handler:
    """Show library errors as a message in the UI and an error to API callers; hide internals.

    A refused input is one line in the log; only an unexpected error (a bug) logs its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SearchError as exc:
            log.info("refused in %s: %s", fn.__qualname__, exc.for_operator())
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__qualname__)
            raise gr.Error("Something went wrong on our side; the server log has the details.") from None

    return wrapper  # type: ignore[return-value]


# --- The page: the UI's event handlers ------------------------------------------------------------------
# Search handlers take the controls in one order: k (number of results), metric, index ("", a shared
# index's name, or "mine/NAME"), key (this browser's secret), fold (fold near-duplicates).


class Page:
    """What the page's events do. Every one is private: the browser calls them, API clients cannot."""

    def __init__(self, service: SearchService):
        self.service = service
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
        dropdown and the examples too, and the timer stops."""
        overview = views.overview(self.service.overview())
        if self.building():
            return overview, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        choices = views.index_choices(self.service.shared_indexes() + self.service.album_indexes(key))
        values = [value for _, value in choices]
        examples = self.examples()
        return (overview, gr.Timer(active=False),
                gr.update(choices=choices, value=index if index in values else (values[0] if values else None)),
                gr.update(value=examples.images, visible=bool(examples.images)),
                [image for image, _ in examples.images],
                gr.Dataset(samples=[[p] for p in examples.prompts], visible=bool(examples.prompts)))

    @user_errors
    def pick_example(self, paths: list[str], evt: gr.SelectData) -> str | None:
        """Put the example image that was clicked in the query box (which searches by it)."""
        return paths[evt.index] if evt.index < len(paths) else None

    @user_errors
    def search_prompt(self, sample: Any, k: int, metric: str, index: str, key: str | None,
                      fold: bool) -> tuple[str, *ShownResults]:
        """Search by the example description that was clicked, and show it in the text box."""
        text = str(sample[0] if isinstance(sample, (list, tuple)) and sample else sample or "")
        return (text, *self.search_text(text, k, metric, index, key, fold))

    def index_dropdown(self, key: str | None) -> Update:
        """The Index dropdown's choices: the shared indexes, then the caller's albums."""
        return gr.update(choices=views.index_choices(self.service.shared_indexes() + self.service.album_indexes(key)))

    @user_errors
    def first_visit(self, key: str | None) -> tuple[str, Update, Update]:
        """Give a new browser its secret key; list its albums under Index and under Collection."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            key = secrets.token_urlsafe(24)
        albums = self.service.album_indexes(key)
        return key, self.index_dropdown(key), gr.update(choices=[a.name for a in albums])

    @user_errors
    def search_image(self, image: str | None, k: int, metric: str, index: str, key: str | None,
                     fold: bool) -> ShownResults:
        """Search by the query image; a removed image clears the results."""
        if not image:
            return [], [], ""
        return _shown(self.service.search_image(image, k, metric, index, key=key, fold=fold))

    @user_errors
    def search_url(self, url: str, k: int, metric: str, index: str, key: str | None, fold: bool) -> ShownResults:
        """Fetch an image URL and search by it."""
        return _shown(self.service.search_url(url, k, metric, index, key=key, fold=fold))

    @user_errors
    def search_text(self, text: str, k: int, metric: str, index: str, key: str | None, fold: bool) -> ShownResults:
        """Search by a description."""
        return _shown(self.service.search_text(text, k, metric, index, key=key, fold=fold))

    @user_errors
    def search_result(self, ids: list[str], k: int, metric: str, index: str, key: str | None, fold: bool,
                      evt: gr.SelectData) -> ShownResults:
        """Search by the result that was clicked (``ids`` holds the id behind each gallery item)."""
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(ids or []):
            raise QueryError("That result is no longer shown; search again.")
        return _shown(self.service.search_id(ids[evt.index], k, metric, index, key=key, fold=fold))

    @user_errors
    def show_album(self, key: str | None, name: str) -> ShownAlbum:
        """Browse the album chosen under Collection (nothing when there is no such album yet)."""
        items, ids = views.album_gallery(self.service.browse_album(key, name))
        return items, ids, ""

    @user_errors
    def add_to_album(self, key: str | None, name: str, files: list[str] | None,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Index the uploaded files into the album, showing progress.

        Returns the report (summary, rows), None to clear the upload, the Collection and Index dropdowns'
        updates, and the album as ``show_album`` shows it.
        """
        report = self.service.add_images(key, name, files,
                                         on_progress=lambda done, total: progress((done, total), unit="images"))
        names = self.service.album_names(key)
        return (views.ingest_summary(report), views.ingest_rows(report), None,
                gr.update(choices=names, value=report.collection), self.index_dropdown(key),
                *self.show_album(key, report.collection))

    @user_errors
    def pick_image(self, ids: list[str], evt: gr.SelectData) -> str:
        """Select the album image that was clicked (its id)."""
        return ids[evt.index] if evt.index < len(ids) else ""

    @user_errors
    def delete_picked(self, key: str | None, name: str, image_id: str) -> ShownAlbum:
        """Delete the selected image from the album, then show the album again."""
        if not image_id:
            raise SearchError("Click an image in the collection first.")
        self.service.delete_images(key, name, [image_id])
        return self.show_album(key, name)

    @user_errors
    def drop_album(self, key: str | None, name: str) -> tuple[Any, ...]:
        """Delete the whole album: the Collection and Index dropdowns' updates, and an empty album view."""
        self.service.drop_album(key, name)
        return (gr.update(choices=self.service.album_names(key), value=None), self.index_dropdown(key), [], [], "")


def _shown(results: Results) -> ShownResults:
    items, ids = views.result_gallery(results)
    return items, ids, views.status(results)


# --- The public API: six named endpoints returning JSON ---------------------------------------------------
# `index` may name one of the caller's albums ("mine/NAME"), with the caller's `key` (16+ characters) on a
# public deployment. The API calls albums "collections".


class Api:
    """What the public endpoints do; each method's name is its endpoint's name."""

    def __init__(self, service: SearchService):
        self.service = service

    @user_errors
    def search_by_image(self, image: str | None, k: int, metric: str, index: str, key: str) -> list[dict[str, Any]]:
        """The k stored images most like ``image``, best first."""
        return _for_api(self.service.search_image(image, k, metric, index or None, key=key))

    @user_errors
    def search_by_text(self, text: str, k: int, metric: str, index: str, key: str) -> list[dict[str, Any]]:
        """The k stored images that best match ``text``, best first."""
        return _for_api(self.service.search_text(text, k, metric, index or None, key=key))

    @user_errors
    def collection_add(self, files: list[str] | None, collection: str, key: str) -> dict[str, Any]:
        """Index images and zips into the caller's collection; the ingestion report, without internals."""
        return self.service.add_images(key, collection, files).for_visitor()

    @user_errors
    def collection_list(self, key: str) -> list[str]:
        """The caller's collections."""
        return self.service.album_names(key)

    @user_errors
    def collection_delete(self, ids: object, collection: str, key: str) -> dict[str, Any]:
        """Delete images by id: ``{"removed": n, "not_found": [...]}``."""
        return self.service.delete_images(key, collection, ids).to_dict()

    @user_errors
    def collection_drop(self, collection: str, key: str) -> dict[str, int]:
        """Delete the caller's whole collection: ``{"removed": n}``."""
        return {"removed": len(self.service.drop_album(key, collection).removed)}


def _for_api(results: Results) -> list[dict[str, Any]]:
    """Hits for API callers; a FileData dict makes Gradio serve the thumbnail and the client download it."""
    return [{**r, "image": {"path": served_copy(r["image"]), "meta": {"_type": "gradio.FileData"}} if r["image"] else None}
            for r in results.records()]


# --- The layout -----------------------------------------------------------------------------------------


def build_app(service: SearchService) -> gr.Blocks:
    """Lay out the page and wire its events to ``Page``, and the named API endpoints to ``Api``."""
    page, api = Page(service), Api(service)
    shared = views.index_choices(service.shared_indexes())
    with gr.Blocks(title="Image search", delete_cache=DELETE_CACHE) as demo:
        key = gr.BrowserState(None, storage_key="image-search-key")  # this browser's secret for its albums
        gr.Markdown("# Image search\nFind images by example or by description.")
        overview = gr.Markdown(views.overview(service.overview()), elem_id="overview")
        timer = gr.Timer(BUILD_REFRESH_SECONDS, active=page.building())  # progress, while the default index is built
        examples = page.examples()
        with gr.Row():
            index = gr.Dropdown(shared, value=shared[0][1] if shared else None, label="Index")
            metric = gr.Dropdown(list(METRICS), value="cosine", label="Similarity")
            k = gr.Slider(1, MAX_RESULTS, value=DEFAULT_K, step=1, label="Results")
            fold = gr.Checkbox(False, label="Fold near-duplicates")
        with gr.Tabs():
            with gr.Tab("Search by image"):
                # image_mode=None: Gradio only reads the header; decoding is search.images' job.
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"],
                                 label="Query image", height=280)
                with gr.Row():
                    url = gr.Textbox(label="…or an image URL", placeholder="https://…", scale=4)
                    url_button = gr.Button("Fetch and search", scale=1)
                example_gallery = gr.Gallery(examples.images, label="Example images (click one to search by it)",
                                             columns=8, rows=1, height=170, allow_preview=False,
                                             visible=bool(examples.images),
                                             elem_id="example-images")
                example_paths = gr.State([image for image, _ in examples.images])
            with gr.Tab("Search by text"):
                text = gr.Textbox(label="Description", placeholder="a red dress", max_length=MAX_TEXT_CHARS)
                text_button = gr.Button("Search", variant="primary")
                prompt_examples = gr.Dataset(components=[text], samples=[[p] for p in examples.prompts],
                                             label="Example descriptions (click one to search)", samples_per_page=20,
                                             visible=bool(examples.prompts), elem_id="example-prompts")
            with gr.Tab("My collection"):
                gr.Markdown(views.albums_intro(service.settings.public))
                with gr.Row():
                    album = gr.Dropdown([], label="Collection", allow_custom_value=True, value="photos", scale=2)
                    files = gr.File(file_count="multiple", type="filepath", label="Images or a .zip", scale=3)
                add_button = gr.Button("Add to collection", variant="primary")
                ingest_summary = gr.Markdown()
                ingest_table = gr.Dataframe(headers=views.INGEST_HEADERS, label="Ingestion report",
                                            interactive=False, wrap=True)
                album_gallery = gr.Gallery(label="In this collection (click one to select it)", columns=8,
                                           height="auto", allow_preview=False, elem_id="mine")
                with gr.Row():
                    selected = gr.Textbox(label="Selected image", interactive=False)
                    delete_button = gr.Button("Delete selected image", variant="stop")
                    drop_button = gr.Button("Delete this collection", variant="stop")
                album_ids = gr.State([])  # the id behind each album_gallery item
        status = gr.Markdown()
        results = gr.Gallery(label="Results (click one to search by it)", columns=6, object_fit="contain",
                             height="auto", allow_preview=False, elem_id="results")
        result_ids = gr.State([])  # the id behind each results item

        shown_results = [results, result_ids, status]
        shown_album = [album_gallery, album_ids, selected]
        controls = [k, metric, index, key, fold]

        demo.load(page.first_visit, [key], [key, index, album], **PRIVATE)
        refreshed = [overview, timer, index, example_gallery, example_paths, prompt_examples]
        gr.on([demo.load, timer.tick], page.refresh, [key, index], refreshed, **PRIVATE)
        example_gallery.select(page.pick_example, [example_paths], image, **PRIVATE)
        prompt_examples.click(page.search_prompt, [prompt_examples, *controls], [text, *shown_results], **PRIVATE)
        image.change(page.search_image, [image, *controls], shown_results, **PRIVATE)
        gr.on([url.submit, url_button.click], page.search_url, [url, *controls], shown_results, **PRIVATE)
        gr.on([text.submit, text_button.click], page.search_text, [text, *controls], shown_results, **PRIVATE)
        results.select(page.search_result, [result_ids, *controls], shown_results, **PRIVATE)
        add_button.click(page.add_to_album, [key, album, files],
                         [ingest_summary, ingest_table, files, album, index, *shown_album], **PRIVATE)
        album.change(page.show_album, [key, album], shown_album, **PRIVATE)
        album_gallery.select(page.pick_image, [album_ids], selected, **PRIVATE)
        delete_button.click(page.delete_picked, [key, album, selected], shown_album, **PRIVATE)
        drop_button.click(page.drop_album, [key, album], [album, index, *shown_album], **PRIVATE)

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
            api_out = gr.JSON(label="result")
            search_options = [api_k, api_metric, api_index, api_key]
            endpoints: list[tuple[Callable[..., Any], list[gr.components.Component]]] = [  # method name = endpoint name
                (api.search_by_image, [api_image, *search_options]),
                (api.search_by_text, [api_text, *search_options]),
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
    logging.basicConfig(level=logging.INFO)
    service = SearchService(Settings.from_env())
    if service.start_default_build():
        log.info("serving at once; the default index is built in the background")
    elif (main := service.main_index()) is not None:
        log.info("opened the index: %d images in collection %r", len(main), main.collection.name)
    demo = build_app(service)
    demo.queue(max_size=service.settings.queue_size, default_concurrency_limit=service.settings.concurrency)
    # Thumbnails only: the store's own files (vectors, every album's metadata) are never served.
    allowed = [str(service.thumbnail_folder.resolve()), str(EXAMPLES)]
    budget = Middleware(UploadBudget, max_bytes=service.settings.upload_budget_bytes)
    demo.launch(max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=True,
                app_kwargs={"middleware": [budget], "routes": json_api(service).routes})  # /api/search


if __name__ == "__main__":
    main()
