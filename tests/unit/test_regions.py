"""Region queries: taps from the browser are checked before they touch an image; a region is a box over the
original, searched by decoding only what it needs; the query panel's copy is fitted and maps taps back."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.errors import QueryError, ServiceUnavailable
from search.images.decode import read_image
from search.stores import thumbnails
from search.web import regions
from search.web.files import VisitorFiles


@pytest.fixture
def files(tmp_path) -> VisitorFiles:
    return VisitorFiles(64 * 1024 * 1024, folder=tmp_path / "cache")


@pytest.mark.parametrize("point", [None, "10,20", [10], [10, 20, 30], [-1, 5], [5, float("nan")], [True, 3],
                                   [float("inf"), 0], [0, -float("inf")], {"x": 1, "y": 2}, ["10", "20"]])
def test_a_tap_that_is_not_a_point_on_the_image_is_refused(point):
    with pytest.raises(QueryError, match="Tap on the query image"):
        regions.to_original(point, 1.0)


def test_taps_on_the_shown_copy_map_to_the_original_and_box_that_region(tmp_path, files):
    photo = Image.new("RGB", (1280, 640), (0, 0, 255))
    photo.paste((255, 0, 0), (640, 0, 1280, 640))  # red on the right half
    photo.save(tmp_path / "wide.png")
    first = regions.mark_corner(str(tmp_path / "wide.png"), (700, 10), files)
    assert first.scale == 2.0 and read_image(first.preview).size == (640, 320)
    second = regions.to_original([600, 300], first.scale)  # a tap on the copy, in the original's pixels
    box, boxed = regions.cut(str(tmp_path / "wide.png"), (700, 10), second, files)
    assert second == (1200, 600) and boxed.scale == 2.0 and box == (700, 10, 1200, 600)
    cut = read_image(str(tmp_path / "wide.png"), box=box)
    assert cut.size == (500, 590) and cut.getpixel((0, 0)) == (255, 0, 0)  # only the right half's red is in it
    with pytest.raises(QueryError, match="too small"):
        regions.cut(str(tmp_path / "wide.png"), (10, 10), (12, 400), files)
    outside = regions.cut(str(tmp_path / "wide.png"), (1000, 100), (5000, 5000), files)[0]
    assert outside == (1000, 100, 1280, 640)  # held to the image


def test_a_small_image_is_shown_large_enough_to_see_and_tap(tmp_path, files):
    Image.new("RGB", (50, 32), "green").save(tmp_path / "icon.png")
    shown = regions.marked_copy(str(tmp_path / "icon.png"), files)
    assert Image.open(shown.preview).size == (regions.SHOWN_MIN, round(32 * regions.SHOWN_MIN / 50))
    assert regions.to_original([160, 100], shown.scale) == pytest.approx((25, 15.6), abs=0.2)


def test_a_region_of_a_20_megapixel_photo_writes_a_small_preview_and_no_cut(tmp_path, files):
    big = tmp_path / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (3648, 5472, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, "JPEG", quality=90)  # 20 MP, about 12 MB
    box, marked = regions.cut(str(big), (5, 5), (5460, 3640), files)  # nearly the whole photo
    kept = list((files.folder / "kept").iterdir())
    assert [p.name for p in kept] == [marked.preview.rsplit("/", 1)[-1]] and kept[0].stat().st_size < 400_000
    region = read_image(str(big), min_edges=(224, 256), box=box)  # what the search decodes: drafted, in the budget
    assert 224 <= min(region.size) < 1000


def test_the_copies_the_app_keeps_are_held_to_the_budget(tmp_path):
    small = VisitorFiles(300_000, folder=tmp_path / "cache")
    out = io.BytesIO()
    Image.effect_noise((200, 200), 60).convert("RGB").save(out, "PNG")
    path = small.keep(out.getvalue())
    assert small.keep(out.getvalue()) == path  # the same bytes are kept once
    with pytest.raises(ServiceUnavailable, match="space for visitors' images is full"):
        small.keep(b"\x89PNG" + bytes(300_000))


def test_what_is_shown_of_a_stored_image_goes_when_the_image_is_forgotten(tmp_path, files):
    image_id = "ab" * 16
    out = io.BytesIO()
    Image.new("RGB", (384, 256), (0, 128, 0)).save(out, "JPEG")
    thumbnails.write(tmp_path / "store", image_id, out.getvalue())
    thumbnail = str(thumbnails.path(tmp_path / "store", image_id))  # as a hit names it: the bytes are in a pack
    shown = regions.marked_copy(thumbnail, files)
    corner = regions.mark_corner(thumbnail, (10, 10), files)
    readable = files.readable(thumbnail)  # what a region of it is searched by
    _, boxed = regions.cut(readable, (10, 10), (300, 200), files)
    made = [readable, shown.preview, corner.preview, boxed.preview]  # the copy drawn on, and 3 drawings
    assert len(set(made)) == 4
    upload = tmp_path / "cache" / "0123" / "mine.png"
    upload.parent.mkdir(parents=True)
    Image.new("RGB", (400, 400)).save(upload)
    theirs = regions.marked_copy(str(upload), files).preview  # a visitor's own file: nothing of an id in its name
    fetched = regions.marked_copy(files.keep(out.getvalue() + b"fetched"), files).preview  # a fetched one's: nor here
    assert files.forget([image_id]) == 4
    assert not any(Path(p).exists() for p in made) and Path(theirs).exists() and Path(fetched).exists()
