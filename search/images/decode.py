"""Defensive image decoding: bytes from anywhere in, a plain RGB image (or a reason) out.

Memory is bounded before any pixel is allocated: the size comes from the header (``Image.open`` is
lazy), an image over the caller's pixel limit is refused, and every decode holds its cost from one
process-wide :class:`PixelBudget` while it runs, so concurrent large decodes take turns.
"""
from __future__ import annotations

import errno
import io
import math
import struct
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
import rawpy
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from search.core.query import Box
from search.core.units import data_size, megapixels
from search.errors import InvalidImageError, QueryError

# HEIC/HEIF through pillow-heif; AVIF is Pillow's own.
pillow_heif.register_heif_opener()
# Everything else is refused before decoding; JPEG includes MPO, which many phone cameras write. AVIF is tried before
# HEIF: both claim the generic "mif1" brand, and only pillow-heif would open an AVIF it then cannot decode.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")
# Camera RAW files are read through their embedded preview (a JPEG or a bitmap), by LibRaw; never developed.
CAMERA_RAW = "RAW"
NOT_AN_IMAGE = f"not an image, or not one of {', '.join(ALLOWED_FORMATS)} or a camera RAW with a preview"
# What a decoder's failure means, in words (its own, "OSError: image file is truncated (6 bytes not
# processed)", go to the log): a file that ends early, or one whose data is wrong.
CUT_SHORT = "the image is cut short (the file is incomplete); copy or download it again"
DAMAGED = "the image data is damaged and cannot be decoded; save it again from the program that made it"
# What an error reading a file means, by its errno; anything else is UNREADABLE.
READ_ERRORS = {errno.ENOENT: "the file is gone (it was moved or deleted while it was read)",
               errno.EACCES: "the app is not allowed to read the file", errno.EPERM: "the app is not allowed to read the file",
               errno.EISDIR: "it is a folder, not a file"}
UNREADABLE = "the file could not be read from the disk"
# The first bytes of each allowed format (WebP: "RIFF", 4 bytes of size, "WEBP"; MPO files are JPEGs). DNG, CR2, NEF,
# ARW, PEF and SRW are TIFFs; ORF, RW2 and RAF have their own; HEIF, AVIF and CR3 are ISO boxes (below).
SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
              (b"IIRO", CAMERA_RAW), (b"IIRS", CAMERA_RAW), (b"MMOR", CAMERA_RAW), (b"IIU\x00", CAMERA_RAW),
              (b"FUJIFILM", CAMERA_RAW))
# An ISO base media file starts with its 'ftyp' box, whose major brand (bytes 8 to 12) names what it holds.
BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"crx ": CAMERA_RAW,
          **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"),
                          "HEIF")}
HEAD_BYTES = 12
MAX_BYTES = 50 * 1024 * 1024
# Builds from the command line: a 12 MP photo passes five times over; a decompression bomb does not.
MAX_PIXELS = 64_000_000
# Queries and uploads to the app: 6000x4000, more than any screen or screenshot. A JPEG counts at the
# size it is decoded at (1/2 to 1/8 scale when the model needs fewer pixels), so phone and camera photos
# of any size pass. At <= 10 bytes per pixel (below) one such decode peaks at about 240 MB.
QUERY_MAX_PIXELS = 24_000_000
# A decode may need more memory than its pixels (WebP: 1.7x a PNG's; see _cost) up to this many times the
# pixel limit: a 16 MP WebP wallpaper or a 12 MP phone HEIC is a query, and the process-wide budget still bounds
# the total.
COST_HEADROOM = 2
# Peak RSS per decoded pixel, measured with Pillow 12 for 64 MP images of every format and mode accepted,
# conversion to RGB and EXIF rotation included: 4 bytes for RGB (Pillow keeps it as RGBX), 5 for L/P/1
# (source + RGB), 7 for 16-bit, 8 for RGBA/LA/CMYK or a rotated image (source + result), 9 for 32-bit
# I/F. One PixelBudget unit is this many bytes; WebP, HEIF and AVIF (EXTRA_BYTES) and progressive or multi-scan
# JPEGs (full-size DCT coefficients) cost extra units (_cost). tests/e2e/test_memory.py holds RSS to these.
BYTES_PER_PIXEL = 10
# Bytes per pixel that a format's decoder holds beside Pillow's image while it loads. WebP: libwebp's two canvases
# and Pillow's copy of one (16 bytes measured against a PNG's 4); HEIF: libheif's planes and pillow-heif's RGB copy
# (7.8 against 3.9 for a 12 MP phone photo, pillow-heif 1.8); AVIF: libavif's planes and its RGB buffer (9.6 against
# 3.9, Pillow 12.3). Measured with 8-bit files; bench/formats.py prints them again.
EXTRA_BYTES = {"WEBP": 7, "HEIF": 4, "AVIF": 6}
# EXIF orientation (2 to 8) -> the transposition that turns the image upright.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
# LibRaw's flip (how the camera was held) as the EXIF orientation it was read from.
_LIBRAW_FLIP = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
# The process-wide budget: about 1 GB of decoding in flight at once (100M units at 10 bytes), which
# holds one build-size image (64 MP) with room to spare, or four of the largest queries at once; the
# rest wait their turn. Eight 64 MP PNGs decoded at once took a bare process to 3.8 GB before it.
DECODE_BUDGET_PIXELS = 100_000_000
THUMBNAIL_SIZE = 256
_STRIP_PIXELS = 1 << 20  # conversions work in horizontal strips of about this many pixels

