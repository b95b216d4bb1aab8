"""Defensive decoding: every mode to RGB, EXIF applied, bad files refused with a reason."""
from __future__ import annotations

import datetime
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench import camera
from bench.camera import claim_size, dng, exif_block
from search.config import MB
from search.core.units import data_size, megapixels
from search.errors import InvalidImageError
from search.images.decode import (
    ALLOWED_FORMATS,
    CUT_SHORT,
    DAMAGED,
    DECODE_BUDGET_PIXELS,
    MAX_BYTES,
    QUERY_MAX_PIXELS,
    PixelBudget,
    decode_image,
    format_of,
    image_header,
    is_camera_raw,
    make_thumbnail,
    pixel_limit_message,
    read_file,
    read_image,
    too_big,
)
from search.images.metadata import read_facts
from search.sources.base import IMAGE_SUFFIXES
from tests.conftest import SKIP_REASONS, hostile_files, random_rgb

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(SKIP_REASONS))
def test_hostile_files_are_refused_with_their_reason(name):
    with pytest.raises(InvalidImageError) as err:
        decode_image(hostile_files()[name])
    assert err.value.reason == SKIP_REASONS[name]
    assert err.value.detail


@pytest.mark.parametrize("fmt,options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}),
                                         ("GIF", {"version": "GIF87a"}), ("WEBP", {}), ("WEBP", {"lossless": True}),
                                         ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
                                         ("MPO", {}), ("TIFF", {"big_tiff": True})])
def test_every_allowed_format_is_known_by_its_first_bytes(tmp_path, fmt, options):
    data = encode(random_rgb(1, (40, 30)), fmt, **options)
    assert format_of(data[:12]) == ("JPEG" if fmt == "MPO" else fmt) and format_of(data[:12]) in ALLOWED_FORMATS
    (tmp_path / "photo.img").write_bytes(data)
    assert read_file(tmp_path / "photo.img") == data


def test_a_file_named_as_an_image_that_is_not_one_is_refused_by_its_first_bytes(tmp_path):
    fake = tmp_path / "movie.jpg"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5_000_000))  # a video with an image's name
    with pytest.raises(InvalidImageError) as err:
        read_file(fake)
    assert err.value.reason == "unsupported" and "not an image" in err.value.detail
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_file(tmp_path / "empty.jpg") == b""  # decoding names it: "empty"


def test_oversized_bytes_are_refused_before_decoding():
    with pytest.raises(InvalidImageError) as err:
        decode_image(b"\xff" * 1000, max_bytes=999)
    assert err.value.reason == "too_large"
    assert MAX_BYTES >= 20 * 1024 * 1024  # a 12 MP JPEG must fit


