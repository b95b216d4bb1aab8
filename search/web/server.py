"""Serving the app: the service opened once, the page and the JSON API on one server, visitors' files budgeted."""
from __future__ import annotations

import logging
from pathlib import Path

from starlette.middleware import Middleware

from search.config import MB, configure_logging, load_settings
from search.service.examples import Shipped
from search.service.service import SearchService
from search.web.files import UploadBudget, VisitorFiles
from search.web.http_api import json_api
from search.web.layout import build_app
from search.web.pictures import router
from search.web.styles import CSS

log = logging.getLogger(__name__)
MAX_FILE_SIZE = 20 * MB  # Gradio refuses a larger upload before the app sees it


def main(examples: Path | None = None) -> None:
    """Serve the page, then load the model and the store (GRADIO_SERVER_NAME/PORT choose the address).

    The page comes first: importing and loading the model takes longer than the page does, and a visitor
    who comes meanwhile sees that it loads; queries made then wait for it (``SearchService.load``).
    ``examples``: a folder of example photos and descriptions shipped with the app (``Shipped.read``).
    """
    configure_logging()
    service = SearchService(load_settings())
    files = VisitorFiles(service.settings.upload_budget_bytes)
    demo = build_app(service, files, Shipped.read(examples) if examples else None)
    demo.queue(max_size=service.settings.queue_size, default_concurrency_limit=service.settings.concurrency)
    # The shipped example photos only: stored thumbnails are served at the app's own routes (search.web.pictures,
    # http_api), so that no path into the store (an album's thumbnails, its database) is ever served by Gradio.
    allowed = [str(examples.resolve())] if examples else []
    # show_error: Gradio's own refusals (a file reference to a path that was not uploaded, too few inputs) keep
    # their words, or callers get an error with no message at all; the app's own refusals carry no internals.
    demo.launch(css=CSS, max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=True, prevent_thread_lock=True,
                app_kwargs={"middleware": [Middleware(UploadBudget, files=files)],
                            # /api/search, /api/status, thumbnails; the page's pictures
                            "routes": [*json_api(service).routes, *router(service.settings.store).routes]})
    service.load(build_default=True)
    if service.build_state() is not None:
        log.info("serving at once; the default index is built in the background")
    elif (opened := service.main_index()) is not None:
        log.info("opened the index: %d images in collection %r", len(opened), opened.collection.name)
    demo.block_thread()
