"""Thumbnails beside the store: one JPEG per image, content-addressed, shared by every collection."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .ids import image_id as checked_image_id

FOLDER = "thumbnails"


def path(store_folder: Path, image_id: str) -> Path:
    """Where an image's thumbnail lives; only a well-formed id makes a path, so none can leave the folder."""
    image_id = checked_image_id(image_id)
    return Path(store_folder) / FOLDER / image_id[:2] / f"{image_id}.jpg"


def write(store_folder: Path, image_id: str, data: bytes) -> str:
    """Write a thumbnail atomically (once); return its path relative to the store."""
    target = path(store_folder, image_id)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    return target.relative_to(store_folder).as_posix()


def delete(store_folder: Path, image_id: str) -> None:
    """Delete a thumbnail, if it is there."""
    path(store_folder, image_id).unlink(missing_ok=True)
