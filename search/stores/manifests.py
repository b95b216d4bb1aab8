"""Manifests beside the store: which files a build saw (size, mtime, id), so a re-run reads only changes."""
from __future__ import annotations

import json
from pathlib import Path

from search.core.atomic import write_atomically

FOLDER = "manifests"
Manifest = dict[str, list]  # source -> [size, mtime_ns, image id]


def load(store_folder: Path, name: str) -> Manifest:
    """What earlier builds saw; a cache only, so a damaged one just costs a re-read."""
    try:
        return json.loads(_path(store_folder, name).read_text())
    except (OSError, ValueError):
        return {}


def save(store_folder: Path, name: str, manifest: Manifest) -> None:
    """Write the manifest atomically."""
    target = _path(store_folder, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(manifest))


def _path(store_folder: Path, name: str) -> Path:
    return Path(store_folder) / FOLDER / f"{name}.json"
