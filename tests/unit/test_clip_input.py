"""CLIP's one-resize input (search/embedders/clip_input.py) for images of every shape."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from search.embedders.clip_input import Pixels


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 4000), height=st.integers(1, 4000),
       pixels=st.sampled_from([Pixels(), Pixels(shortest=256, side=224), Pixels(shortest=384, side=384)]))
def test_every_shape_gives_the_models_square(width: int, height: int, pixels: Pixels) -> None:
    """1600x900 (and 2% of sizes) once gave a crop box a hair outside the image, which Pillow refuses."""
    img = Image.new("RGB", (width, height), (200, 30, 90))
    out = pixels.prepare(img)
    assert out.size == (pixels.side, pixels.side)
    assert out.getextrema() == ((200, 200), (30, 30), (90, 90))  # only the image's own pixels, none from outside


def test_the_sizes_that_failed() -> None:
    for size in ((1600, 900), (450, 253), (400, 225), (495, 450)):
        assert Pixels().prepare(Image.new("RGB", size)).size == (224, 224)


def test_the_centre_is_kept() -> None:
    """A wide image loses its sides: its centre square fills the output (the bicubic filter reads a pixel past
    the edge, as resizing the whole image and then cropping does)."""
    img = Image.new("RGB", (900, 300), (0, 0, 255))
    img.paste((255, 0, 0), (300, 0, 600, 300))
    row = [Pixels().prepare(img).getpixel((x, 112)) for x in range(224)]
    assert row[1:-1] == [(255, 0, 0)] * 222 and all(r >= 240 and b <= 15 for r, _, b in (row[0], row[-1]))
