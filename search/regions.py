"""Region queries: a box drawn on the query image (two taps, opposite corners) and the region cut out.

The page shows a reduced copy of the image with the box (or the first corner) drawn on it; taps on that
copy arrive in its pixels, so each copy carries its scale back to the original's pixels.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .errors import QueryError
from .images import read_image
from .served_files import keep_fetched

PREVIEW_EDGE = 640  # the longest edge of the copy the page shows
MIN_EDGE = 8  # a region narrower than this (in the original's pixels) holds nothing to search by
OUTLINE = (255, 64, 0)


@dataclass(frozen=True)
class Marked:
    """A copy of the image to show, with what is drawn on it; ``scale`` maps its pixels to the original's."""

    preview: str
    scale: float


def to_original(point: object, scale: float) -> tuple[float, float]:
    """A tap on the shown copy (Gradio's ``[x, y]`` in its pixels), in the original's pixels."""
    if not (isinstance(point, (list, tuple)) and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in point)):
        raise QueryError("Tap on the query image itself to mark a corner of the region.")
    return point[0] * scale, point[1] * scale


def mark_corner(original: str, corner: tuple[float, float]) -> Marked:
    """The image with the first corner of a region marked."""
    img, scale = _reduced(original)
    x, y = corner[0] / scale, corner[1] / scale
    draw = ImageDraw.Draw(img)
    r = max(4, round(max(img.size) / 60))
    draw.line([(x - 3 * r, y), (x + 3 * r, y)], fill=OUTLINE, width=max(2, r // 2))
    draw.line([(x, y - 3 * r), (x, y + 3 * r)], fill=OUTLINE, width=max(2, r // 2))
    return Marked(_kept(img, "JPEG"), scale)


def cut(original: str, a: tuple[float, float], b: tuple[float, float]) -> tuple[str, Marked]:
    """The region between corners ``a`` and ``b`` as an image file of its own, and the image with the box drawn."""
    full = read_image(original)
    left, right = sorted((a[0], b[0]))
    top, bottom = sorted((a[1], b[1]))
    box = (max(0, round(left)), max(0, round(top)), min(full.width, round(right)), min(full.height, round(bottom)))
    if box[2] - box[0] < MIN_EDGE or box[3] - box[1] < MIN_EDGE:
        raise QueryError(f"That region is too small to search by; draw one at least {MIN_EDGE} pixels wide and high.")
    region = _kept(full.crop(box), "PNG")
    img, scale = _reduced(original, full)
    ImageDraw.Draw(img).rectangle([v / scale for v in box], outline=OUTLINE, width=max(2, round(max(img.size) / 160)))
    return region, Marked(_kept(img, "JPEG"), scale)


def _reduced(original: str, decoded: Image.Image | None = None) -> tuple[Image.Image, float]:
    img = (decoded or read_image(original)).copy()
    scale = max(1.0, max(img.size) / PREVIEW_EDGE)
    img.thumbnail((PREVIEW_EDGE, PREVIEW_EDGE))
    return img, scale


def _kept(img: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    img.save(buffer, fmt, quality=90)
    return keep_fetched(buffer.getvalue())
