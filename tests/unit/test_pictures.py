"""The page's thumbnails: signed URLs of the app's own route, never files; served while the store holds them."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from search.stores import thumbnails
from search.web import pictures
from tests.fixtures.gradio_requests import gradio_request

ONE, OTHER = "a" * 32, "b" * 32


def test_a_stored_thumbnail_is_a_signed_url_and_any_other_file_stays_as_it_is(tmp_path):
    logical = str(thumbnails.path(tmp_path, ONE))  # what a hit carries
    signed = pictures.url(logical)
    mac = signed.split("/")[-2]
    assert signed == f"{pictures.ROUTE}/{mac}/{ONE}.jpg" and len(mac) == 32 and ONE not in mac
    assert pictures.url(str(thumbnails.path(tmp_path, OTHER))).split("/")[-2] != mac  # one signature per image
    assert pictures.url("/srv/examples/cat.jpg") == "/srv/examples/cat.jpg"  # a shipped photo: Gradio serves it


def test_urls_are_absolute_under_the_root_gradio_gives_its_own_files():
    local = gradio_request("http://127.0.0.1:7860/gradio_api/queue/join")
    proxied = gradio_request("http://10.0.0.5:7860/gradio_api/queue/join",
                             {"x-forwarded-host": "search.example.org", "x-forwarded-proto": "https"})
    mounted = gradio_request("http://127.0.0.1:7860/gradio_api/call/search_by_text", root_path="/images")
    assert pictures.root_url(local) == "http://127.0.0.1:7860"
    assert pictures.root_url(proxied) == "https://search.example.org"  # what the visitor's browser can reach
    assert pictures.root_url(mounted) == "http://127.0.0.1:7860/images"
    with pictures.answering(proxied):
        assert pictures.url(str(thumbnails.path("/s", ONE))).startswith("https://search.example.org/api/pictures/")
    assert pictures.url(str(thumbnails.path("/s", ONE))).startswith("/api/pictures/")  # outside an event: relative


def test_the_route_serves_a_signed_thumbnail_while_the_store_holds_it_and_nothing_else(tmp_path):
    thumbnails.write(tmp_path, ONE, b"\xff\xd8one")
    thumbnails.write(tmp_path, OTHER, b"\xff\xd8other")
    app = FastAPI(routes=pictures.router(tmp_path).routes)
    http = TestClient(app)
    url = pictures.url(str(thumbnails.path(tmp_path, ONE)))
    got = http.get(url)
    assert got.status_code == 200 and got.content == b"\xff\xd8one" and got.headers["cache-control"] == "private, no-store"
    mac = url.split("/")[-2]
    forged = [f"{pictures.ROUTE}/{mac}/{OTHER}.jpg",  # another image under this one's signature
              f"{pictures.ROUTE}/{'0' * 32}/{ONE}.jpg", f"{pictures.ROUTE}/{mac.upper()}/{ONE}.jpg",
              f"{pictures.ROUTE}/{mac}/{ONE}.png", f"{pictures.ROUTE}/{mac}/{ONE}", f"{pictures.ROUTE}/é{mac[1:]}/{ONE}.jpg",
              f"{pictures.ROUTE}/{mac}/..%2f{ONE}.jpg", f"/api/thumbnails/{ONE}.jpg"]
    for path in forged:
        assert http.get(path).status_code == 404, path
    thumbnails.delete(tmp_path, ONE)
    assert http.get(url).status_code == 404  # deleted: the URL leads nowhere from then on
