"""Text inside images (signs, menus, posters, screenshots) read with Tesseract, for the keyword channel.

Each image is decoded through search.images.decode at a size that suits OCR, turned grey, set above its
own negative on one page and read by one Tesseract process with its Vietnamese and English models.
Figures quoted below were measured on DejaVuSans text rendered in English and Vietnamese at 8-120 px on
plain, dark, photo-like (colour fields, gradient, noise) and mixed backgrounds, JPEG-encoded, against
images with no text (photo-like, shapes, band-passed noise textures and the probe photos).
"""
from __future__ import annotations

import functools
import logging
import subprocess
import unicodedata
from collections import Counter
from types import ModuleType

from PIL import Image, ImageOps

from search.config import for_child_processes
from search.errors import InvalidImageError, SearchError
from search.images.decode import MAX_PIXELS, read_image

LANGUAGES = ("vie", "eng")
INSTALL = ("Install it with `apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-vie` (Debian, Ubuntu); "
           "a Hugging Face Space lists tesseract-ocr, tesseract-ocr-eng and tesseract-ocr-vie in packages.txt.")
NOT_INSTALLED = f"Text inside images is not read: Tesseract is not installed. {INSTALL}"
# A 4000x3000 photo with text 0.5-3% of its height: 96% of words read at 2000 px, 99% at 2400, 82% at 1600;
# 2000 also lets a 12 MP JPEG decode at 1/2 scale, where 2400 needs the full-size decode.
MAX_EDGE = 2000
# Smaller images are scaled up to this longest edge: 10 px text on 640x480 goes from 81% of words read to
# 96%, 8-10 px text on 320x240 from 10-77% to 74-100%; 1280 reads small text on 640x480 a little better
# (99%) but worse on 320x240, at 1.8 times the pixels.
MIN_EDGE = 960
# Tesseract's word confidence (0-100) a word needs. Correctly read words: 99.8% at 60 or more, 99.6% at 70,
# 98.8% at 80, 96.6% at 90; words read in images with no text (noise textures mostly): 7.4% at 60, 3.5% at
# 70, 1.3% at 80, 0.1% at 90. 70 sits on the flat part of the first curve, with room for real photos' lower
# confidences. Past 70 the noise is all words of one or two letters or digits, which correct words of that
# length (Vietnamese has many: bò, mì, đá) passed at 90 or more every time: they need 85, which drops 7 in 10
# of those noise words, and the 3 that a probe photo's lit ground gave at 70-75. Together: 99.6% of correct
# words kept, 1.0% of noise words.
MIN_CONFIDENCE = 70.0
MIN_CONFIDENCE_SHORT = 85.0
# A 640x480 image reads in 0.7-0.9 s here (bench/ocr.py, 2 shared cores), a 2000x1500 noise texture, the
# slowest seen, in 3.5 s; a limit several times that catches a runaway page without cutting a real one short.
DEFAULT_TIMEOUT_S = 20.0
# Sauvola's local threshold: Tesseract's default, one global (Otsu) threshold, read 32% of the words on
# photo-like backgrounds, whose brightness varies, and Sauvola 97%. It finds dark text on light only, so the
# page holds the image above its negative: light text on a dark sign is read from the negative at the cost
# of one process start (most of a small image's time), and mixed scenes go from 62% of words read to 99%.
# Layout: one column of lines of any size (--psm 4) read all of the free-standing text in scenes of one to
# three lines placed anywhere, where automatic layout (3) read 86%; lines down to one x-height (1.25 by
# default) read 86% of the text framed by a sign's edge, against 74%.
CONFIG = "--psm 4 -c thresholding_method=2 -c textord_min_linesize=1.0"
_GAP = 16  # white rows between the image and its negative, so no text line spans both

log = logging.getLogger(__name__)


class OcrUnavailableError(SearchError):
    """Text inside images cannot be read here: Tesseract or one of its language packs is missing."""


