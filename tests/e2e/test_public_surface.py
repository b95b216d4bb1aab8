"""The public app attacked as issue 20 found it: each failure reproduced through the real app in a subprocess.

Private thumbnails without the album's URL, one visitor's upload deleting another's, the upload allowance
charged twice, 500s on malformed bodies, a 16 MP WebP refused as a query, and store paths on Gradio's
file route. A hung Chroma server, kill -9 mid-upload and a disk that fills have files of their own
(test_store_faults.py).
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.fixtures.hostile import jpeg

KEY, OTHER = "visitor-one-0123456789", "visitor-two-0123456789"
ALBUM_URL = re.compile(r"^/api/albums/([0-9a-f]{32})/([0-9a-f]{32})\.jpg$")


@pytest.fixture(scope="module")
def public(public_app):
    """The session's public app (tests/e2e/conftest.py)."""
    return public_app


@pytest.fixture(scope="module")
def client(public):
    return public.client()


@pytest.fixture(scope="module")
def http(public):
    with httpx.Client(base_url=public.url, timeout=60) as h:
        yield h


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_an_albums_thumbnails_are_served_only_at_its_own_url_and_go_with_it(client, http, public, tmp_path):
    photos = {f"p{i}.jpg": jpeg(1000 + i) for i in range(3)}
    report = client.predict([handle_file(str(_zip(tmp_path / "trip.zip", photos)))], "trip", KEY,
                            api_name="/collection_add")
    assert report["indexed"] == 3
    query = {"positive": [{"text": "a photo"}], "k": 3, "index": "mine/trip"}
    hits = client.predict(query, [], KEY, api_name="/search")["hits"]
    assert len(hits) == 3
    for hit in hits:
        token, image_id = ALBUM_URL.fullmatch(hit["image"]).groups()
        assert image_id == hit["id"] and hit["thumbnail"] == public.url.rstrip("/") + hit["image"]
        got = http.get(hit["image"])
        assert got.status_code == 200 and got.headers["cache-control"] == "private, no-store"
        assert Image.open(io.BytesIO(got.content)).size
    missing = http.get(f"/api/thumbnails/{'0' * 32}.jpg")
    for hit in hits:  # by content id (which anyone holding the file knows), or under another album: as missing
        for url in (f"/api/thumbnails/{hit['id']}.jpg", f"/api/albums/{'f' * 32}/{hit['id']}.jpg"):
            other = http.get(url)
            assert (other.status_code, other.content) == (missing.status_code, missing.content) == (404, missing.content)
    packed = sorted((Path(public.env["IMAGE_SEARCH_STORE"]) / "thumbnails").iterdir())  # the packs and their index
    assert packed and all(http.get(f"/gradio_api/file={f}").status_code in (403, 404) for f in packed)
    with pytest.raises(AppError, match="no collection named"):  # another visitor's key does not open it
        client.predict(query, [], OTHER, api_name="/search")
    simple = [h["image"] for h in public.client(download_files=False).predict(
        "a photo", 3, "cosine", "mine/trip", KEY, api_name="/search_by_text")]
    assert sorted(simple) == sorted(h["thumbnail"] for h in hits)  # the same URLs: no copy of them anywhere
    assert client.predict("trip", KEY, api_name="/collection_drop") == {"removed": 3}
    for hit in hits:
        assert http.get(hit["image"]).status_code == 404


def test_visitors_uploading_one_file_at_once_each_index_it(public, tmp_path):
    archive = _zip(tmp_path / "same.zip", {f"s{i}.jpg": jpeg(2000 + i) for i in range(5)})
    keys = [f"same-file-visitor-{i:02d}-xyz" for i in range(8)]

    def add(key: str) -> dict:
        return public.client().predict([handle_file(str(archive))], "same", key, api_name="/collection_add")

    with ThreadPoolExecutor(8) as pool:
        reports = list(pool.map(add, keys))
    assert [r["indexed"] for r in reports] == [5] * 8, [r["skipped"] for r in reports]
    again = add("same-file-visitor-late-xyz")  # after every earlier upload of it was read and deleted
    assert again["indexed"] == 5 and not again["skipped"]