ImageInput = str | Path | bytes | bytearray | Image.Image


class PixelBudget:
    """Pixels that decodes may hold at once, shared by every thread of the process.

    A decode reserves its cost for as long as it runs. One that does not fit waits until earlier ones
    are done; waiters are served first come, first served, so a large decode is not starved by a stream
    of small ones. A cost larger than the whole budget is refused at once rather than waiting forever.
    """

    def __init__(self, total: int):
        if total < 1:
            raise ValueError("a pixel budget must be positive")
        self.total = total
        self.used = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, cost: int, what: str = "this image") -> None:
        """Take ``cost`` pixels, waiting for them; InvalidImageError("too_large") if they can never fit."""
        cost = max(0, int(cost))
        if cost > self.total:
            raise InvalidImageError(
                "too_large", f"{what} needs more memory to decode than this server allows; scale it down and try again"
            )
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket and self.used + cost <= self.total)
            finally:  # granted or interrupted, the ticket leaves the queue and the next in line may go
                self._queue.remove(ticket)
                self._cond.notify_all()
            self.used += cost

    def release(self, cost: int) -> None:
        """Give back what :meth:`acquire` took."""
        with self._cond:
            self.used -= max(0, int(cost))
            self._cond.notify_all()

    @contextmanager
    def reserve(self, cost: int, what: str = "this image") -> Iterator[None]:
        """Hold ``cost`` pixels for the ``with`` block; they are given back however the block ends."""
        self.acquire(cost, what)
        try:
            yield
        finally:
            self.release(cost)


DECODE_BUDGET = PixelBudget(DECODE_BUDGET_PIXELS)


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before decoding: format, full size, pixels decoded and budget cost."""

    format: str
    width: int
    height: int
    pixels: int  # what will be decoded: smaller than width*height for a drafted JPEG or a HEIF's thumbnail
    cost: int  # PixelBudget units (BYTES_PER_PIXEL bytes of peak memory each)

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"


def image_header(
    data: bytes, *, min_edges: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> ImageHeader:
    """Read the format and size from the header, without decoding, and check them against ``max_pixels``.

    A camera RAW's header is its preview's. Raises InvalidImageError as decode_image would (``unsupported``,
    ``corrupt``, ``too_large``).
    """
    return _open(camera_preview(data)[0], min_edges, max_pixels)[1]


def decode_image(
    data: bytes,
    *,
    min_edges: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    budget: PixelBudget | None = None,
    box: Box | None = None,
    fit: int | None = None,
) -> Image.Image:
    """Decode encoded image bytes into an RGB image, or raise InvalidImageError with a reason.

    EXIF orientation is applied (a broken EXIF block is ignored), the first frame of an animation
    is used, alpha is composited on white and 16-bit or float data is scaled to 8 bits. A camera RAW gives
    its embedded preview, turned as the camera was held.
    ``min_edges=(shortest, longest)`` lets large JPEGs decode at 1/2, 1/4 or 1/8 scale, and a HEIF decode
    its embedded thumbnail instead, as long as the result keeps at least that shortest and that longest edge.
    The size is read from the header first: more than ``max_pixels`` is refused before anything is
    allocated, and the decode waits its turn in ``budget`` (the process-wide DECODE_BUDGET by default).
    ``box`` keeps only that region (``min_edges`` then applies to the region, so a JPEG drafts only as far
    as the region allows); ``fit`` scales the result down to at most that longest edge. Both happen while
    the decode holds its budget, so only the small result outlives it.
    """
    if not data:
        raise InvalidImageError("empty", "the file is empty")
    if len(data) > max_bytes:
        raise too_big(len(data), max_bytes)
    budget = budget or DECODE_BUDGET
    data, held = camera_preview(data, budget)
    img, header = _open(data, min_edges, max_pixels, box, budget)
    with budget.reserve(header.cost, header.size_text):
        try:
            img.load()
        except Exception as exc:  # Pillow raises many types on malformed files; all mean "corrupt"
            raise _corrupt(exc) from None
        upright = _apply_exif_orientation(img, held)
        return to_rgb(_cut_and_fit(_detach(upright), box, (header.width, header.height), fit))


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as 8-bit RGB, compositing any transparency on white."""
    try:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            img = _to_8bit(img)
        if img.mode == "RGB" and "transparency" not in img.info:
            return img
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            return _on_white(img)
        return img.convert("RGB")
    except Exception:
        raise InvalidImageError("unsupported", f"images in colour mode {img.mode} cannot be used; save it as RGB") from None


