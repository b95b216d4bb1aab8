"""Image search by image and by text: the Gradio app (a Hugging Face Space, or `python app.py`)."""
from __future__ import annotations

import functools
import logging
import secrets
from pathlib import Path

import gradio as gr

from starlette.middleware import Middleware

from search import METRICS, SearchError
from search.ids import KEY
from search.index import MAX_TEXT_CHARS
from search.served_files import UploadBudget, served_copy
from search.service import MAX_RESULTS, Results, SearchService
from search.settings import Settings
from search.store import THUMBNAILS

log = logging.getLogger("app")
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_IMAGES = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
EXAMPLE_PROMPTS = [line.strip() for line in (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
MAX_FILE_SIZE = "20mb"
# Every 5 minutes, Gradio deletes what it cached more than 30 minutes ago (uploads nobody used included).
DELETE_CACHE = (300, 1800)
PRIVATE = dict(api_visibility="private")


def user_errors(fn):
    """Show library errors as a message in the UI and an error to API callers; hide internals.

    A refused input is one line in the log; only an unexpected error (a bug) logs its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SearchError as exc:
            log.info("refused in %s: %s", fn.__name__, exc.for_operator())
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Something went wrong on our side; the server log has the details.") from None

    return wrapper


def shown(results: Results) -> tuple:
    """Gallery, the hits behind it, and a status line."""
    return results.gallery(), results.records(), f"{len(results.hits)} results in {results.seconds * 1000:.0f} ms"


def as_api(records: list[dict]) -> list[dict]:
    """Hits for API callers; a FileData dict makes Gradio serve the thumbnail and the client download it."""
    return [{**r, "image": {"path": served_copy(r["image"]), "meta": {"_type": "gradio.FileData"}} if r["image"] else None}
            for r in records]


def build_app(service: SearchService) -> gr.Blocks:
    """Wire the UI and the named API endpoints to ``service``."""
    methods = service.methods
    with gr.Blocks(title="Image search", delete_cache=DELETE_CACHE) as demo:
        key = gr.BrowserState(None, storage_key="image-search-key")  # this browser's secret for its collections
        gr.Markdown("# Image search\nFind images by example or by description.")
        gr.Markdown(service.describe())
        with gr.Row():
            method = gr.Dropdown(methods, value=methods[0][1] if methods else None, label="Index")
            metric = gr.Dropdown(list(METRICS), value="cosine", label="Similarity")
            k = gr.Slider(1, MAX_RESULTS, value=12, step=1, label="Results")
            fold = gr.Checkbox(False, label="Fold near-duplicates")
        with gr.Tabs():
            with gr.Tab("Search by image"):
                # image_mode=None: Gradio only reads the header; decoding is search.images' job.
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"],
                                 label="Query image", height=280)
                with gr.Row():
                    url = gr.Textbox(label="…or an image URL", placeholder="https://…", scale=4)
                    url_button = gr.Button("Fetch and search", scale=1)
                gr.Examples([[p] for p in EXAMPLE_IMAGES], inputs=[image], label="Example images")
            with gr.Tab("Search by text"):
                text = gr.Textbox(label="Description", placeholder="a red dress", max_length=MAX_TEXT_CHARS)
                text_button = gr.Button("Search", variant="primary")
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[text], label="Example descriptions")
            with gr.Tab("My collection"):
                gr.Markdown("Index your own photos, then pick *my collection: …* under **Index** to search them."
                            + (" Your collections are private to this browser." if service.settings.public else ""))
                with gr.Row():
                    mine = gr.Dropdown([], label="Collection", allow_custom_value=True, value="photos", scale=2)
                    files = gr.File(file_count="multiple", type="filepath", label="Images or a .zip", scale=3)
                add_button = gr.Button("Add to collection", variant="primary")
                ingest_summary = gr.Markdown()
                ingest_table = gr.Dataframe(headers=["source", "outcome", "detail"], label="Ingestion report",
                                            interactive=False, wrap=True)
                browse = gr.Gallery(label="In this collection (click one to select it)", columns=8, height="auto",
                                    allow_preview=False, elem_id="mine")
                with gr.Row():
                    selected = gr.Textbox(label="Selected image", interactive=False)
                    delete_button = gr.Button("Delete selected image", variant="stop")
                    drop_button = gr.Button("Delete this collection", variant="stop")
                browsed = gr.State([])
        status = gr.Markdown()
        gallery = gr.Gallery(label="Results (click one to search by it)", columns=6, object_fit="contain",
                             height="auto", allow_preview=False, elem_id="results")
        records = gr.State([])
        results = [gallery, records, status]

        def choices(secret: str | None):
            return gr.update(choices=methods + service.personal_methods(secret))

        def first_visit(secret: str | None):
            if not isinstance(secret, str) or not KEY.fullmatch(secret):
                secret = secrets.token_urlsafe(24)
            names = service.albums.names(secret) if service.albums else []
            return secret, choices(secret), gr.update(choices=names)

        demo.load(first_visit, [key], [key, method, mine], **PRIVATE)

        search_inputs = [k, metric, method, key, fold]
        image.change(user_errors(lambda i, n, m, x, s, f: shown(service.search_image(i, n, m, x, key=s, fold=f))
                                 if i else ([], [], "")), [image, *search_inputs], results, **PRIVATE)
        gr.on([url.submit, url_button.click],
              user_errors(lambda u, n, m, x, s, f: shown(service.search_url(u, n, m, x, key=s, fold=f))),
              [url, *search_inputs], results, **PRIVATE)
        gr.on([text.submit, text_button.click],
              user_errors(lambda t, n, m, x, s, f: shown(service.search_text(t, n, m, x, key=s, fold=f))),
              [text, *search_inputs], results, **PRIVATE)

        def clicked(hits: list[dict], n, m, x, s, f, evt: gr.SelectData):
            return shown(service.search_id(hits[evt.index]["id"], n, m, x, key=s, fold=f))

        gallery.select(user_errors(clicked), [records, *search_inputs], results, **PRIVATE)

        def listing(secret: str | None, name: str):
            hits = service.personal.browse(secret, name) if name in service.personal.names(secret) else []
            return [(h.image, h.source) for h in hits if h.image], [h.id for h in hits], ""

        def add(secret, name, paths, progress=gr.Progress(track_tqdm=True)):
            report = service.add_images(secret, name, paths)
            rows = ([[s["source"], s["reason"], s["detail"]] for s in report.skipped]
                    + [[d["source"], "near-duplicate", f"of {d['similar_source']} ({d['similarity']})"]
                       for d in report.near_duplicates])
            names = service.personal.names(secret)
            return (report.summary(), rows, None, gr.update(choices=names, value=report.collection), choices(secret),
                    *listing(secret, report.collection))

        browse_outputs = [browse, browsed, selected]
        add_button.click(user_errors(add), [key, mine, files],
                         [ingest_summary, ingest_table, files, mine, method, *browse_outputs], **PRIVATE)
        mine.change(user_errors(listing), [key, mine], browse_outputs, **PRIVATE)

        def pick(ids: list[str], evt: gr.SelectData) -> str:
            return ids[evt.index] if evt.index < len(ids) else ""

        browse.select(pick, [browsed], selected, **PRIVATE)

        def delete(secret, name, image_id):
            if not image_id:
                raise SearchError("Click an image in the collection first.")
            service.delete_images(secret, name, [image_id])
            return listing(secret, name)

        delete_button.click(user_errors(delete), [key, mine, selected], browse_outputs, **PRIVATE)

        def drop(secret, name):
            service.drop_collection(secret, name)
            return (gr.update(choices=service.personal.names(secret), value=None), choices(secret), [], [], "")

        drop_button.click(user_errors(drop), [key, mine], [mine, method, *browse_outputs], **PRIVATE)

        # The public API: named endpoints returning JSON. `index` may name a personal collection
        # ("mine/NAME"), with the caller's `key` (16+ characters) on a public deployment.
        with gr.Row(visible=False):
            api_image = gr.File(type="filepath", label="image")  # bytes reach our decoder untouched
            api_files = gr.File(type="filepath", file_count="multiple", label="files")
            api_text = gr.Textbox(label="text")
            api_k = gr.Number(value=12, precision=0, label="k")
            api_metric = gr.Textbox(value="cosine", label="metric")  # checked by the library, which says why
            api_index = gr.Textbox(value="", label="index")
            api_key = gr.Textbox(value="", label="key")
            api_name = gr.Textbox(value="", label="collection")
            api_ids = gr.JSON(value=[], label="ids")
            api_out = gr.JSON(label="result")
            buttons = [gr.Button() for _ in range(6)]
        api_search = [api_k, api_metric, api_index, api_key]
        buttons[0].click(user_errors(lambda i, n, m, x, s: as_api(service.search_image(i, n, m, x or None, key=s).records())),
                         [api_image, *api_search], api_out, api_name="search_by_image")
        buttons[1].click(user_errors(lambda t, n, m, x, s: as_api(service.search_text(t, n, m, x or None, key=s).records())),
                         [api_text, *api_search], api_out, api_name="search_by_text")
        buttons[2].click(user_errors(lambda f, c, s: service.add_images(s, c, f).for_visitor()),
                         [api_files, api_name, api_key], api_out, api_name="collection_add")
        buttons[3].click(user_errors(lambda s: service.personal.names(s)), [api_key], api_out, api_name="collection_list")
        buttons[4].click(user_errors(lambda ids, c, s: service.delete_images(s, c, ids).to_dict()),
                         [api_ids, api_name, api_key], api_out, api_name="collection_delete")
        buttons[5].click(user_errors(lambda c, s: {"removed": len(service.drop_collection(s, c).removed)}),
                         [api_name, api_key], api_out, api_name="collection_drop")
    return demo


def main() -> None:
    """Load the model and the store once, then serve (GRADIO_SERVER_NAME/PORT choose the address)."""
    logging.basicConfig(level=logging.INFO)
    service = SearchService(Settings.from_env())
    demo = build_app(service)
    demo.queue(max_size=service.settings.queue_size, default_concurrency_limit=service.settings.concurrency)
    # Thumbnails only: the store's own files (vectors, every collection's metadata) are never served.
    allowed = [str((service.settings.store / THUMBNAILS).resolve()), str(EXAMPLES)]
    budget = Middleware(UploadBudget, max_bytes=service.settings.upload_budget_bytes)
    demo.launch(max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=True,
                app_kwargs={"middleware": [budget]})


if __name__ == "__main__":
    main()
