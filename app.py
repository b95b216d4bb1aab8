"""Image search by image and by text: the Gradio app (a Hugging Face Space, or `python app.py`)."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import gradio as gr

from search import METRICS, SearchError
from search.index import MAX_TEXT_CHARS
from search.service import Results, SearchService, Settings

log = logging.getLogger("app")
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_IMAGES = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
EXAMPLE_PROMPTS = [line.strip() for line in (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
MAX_K = 50
QUEUE_SIZE = 64
CONCURRENCY = 4  # Chroma is thread-safe; model calls serialise on the embedder's own lock
MAX_FILE_SIZE = "20mb"


def user_errors(fn):
    """Show library errors as a message in the UI and an error to API callers; hide internals."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SearchError as exc:
            raise gr.Error(str(exc)) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Something went wrong on our side; the server log has the details.") from None

    return wrapper


def build_app(service: SearchService) -> gr.Blocks:
    """Wire the UI and the named API endpoints to ``service``."""
    methods = service.methods

    def shown(results: Results) -> tuple:
        status = f"{len(results.hits)} results in {results.seconds * 1000:.0f} ms"
        return results.gallery(), results.records(), status

    def as_api(results: Results) -> list[dict]:
        # A FileData dict makes Gradio serve the thumbnail and the client download it.
        return [{**r, "image": {"path": r["image"], "meta": {"_type": "gradio.FileData"}} if r["image"] else None}
                for r in results.records()]

    with gr.Blocks(title="Image search") as demo:
        gr.Markdown("# Image search\nFind images by example or by description.")
        gr.Markdown(service.describe())
        with gr.Row():
            method = gr.Dropdown(methods, value=methods[0][1] if methods else None, label="Index",
                                 visible=len(methods) > 1)
            metric = gr.Dropdown(list(METRICS), value="cosine", label="Similarity")
            k = gr.Slider(1, MAX_K, value=12, step=1, label="Results")
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
        status = gr.Markdown()
        gallery = gr.Gallery(label="Results (click one to search by it)", columns=6, object_fit="contain",
                             height="auto", allow_preview=False, elem_id="results")
        records = gr.State([])
        outputs = [gallery, records, status]
        private = dict(api_visibility="private")

        image.change(user_errors(lambda i, n, m, x: shown(service.search_image(i, n, m, x)) if i else ([], [], "")),
                     [image, k, metric, method], outputs, **private)
        url_events = [url.submit, url_button.click]
        gr.on(url_events, user_errors(lambda u, n, m, x: shown(service.search_url(u, n, m, x))),
              [url, k, metric, method], outputs, **private)
        gr.on([text.submit, text_button.click], user_errors(lambda t, n, m, x: shown(service.search_text(t, n, m, x))),
              [text, k, metric, method], outputs, **private)

        def clicked(hits: list[dict], n: int, m: str, x: str, evt: gr.SelectData):
            return shown(service.search_id(hits[evt.index]["id"], n, m, x))

        gallery.select(user_errors(clicked), [records, k, metric, method], outputs, **private)

        # The public API: two named endpoints returning a JSON list of hits, best first.
        with gr.Row(visible=False):
            api_image = gr.File(type="filepath", label="image")  # bytes reach our decoder untouched
            api_text = gr.Textbox(label="text")
            api_k = gr.Number(value=12, precision=0, label="k")
            api_metric = gr.Dropdown(list(METRICS), value="cosine", label="metric")
            api_method = gr.Textbox(value="", label="index")
            api_out = gr.JSON(label="hits")
            by_image, by_text = gr.Button(), gr.Button()
        by_image.click(user_errors(lambda i, n, m, x: as_api(service.search_image(i, n, m, x or None))),
                       [api_image, api_k, api_metric, api_method], api_out, api_name="search_by_image")
        by_text.click(user_errors(lambda t, n, m, x: as_api(service.search_text(t, n, m, x or None))),
                      [api_text, api_k, api_metric, api_method], api_out, api_name="search_by_text")
    return demo


def main() -> None:
    """Load the model and the store once, then serve (GRADIO_SERVER_NAME/PORT choose the address)."""
    logging.basicConfig(level=logging.INFO)
    service = SearchService(Settings.from_env())
    demo = build_app(service)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    allowed = [str(service.settings.store.resolve()), str(EXAMPLES)]
    demo.launch(max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=True)


if __name__ == "__main__":
    main()
