"""What the query panel shows of an image, and region queries drawn on it (two taps, opposite corners).

The page shows a copy of the query image fitted between SHOWN_MIN and SHOWN_MAX pixels on its longest edge
(a 50 px icon is scaled up so it can be seen and tapped, a 20 MP photo down so it loads at once), made
inside the decode budget. Taps arrive in the copy's pixels, so each copy carries its scale back to the
original's. A region is a box over the original, never a file of its own: the search decodes just that
much (``images.decode_image(box=...)``), so a region of any image that can be searched can be searched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from search.core.query import MIN_REGION_EDGE
from search.errors import QueryError
from search.images.decode import Box, image_header, read_image
from search.web.files import VisitorFiles, picture_bytes

SHOWN_MAX = 640  # the longest edge of the copy the page shows
SHOWN_MIN = 320  # smaller images are scaled up to this, so they can be seen and tapped
OUTLINE = (255, 64, 0)


@dataclass(frozen=True)
class Marked:
    """A copy of the image to show, with what is drawn on it; ``scale`` maps its pixels to the original's."""

    preview: str
    scale: float


def to_original(point: object, scale: float) -> tuple[float, float]:
    """A tap on the shown copy (Gradio's ``[x, y]`` in its pixels), in the original's pixels."""
    if not (isinstance(point, (list, tuple)) and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                    for v in point)):
        raise QueryError("Tap on the query image itself to mark a corner of the region.")
    return point[0] * scale, point[1] * scale


def marked_copy(original: str, files: VisitorFiles) -> Marked:
    """The copy of ``original`` the query panel shows."""
    img, scale = _copy(original)
    return Marked(files.keep_image(img, original), scale)


def mark_corner(original: str, corner: tuple[float, float], files: VisitorFiles) -> Marked:
    """The shown copy with the first corner of a region marked on it."""
    img, scale = _copy(original)
    x, y = corner[0] / scale, corner[1] / scale
    draw = ImageDraw.Draw(img)
    r = max(4, round(max(img.size) / 60))
    draw.line([(x - 3 * r, y), (x + 3 * r, y)], fill=OUTLINE, width=max(2, r // 2))
    draw.line([(x, y - 3 * r), (x, y + 3 * r)], fill=OUTLINE, width=max(2, r // 2))
    draw.ellipse([x - r, y - r, x + r, y + r], outline=OUTLINE, width=max(2, r // 2))
    return Marked(files.keep_image(img, original), scale)


def cut(original: str, a: tuple[float, float], b: tuple[float, float], files: VisitorFiles) -> tuple[Box, Marked]:
    """The region between corners ``a`` and ``b`` (the original's pixels, within it), and the copy with the box drawn."""
    img, scale = _copy(original)
    width, height = round(img.width * scale), round(img.height * scale)
    left, right = sorted((a[0], b[0]))
    top, bottom = sorted((a[1], b[1]))
    box = (max(0, round(left)), max(0, round(top)), min(width, round(right)), min(height, round(bottom)))
    if box[2] - box[0] < MIN_REGION_EDGE or box[3] - box[1] < MIN_REGION_EDGE:
        raise QueryError(f"That region is too small to search by; draw one at least {MIN_REGION_EDGE} pixels "
                         "wide and high.")
    ImageDraw.Draw(img).rectangle([v / scale for v in box], outline=OUTLINE, width=max(2, round(max(img.size) / 160)))
    return box, Marked(files.keep_image(img, original), scale)


def _copy(original: str) -> tuple[Image.Image, float]:
    """The copy to show (decoded reduced, inside the decode budget) and the original's pixels per its pixel."""
    data = picture_bytes(original)  # a thumbnail is no file of its own
    img = read_image(data, min_edges=(1, SHOWN_MAX), fit=SHOWN_MAX)  # the query's limits and messages
    header = image_header(data)
    if max(img.size) < SHOWN_MIN:
        grown = SHOWN_MIN / max(img.size)
        img = img.resize((max(1, round(img.width * grown)), max(1, round(img.height * grown))),
                         Image.Resampling.NEAREST if grown >= 4 else Image.Resampling.BICUBIC)
    return img, max(header.width, header.height) / max(img.size)
