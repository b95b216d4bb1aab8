"""A JSON API beside Gradio's, for integrations: ``POST /api/search`` and thumbnails by id.

    POST /api/search  {"query": {...the /search endpoint's query...}, "key": null}
                      or, for a start, {"text": "a red dress", "k": 12, "metric": "cosine", "index": "", "key": null}
    -> {"hits": [{"id", "score", "label", "caption", "relevant", "similar", "taken", "matched", "thumbnail": URL}],
        "total", "offset", "cutoff", "no_match", "seconds"}
    GET /api/status -> {"state": "loading" | "building" | "ready" | "unavailable", "images", "collection", "model",
                        "problem"}: whether searches are answered yet (a health check waits for "ready")
    GET /api/thumbnails/{id}.jpg -> a shared index's thumbnail (content-addressed, so cached for good)
    GET /api/albums/{token}/{id}.jpg -> an album's thumbnail; the token comes in that album's answers

Every input is checked here, at the boundary: a bounded JSON object of known fields of exact types
(400 malformed, 413 too large, 415 not JSON, 422 a field or the query is wrong). A state of the server
that the caller cannot change (the model still loading, the default index being built, the store not
answering, every search slot taken) is 503, with a Retry-After in seconds where waiting helps. Library
errors show their message and log their internals; nothing else of the server (paths, tracebacks) is shown.
Searches share ``settings.concurrency`` slots; a request that gets none within ``QUEUE_WAIT_S`` gets 503.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from search.core.ids import is_image_id
from search.core.query import Part, Query
from search.core.units import data_size
from search.errors import QueryError, SearchError, ServiceUnavailable
from search.service.service import Answer, Overview, SearchService
from search.stores.base import NOT_ANSWERING, NOT_ANSWERING_RETRY_S
from search.web.messages import BUG

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024  # a query holds at most 20 parts of at most 1,000 characters each
QUEUE_WAIT_S = 2.0  # how long a search may wait for a free slot before the server says it is busy
BUSY_RETRY_S = 5  # "try again in a few seconds": searches take well under a second each
FIELDS: dict[str, tuple[type, ...]] = {"query": (dict,), "text": (str,), "k": (int,), "metric": (str,),
                                       "index": (str,), "key": (str, type(None))}
SIMPLE = ("text", "k", "metric", "index")  # the short form's fields, which a composed "query" replaces
DEFAULTS: dict[str, Any] = {"k": 12, "metric": "cosine", "index": "", "key": None}
IMMUTABLE = "public, max-age=31536000, immutable"
PRIVATE = "private, no-store"  # an album's image: nobody's cache keeps it once the album is gone
TOKEN = re.compile(r"[0-9a-f]{32}")


class Refused(Exception):
    """A request answered with ``status`` and ``message`` instead of hits."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_api(service: SearchService) -> APIRouter:
    """The JSON API's routes over ``service`` (for ``FastAPI(routes=...)`` or ``include_router``)."""
    router = APIRouter()
    slots = asyncio.Semaphore(service.settings.concurrency)

    @router.post("/api/search")
    async def search(request: Request) -> JSONResponse:
        try:
            query = await _query(request)
            try:
                await asyncio.wait_for(slots.acquire(), QUEUE_WAIT_S)
            except TimeoutError:  # the slots are taken: by a crowd, or by searches a hung store holds
                if not service.store_answering():
                    raise ServiceUnavailable(NOT_ANSWERING[:1].upper() + NOT_ANSWERING[1:] + ".",
                                             retry_after=NOT_ANSWERING_RETRY_S) from None
                raise ServiceUnavailable("The server is busy; try again in a few seconds.",
                                         retry_after=BUSY_RETRY_S) from None
            try:
                answer = await run_in_threadpool(run_query, service, query)
            finally:
                slots.release()
        except Refused as exc:
            return _error(exc.status, str(exc))
        except QueryError as exc:  # the query itself (an unknown index, an empty text): the caller's to fix
            log.info("JSON API refused: %s", exc.for_operator())
            return _error(422, str(exc))
        except ServiceUnavailable as exc:  # loading, building, a store not answering, busy: asking again may do
            log.info("JSON API not answered now: %s", exc.for_operator())
            return _error(503, str(exc), retry_after=exc.retry_after)
        except SearchError as exc:  # the store or the model: nothing the caller can change
            log.warning("JSON API failed: %s", exc.for_operator())
            return _error(503, str(exc))
        except Exception:
            log.exception("unexpected error in the JSON API")
            return _error(500, BUG)
        return JSONResponse(_answer(answer, request))

    @router.get("/api/status")
    def status() -> JSONResponse:
        return JSONResponse(status_of(service.overview()), headers={"Cache-Control": PRIVATE})

    @router.get("/api/thumbnails/{name}", name="thumbnail")
    def thumbnail(name: str) -> Any:
        return _thumbnail(service, name, None)

    @router.get("/api/albums/{album}/{name}", name="album_thumbnail")
    def album_thumbnail(album: str, name: str) -> Any:
        return _thumbnail(service, name, album)

    return router


