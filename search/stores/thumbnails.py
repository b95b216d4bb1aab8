"""Thumbnails beside the store: one JPEG per image, content-addressed, shared by every collection."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from search.core.ids import image_id as checked_image_id

FOLDER = "thumbnails"
TEMPORARY = ".tmp"  # the suffix of a thumbnail being written


def path(store_folder: Path, image_id: str) -> Path:
    """Where an image's thumbnail lives; only a well-formed id makes a path, so none can leave the folder."""
    image_id = checked_image_id(image_id)
    return Path(store_folder) / FOLDER / image_id[:2] / f"{image_id}.jpg"


def relative(image_id: str) -> str:
    """The thumbnail's path relative to the store folder, as records keep it."""
    return path(Path("."), image_id).as_posix()


def write(store_folder: Path, image_id: str, data: bytes) -> bool:
    """Write a thumbnail atomically, once; whether this call made it (False: it was there already)."""
    target = path(store_folder, image_id)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=TEMPORARY)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def stored(store_folder: Path) -> list[Path]:
    """Every file in the thumbnails folder: thumbnails, and temporary files a killed writer left."""
    root = Path(store_folder) / FOLDER
    return [Path(entry.path) for sub in _entries(root) if sub.is_dir(follow_symlinks=False)
            for entry in _entries(Path(sub.path)) if entry.is_file(follow_symlinks=False)]


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError:  # no thumbnails yet
        return []


def read(store_folder: Path, image_id: str) -> bytes | None:
    """The image's thumbnail, or None where it is not stored."""
    try:
        return path(store_folder, image_id).read_bytes()
    except FileNotFoundError:
        return None


def exists(store_folder: Path, image_id: str) -> bool:
    """Whether the image's thumbnail is stored."""
    return path(store_folder, image_id).exists()


def delete(store_folder: Path, image_id: str) -> None:
    """Delete a thumbnail, if it is there."""
    path(store_folder, image_id).unlink(missing_ok=True)
