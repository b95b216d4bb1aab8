"""The app's attack surface: its file route, its queue, its endpoints."""
from __future__ import annotations

import concurrent.futures
import urllib.error
import urllib.request

import pytest
from gradio_client import handle_file

from search.stores import thumbnails
from tests.conftest import ROOT, RunningApp


@pytest.fixture(scope="module", autouse=True)
def secret(app_store) -> None:
    """A file beside the store the session's app serves, that must never be served."""
    (app_store.parent / "secret.txt").write_text("do not serve")


def _status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_file_route_serves_examples_and_never_the_store(app, app_store):
    assert _status(f"{app.url}gradio_api/file={ROOT / 'examples' / 'cat.jpg'}")[0] == 200
    served = app.client(download_files=False).predict("a red circle", 1, api_name="/search_by_text")[0]["image"]
    assert served.startswith(f"{app.url}api/thumbnails/") and _status(served)[0] == 200  # the app's route, not Gradio's
    thumb = thumbnails.path(app_store, next(iter(thumbnails.ids(app_store))))  # a hit's, no file of its own
    store, secret = app_store, app_store.parent / "secret.txt"
    refused = [
        str(thumb), str(thumb).replace("/thumbnails/", "/THUMBNAILS/"), str(store / "thumbnails" / "index.sqlite"),
        *map(str, (store / "thumbnails").glob("pack-*.bin")),
        "/etc/passwd", "/ETC/PASSWD", str(store / "chroma.sqlite3"), str(store / "manifests" / "images.json"),
        str(ROOT / "app.py"), str(secret), f"{store}/thumbnails/../chroma.sqlite3",
        f"{store}/thumbnails/%2e%2e/chroma.sqlite3", f"{store}/THUMBNAILS/../chroma.sqlite3",
        "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", str(ROOT / "examples" / ".." / "app.py"),
        str(ROOT / "README.md"), f"{ROOT}/tests/fixtures/tiny-clip-shapes/model.safetensors",
    ]
    for path in refused:
        status, content = _status(f"{app.url}gradio_api/file={path}")
        assert status in (403, 404) and b"do not serve" not in content, path


def test_a_full_queue_answers_busy_at_once(shapes_store):
    with RunningApp(shapes_store, IMAGE_SEARCH_QUEUE_SIZE="1", IMAGE_SEARCH_CONCURRENCY="1") as app:
        client = app.client()
        query = handle_file(str(ROOT / "examples" / "astronaut.jpg"))

        def ask(_):
            try:
                client.predict(query, 50, "l1", api_name="/search_by_image")
                return "ok"
            except Exception as exc:  # the client raises QueueError for a full queue
                return str(exc)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(16)))
        assert "ok" in answers
        busy = [a for a in answers if a != "ok"]
        assert busy and all("Queue is full" in a for a in busy)
        assert len(client.predict("a red circle", 3, api_name="/search_by_text")) == 3  # and it recovers
