"""URL fetching: refusals proven without any network, then a real server on 127.0.0.1."""
from __future__ import annotations

import io
import socket

import pytest
from PIL import Image

from search.errors import InvalidImageError
from search.sources.fetch import check_url, fetch
from tests.fixtures.site import body, endless, lying_length, redirect, serve

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


@pytest.fixture(scope="module")
def server():
    routes = {
        "/good.jpg": body(_jpeg(), "text/plain"),  # a wrong Content-Type does not matter: bytes are decoded
        "/text.jpg": body(b"<html>not an image</html>", "image/jpeg"),
        "/big": body(b"\0" * 5000, length=False),
        "/declared-big": lying_length,
        "/endless": endless,
        "/to-good": redirect("/good.jpg"),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-file": redirect("file:///etc/passwd"),
        "/loop": redirect("/loop"),
    }
    with serve(routes) as base:
        yield base


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


def test_a_failed_download_is_said_in_words_and_the_system_s_go_to_internals():
    with socket.socket() as closed:  # a port nothing listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(InvalidImageError) as err:
        fetch(f"http://127.0.0.1:{port}/x.jpg", allow_private=True)
    assert err.value.reason == "download_error" and err.value.detail == "the site refused the connection"
    assert "ConnectionRefusedError" in (err.value.internals or "")


def test_bytes_and_time_are_capped(server):
    with pytest.raises(InvalidImageError) as err:
        fetch(f"{server}/big", allow_private=True, max_bytes=1000)
    assert err.value.reason == "too_large"
    with pytest.raises(InvalidImageError) as err:  # a body that never ends: only the cap on time can end this
        fetch(f"{server}/endless", allow_private=True, timeout=0.5)
    # the read deadline ("timed out reading") or, on a loaded machine, the socket's (the site "took too long")
    assert err.value.reason == "download_error" and err.value.detail.startswith(("timed out", "the site took too long"))


def test_content_is_judged_by_decoding_not_by_content_type(server, local_store):
    from search.service.service import SearchService, Settings

    service = SearchService.open(Settings(store=local_store, allow_private_urls=True))
    index = service.main_index()
    assert index.search_by_image(service.fetch_url(f"{server}/good.jpg"), 3, "cosine")
    with pytest.raises(InvalidImageError) as err:
        index.search_by_image(service.fetch_url(f"{server}/text.jpg"), 3, "cosine")
    assert err.value.reason == "unsupported"
    with pytest.raises(InvalidImageError, match="loopback"):
        SearchService.open(Settings(store=local_store)).fetch_url(f"{server}/good.jpg")
