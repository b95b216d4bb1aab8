"""Uploaded files and zip archives as items, read in memory (nothing is extracted to disk)."""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from .errors import InvalidImageError, SourceError
from .images import MAX_BYTES, read_file
from .sources import Item

MAX_MEMBERS = 2000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # what an archive may claim to unpack to, in all


def upload_items(paths: list[str | Path]) -> Iterator[Item]:
    """Items for uploaded files; a .zip contributes its images (labelled by their folder inside it)."""
    for path in map(Path, paths):
        if zipfile.is_zipfile(path):
            yield from zip_items(path)
        else:
            yield Item(path.name, lambda path=path: read_file(path))


def zip_items(path: Path) -> Iterator[Item]:
    """The files of a zip archive, with member count and claimed sizes capped against zip bombs."""
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)]
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path.name} is not a readable zip archive: {exc}") from exc
    if len(members) > MAX_MEMBERS:
        raise SourceError(f"{path.name} holds {len(members)} files; the limit is {MAX_MEMBERS}")
    if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
        raise SourceError(f"{path.name} would unpack to more than {MAX_TOTAL_BYTES} bytes")
    for member in members:
        parts = PurePosixPath(member.filename).parts
        label = parts[-2] if len(parts) > 1 else None
        yield Item(f"{path.name}/{member.filename}", lambda m=member: _read_member(archive, m), label=label)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    if member.file_size > MAX_BYTES:
        raise InvalidImageError("too_large", f"{member.file_size} bytes is over the limit of {MAX_BYTES}")
    try:
        with archive.open(member) as f:
            data = f.read(MAX_BYTES + 1)  # the header may lie about the size; the read may not
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:  # RuntimeError: encrypted member
        raise InvalidImageError("corrupt", f"{type(exc).__name__}: {exc}") from None
    if len(data) > MAX_BYTES:
        raise InvalidImageError("too_large", f"more than {MAX_BYTES} bytes")
    return data


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)
