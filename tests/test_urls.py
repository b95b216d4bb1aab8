"""URL fetching: refusals proven without any network, then a real server on 127.0.0.1."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from search.errors import InvalidImageError
from search.urls import check_url, fetch

REFUSED_ALWAYS = [
    "ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)", "no-scheme.jpg",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://metadata.google.internal/",
    "http://[::ffff:169.254.169.254]/", "http:///nohost",
]
REFUSED_UNLESS_PRIVATE_ALLOWED = [
    "http://127.0.0.1/", "http://localhost/", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.0.0.1/",
    "http://127.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://10.0.0.1/", "http://192.168.1.1/",
    "http://172.16.0.1/", "http://0.0.0.0/", "http://169.254.1.1/", "http://[fe80::1]/", "http://100.64.0.1/",
]


@pytest.mark.parametrize("url", REFUSED_ALWAYS)
def test_unsafe_targets_are_refused_even_with_private_networks_allowed(url):
    for allow_private in (False, True):
        with pytest.raises(InvalidImageError) as err:
            check_url(url, allow_private=allow_private)
        assert err.value.reason == "refused_url"


@pytest.mark.parametrize("url", REFUSED_UNLESS_PRIVATE_ALLOWED)
def test_private_addresses_in_every_spelling_are_refused(url):
    with pytest.raises(InvalidImageError) as err:
        check_url(url)
    assert err.value.reason == "refused_url"
    check_url(url, allow_private=True)  # the flag is what lets tests reach a local server


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(out, "JPEG")
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 - the http.server API
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):
        pass


def _send(body: bytes, content_type: str = "image/jpeg", length: bool = True):
    def handler(h):
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handler


def _redirect(location: str):
    def handler(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return handler


def _slow(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.end_headers()
    try:
        for _ in range(40):  # a byte every 0.1 s: each read succeeds, the whole never ends in time
            h.wfile.write(b"\xff")
            h.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


def _lying_length(h):
    h.send_response(200)
    h.send_header("Content-Length", str(10**12))
    h.end_headers()


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    _Handler.routes = {
        "/good.jpg": _send(_jpeg(), "text/plain"),  # a wrong Content-Type does not matter: bytes are decoded
        "/text.jpg": _send(b"<html>not an image</html>", "image/jpeg"),
        "/big": _send(b"\0" * 5000, length=False),
        "/declared-big": _lying_length,
        "/slow": _slow,
        "/to-good": _redirect("/good.jpg"),
        "/to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-file": _redirect("file:///etc/passwd"),
        "/loop": _redirect("/loop"),
    }
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield base
    srv.shutdown()


def test_a_local_server_is_refused_without_the_flag(server):
    with pytest.raises(InvalidImageError, match="loopback"):
        fetch(f"{server}/good.jpg")


def test_good_image_and_redirect_are_fetched(server):
    assert fetch(f"{server}/good.jpg", allow_private=True) == _jpeg()
    assert fetch(f"{server}/to-good", allow_private=True) == _jpeg()


@pytest.mark.parametrize(
    "path,reason",
    [("/to-metadata", "refused_url"), ("/to-file", "refused_url"), ("/loop", "download_error"),
     ("/missing", "download_error"), ("/declared-big", "too_large")],
)
def test_bad_responses_fail_with_a_reason(server, path, reason):
    with pytest.raises(InvalidImageError) as err:
        fetch(server + path, allow_private=True)
    assert err.value.reason == reason


def test_bytes_and_time_are_capped(server):
    with pytest.raises(InvalidImageError) as err:
        fetch(f"{server}/big", allow_private=True, max_bytes=1000)
    assert err.value.reason == "too_large"
    start = time.monotonic()
    with pytest.raises(InvalidImageError) as err:
        fetch(f"{server}/slow", allow_private=True, timeout=1.0)
    assert err.value.reason == "download_error" and time.monotonic() - start < 3.0


def test_content_is_judged_by_decoding_not_by_content_type(server, shapes_store):
    from search.service import SearchService, Settings

    service = SearchService(Settings(store=shapes_store, allow_private_urls=True))
    assert service.search_url(f"{server}/good.jpg", 3, "cosine").hits
    with pytest.raises(InvalidImageError) as err:
        service.search_url(f"{server}/text.jpg", 3, "cosine")
    assert err.value.reason == "unsupported"
    with pytest.raises(InvalidImageError, match="loopback"):
        SearchService(Settings(store=shapes_store)).search_url(f"{server}/good.jpg", 3, "cosine")
