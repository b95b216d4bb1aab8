"""The JSON API (POST /api/search) of the real app in a subprocess, called as an integration would."""
from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from search.config import Settings
from search.errors import ServiceUnavailable
from search.service import service as service_module
from search.service.first_run import BuildState
from search.service.service import Answer, SearchService
from search.web import http_api
from tests.fixtures.shapes import caption


@pytest.fixture(scope="module")
def http(app):
    with httpx.Client(base_url=app.url, timeout=30) as client:
        yield client


def test_a_text_search_answers_hits_with_thumbnails_to_fetch(http, app_store):
    answer = http.post("/api/search", json={"text": caption("red circle"), "k": 5})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert len(hits) == 5 and set(hits[0]) == {"id", "score", "label", "caption", "relevant", "similar", "taken",
                                               "matched", "thumbnail"}
    assert answer.json()["total"] == 54 and answer.json()["offset"] == 0 and answer.json()["no_match"] is False
    assert all(h["matched"] == {"label": ["red", "circle"]} and h["relevant"] for h in hits[:4])  # words and vectors
    assert sum(h["label"] == "red circle" for h in hits) >= 4
    assert str(app_store.parent) not in answer.text and "/tmp" not in answer.text  # no server paths
    for hit in hits:
        thumbnail = http.get(hit["thumbnail"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert "immutable" in thumbnail.headers["cache-control"]
        assert Image.open(io.BytesIO(thumbnail.content)).size


def test_all_fields_are_passed_on(http):
    body = {"text": caption("blue triangle"), "k": 3, "metric": "l2", "index": "", "key": None}
    assert len(http.post("/api/search", json=body).json()["hits"]) == 3


def test_a_composed_query_is_the_same_query_as_the_gradio_endpoint(http):
    query = {"positive": [{"text": caption("red circle")}], "negative": [{"text": caption("red square"), "weight": 0.5}],
             "k": 6, "offset": 6, "labels": {"exclude": ["green circle"]}, "cutoff": None}
    answer = http.post("/api/search", json={"query": query}).json()
    assert len(answer["hits"]) == 6 and answer["offset"] == 6 and answer["cutoff"] is None
    assert all(h["label"] != "green circle" and h["relevant"] is None for h in answer["hits"])
    first = http.post("/api/search", json={"query": {**query, "offset": 0}}).json()["hits"]
    assert not {h["id"] for h in first} & {h["id"] for h in answer["hits"]}  # the next page, not the same one


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"k": 3}, 422, "either 'query'"),
    ({"query": {"positive": [{"text": "a"}]}, "k": 3}, 422, "inside the query"),
    ({"query": []}, 422, "'query' must be an object"),
    ({"query": {"positive": [{"image": 0}]}}, 422, "image 0 was not given"),
    ({"query": {"positive": [{"id": "../x"}]}}, 422, "positive[0]"),
    ([1, 2], 422, "must be a JSON object"),
    ({"text": "a", "k": "3"}, 422, "'k' must be a whole number"),
    ({"text": "a", "k": True}, 422, "'k' must be a whole number"),
    ({"text": "a", "k": 3.0}, 422, "'k' must be a whole number"),
    ({"text": 7}, 422, "'text' must be a string"),
    ({"text": "a", "key": 5}, 422, "'key' must be a string or null"),
    ({"text": "a", "path": "/etc"}, 422, "Unknown field 'path'"),
    ({"text": "a", "k": 0}, 422, "from 1 to 50"),
    ({"text": "a", "k": 10**30}, 422, "from 1 to 50"),
    ({"text": "a", "metric": "hamming"}, 422, "is not one of cosine"),
    ({"text": "a", "index": "../../etc"}, 422, "Unknown index"),
    ({"text": "   "}, 422, "non-empty string"),
    ({"text": "a", "index": "mine/photos", "key": "k" * 20}, 422, "no collection named"),
])
def test_bad_queries_get_a_clear_message(http, body, status, says):
    answer = http.post("/api/search", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert "Traceback" not in answer.text and "/tmp" not in answer.text


def test_bodies_that_are_not_small_json_are_refused(http):
    raw = [(b"{not json", "application/json", 400), (json.dumps({"text": "a"}).encode(), "text/plain", 415),
           (b"\xff\xfe", "application/json", 400), (json.dumps({"text": "a" * 70_000}).encode(), "application/json", 413)]
    for content, kind, status in raw:
        answer = http.post("/api/search", content=content, headers={"content-type": kind})
        assert answer.status_code == status, (content[:20], answer.text)
        assert answer.json()["error"]
    chunked = http.post("/api/search", content=iter([b'{"text": "', b"a" * 70_000, b'"}']),
                        headers={"content-type": "application/json"})  # no Content-Length: counted as read
    assert chunked.status_code == 413


def test_thumbnails_are_served_by_valid_id_only(http):
    for name in ("0" * 31 + ".jpg", "../../etc/passwd", "%2e%2e%2fstore.jpg", "f" * 32 + ".png", "f" * 32 + ".jpg"):
        assert http.get(f"/api/thumbnails/{name}").status_code == 404, name


class Blocking:
    """A stand-in service with one search slot whose searches wait for ``release``."""

    def __init__(self):
        self.settings = Settings(concurrency=1)
        self.started, self.release = threading.Event(), threading.Event()

    def store_answering(self):
        return True

    def search(self, query, images, key=None):
        self.started.set()
        self.release.wait(10)
        return Answer([], 0, 0, None, 0.0)


def test_searches_beyond_the_slots_wait_briefly_then_get_503(monkeypatch):
    monkeypatch.setattr(http_api, "QUEUE_WAIT_S", 0.2)
    service = Blocking()
    app = FastAPI(routes=http_api.json_api(service).routes)  # type: ignore[arg-type]
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/api/search", json={"text": "a"})
        assert service.started.wait(10)
        busy = client.post("/api/search", json={"text": "b"})
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        assert busy.headers["retry-after"] == str(http_api.BUSY_RETRY_S)
        service.release.set()
        assert first.result(10).status_code == 200
        assert client.post("/api/search", json={"text": "c"}).status_code == 200  # the slot came back


class _Building:
    """The default build, seen by the service, where it stands."""

    def __init__(self, state: BuildState):
        self._state = state

    def state(self) -> BuildState:
        return self._state


def _api(service) -> TestClient:
    return TestClient(FastAPI(routes=http_api.json_api(service).routes))


def test_a_server_still_loading_answers_503_with_retry_after_not_a_client_error(tmp_path, monkeypatch):
    monkeypatch.setattr(service_module, "LOAD_WAIT_S", 0.1)
    loading = SearchService(Settings(store=tmp_path / "store", default_dataset=None))  # never loaded
    with _api(loading) as client:
        answer = client.post("/api/search", json={"text": "a red dress"})
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(service_module.LOADING_RETRY_S)
    assert "still loading its model" in answer.json()["error"]


def test_while_the_default_index_is_built_searches_get_503_with_retry_after(tmp_path):
    service = SearchService.open(Settings(store=tmp_path / "store", default_dataset=None))
    service._build = _Building(BuildState("images", 0, 2000, seconds=3.0))  # type: ignore[assignment]
    with _api(service) as client:
        answer = client.post("/api/search", json={"text": "a red dress"})
        assert answer.status_code == 503 and "Building the index" in answer.json()["error"]
        assert answer.headers["retry-after"] == str(service_module.FIRST_IMAGES_RETRY_S)
        assert client.post("/api/search", json={"text": "a", "k": 0}).status_code == 422  # the caller's: still 4xx
        service._build = _Building(BuildState("failed", problem="no such dataset"))  # type: ignore[assignment]
        failed = client.post("/api/search", json={"text": "a red dress"})
    assert failed.status_code == 503 and "could not be built" in failed.json()["error"]
    assert "retry-after" not in failed.headers  # only the operator can change that: waiting does not help


class _Refusing:
    """A stand-in service whose searches meet ``error``."""

    def __init__(self, error: Exception):
        self.settings = Settings()
        self.error = error

    def store_answering(self):
        return True

    def search(self, query, images, key=None):
        raise self.error


@pytest.mark.parametrize(("error", "retry"), [
    (ServiceUnavailable("The store is not answering.", retry_after=10), "10"),
    (ServiceUnavailable("The public demo is full.", retry_after=3600), "3600"),
    (ServiceUnavailable("No index to search yet."), None),
])
def test_every_temporary_state_is_503_with_its_own_retry_after(error, retry):
    with _api(_Refusing(error)) as client:
        answer = client.post("/api/search", json={"text": "a"})
    assert answer.status_code == 503 and answer.json() == {"error": str(error)}
    assert answer.headers.get("retry-after") == retry