def _thumbnail(service: SearchService, name: str, album: str | None) -> Any:
    """The thumbnail ``name`` names, where the service may serve it; every other case answers alike (404)."""
    image_id = name.removesuffix(".jpg")
    data = None
    if name.endswith(".jpg") and is_image_id(image_id) and (album is None or TOKEN.fullmatch(album)):
        try:
            data = service.thumbnail(image_id, album)
        except SearchError as exc:
            log.info("thumbnail not served: %s", exc.for_operator())
    if data is None:
        return _error(404, "No such thumbnail.")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": PRIVATE if album else IMMUTABLE})


def status_of(o: Overview) -> dict[str, Any]:
    """Where the app stands, as /api/status answers it."""
    if o.loading:
        state = "loading"
    elif o.building and not o.building.finished:
        state = "building"
    else:
        state = "ready" if o.collection else "unavailable"
    problem = o.problem
    if o.building and o.building.problem:
        problem = f"the default index could not be built: {o.building.problem}. {o.building.hint}".strip()
    return {"state": state, "images": o.images, "collection": o.collection, "model": o.model, "problem": problem}


def run_query(service: SearchService, body: dict[str, Any]) -> Answer:
    """Answer a checked body: its composed query, or the short form's text as one; no image parts here
    (they name uploads, which the Gradio endpoint /search takes)."""
    query = body["query"] if "query" in body else Query(positive=(Part(kind="text", value=body["text"]),), k=body["k"],
                                                        metric=body["metric"], index=body["index"])
    return service.search(query, [], body["key"])


async def _query(request: Request) -> dict[str, Any]:
    """The request's body as a checked query: known fields of exact types, defaults filled in."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Refused(415, "Send a JSON object with Content-Type: application/json.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"The body is over {data_size(MAX_BODY_BYTES)}.")
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a missing or false length cannot slip past
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, f"The body is over {data_size(MAX_BODY_BYTES)}.")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise Refused(400, "The body nests too deeply to be a query.") from None
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "The body is not valid JSON (NaN and Infinity are not JSON numbers).") from None
    return checked(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def thumbnail_url(image_id: str, album: str | None = None) -> str:
    """Where the JSON API serves an image's thumbnail (``album``: the album's token), relative to the app."""
    return f"/api/albums/{album}/{image_id}.jpg" if album else f"/api/thumbnails/{image_id}.jpg"


def checked(data: object) -> dict[str, Any]:
    """``data`` as a query dict, or Refused(422) naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise Refused(422, "The body must be a JSON object.")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise Refused(422, f"Unknown field {unknown[0][:40]!r}; the fields are {', '.join(FIELDS)}.")
    if ("query" in data) == ("text" in data):
        raise Refused(422, "Give either 'query' (a composed query) or 'text'.")
    if "query" in data and set(data) & set(SIMPLE[1:]):
        raise Refused(422, "With 'query', put k, metric and index inside the query.")
    query = {**DEFAULTS, **data}
    for name, types in FIELDS.items():
        if name not in query:
            continue
        value = query[name]
        if type(value) not in types:  # exact: true is not a number, 1.0 is not a whole number
            wanted = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise Refused(422, f"The field {name!r} must be {wanted}.")
    return query


_JSON_NAMES = {str: "a string", int: "a whole number", dict: "an object"}


def _answer(answer: Answer, request: Request) -> dict[str, Any]:
    hits = [{k: v for k, v in hit.items() if k != "image"} for hit in hits_with_urls(answer, str(request.base_url))]
    return {"hits": hits, "total": answer.total, "offset": answer.offset, "cutoff": answer.cutoff,
            "no_match": answer.no_match, "seconds": round(answer.seconds, 4)}


def hits_with_urls(answer: Answer, base: str) -> list[dict[str, Any]]:
    """The answer's hits as both APIs give them: ``image`` is the thumbnail's URL relative to the app and
    ``thumbnail`` the same under ``base`` (both None for a hit without one); never a server path."""
    hits = []
    for r in answer.records():
        url = thumbnail_url(r["id"], answer.album) if r["image"] else None
        hits.append({**r, "image": url, "thumbnail": base.rstrip("/") + url if url else None})
    return hits


def _error(status: int, message: str, *, retry_after: int | None = None) -> JSONResponse:
    """The JSON error answer; ``retry_after``: seconds for the Retry-After header (HTTP's own, for clients
    that retry 503s), none where waiting would not help."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