@pytest.mark.parametrize(
    "mode,fmt",
    [("L", "PNG"), ("1", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP"),
     ("RGB", "BMP"), ("RGB", "TIFF"), ("F", "TIFF"), ("I", "TIFF")],
)
def test_every_mode_becomes_rgb(mode, fmt):
    base = random_rgb(1)
    if mode in ("I;16", "I"):
        wide = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(wide.astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0)
    else:
        img = base.convert(mode)
    out = decode_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == base.size
    if mode in ("I;16", "I", "F"):  # high-depth data is scaled, not clipped to white
        grey = np.asarray(base.convert("L"), dtype=np.float32)
        assert np.abs(np.asarray(out)[..., 0] - grey).mean() < 2.0


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = decode_image(encode(img, "PNG"))
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_palette_transparency_is_composited_on_white():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    out = decode_image(encode(img, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (255, 0, 0)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = decode_image(data).getpixel((8, 8))
    assert r > 200 and b < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    # Pillow's own transpose of the raw pixels is the reference for each orientation.
    raw = img.copy()
    raw.info["exif"] = exif.tobytes()
    raw.getexif()[0x0112] = orientation
    expected = ImageOps.exif_transpose(raw)
    assert out.size == expected.size
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(expected, dtype=int)).mean() < 8


def test_broken_exif_block_keeps_the_image():
    data = encode(random_rgb(3), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x00\x00")
    assert decode_image(data).size == (80, 60)


def test_large_jpeg_is_drafted_but_keeps_the_needed_edges():
    big = random_rgb(4, size=(4000, 3000))
    out = decode_image(encode(big, "JPEG"), min_edges=(224, 256))
    assert min(out.size) >= 224 and max(out.size) >= 256
    assert out.size[0] <= 1000  # decoded at 1/4 scale or less


def test_thumbnail_longest_side_is_at_most_256():
    source = random_rgb(5, size=(1000, 400))
    before = source.tobytes()
    thumb = Image.open(io.BytesIO(make_thumbnail(source)))
    assert thumb.size == (256, 102) and thumb.format == "JPEG"
    assert source.tobytes() == before  # made from the image, which is left as it was
    small = Image.open(io.BytesIO(make_thumbnail(random_rgb(6, size=(200, 100)))))
    assert small.size == (200, 100)  # never scaled up


def test_read_image_takes_paths_bytes_and_pil(tmp_path):
    img = random_rgb(6)
    path = tmp_path / "q.png"
    img.save(path)
    for given in (path, str(path), path.read_bytes(), img, img.convert("RGBA")):
        assert np.array_equal(np.asarray(read_image(given)), np.asarray(img))
    with pytest.raises(InvalidImageError) as err:
        read_image(tmp_path / "missing.png")
    assert err.value.reason == "read_error"
    with pytest.raises(InvalidImageError):
        read_image(12345)


def _whole_image_rgb(img: Image.Image) -> np.ndarray:
    """The conversion done on the whole image at once, as a reference for the strip-wise one."""
    if img.mode in ("I;16", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif np.nanmax(arr) > 255:
            arr = arr / 257.0
        return np.asarray(Image.fromarray(np.nan_to_num(arr).clip(0, 255).astype(np.uint8)).convert("RGB"))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        canvas.alpha_composite(img.convert("RGBA"))
        return np.asarray(canvas.convert("RGB"))
    return np.asarray(img.convert("RGB"))


def test_conversion_in_strips_matches_the_whole_image(monkeypatch):
    import search.images.decode as images

    monkeypatch.setattr(images, "_STRIP_PIXELS", 300)  # many strips, the last one short
    rng = np.random.default_rng(9)
    rgba = Image.fromarray(rng.integers(0, 255, (53, 71, 4), dtype=np.uint8), "RGBA")
    palette = rgba.convert("RGB").convert("P")
    palette.info["transparency"] = 3
    floats = rng.random((53, 71)).astype(np.float32)
    floats[0, 0] = np.nan
    for img in (rgba, rgba.convert("LA"), rgba.convert("PA"), palette, rgba.convert("CMYK"),
                Image.fromarray(rng.integers(0, 65535, (53, 71)).astype(np.uint16)),
                Image.fromarray(rng.integers(-9, 99999, (53, 71)).astype(np.int32)),
                Image.fromarray(floats), Image.fromarray(floats * 900)):
        out = images.to_rgb(img.copy())
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), _whole_image_rgb(img)), img.mode


def test_refusals_say_what_to_do_and_show_no_internals():
    from tests.conftest import png_header_only

    cases = [(png_header_only(60_000, 60_000), {}), (png_header_only(9000, 9000), {}),
             (png_header_only(5000, 5000), {"max_pixels": 24_000_000}), (b"\xff" * 1000, {"max_bytes": 999})]
    for data, kwargs in cases:
        with pytest.raises(InvalidImageError) as err:
            decode_image(data, **kwargs)
        assert err.value.reason == "too_large"
        assert "try again" in err.value.detail and "/" not in err.value.detail
    with pytest.raises(InvalidImageError) as err:
        decode_image(png_header_only(9000, 9000))
    assert err.value.detail == "9000x9000 (81 MP) is over the limit of 64 MP; scale it down and try again"


LIBRARY_WORDS = ("Error", "truncated", "not processed", "decoder", "Errno", "errno")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_a_file_cut_short_or_damaged_is_said_in_the_apps_words_and_the_decoders_go_to_internals(fmt):
    data = encode(Image.effect_noise((300, 300), 50).convert("RGB"), fmt)
    with pytest.raises(InvalidImageError) as err:
        decode_image(data[:len(data) // 2])
    assert err.value.reason == "corrupt" and err.value.detail in (CUT_SHORT, DAMAGED)
    assert not any(word in str(err.value) for word in LIBRARY_WORDS), str(err.value)
    assert err.value.internals and "Error" in err.value.internals  # what Pillow said, for the log
    if fmt != "WEBP":  # libwebp says only "could not create decoder object": damaged, not cut short
        assert err.value.detail == CUT_SHORT


def test_a_file_that_cannot_be_read_says_why_in_words(tmp_path):
    for path, said in ((tmp_path / "gone.jpg", "the file is gone"), (tmp_path, "it is a folder")):
        with pytest.raises(InvalidImageError) as err:
            read_file(path)
        assert err.value.reason == "read_error" and said in err.value.detail
        assert not any(word in str(err.value) for word in LIBRARY_WORDS) and str(tmp_path) not in str(err.value)
        assert str(path) in (err.value.internals or "")  # the path and the system's words: the log's


def test_sizes_over_a_limit_are_said_in_mb_and_mp():
    assert too_big(57_000_000, MAX_BYTES).detail == "the file is 54.4 MB, over the limit of 50 MB; make it smaller and try again"
    assert too_big(MAX_BYTES + 1, MAX_BYTES).detail.startswith("the file is over the limit of 50 MB")  # never "50 MB, over 50 MB"
    assert pixel_limit_message("9000x6000", 24_000_000, 54_000_000) == (
        "9000x6000 (54 MP) is over the limit of 24 MP; scale it down and try again")
    assert [data_size(n) for n in (20 * MB, 52_428_800, 1024**3, 65_536, 900)] == ["20 MB", "50 MB", "1 GB", "64 KB",
                                                                                  "900 bytes"]
    assert [megapixels(n) for n in (64_000_000, 128_000_000, 56_250_000)] == ["64 MP", "128 MP", "56.2 MP"]


# --- Phone and camera formats: HEIC/HEIF, AVIF, camera RAW (through its preview) --------------------------------


@pytest.fixture(scope="module")
def phone_files() -> dict[str, bytes]:
    """A real photo (the example cat, 400x300) as each phone and camera format, taken on 2021-05-06 and held turned
    (EXIF orientation 6: it must come out 300x400)."""
    cat = Image.open(EXAMPLES / "cat.jpg").convert("RGB").resize((400, 300))
    exif = exif_block("2021:05:06 07:08:09", 6)
    return {
        "heic": camera.encode(cat, "HEIF", quality=60, exif=exif, thumbnails=[320]),
        "avif": camera.encode(cat, "AVIF", quality=60, speed=10, exif=exif),
        "dng": dng(cat, taken="2021:05:06 07:08:09", orientation=6),
    }


@pytest.mark.parametrize("kind,fmt", [("heic", "HEIF"), ("avif", "AVIF"), ("dng", "TIFF")])
def test_phone_and_camera_formats_decode_upright_with_their_date(phone_files, kind, fmt):
    data = phone_files[kind]
    assert format_of(data[:12]) == fmt and is_camera_raw(data) == (kind == "dng")
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (300, 400)
    cat = Image.open(EXAMPLES / "cat.jpg").convert("RGB").resize((400, 300))
    upright = np.asarray(cat.transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    assert np.abs(np.asarray(out, dtype=np.float32) - upright).mean() < 12  # the photo, turned, not a thumbnail's blur
    assert read_facts(data).taken == datetime.datetime(2021, 5, 6, 7, 8, 9)


def test_the_content_decides_not_the_name(tmp_path, phone_files):
    (tmp_path / "phone.jpg").write_bytes(phone_files["heic"])
    (tmp_path / "photo.heic").write_bytes(encode(random_rgb(3, (40, 30)), "JPEG"))
    (tmp_path / "camera.png").write_bytes(phone_files["dng"])
    assert read_image(tmp_path / "phone.jpg").size == (300, 400)
    assert read_image(tmp_path / "photo.heic").size == (40, 30)
    assert read_image(tmp_path / "camera.png").size == (300, 400)
    assert {".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"} <= IMAGE_SUFFIXES


def test_a_48mp_heic_decodes_its_thumbnail_for_the_model_or_is_refused_from_its_header(phone_files):
    claimed = claim_size(phone_files["heic"], 8000, 6000)  # 48 MP said, 400x300 there, and a 320x240 thumbnail
    head = image_header(claimed, min_edges=(224, 256), max_pixels=QUERY_MAX_PIXELS)
    assert (head.width, head.height, head.pixels) == (6000, 8000, 320 * 240)  # upright: libheif turns it
    assert decode_image(claimed, min_edges=(224, 256), max_pixels=QUERY_MAX_PIXELS).size == (240, 320)
    with pytest.raises(InvalidImageError) as err:  # the model needs more than the thumbnail: whole, over the limit
        decode_image(claimed, min_edges=(448, 512), max_pixels=QUERY_MAX_PIXELS)
    assert err.value.reason == "too_large" and "6000x8000" in err.value.detail
    # A build allows 48 MP: the whole image is decoded within the budget, and this one's pixels are not what it said
    with pytest.raises(InvalidImageError) as err:
        decode_image(claimed)
    assert err.value.reason == "corrupt"


@pytest.mark.parametrize("kind,claim,reason", [
    ("heic", (14_000, 13_000), "too_large"), ("avif", (14_000, 13_000), "too_large"),  # over Pillow's bomb limit
    ("heic", (20_000, 15_000), "too_large"), ("avif", (20_000, 15_000), "corrupt"),  # libavif refuses it at parse
])
def test_a_bomb_by_header_is_refused_holding_nothing(kind, claim, reason, phone_files):
    budget = PixelBudget(DECODE_BUDGET_PIXELS)
    with pytest.raises(InvalidImageError) as err:
        decode_image(claim_size(phone_files[kind], *claim), min_edges=(224, 256), budget=budget)
    assert err.value.reason == reason and budget.used == 0


def test_a_raw_preview_is_held_to_the_same_limits(phone_files):
    assert image_header(phone_files["dng"]).format == "JPEG"  # the preview's header
    with pytest.raises(InvalidImageError) as err:
        decode_image(phone_files["dng"], max_pixels=100_000)
    assert err.value.reason == "too_large"
    big = dng(random_rgb(2, (1600, 1200)))
    assert decode_image(big, min_edges=(224, 256)).size == (400, 300)  # the JPEG preview drafted, as any JPEG