@functools.cache
def _tesseract() -> ModuleType:
    """pytesseract, imported when text is first read: it imports pandas, 0.7 s of every builder's start."""
    import pytesseract

    # pytesseract passes this module-level mapping to every Tesseract process it starts. OpenMP is held to one
    # thread unless the operator set a limit: Tesseract's OpenMP threads spin while they wait, so on a busy
    # machine one thread read a 640x480 page in half the wall time of its default (a thread per core), on a quiet
    # one as fast (bench/ocr.py: 1.19 against 1.15 images/s), and the other cores are left to reads in parallel
    # (2.2 images/s two at once). Setting it for this process itself would also cap torch's threads.
    pytesseract.pytesseract.environ = for_child_processes(OMP_THREAD_LIMIT="1")
    return pytesseract


@functools.cache
def missing() -> str | None:
    """None where Tesseract and its Vietnamese and English packs are installed, else what is missing and how to
    install it, in words for the person running the app."""
    pytesseract = _tesseract()
    try:
        pytesseract.get_tesseract_version()
        installed = set(pytesseract.get_languages())
    except (OSError, subprocess.SubprocessError, SystemExit):  # not found, not runnable, or too old (SystemExit)
        return NOT_INSTALLED
    absent = [lang for lang in LANGUAGES if lang not in installed]
    if absent:
        names = " and ".join(f"tesseract-ocr-{lang}" for lang in absent)
        return f"Text inside images is not read: Tesseract lacks its language pack {names}. {INSTALL}"
    return None


def read_text(data: bytes | Image.Image, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The words Tesseract reads in the image, in NFC, separated by spaces; "" where there are none, the image
    cannot be decoded, or Tesseract fails or runs past ``timeout_s``. OcrUnavailableError if it is not installed."""
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")  # pytesseract reads 0 as no limit at all
    reason = missing()
    if reason:
        raise OcrUnavailableError(reason)
    try:
        page, split = _page(data)
    except InvalidImageError as exc:
        log.debug("OCR skipped an image: %s", exc)
        return ""
    pytesseract = _tesseract()
    try:
        found = pytesseract.image_to_data(page, lang="+".join(LANGUAGES), config=CONFIG, timeout=timeout_s,
                                          output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:  # removed since missing() looked
        raise OcrUnavailableError(NOT_INSTALLED) from None
    except pytesseract.TesseractError as exc:
        log.debug("OCR failed on an image: %s", exc)
        return ""
    except RuntimeError:  # pytesseract's timeout; it has killed the process
        log.debug("OCR gave up on an image after %s s", timeout_s)
        return ""
    except OSError as exc:  # the temporary file could not be written or read
        log.debug("OCR failed on an image: %s", exc)
        return ""
    return " ".join(_words(found, split))


def _page(data: bytes | Image.Image) -> tuple[Image.Image, int]:
    """The page Tesseract reads: the grey image at OCR size above its negative, and the row where the negative starts."""
    image = read_image(data if isinstance(data, Image.Image) else bytes(data), min_edges=(0, MAX_EDGE),
                       max_pixels=MAX_PIXELS, fit=MAX_EDGE)
    grey = image.convert("L")
    if max(grey.size) < MIN_EDGE:
        scale = MIN_EDGE / max(grey.size)
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.LANCZOS)
    split = grey.height + _GAP
    page = Image.new("L", (grey.width, split + grey.height), 255)
    page.paste(grey, (0, 0))
    page.paste(ImageOps.invert(grey), (0, split))
    # Uncompressed netpbm for the temporary file: PNG, pytesseract's default, took 345 ms to write a
    # 2000x3016 page, PPM under 1 ms.
    page.format = "PPM"
    return page, split


def _words(found: dict[str, list], split: int) -> list[str]:
    """The confident words with a letter or digit, the image's first, then those read only in its negative."""
    upper: list[str] = []
    lower: list[str] = []
    for text, confidence, top in zip(found["text"], found["conf"], found["top"]):
        word = unicodedata.normalize("NFC", str(text)).strip()
        letters = sum(c.isalnum() for c in word)
        if letters and float(confidence) >= (MIN_CONFIDENCE if letters > 2 else MIN_CONFIDENCE_SHORT):
            (lower if int(top) >= split else upper).append(word)
    # Text of middling brightness can be read from both; each reading of a word in the image covers one in the negative.
    seen = Counter(upper)
    for word in lower:
        if seen[word]:
            seen[word] -= 1
        else:
            upper.append(word)
    return upper
