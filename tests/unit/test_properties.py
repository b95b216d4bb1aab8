"""Property-based tests (hypothesis): decoding and queries never crash, and every rejection has a reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from search import ImageIndex, QueryError
from search.errors import InvalidImageError
from search.images.decode import decode_image

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REASONS = {"empty", "corrupt", "too_large", "unsupported", "read_error"}
MODE_FORMATS = {
    "1": ("PNG", "BMP", "TIFF"), "L": ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"), "P": ("PNG", "GIF", "BMP"),
    "RGB": ("PNG", "JPEG", "BMP", "TIFF", "WEBP"), "RGBA": ("PNG", "WEBP", "TIFF"), "CMYK": ("JPEG", "TIFF"),
    "LA": ("PNG",), "I;16": ("PNG", "TIFF"), "I": ("PNG", "TIFF"), "F": ("TIFF",),
}


def _check_decode(data: bytes) -> None:
    try:
        img = decode_image(data)
    except InvalidImageError as exc:
        assert exc.reason in REASONS and exc.detail
    else:
        assert img.mode == "RGB" and img.width >= 1 and img.height >= 1


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(data):
    _check_decode(data)


@SETTINGS
@given(st.sampled_from(sorted(MODE_FORMATS)), st.integers(1, 300), st.integers(1, 300), st.data())
def test_every_mode_size_and_format_decodes_to_rgb(mode, width, height, data):
    fmt = data.draw(st.sampled_from(MODE_FORMATS[mode]))
    pixels = np.random.default_rng(width * 1000 + height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        img = img.convert("I") if mode == "I" else img.convert("F") if mode == "F" else img.convert("I;16")
    out = io.BytesIO()
    img.save(out, fmt)
    decoded = decode_image(out.getvalue())
    assert decoded.mode == "RGB" and decoded.size == (width, height)


@SETTINGS
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2000))
def test_damaged_real_images_never_crash_the_decoder(noise, cut):
    out = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(out, "PNG")
    data = bytearray(out.getvalue())
    position = cut % len(data)
    data[position : position + len(noise)] = noise  # overwrite part of the header or the data
    _check_decode(bytes(data))


@pytest.fixture(scope="module")
def index(local_store):
    return ImageIndex.open(local_store)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 8))
def test_exif_orientation_gives_the_embedding_of_the_turned_image(index, orientation):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 255, (48, 96, 3), dtype=np.uint8))
    img.paste((220, 30, 30), (0, 0, 48, 48))  # asymmetric, so a wrong turn would show
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = io.BytesIO()
    img.save(tagged, "PNG", exif=exif.tobytes())
    turned = ImageOps.exif_transpose(Image.open(io.BytesIO(tagged.getvalue())))
    turned_bytes = io.BytesIO()
    turned.save(turned_bytes, "PNG")
    a = index.embedder.embed_images([index.embedder.prepare(decode_image(tagged.getvalue()))])[0]
    b = index.embedder.embed_images([index.embedder.prepare(decode_image(turned_bytes.getvalue()))])[0]
    assert float(a @ b) > 0.9999


@SETTINGS
@given(st.text(max_size=1200))
def test_any_text_is_answered_or_refused_with_a_reason(index, text):
    try:
        hits = index.search_by_text(text, k=3)
    except QueryError as exc:
        assert str(exc)
        assert not text.strip() or len(text) > 1000
    else:
        assert len(hits) == 3 and all(np.isfinite(h.score) for h in hits)


@SETTINGS
@given(st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=3)),
       st.one_of(st.sampled_from(["cosine", "l2", "l1", "correlation", "ip"]), st.text(max_size=12)))
def test_any_k_and_metric_is_answered_or_refused(index, k, metric):
    try:
        hits = index.search_by_text("a red circle", k=k, metric=metric)
    except QueryError as exc:
        assert str(exc)
    else:
        assert isinstance(k, int) and 1 <= k <= 1000 and len(hits) == min(k, len(index))
