"""Uploaded files and zip archives as items, read in memory (nothing is extracted to disk).

Each item checks its image's header when it is read: one over the per-image limit is skipped as
``too_large`` before it is decoded, and all the images of one upload share a total pixel budget: each
file is charged once, however often it is read, and a file that no longer fits is skipped as
``too_large`` while the ones that fit are indexed.
"""
from __future__ import annotations

import re
import threading
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from search.core.units import data_size, megapixels
from search.errors import InvalidImageError, SourceError
from search.images.decode import MAX_BYTES, QUERY_MAX_PIXELS, image_header, pixel_limit_message, read_file, too_big
from search.sources.base import Item

MAX_MEMBERS = 2000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # what an archive may claim to unpack to, in all
MAX_NAME_CHARS = 255
# Each image of an upload: the same limit as a query.
UPLOAD_MAX_PIXELS = QUERY_MAX_PIXELS
# All images of one upload (every file and zip member) together, counted at the size they decode at.
# 500 phone photos as JPEG decode at 0.2 MP each for a 224-pixel model (100 MP); twenty 16 MP BMPs,
# 1 MB zipped, would be 320 MP and about 1 GB of bytes for the build to hold: eight of them pass.
ARCHIVE_MAX_PIXELS = 128_000_000
# JPEGs are counted at the scale decoding will draft them to for a model with these input edges
# (CLIP's 224); pass the embedder's own ``min_edges`` where it is known.
UPLOAD_MIN_EDGES = (224, 256)
PEEK_BYTES = 64 * 1024  # enough for the header of a PNG, BMP, GIF and most JPEGs
_INVISIBLE = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")  # direction marks, line breaks


class PixelAllowance:
    """A total of decoded pixels for one upload, spent image by image, from any thread."""

    def __init__(self, total: int | None):
        self.total = total
        self.used = 0
        self._charged: set[str] = set()
        self._lock = threading.Lock()

    def charge(self, key: str, pixels: int) -> None:
        """Spend ``pixels`` on the file ``key`` (once, however often it is read), or raise ``too_large``."""
        total = self.total
        if total is None:
            return
        with self._lock:
            if key in self._charged:
                return
            if self.used + pixels > total:
                raise InvalidImageError("too_large", f"the images of this upload add up to more than {megapixels(total)}, "
                                        "the most one upload may decode; this file was skipped: add it in another upload")
            self.used += pixels
            self._charged.add(key)


def upload_items(
    paths: list[str | Path],
    *,
    max_pixels: int = UPLOAD_MAX_PIXELS,
    total_pixels: int | None = ARCHIVE_MAX_PIXELS,
    min_edges: tuple[int, int] | None = UPLOAD_MIN_EDGES,
) -> Iterator[Item]:
    """Items for uploaded files; a .zip contributes its images (labelled by their folder inside it).

    Every image is held to ``max_pixels`` and all of them together to ``total_pixels`` (None: no total).
    """
    admission = Admission(max_pixels, min_edges, PixelAllowance(total_pixels))
    for path in map(Path, paths):
        if zipfile.is_zipfile(path):
            yield from zip_items(path, admission)
        else:
            yield Item(path.name, partial(_read_upload, path, admission))


@dataclass(frozen=True)
class Admission:
    """What lets an upload's image in: at most ``max_pixels`` as decoded (JPEGs drafted to ``min_edges``, the
    model's input), and its share of the upload's pixel ``allowance``."""

    max_pixels: int
    min_edges: tuple[int, int] | None
    allowance: PixelAllowance

    def check_head(self, head: bytes, key: str) -> None:
        """Refuse early when the first bytes already show too many pixels, for the image or for the upload's
        allowance (charged here, once); anything else waits for the whole file."""
        try:
            header = image_header(head, min_edges=self.min_edges, max_pixels=1 << 62)
        except InvalidImageError as exc:
            if exc.reason == "too_large":  # Pillow's own bomb limit
                raise
            return
        if header.pixels > self.max_pixels:
            whole = header.pixels == header.width * header.height  # not a JPEG counted at its decoded scale
            raise InvalidImageError("too_large", pixel_limit_message(header.size_text, self.max_pixels,
                                                                     header.pixels if whole else None))
        self.allowance.charge(key, header.pixels)

    def admit(self, data: bytes, key: str) -> bytes:
        """The bytes, once the header is within the per-image limit and the upload's total."""
        try:
            header = image_header(data, min_edges=self.min_edges, max_pixels=self.max_pixels)
        except InvalidImageError as exc:
            if exc.reason == "too_large":
                raise
            return data  # not an image, or a damaged one: decoding gives the reason, as for any other file
        self.allowance.charge(key, header.pixels)
        return data


def zip_items(path: Path, admission: Admission) -> Iterator[Item]:
    """The files of a zip archive, with member count, claimed sizes, names and pixels capped."""
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path.name} is not a readable zip archive; zip the images again",
                          internals=f"{path}: {type(exc).__name__}: {exc}") from None
    if len(members) > MAX_MEMBERS:
        raise SourceError(f"{path.name} holds {len(members):,} files; the limit is {MAX_MEMBERS:,}: split it in parts")
    if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
        raise SourceError(f"{path.name} would unpack to more than {data_size(MAX_TOTAL_BYTES)}; split it in parts")
    for number, member in enumerate(members, 1):
        problem = unsafe_member_name(member.filename)
        if problem:
            detail = f"file {number} in {path.name} {problem}; rename it and zip the folder again"
            yield Item(f"{path.name}/(file {number})", partial(_refuse, "unsupported", detail))
            continue
        if _hidden(member.filename):
            continue
        parts = PurePosixPath(member.filename).parts
        label = "/".join(parts[:-1]) or None  # the folder inside the zip, as a folder build labels it
        key = f"{path}/{member.filename}"
        yield Item(f"{path.name}/{member.filename}",
                   partial(_read_member, archive, member, key, admission), label=label)


def unsafe_member_name(name: str) -> str | None:
    """Why a name inside an archive cannot be used (shown to people, stored as metadata), or None."""
    if len(name) > MAX_NAME_CHARS:
        return f"has a name of {len(name)} characters, over the limit of {MAX_NAME_CHARS}"
    if any(unicodedata.category(c) == "Cc" for c in name) or _INVISIBLE.search(name):
        return "has control characters in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is named by an absolute path"
    if ".." in name.split("/"):
        return "has '..' in its name"
    return None


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, key: str, admission: Admission) -> bytes:
    if member.file_size > MAX_BYTES:
        raise too_big(member.file_size, MAX_BYTES)
    try:
        with archive.open(member) as f:
            head = f.read(PEEK_BYTES)
            admission.check_head(head, key)  # the rest is not read for a refused image
            data = head + f.read(MAX_BYTES + 1 - len(head))  # the header may lie about the size; the read may not
    except NotImplementedError as exc:  # a compression method zipfile cannot read
        raise InvalidImageError("unsupported", "the file is compressed in a way that cannot be read; zip it again",
                                internals=f"{key}: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, EOFError) as exc:  # RuntimeError: encrypted member
        raise InvalidImageError("corrupt", "the file is damaged or encrypted inside the zip archive",
                                internals=f"{key}: {type(exc).__name__}: {exc}") from None
    if len(data) > MAX_BYTES:
        raise too_big(len(data), MAX_BYTES)
    return admission.admit(data, key)


def _read_upload(path: Path, admission: Admission) -> bytes:
    return admission.admit(read_file(path), str(path))


def _refuse(reason: str, detail: str) -> bytes:
    raise InvalidImageError(reason, detail)


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)
