"""The public API's eight named Gradio endpoints, returning JSON; each method's name is its endpoint's name.

``index`` may name one of the caller's albums ("mine/NAME"), with the caller's ``key`` (16+ characters) on
a public deployment. The API calls albums "collections".
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from search.core.query import Part, Query
from search.errors import QueryError
from search.service.service import Answer, SearchService
from search.web.albums_page import forget
from search.web.files import VisitorFiles
from search.web.http_api import hits_with_urls, thumbnail_url
from search.web.messages import user_errors
from search.web.pictures import root_url

ENDPOINTS = ("search_by_image", "search_by_text", "search", "collection_add", "collection_list", "collection_delete",
             "collection_drop", "collection_swap")


class Api:
    """What the public endpoints do."""

    def __init__(self, service: SearchService, files: VisitorFiles):
        self.service = service
        self.files = files

    @user_errors
    def search_by_image(self, image: str | None, k: float, metric: str, index: str, key: str,
                        request: gr.Request) -> list[dict[str, Any]]:
        """The k stored images most like ``image``, best first."""
        if not image:
            raise QueryError("Upload, paste or photograph an image first (or give an image URL).")
        with self.files.consumed([image]):
            return _with_urls(self._one(Part(kind="image", value=image), k, metric, index, key), request)

    @user_errors
    def search_by_text(self, text: str, k: float, metric: str, index: str, key: str,
                       request: gr.Request) -> list[dict[str, Any]]:
        """The k stored images that best match ``text``, best first."""
        return _with_urls(self._one(Part(kind="text", value=text), k, metric, index, key), request)

    @user_errors
    def search(self, query: object, request: gr.Request, images: list[str] | None = None,
               key: str = "") -> dict[str, Any]:
        """A composed query (see search/core/query.py): parts to look for and to avoid, filters, a page, a cut-off.

        Answers ``{"hits": [{id, score, label, caption, relevant, similar, taken, matched, thumbnail, image}...],
        "total", "offset", "cutoff", "no_match"}``, where ``thumbnail`` is the thumbnail's URL (as POST /api/search gives it) and
        ``image`` the same relative to the app: a caller fetches only what it shows (a client that downloads
        every file spends more on the files than on the search).
        """
        with self.files.consumed(images or []):
            answer = self.service.search(query, list(images or []), key or None)
        hits = hits_with_urls(answer, root_url(request))
        return {"hits": hits, "total": answer.total, "offset": answer.offset, "cutoff": answer.cutoff,
                "no_match": answer.no_match}

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

    @user_errors
    def collection_swap(self, collection: str, key: str) -> dict[str, Any]:
        """Embed a collection made before the app changed its model again with the app's model, and search it
        with that from then on: ``{"images", "reembedded", "from_thumbnail", "model", "seconds"}``."""
        return self.service.swap_album(key, collection).for_visitor()

    def _one(self, part: Part, k: float, metric: str, index: str, key: str) -> Answer:
        """A query of one part, with no cut-off (these endpoints predate it). ``k`` arrives as a JSON number
        (12.0 is twelve; NaN or 2.5 is refused as the query's rule says)."""
        whole = int(k) if isinstance(k, float) and k.is_integer() else k
        return self.service.search(Query(positive=(part,), k=whole, metric=metric, index=index or "",  # type: ignore[arg-type]
                                         cutoff=None), key=key or None)


def _with_urls(answer: Answer, request: gr.Request) -> list[dict[str, Any]]:
    """Hits for the two simple endpoints: ``image`` is the thumbnail's URL (``/search``'s ``thumbnail``), which the
    caller fetches if it wants the picture; never a file or a path of the server."""
    root = root_url(request)
    return [{**r, "image": root + thumbnail_url(r["id"], answer.album) if r["image"] else None}
            for r in answer.records(relevance=False)]