def _png_12mp(seed: int) -> bytes:
    """A 4000x3000 PNG of about 13 MB (a photo saved as PNG): over the 4 MB a build keeps between reads."""
    base = (np.add.outer(np.arange(3000) // 12, np.arange(4000) // 16) % 256).astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 3, (3000, 4000, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.stack([base, base[::-1], base[:, ::-1]], -1) + noise).save(out, "PNG", compress_level=1)
    return out.getvalue()


def test_an_upload_past_its_pixel_allowance_indexes_what_fits(client, tmp_path):
    paths = []
    for i in range(11):  # 132 MP: the 128 MP allowance holds ten of them
        paths.append(tmp_path / f"photo-{i:02d}.png")
        paths[-1].write_bytes(_png_12mp(i))
    assert all(p.stat().st_size > 4 * 1024 * 1024 for p in paths)
    report = client.predict([handle_file(str(p)) for p in paths], "large", KEY, api_name="/collection_add")
    assert report["indexed"] == 10, report["skipped"]
    assert [s["reason"] for s in report["skipped"]] == ["too_large"]
    assert "add it in another upload" in report["skipped"][0]["detail"]
    client.predict("large", KEY, api_name="/collection_drop")


def test_a_16_megapixel_webp_wallpaper_is_a_query(client, tmp_path):
    wallpaper = tmp_path / "wallpaper.webp"
    Image.effect_noise((4096, 4096), 40).convert("RGB").save(wallpaper, "WEBP", quality=80)
    hits = client.predict(handle_file(str(wallpaper)), 3, api_name="/search_by_image")
    assert len(hits) == 3


@pytest.mark.parametrize(("body", "status", "says"), [
    (b'{"query": {}}', 422, "The query is empty"),
    (b'{"query": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400, "nests too deeply"),
    (b'{"query": {"positive": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}", 400, "nests too deeply"),
    (b'{"text": "\\ud800 red"}', 422, "not valid Unicode"),
    (b'{"query": {"positive": [{"text": "red", "weight": NaN}]}}', 400, "NaN and Infinity"),
    (b'{"query": {"positive": [{"text": "red", "weight": Infinity}]}}', 400, "NaN and Infinity"),
    (b'{"query": {"positive": [{"id": "' + b"0" * 32 + b'", "box": [0, 0, 40, 40]}]}}', 422, "only an image part takes a box"),
])
def test_malformed_bodies_get_a_4xx_that_names_the_problem(http, body, status, says):
    answer = http.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text[:300]
    assert says in answer.json()["error"] and "Traceback" not in answer.text


def test_text_that_is_not_unicode_is_refused_by_every_way_in(public):
    # gradio_client cannot even encode a lone surrogate; a raw JSON body escapes one ("\ud800") and gets through.
    for api_name, data in (("search_by_text", ["\ud800 red", 3, "cosine", "", ""]),
                           ("search", [{"positive": [{"text": "\ud800 red"}]}, [], ""])):
        posted = httpx.post(f"{public.url}gradio_api/call/{api_name}", timeout=60, headers={"content-type": "application/json"},
                            content=json.dumps({"data": data}).encode())  # ASCII: the surrogate stays an escape
        assert posted.status_code == 200, posted.text
        with httpx.stream("GET", f"{public.url}gradio_api/call/{api_name}/{posted.json()['event_id']}", timeout=60) as got:
            events = got.read().decode()
        assert "event: error" in events and "not valid Unicode" in events, events[:300]


def test_search_and_json_api_hits_carry_their_folded_near_duplicates(client, http):
    query = {"positive": [{"text": "a red circle"}], "k": 5, "fold": True}
    gradio, plain = client.predict(query, [], "", api_name="/search"), http.post("/api/search", json={"query": query})
    for hits in (gradio["hits"], plain.json()["hits"]):
        assert all(isinstance(h["similar"], list) for h in hits)
    assert [h["similar"] for h in gradio["hits"]] == [h["similar"] for h in plain.json()["hits"]]
    assert {h["thumbnail"] for h in gradio["hits"]} == {h["thumbnail"] for h in plain.json()["hits"]}
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/search"]["parameters"]
    assert [p["parameter_has_default"] for p in info if p["parameter_name"] == "images"] == [True]
    assert client.predict({"positive": [{"text": "a red circle"}], "k": 2}, api_name="/search")["hits"]
    json.dumps(gradio)  # plain JSON through and through
