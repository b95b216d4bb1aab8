"""OCR through the Tesseract engine: English and Vietnamese words read from rendered JPEGs, nothing from photos
without text, bounded time. Each reading starts a Tesseract process: the fast tier keeps OCR's rules without the
engine (tests/unit/test_ocr.py)."""
from __future__ import annotations

import io
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from search.core.words import fold, tokens
from search.images import ocr

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
ENGLISH = ["Fresh coffee served daily", "Grand opening sale today", "Welcome to the night market"]
VIETNAMESE = ["Phở bò tái", "Bánh mì Sài Gòn", "Cà phê sữa đá", "Hoa đào Tết", "Chúc mừng năm mới"]
SIZES = (18, 28, 44)
# Plain paper and two photo-like backgrounds whose colour fields vary most in brightness (seeds 2 and 10 of
# 12 tried), where one global threshold, Tesseract's default, read 0-88% of the words at these sizes.
BACKGROUNDS = (("plain", 0), ("photo", 2), ("photo", 10))
# Measured over these renders (3 sizes x 3 backgrounds, 640x480 JPEGs), per image: English 1.00 exact and
# folded, Vietnamese 0.98 exact and 1.00 folded. Read with the English model alone, Vietnamese falls to 0.06
# exact (0.82 folded); with one global threshold instead of Sauvola's, both languages fall to 0.77-0.78.
MIN_EXACT = {"en": 0.93, "vi": 0.90}
MIN_FOLDED = {"en": 0.93, "vi": 0.93}

needs_tesseract = pytest.mark.skipif(ocr.missing() is not None, reason=f"no OCR here: {ocr.missing()}")
needs_font = pytest.mark.skipif(not FONT.exists(), reason=f"{FONT} (Debian's fonts-dejavu-core) draws the test text")


def background(kind: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Plain paper, or a photo-like one: bright colour fields, a gradient across and sensor noise."""
    if kind == "plain":
        return Image.new("RGB", size, (250, 248, 240))
    width, height = size
    rng = np.random.default_rng(seed)
    fields = rng.integers(120, 255, (4, 5, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(fields).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    base += np.linspace(-30, 30, width, dtype=np.float32)[None, :, None]
    base += rng.normal(0, 10, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def render(lines: list[str], size_px: int, kind: str, seed: int = 0,
           size: tuple[int, int] = (640, 480)) -> tuple[bytes, list[str]]:
    """The lines drawn one below the other (those that fit), as a JPEG, and the words drawn."""
    img = background(kind, size, seed)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), size_px)
    drawn, y = [], size_px
    for line in lines:
        if y + size_px * 1.3 > size[1] or draw.textlength(line, font=font) > size[0] - 48:
            continue
        draw.text((24, y), line, font=font, fill=(20, 20, 25))
        drawn += tokens(line)
        y += int(size_px * 1.6)
    return jpeg(img), drawn


def recall(*pairs: tuple[str, list[str]]) -> tuple[float, float]:
    """Share of the words drawn in each image that were read from it in their exact form (NFC, lower-cased),
    and with accents folded away."""
    exact = folded = total = 0
    for read, truth in pairs:
        words = set(tokens(read))
        folds = {fold(word) for word in words}
        exact += sum(w in words for w in truth)
        folded += sum(fold(w) in folds for w in truth)
        total += len(truth)
    return exact / total, folded / total


@cache
def readings(language: str) -> list[tuple[str, list[str]]]:
    lines = ENGLISH if language == "en" else VIETNAMESE
    out = []
    for size_px in SIZES:
        for kind, seed in BACKGROUNDS:
            data, drawn = render(lines, size_px, kind, seed)
            out.append((ocr.read_text(data), drawn))
    return out


@needs_tesseract
@needs_font
@pytest.mark.parametrize("language", ["en", "vi"])
def test_words_rendered_in_jpegs_are_read_at_every_size_and_background(language):
    pairs = readings(language)
    exact, folded = recall(*pairs)
    assert exact >= MIN_EXACT[language] and folded >= MIN_FOLDED[language], (exact, folded, [t for t, _ in pairs])
    assert all(unicodedata.is_normalized("NFC", text) for text, _ in pairs)


@needs_tesseract
@needs_font
def test_vietnamese_keeps_its_diacritics():
    read = set(tokens(" ".join(text for text, _ in readings("vi"))))
    assert {"phở", "bánh", "sữa", "đá", "đào", "tết", "mừng"} <= read


@needs_tesseract
@needs_font
def test_light_text_on_a_dark_sign_in_a_bright_scene_is_read_too():
    img = background("photo", (640, 480), 7)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), 26)
    draw.text((20, 30), "Cà phê sữa đá", font=font, fill=(20, 20, 25))
    draw.rectangle([10, 250, 630, 470], fill=(25, 35, 70))
    draw.text((30, 280), "Bánh mì Sài Gòn", font=font, fill=(245, 240, 200))
    draw.text((30, 340), "Grand opening sale", font=font, fill=(245, 240, 200))
    exact, folded = recall((ocr.read_text(jpeg(img)), tokens("Cà phê sữa đá Bánh mì Sài Gòn Grand opening sale")))
    assert exact >= 0.8 and folded >= 0.9, (exact, folded)  # 1.00 and 1.00; 0.64 without the negative


@needs_tesseract
@needs_font
def test_a_small_image_is_scaled_up_to_be_read():
    # 10 px text on 320x240: 0.97 of the words read (folded); 0.79 without scaling up
    renders = [render(lines, 10, "plain", size=(320, 240)) for lines in (VIETNAMESE, ENGLISH)]
    exact, folded = recall(*((ocr.read_text(data), drawn) for data, drawn in renders))
    assert folded >= 0.9, (exact, folded)


@needs_tesseract
@needs_font
def test_a_pil_image_reads_as_its_bytes_do():
    data, _ = render(ENGLISH, 28, "plain")
    assert ocr.read_text(Image.open(io.BytesIO(data))) == ocr.read_text(data)


@needs_tesseract
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_photo_without_text_gives_little_or_nothing(seed):
    img = background("photo", (640, 480), seed)
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(seed)
    for _ in range(12):  # shapes with edges, as in a scene
        x, y, r = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(10, 80)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    assert len(tokens(ocr.read_text(jpeg(img)))) <= 2


@needs_tesseract
def test_the_probe_photos_have_no_text_to_read():
    from search.embedders.precision import PROBE

    for path in sorted(PROBE.glob("*.jpg")):
        assert len(tokens(ocr.read_text(path.read_bytes()))) <= 2, path.name


@needs_tesseract
@needs_font
def test_a_too_short_timeout_gives_nothing_and_does_not_raise(caplog):
    data, _ = render(ENGLISH, 28, "photo", 2)
    with caplog.at_level("DEBUG", logger="search.images.ocr"):
        assert ocr.read_text(data, timeout_s=0.001) == ""
    assert [r.levelname for r in caplog.records if r.name == "search.images.ocr"] == ["DEBUG"]
    with pytest.raises(ValueError):
        ocr.read_text(data, timeout_s=0)
