"""The real app in a subprocess, driven through gradio_client as API users drive it."""
from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import RunningApp, hostile_files, png_header_only
from tests.fixtures.shapes import CLASSES, caption

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_IMAGES = sorted((ROOT / "examples").glob("*.jpg"))
EXAMPLE_PROMPTS = [p for p in (ROOT / "examples" / "prompts.txt").read_text(encoding="utf-8").splitlines()
                   if p and not p.startswith("#")]


@pytest.fixture(scope="module")
def client(app):
    return app.client()


def test_only_the_intended_endpoints_are_public(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/search", "/search_by_image", "/search_by_text", "/collection_add",
                              "/collection_list", "/collection_delete", "/collection_drop", "/collection_swap"}
    with pytest.raises(Exception):  # the UI's own events are private: not callable by number either
        client.predict("a red circle", fn_index=3)


def test_text_search_returns_hits_best_first_with_their_thumbnails_urls(client):
    for cls in ("red circle", "blue triangle"):
        hits = client.predict(caption(cls), 5, api_name="/search_by_text")
        assert len(hits) == 5
        assert set(hits[0]) == {"id", "score", "label", "caption", "image", "similar", "taken", "matched"}
        # Best first by the vectors and the words fused: the first hold the query's words in their label
        assert all(h["matched"] == {"label": cls.split()} for h in hits[:4]), [h["matched"] for h in hits]
        assert sum(h["label"] == cls for h in hits) >= 4
        # the thumbnail's URL, which the caller fetches if it wants the picture
        assert all(Image.open(io.BytesIO(httpx.get(h["image"], timeout=30).content)).size for h in hits)


def test_a_composed_query_through_the_client(client, app, shapes_store):
    alone = client.predict({"positive": [{"text": caption("red circle")}], "k": 5}, [], "", api_name="/search")
    plain = client.predict(caption("red circle"), 5, api_name="/search_by_text")
    assert [(h["id"], h["score"]) for h in alone["hits"]] == [(h["id"], h["score"]) for h in plain]
    assert alone["total"] == 54 and alone["offset"] == 0 and isinstance(alone["cutoff"], float)
    thumbnail = httpx.get(app.url.rstrip("/") + alone["hits"][0]["image"])  # a URL the caller fetches if it wants
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size
    shape = next((shapes_store.parent / "shapes" / "blue square").glob("*.jpg"))
    mixed = client.predict({"positive": [{"image": 0}], "negative": [{"text": caption("blue circle"), "weight": 0.5}],
                            "k": 4, "labels": {"exclude": ["blue triangle"]}}, [handle_file(str(shape))], "",
                           api_name="/search")
    assert mixed["hits"][0]["label"] == "blue square" and mixed["hits"][0]["relevant"] is True
    assert all(h["label"] != "blue triangle" for h in mixed["hits"]) and len(mixed["hits"]) == 4
    with pytest.raises(AppError, match=r"positive\[0\]: image 0 was not given"):
        client.predict({"positive": [{"image": 0}]}, [], "", api_name="/search")


def test_every_example_image_finds_itself_first(client):
    for example in EXAMPLE_IMAGES:
        hits = client.predict(handle_file(str(example)), 3, api_name="/search_by_image")
        assert len(hits) == 3
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3), example.name


def test_every_example_prompt_answers(client):
    for prompt in EXAMPLE_PROMPTS:
        assert len(client.predict(prompt, 4, api_name="/search_by_text")) == 4


def test_metric_and_index_choices_reach_the_api(client, shapes_store):
    query = handle_file(str(EXAMPLE_IMAGES[0]))
    for metric in ("cosine", "l2", "l1", "correlation", "ip"):
        hits = client.predict(query, 4, metric, "", api_name="/search_by_image")
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    shape = handle_file(str(next((shapes_store.parent / "shapes").glob("*/*.jpg"))))
    pixel_hits = client.predict(shape, 2, "l1", "pixels", api_name="/search_by_image")
    assert pixel_hits[0]["score"] == pytest.approx(0.0, abs=1e-3)  # minus L1 distance to itself


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return handle_file(str(path))


def test_bad_inputs_get_clear_errors_and_the_app_keeps_serving(client, tmp_path):
    huge = io.BytesIO()
    Image.fromarray(np.zeros((9000, 9000), np.uint8)).save(huge, "PNG")  # 81 MP, small on disk
    bad_images = {
        "corrupt.jpg": (hostile_files()["truncated.jpg"], "^The file is damaged or is not an image: "),
        "notes.jpg": (b"plain text, not an image", "not an image"),
        "bomb.png": (png_header_only(60_000, 60_000), "^The image is too large: "),
        "huge.png": (huge.getvalue(), "^The image is too large: "),
        "empty.jpg": (b"", "^The file is empty"),
    }
    for name, (data, message) in bad_images.items():
        with pytest.raises(AppError, match=message):
            client.predict(_file(tmp_path, name, data), 5, api_name="/search_by_image")
    with pytest.raises(AppError, match="Upload, paste or photograph"):
        client.predict(None, 5, api_name="/search_by_image")
    for text, message in (("", "Type a description"), ("   ", "Type a description"), ("x" * 10_000, "limit is 1000")):
        with pytest.raises(AppError, match=message):
            client.predict(text, 5, api_name="/search_by_text")
    with pytest.raises(AppError, match="pixel method cannot read text"):
        client.predict("a red circle", 5, "cosine", "pixels", api_name="/search_by_text")
    for k in (0, 51):
        with pytest.raises(AppError, match="from 1 to 50"):
            client.predict("a red circle", k, api_name="/search_by_text")
    with pytest.raises(Exception):  # over max_file_size: Gradio refuses the upload itself
        client.predict(_file(tmp_path, "big.jpg", os.urandom(21 * 1024 * 1024)), 5, api_name="/search_by_image")
    # Still serving, and still right.
    hits = client.predict("a green square", 5, api_name="/search_by_text")
    assert sum(h["label"] == "green square" for h in hits) >= 4


def test_missing_store_serves_a_page_that_says_what_to_run(tmp_path):
    import urllib.request

    with RunningApp(tmp_path / "no-store") as app:
        assert urllib.request.urlopen(app.url, timeout=10).status == 200  # the page, whose overview then says it
        status = app.status()
        assert status["state"] == "unavailable" and "index_builder.py" in status["problem"]
        assert str(tmp_path) not in status["problem"]  # the operator's log has the path, callers do not
        with pytest.raises(AppError, match="index_builder.py"):
            app.client().predict("a red circle", 5, api_name="/search_by_text")
    assert not (tmp_path / "no-store").exists()


def test_labels_are_the_generated_classes(client):
    hits = client.predict("a yellow square", 50, api_name="/search_by_text")
    assert {h["label"] for h in hits if h["label"]} <= set(CLASSES)
