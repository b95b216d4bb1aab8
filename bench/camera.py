"""Phone and camera files made from real pixels, for the benchmarks and the tests: HEIC, AVIF, and a DNG with an
embedded JPEG preview.

The DNG is written by hand (a little-endian TIFF: IFD0 the raw CFA data, a SubIFD the preview, an EXIF IFD with the
date), the smallest file LibRaw opens as a camera raw; its pixels are never developed, only its preview is read.
"""
from __future__ import annotations

import io
import struct

from PIL import Image

import search.images.decode  # noqa: F401 - registers pillow-heif's opener, which saving HEIF needs too

# TIFF field types: BYTE, ASCII, SHORT, LONG
_BYTE, _ASCII, _SHORT, _LONG = 1, 2, 3, 4
_SIZES = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4}
_FORMATS = {_BYTE: "B", _ASCII: "B", _SHORT: "H", _LONG: "I"}
Entry = tuple[int, int, list[int] | bytes]  # tag, type, values


def exif_block(taken: str | None = None, orientation: int | None = None) -> bytes:
    """EXIF bytes with a capture date ("2021:05:06 07:08:09") and an orientation, as a phone writes them."""
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    return exif.tobytes()


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    """``img`` saved as ``fmt`` (HEIF needs pillow-heif's opener registered, as search.images.decode does)."""
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def claim_size(data: bytes, width: int, height: int) -> bytes:
    """A HEIF or AVIF whose first 'ispe' box (the primary image's size, as libheif and libavif write them) claims
    ``width`` x ``height``: a bomb by header, with the file's real small pixels (and any thumbnail) behind it.
    The image's own edges must need no padding by its encoder (HEVC: multiples of 64 are safe), or its 'clap' box
    crops the claim back down."""
    at = data.index(b"ispe") + 8  # after the box's type, version and flags
    return data[:at] + struct.pack(">II", width, height) + data[at + 8:]


def dng(preview: Image.Image, *, taken: str | None = None, orientation: int = 1, raw_size: tuple[int, int] = (64, 48),
        preview_jpeg: bytes | None = None) -> bytes:
    """A DNG whose raw data is a flat ``raw_size`` Bayer mosaic and whose preview is ``preview`` as a JPEG (or the
    ``preview_jpeg`` bytes as they are), with its capture date in an EXIF IFD and its ``orientation`` in IFD0."""
    jpeg = preview_jpeg if preview_jpeg is not None else encode(preview.convert("RGB"), "JPEG", quality=90)
    width, height = raw_size
    cfa = bytes(width * height * 2)  # 16-bit samples, all black: no one develops them
    layout = _Layout()
    cfa_at, jpeg_at = layout.blob(cfa), layout.blob(jpeg)
    date = (taken or "").encode() + b"\0"
    exif_ifd = layout.ifd([(0x9003, _ASCII, date)] if taken else [])
    preview_ifd = layout.ifd([
        (254, _LONG, [1]), (256, _LONG, [preview.width]), (257, _LONG, [preview.height]), (258, _SHORT, [8, 8, 8]),
        (259, _SHORT, [7]), (262, _SHORT, [6]), (273, _LONG, [jpeg_at]), (277, _SHORT, [3]),
        (278, _LONG, [preview.height]), (279, _LONG, [len(jpeg)]),
    ])
    layout.ifd([
        (254, _LONG, [0]), (256, _LONG, [width]), (257, _LONG, [height]), (258, _SHORT, [16]), (259, _SHORT, [1]),
        (262, _SHORT, [32803]), (271, _ASCII, b"Canon\0"), (272, _ASCII, b"Canon EOS 5D Mark IV\0"),
        (273, _LONG, [cfa_at]), (274, _SHORT, [orientation]), (277, _SHORT, [1]), (278, _LONG, [height]),
        (279, _LONG, [len(cfa)]), (284, _SHORT, [1]), (330, _LONG, [preview_ifd]), (33421, _SHORT, [2, 2]),
        (33422, _BYTE, bytes([0, 1, 1, 2])), (34665, _LONG, [exif_ifd]), (50706, _BYTE, bytes([1, 4, 0, 0])),
        (50708, _ASCII, b"Canon EOS 5D Mark IV\0"), (50717, _LONG, [65535]),
    ], first=True)
    return layout.bytes()


class _Layout:
    """A little-endian TIFF built front to back: blobs and IFDs appended, offsets known as they are placed."""

    def __init__(self) -> None:
        self._out = bytearray(b"II*\0\0\0\0\0")  # the first IFD's offset is patched in by ifd(first=True)

    def blob(self, data: bytes) -> int:
        if len(self._out) % 2:
            self._out += b"\0"
        at = len(self._out)
        self._out += data
        return at

    def ifd(self, entries: list[Entry], first: bool = False) -> int:
        """Place an IFD (its values that do not fit in 4 bytes right after it) and return its offset."""
        entries = sorted(entries)
        at = self.blob(b"")
        table_end = at + 2 + 12 * len(entries) + 4
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag, kind, values in entries:
            raw = bytes(values) if isinstance(values, bytes) else struct.pack(f"<{len(values)}{_FORMATS[kind]}", *values)
            count = len(raw) // _SIZES[kind]
            if len(raw) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
            else:
                table += struct.pack("<HHII", tag, kind, count, table_end + len(extra))
                extra += raw + b"\0" * (len(raw) % 2)
        self._out += table + b"\0\0\0\0" + extra
        if first:
            self._out[4:8] = struct.pack("<I", at)
        return at

    def bytes(self) -> bytes:
        return bytes(self._out)
