"""Defensive image decoding: bytes from anywhere in, a plain RGB image (or a reason) out."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError

# Everything else is refused before decoding; JPEG includes MPO, which many phone cameras write.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # a 12 MP photo passes five times over; a decompression bomb does not
THUMBNAIL_SIZE = 256

ImageInput = Union[str, Path, bytes, bytearray, Image.Image]


def decode_image(
    data: bytes,
    *,
    min_edges: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Image.Image:
    """Decode encoded image bytes into an RGB image, or raise InvalidImageError with a reason.

    EXIF orientation is applied (a broken EXIF block is ignored), the first frame of an animation
    is used, alpha is composited on white and 16-bit or float data is scaled to 8 bits.
    ``min_edges=(shortest, longest)`` lets large JPEGs decode at 1/2, 1/4 or 1/8 scale as long as
    the result keeps at least that shortest and that longest edge.
    """
    if not data:
        raise InvalidImageError("empty", "the file is empty")
    if len(data) > max_bytes:
        raise InvalidImageError("too_large", f"{len(data)} bytes is over the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise InvalidImageError("corrupt", f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise InvalidImageError(
                    "too_large", f"{width}x{height} is over the limit of {max_pixels} pixels"
                )
            if min_edges and img.format in ("JPEG", "MPO"):
                img.draft(None, _draft_size(img.size, *min_edges))
            img.load()
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            "unsupported", f"not an image, or not one of {', '.join(ALLOWED_FORMATS)}"
        ) from None
    except Exception as exc:  # Pillow raises many types on malformed files; all mean "corrupt"
        raise InvalidImageError("corrupt", f"{type(exc).__name__}: {exc}") from None
    return to_rgb(_apply_exif_orientation(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as 8-bit RGB, compositing any transparency on white."""
    try:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            img = _to_8bit(img)
        if img.mode == "RGB" and "transparency" not in img.info:
            return img
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return img.convert("RGB")
    except Exception as exc:
        raise InvalidImageError("unsupported", f"cannot convert mode {img.mode} to RGB: {exc}") from None


def read_image(image: ImageInput, *, min_edges: tuple[int, int] | None = None) -> Image.Image:
    """Turn a query image given as a path, bytes or PIL image into RGB, with decode_image's checks."""
    if isinstance(image, Image.Image):
        if image.width * image.height > MAX_PIXELS:
            raise InvalidImageError("too_large", f"{image.width}x{image.height} is over the limit")
        return to_rgb(_apply_exif_orientation(image))
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), min_edges=min_edges)
    if isinstance(image, (str, Path)):
        return decode_image(read_file(Path(image)), min_edges=min_edges)
    raise InvalidImageError("unsupported", f"expected a path, bytes or a PIL image, got {type(image).__name__}")


def read_file(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """Read a file's bytes, refusing one over ``max_bytes`` before reading it."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidImageError("too_large", f"{size} bytes is over the limit of {max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidImageError("read_error", f"{type(exc).__name__}: {exc.strerror or exc}") from None


def make_thumbnail(img: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """Encode a JPEG whose longest side is at most ``size``."""
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85)
    return out.getvalue()


def _draft_size(size: tuple[int, int], shortest: int, longest: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max(shortest / min(width, height), longest / max(width, height)))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not cost the image itself
        return img


def _to_8bit(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
        arr = arr * 255.0
    elif arr.size and np.nanmax(arr) > 255:
        arr = arr / 257.0  # 16-bit range onto 8 bits
    return Image.fromarray(np.nan_to_num(arr).clip(0, 255).astype(np.uint8))