def read_image(
    image: ImageInput, *, min_edges: tuple[int, int] | None = None, max_pixels: int = QUERY_MAX_PIXELS,
    box: Box | None = None, fit: int | None = None,
) -> Image.Image:
    """Turn a query image given as a path, bytes or PIL image into RGB, with decode_image's checks
    (``box`` and ``fit`` as there).

    Queries come from the public, so the limit is QUERY_MAX_PIXELS unless the caller says otherwise.
    """
    if isinstance(image, Image.Image):
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImageError("too_large", pixel_limit_message(f"{width}x{height}", max_pixels, width * height))
        with DECODE_BUDGET.reserve(width * height, f"{width}x{height}"):
            try:
                rotated = ImageOps.exif_transpose(image)  # a copy: the caller's image is left alone
            except Exception:
                rotated = image
            return to_rgb(_cut_and_fit(rotated, box, rotated.size, fit))
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), min_edges=min_edges, max_pixels=max_pixels, box=box, fit=fit)
    if isinstance(image, (str, Path)):
        return decode_image(read_file(Path(image)), min_edges=min_edges, max_pixels=max_pixels, box=box, fit=fit)
    raise InvalidImageError("unsupported", f"expected a path, bytes or a PIL image, got {type(image).__name__}")


def read_file(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """Read an image file's bytes, refusing one over ``max_bytes``, or whose first bytes are not an allowed
    format's, before reading the rest (a folder's large non-images named .jpg are neither read nor hashed)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise too_big(size, max_bytes)
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
            if head and format_of(head) is None:
                raise InvalidImageError("unsupported", NOT_AN_IMAGE)
            return head + f.read()
    except OSError as exc:
        raise InvalidImageError("read_error", READ_ERRORS.get(exc.errno or 0, UNREADABLE),
                                internals=f"{path}: {type(exc).__name__}: {exc}") from None


def format_of(head: bytes) -> str | None:
    """The allowed format a file's first bytes announce (``HEAD_BYTES`` of them), or None. A camera RAW built as a
    TIFF (DNG, CR2, NEF...) is "TIFF" here; :func:`camera_preview` tells it apart."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return BRANDS.get(head[8:12])
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


def is_camera_raw(data: bytes) -> bool:
    """Whether ``data`` is a camera RAW, by its content: its own signature or brand (ORF, RW2, RAF, CR3), or a TIFF
    that says so (CR2's marker; DNG's version tag, or a first image marked as a reduced copy, as NEF and ARW have)."""
    return _raw_evidence(data) > 0


def _raw_evidence(data: bytes) -> int:
    """2: ``data`` says it is a camera RAW; 1: a TIFF whose first image is a reduced copy (NEF, ARW, and rare plain
    TIFFs); 0: not a RAW."""
    head = format_of(data[:HEAD_BYTES])
    if head == CAMERA_RAW or (head == "TIFF" and data[8:10] == b"CR"):  # CR2: Canon's marker after the header
        return 2
    if head != "TIFF" or data[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF: no camera writes it
        return 0
    tags = _first_ifd_tags(data, "<" if data[:2] == b"II" else ">")
    return 2 if 50706 in tags else int(bool(tags.get(254, 0) & 1))  # DNGVersion; NewSubFileType's reduced bit


def camera_preview(data: bytes, budget: PixelBudget | None = None) -> tuple[bytes, int]:
    """A camera RAW's embedded preview, as a JPEG (or a bitmap one as an uncompressed TIFF), and the EXIF orientation
    the camera recorded; any other ``data`` as it is, with 1 (upright).

    The RAW is never developed: LibRaw reads its header and copies the preview out, at most the file's own bytes,
    which the extraction holds in ``budget`` meanwhile. A RAW without a preview is ``unsupported``.
    """
    evidence = _raw_evidence(data)
    if not evidence:
        return data, 1
    cost = math.ceil(2 * len(data) / BYTES_PER_PIXEL)  # LibRaw's copy of the preview and Python's
    try:
        with (budget or DECODE_BUDGET).reserve(cost, "this camera RAW file"), rawpy.imread(io.BytesIO(data)) as raw:
            flip = raw.sizes.flip
            thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        raise InvalidImageError("unsupported", "this camera RAW file holds no preview image; export it as JPEG "
                                "from the camera's software and try again") from None
    except rawpy.LibRawFileUnsupportedError:
        if evidence == 1:  # not a camera's after all: a TIFF like any other
            return data, 1
        raise InvalidImageError("corrupt", "the camera RAW file is damaged or incomplete, or from a camera that "
                                "LibRaw does not know") from None
    except InvalidImageError:
        raise
    except Exception as exc:  # LibRaw's many errors on damaged files all mean "corrupt"
        raise _corrupt(exc) from None
    preview = thumb.data
    if thumb.format == rawpy.ThumbFormat.BITMAP:  # an RGB array: into the one decode path, limits and all
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(preview)).save(out, "TIFF")
        preview = out.getvalue()
    return bytes(preview), _LIBRAW_FLIP.get(flip, 1)


def _first_ifd_tags(data: bytes, order: str) -> dict[int, int]:
    """The tags of a TIFF's first IFD with their first value (SHORT or LONG; 0 for other types), read from ``data``."""
    at = struct.unpack_from(f"{order}I", data, 4)[0] if len(data) >= 8 else len(data)
    if at + 2 > len(data):
        return {}
    count = min(struct.unpack_from(f"{order}H", data, at)[0], (len(data) - at - 2) // 12)
    tags: dict[int, int] = {}
    for entry in range(count):
        tag, kind, _, value = struct.unpack_from(f"{order}HHI4s", data, at + 2 + 12 * entry)
        first = {3: "H", 4: "I"}.get(kind)
        tags[tag] = struct.unpack_from(f"{order}{first}", value)[0] if first else 0
    return tags


def make_thumbnail(img: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """Encode a JPEG whose longest side is at most ``size``."""
    thumb = _cut_and_fit(img, None, img.size, size)  # one resize straight from the (drafted) image
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85)
    return out.getvalue()


def _open(data: bytes, min_edges: tuple[int, int] | None, max_pixels: int,
          box: Box | None = None, budget: PixelBudget | None = None) -> tuple[Image.Image, ImageHeader]:
    """The lazily opened image (drafted where allowed: as far as ``box`` keeps ``min_edges``, and never
    to more pixels than ``max_pixels``) and its header, refused if over the limits. A HEIF's draft decodes its
    chosen thumbnail there and then, holding the whole image's cost in ``budget`` meanwhile (the thumbnail is
    smaller; which one is chosen is pillow-heif's to say)."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is replaced by the explicit checks below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise InvalidImageError("corrupt", f"the image has no pixels ({width}x{height})")
            size_text = f"{width}x{height}"
            if width * height > (Image.MAX_IMAGE_PIXELS or math.inf):  # Pillow's bomb limit, at any scale
                raise InvalidImageError("too_large", pixel_limit_message(size_text, max_pixels, width * height))
            if min_edges and img.format in ("JPEG", "MPO"):
                img.draft(None, _draft_size(img.size, min_edges, box, max_pixels))
            elif min_edges and img.format == "HEIF" and img.info.get("thumbnails"):
                with (budget or DECODE_BUDGET).reserve(_cost(img, data, width, height), size_text):
                    img.draft(None, _draft_size(img.size, min_edges, box, max_pixels))
            pixels = img.size[0] * img.size[1]
            cost = _cost(img, data, width, height)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError:
        raise InvalidImageError("too_large", pixel_limit_message("the image", max_pixels)) from None
    except UnidentifiedImageError:
        if format_of(data[:HEAD_BYTES]) in ("AVIF", "HEIF"):  # these decoders read the whole header at open
            raise InvalidImageError("corrupt", "the file is damaged or incomplete (its header could not be read, or "
                                    "it claims a size its decoder refuses)") from None
        raise InvalidImageError("unsupported", NOT_AN_IMAGE) from None
    except Exception as exc:  # Pillow raises many types on malformed files; all mean "corrupt"
        raise _corrupt(exc) from None
    header = ImageHeader(img.format or "", width, height, pixels, cost)
    if pixels > max_pixels:
        drafted = pixels != width * height  # a JPEG counted at its decoded scale: its size in MP would mislead
        raise InvalidImageError("too_large", pixel_limit_message(size_text, max_pixels, None if drafted else pixels))
    if cost > max_pixels * COST_HEADROOM:  # fewer pixels, but a format that needs more memory per pixel
        raise InvalidImageError(
            "too_large", f"{size_text} ({header.format}) needs as much memory to decode as {megapixels(cost)}, over the "
            f"limit of {megapixels(max_pixels * COST_HEADROOM)}; scale it down (or save it as PNG) and try again"
        )
    return img, header


def _cost(img: Image.Image, data: bytes, width: int, height: int) -> int:
    """Peak memory of decoding ``img`` (as opened, after any draft) in units of BYTES_PER_PIXEL bytes."""
    pixels = img.size[0] * img.size[1]
    if img.format in EXTRA_BYTES:
        return math.ceil(pixels * (BYTES_PER_PIXEL + EXTRA_BYTES[img.format]) / BYTES_PER_PIXEL)
    if img.format in ("JPEG", "MPO") and _jpeg_buffers_whole_image(data, getattr(img, "layers", 3)):
        # A progressive or multi-scan JPEG keeps every DCT coefficient of the full-size image (2 bytes
        # per sample) whatever scale it is decoded at.
        layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * 3
        hmax = max(max(h for _, h, _, _ in layers), 1)
        vmax = max(max(v for _, _, v, _ in layers), 1)
        coefficients = sum(
            math.ceil(width * max(h, 1) / hmax / 8) * math.ceil(height * max(v, 1) / vmax / 8) * 64 * 2
            for _, h, v, _ in layers
        )
        return pixels + math.ceil(coefficients / BYTES_PER_PIXEL)
    return pixels


def _jpeg_buffers_whole_image(data: bytes, components: int) -> bool:
    """Whether libjpeg will buffer the whole coefficient image: a progressive frame, or a first scan
    that does not hold every component. True when unsure (the marker walk fails or is cut short)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return True
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker in (0xC2, 0xC6, 0xCA, 0xCE):  # progressive frame
            return True
        if marker == 0xDA:
            return i + 4 >= n or data[i + 4] < components
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return True


def pixel_limit_message(what: str, max_pixels: int, pixels: int | None = None) -> str:
    """The public words for an image over a pixel limit: what it is (its ``pixels`` in MP where they read
    differently from the limit), the limit, what to do."""
    size = f" ({megapixels(pixels)})" if pixels and megapixels(pixels) != megapixels(max_pixels) else ""
    return f"{what}{size} is over the limit of {megapixels(max_pixels)}; scale it down and try again"


def _corrupt(exc: Exception) -> InvalidImageError:
    """The refusal of a file the decoder failed on, in the app's words; the decoder's own go to the log."""
    said = " ".join(str(exc).split())[:200]
    cut_short = isinstance(exc, EOFError) or "truncated" in said.lower()
    return InvalidImageError("corrupt", CUT_SHORT if cut_short else DAMAGED, internals=f"{type(exc).__name__}: {said}")


def _draft_size(size: tuple[int, int], min_edges: tuple[int, int], box: Box | None,
                max_pixels: int) -> tuple[int, int]:
    """The size to ask ``draft`` for: the image (or its ``box``) keeps at least ``min_edges``, unless that
    would decode more than ``max_pixels`` (a small region of a huge photo is then scaled up, not refused)."""
    width, height = size
    shortest, longest = min_edges
    edges = (box[2] - box[0], box[3] - box[1]) if box else size
    scale = min(1.0, max(shortest / max(1, min(edges)), longest / max(1, max(edges))))
    # draft picks a power-of-two scale from the one asked for to twice that: ask for half the most allowed.
    if width * height * min(1.0, 2 * scale) ** 2 > max_pixels:
        scale = math.sqrt(max_pixels / (width * height)) / 2
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _scaled_box(box: Box, size: tuple[int, int], full: tuple[int, int]) -> Box:
    """``box``, given in the upright full image's pixels, in those of the decoded (drafted) image of ``size``."""
    full_width, full_height = full
    if (size[0] >= size[1]) != (full_width >= full_height):  # turned upright by its EXIF orientation
        full_width, full_height = full_height, full_width
    sx, sy = size[0] / full_width, size[1] / full_height
    left, top = max(0, math.floor(box[0] * sx)), max(0, math.floor(box[1] * sy))
    right, bottom = min(size[0], math.ceil(box[2] * sx)), min(size[1], math.ceil(box[3] * sy))
    if right - left < 1 or bottom - top < 1:
        raise QueryError("The region lies outside the image; draw it on the image itself.")
    return left, top, right, bottom


def too_big(size: int, limit: int) -> InvalidImageError:
    """The refusal of a file of ``size`` bytes, over ``limit``, in MB (its size where it reads differently)."""
    shown = f" {data_size(size)}," if data_size(size) != data_size(limit) else ""
    return InvalidImageError("too_large", f"the file is{shown} over the limit of {data_size(limit)}; make it smaller "
                             "and try again", internals=f"{size:,} bytes, over {limit:,}")


def _cut_and_fit(img: Image.Image, box: Box | None, original: tuple[int, int], fit: int | None) -> Image.Image:
    """``box`` (in the ``original`` size's pixels) cut from ``img``, then scaled down to ``fit`` on its longest edge."""
    if box is not None:
        img = img.crop(_scaled_box(box, img.size, original))
    if fit is not None and max(img.size) > fit:
        img = img.resize(_fitted(img.size, fit), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return img


def _fitted(size: tuple[int, int], fit: int) -> tuple[int, int]:
    scale = fit / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _apply_exif_orientation(img: Image.Image, held: int = 1) -> Image.Image:
    """The image turned as its EXIF says, or else as ``held`` (an EXIF orientation: a camera RAW's, for its
    preview); the same object (no copy) when it needs no turning. HEIF comes upright from libheif."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block must not cost the image itself
        orientation = 1
    orientation = orientation if orientation in _UPRIGHT else held
    return img.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else img


def _detach(img: Image.Image) -> Image.Image:
    """A plain image sharing the pixels, so the file object, decoder and buffers behind it can be freed."""
    if isinstance(img, ImageFile.ImageFile):
        return img._new(img.im)
    return img


def _on_white(img: Image.Image) -> Image.Image:
    """Composite on white, a strip at a time: the source and the RGB result, not four full copies."""
    width, height = img.size
    out = Image.new("RGB", img.size)
    step = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, step):
        box = (0, top, width, min(height, top + step))
        rgba = img.crop(box).convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        out.paste(canvas.convert("RGB"), box[:2])
    return out


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float data onto 8 bits (L), a strip at a time."""
    width, height = img.size
    step = max(1, _STRIP_PIXELS // max(width, 1))
    boxes = [(0, top, width, min(height, top + step)) for top in range(0, height, step)]
    peak = np.nan
    for box in boxes:
        strip = np.asarray(img.crop(box), dtype=np.float64)
        if strip.size and not np.isnan(strip).all():
            peak = np.nanmax([peak, np.nanmax(strip)])
    out = np.empty((height, width), np.uint8)
    for box in boxes:
        arr = np.asarray(img.crop(box), dtype=np.float64)
        if img.mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255:
            arr = arr / 257.0  # 16-bit range onto 8 bits
        out[box[1]:box[3]] = np.nan_to_num(arr).clip(0, 255).astype(np.uint8)
    return Image.fromarray(out)
