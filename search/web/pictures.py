"""Stored thumbnails as the page shows them: signed URLs of the app's own route, never files in Gradio's cache.

Gradio passes an http(s) URL in a gallery item as it is, and the browser fetches it; any other path it copies
into its cache folder, which serves whatever it holds to whoever has the name (gradio/processing_utils.py,
``move_files_to_cache``). So every thumbnail the page shows is an absolute URL of ``GET /api/pictures/MAC/ID.jpg``:

- MAC is a keyed hash of the image id with this process's secret: no URL can be made from an id, so an album's
  images reach only the visitor whose page was given them;
- the route reads the store's thumbnail pack, and answers 404 once no collection holds the image any longer;
- nothing of the store is ever copied into Gradio's cache, so nothing there has to be found and deleted.

The URLs are absolute under the root Gradio itself puts before its own file URLs for the same request (a proxy's
X-Forwarded-Host and -Proto, the app's root_path), set for the length of each page event (``answering``).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import gradio as gr
from fastapi import APIRouter
from fastapi.responses import Response

from search.core.ids import is_image_id
from search.errors import SearchError
from search.stores import thumbnails

log = logging.getLogger(__name__)
ROUTE = "/api/pictures"
PRIVATE = "private, no-store"  # an album's image: nobody's cache keeps it once it is deleted
_MAC = re.compile(r"[0-9a-f]{32}")
_SECRET = secrets.token_bytes(32)  # URLs given out before a restart lead nowhere after it, as pages do
_ROOT: ContextVar[str] = ContextVar("pictures_root", default="")  # the root of the request being answered


def url(picture: str) -> str:
    """What a gallery or image box shows for ``picture``: a stored thumbnail (the logical path a hit carries) as
    its signed URL; any other file (an example photo the app ships, which Gradio may serve) as it is."""
    image_id = thumbnails.id_of(picture)
    return f"{_ROOT.get()}{ROUTE}/{_mac(image_id)}/{image_id}.jpg" if image_id else picture


def read(store: Path, mac: str, name: str) -> bytes | None:
    """The thumbnail a signed URL's ``mac`` and ``name`` (``ID.jpg``) name, while the store holds it; None for
    anything else, alike."""
    image_id = name.removesuffix(".jpg")
    if not (name.endswith(".jpg") and is_image_id(image_id) and _MAC.fullmatch(mac)
            and hmac.compare_digest(mac, _mac(image_id))):
        return None
    try:
        return thumbnails.read(store, image_id)
    except (SearchError, OSError) as exc:  # the store's index unreadable now: as missing, never a 500
        log.info("picture not served: %s: %s", type(exc).__name__, exc)
        return None


def router(store: Path) -> APIRouter:
    """The route that serves the page's thumbnails from ``store``."""
    routes = APIRouter()

    @routes.get(ROUTE + "/{mac}/{name}")
    def picture(mac: str, name: str) -> Response:
        data = read(store, mac, name)
        if data is None:
            return Response(b"No such picture.", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": PRIVATE})

    return routes


def root_url(request: gr.Request) -> str:
    """The app's public root URL for ``request``, without a trailing slash, worked out as Gradio works out the root
    of the file URLs it gives in its answer to the same request.

    Gradio 6.31 has no public call for it; ``route_utils.get_root_url`` is what its queue uses (queueing.py, where
    it computes ``root_path`` for ``call_process_api``), and tests/unit/test_pictures.py pins it.
    """
    from gradio import route_utils

    raw = request.request
    if raw is None:  # only a request Gradio pickled loses it (gradio-lite, other processes): none of this app's
        raise RuntimeError("Gradio passed a request without its HTTP request; no root URL to make pictures' URLs under")
    return route_utils.get_root_url(raw, route_utils.get_api_call_path(raw), raw.app.root_path)


@contextlib.contextmanager
def answering(request: gr.Request) -> Iterator[None]:
    """Within the block, ``url`` makes URLs under ``request``'s root (outside one, relative URLs: for tests)."""
    token = _ROOT.set(root_url(request))
    try:
        yield
    finally:
        _ROOT.reset(token)


def _mac(image_id: str) -> str:
    return hashlib.blake2b(image_id.encode(), key=_SECRET, digest_size=16).hexdigest()
