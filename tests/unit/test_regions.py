"""Region queries: taps from the browser are checked before they touch an image; the region cut is exact."""
from __future__ import annotations

import pytest
from PIL import Image

from search import regions
from search.errors import QueryError
from search.images import read_image


@pytest.fixture(autouse=True)
def gradio_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))  # where keep_fetched writes


@pytest.mark.parametrize("point", [None, "10,20", [10], [10, 20, 30], [-1, 5], [5, float("nan")], [True, 3],
                                   {"x": 1, "y": 2}, ["10", "20"]])
def test_a_tap_that_is_not_a_point_on_the_image_is_refused(point):
    with pytest.raises(QueryError, match="Tap on the query image"):
        regions.to_original(point, 1.0)


def test_taps_on_the_reduced_copy_map_to_the_original_and_cut_that_region(tmp_path):
    photo = Image.new("RGB", (1280, 640), (0, 0, 255))
    photo.paste((255, 0, 0), (640, 0, 1280, 640))  # red on the right half
    photo.save(tmp_path / "wide.png")
    first = regions.mark_corner(str(tmp_path / "wide.png"), (700, 10))
    assert first.scale == 2.0 and read_image(first.preview).size == (640, 320)
    second = regions.to_original([600, 300], first.scale)  # a tap on the copy, in the original's pixels
    region, boxed = regions.cut(str(tmp_path / "wide.png"), (700, 10), second)
    cut = read_image(region)
    assert second == (1200, 600) and boxed.scale == 2.0 and cut.size == (1200 - 700, 600 - 10)
    assert cut.getpixel((0, 0)) == (255, 0, 0)  # only the right half's red is in it
    with pytest.raises(QueryError, match="too small"):
        regions.cut(str(tmp_path / "wide.png"), (10, 10), (12, 400))
