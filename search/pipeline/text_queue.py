"""Text inside images read after the images are searchable (a visitor's album): copies at OCR size wait in
the store folder and one background reader turns them into each record's "ocr" words.

Why a queue on disk: Tesseract takes about a second an image here, so an upload that waited for it would
keep its visitor minutes; the uploaded files are deleted once read, so what OCR needs must be kept; and a
kill must not lose the work, so the next start reads what is left. A copy is at most ``ocr.MAX_EDGE``
pixels on its long side (a few hundred KB), written under a temporary name and renamed; an image deleted
or an album dropped before its turn is skipped and its copy removed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from search.core.ids import is_image_id, name_key
from search.core.record import RecordMeta
from search.errors import InvalidImageError, StoreError
from search.images import ocr
from search.images.decode import MAX_PIXELS, read_image
from search.pipeline.stages import Map, Ready
from search.stores.base import Record
from search.stores.store import Store

log = logging.getLogger(__name__)
FOLDER = "text-queue"
NAME_FILE = "collection"  # in each collection's folder: the collection's name (folders are named by its hash)
TEMPORARY = ".part"


def folder_of(store: Store, collection: str) -> Path:
    """Where a collection's waiting copies are."""
    return store.folder / FOLDER / name_key(collection)


def copies(ready: list[Ready], map: Map = map) -> list[Ready]:
    """``ready`` with the bytes ``prepare`` kept replaced by each image's OCR-sized copy (a JPEG), for ``enqueue``;
    decoding and encoding happen here, on the decoding threads, so that writing a batch only saves the copies."""
    made = list(map(lambda r: _copy(r.data) if r.data is not None else None, ready))
    return [replace(r, data=data) for r, data in zip(ready, made)]


def _copy(data: bytes) -> bytes | None:
    try:
        image = read_image(data, min_edges=(0, ocr.MAX_EDGE), max_pixels=MAX_PIXELS, fit=ocr.MAX_EDGE)
    except InvalidImageError:
        return None  # it decoded for the model a moment ago; a copy that cannot be made is no text to read
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=92)
    return out.getvalue()


def enqueue(store: Store, collection: str, ready: list[Ready]) -> int:
    """Keep the copies ``copies`` made (once their records are written: a copy without one is dropped unread);
    how many were queued."""
    folder = folder_of(store, collection)
    queued = 0
    for r in ready:
        if r.data is None:
            continue
        if not queued:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / NAME_FILE).write_text(collection, encoding="utf-8")
        part = folder / f"{r.image_id}.jpg{TEMPORARY}"
        part.write_bytes(r.data)
        os.replace(part, folder / f"{r.image_id}.jpg")
        queued += 1
    return queued


def waiting(store: Store) -> int:
    """How many copies wait to be read, in every collection."""
    root = store.folder / FOLDER
    return sum(1 for _ in root.glob("*/*.jpg")) if root.is_dir() else 0


def drain(store: Store, writing: Callable[[], AbstractContextManager[object]],
          stop: Callable[[], bool] = lambda: False) -> int:
    """Read the text in every waiting copy into its record's "ocr" metadata and its words, oldest first;
    ``writing`` holds whatever must be held to change the store (the albums' lock and the write lock), only
    around each write, so searches and uploads go on meanwhile. Stops early where ``stop()`` says so.
    Returns how many records got text."""
    root = store.folder / FOLDER
    if not root.is_dir():
        return 0
    done = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for leftover in folder.glob(f"*{TEMPORARY}"):
            leftover.unlink(missing_ok=True)  # a copy a kill cut short: its record stays without text
        try:
            name = (folder / NAME_FILE).read_text(encoding="utf-8")
        except OSError:
            name = ""
        copies = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime_ns)
        for copy in copies:
            if stop():
                return done
            done += _read_one(store, name, copy, writing)
        # Emptied: the folder goes (a new upload makes it again), under ``writing`` as ``enqueue`` runs, which may
        # be filling it again meanwhile.
        with contextlib.suppress(OSError, StoreError), writing():
            if not any(folder.glob("*.jpg")):
                (folder / NAME_FILE).unlink(missing_ok=True)
                folder.rmdir()
    return done


def _read_one(store: Store, name: str, copy: Path, writing: Callable[[], AbstractContextManager[object]]) -> int:
    image_id = copy.stem
    try:  # deleted, or its album dropped, while it waited: no reading for nobody
        held = bool(name) and is_image_id(image_id) and name in store.names() and bool(store.open(name).held([image_id]))
    except StoreError as exc:
        log.info("text in an image not read now: %s", exc.for_operator())
        return 0
    text = ocr.read_text(copy.read_bytes()) if held else ""
    wrote = 0
    if text:
        try:
            with writing():
                if name in store.names():
                    collection = store.open(name)
                    meta = collection.metadatas([image_id]).get(image_id)
                    vector = collection.vectors([image_id]).get(image_id)
                    if meta is not None and vector is not None:
                        store.add(collection, [Record(image_id, vector, meta | RecordMeta(ocr=text))], {})
                        wrote = 1
        except StoreError as exc:  # the store went away or is busy: the copy stays for the next try
            log.info("text in an image not stored now: %s", exc.for_operator())
            return 0
    copy.unlink(missing_ok=True)
    return wrote
