"""The indexing pipeline's stages, as plain functions over a batch: identify, prepare, embed, write, sync.

Each takes what it works on and returns what it made and an ``Outcome`` (counts, skips, manifest entries)
for the runner to merge into the report; none reads or changes a run's shared state. ``identify`` and
``prepare`` take a ``map`` to fan their items out with (a thread pool's here; the engine decides), which is
the shape a distributed engine's ``map_batches`` takes. Which images a run still needs (exact duplicates,
what the store holds) is the runner's to say between them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from search.core.dates import date_in_name, seconds_of
from search.core.duplicates import Nearest, find_near_duplicates
from search.core.ids import content_id
from search.core.record import CAPTION, LABEL, PHOTO_TEXT, SOURCE, TAKEN, RecordMeta
from search.embedders.base import Embedder, Inputs
from search.errors import InvalidImageError
from search.images import ocr
from search.images.decode import decode_image, make_thumbnail
from search.images.metadata import read_facts
from search.sources.base import Item
from search.stores import manifests, thumbnails
from search.stores.base import Collection, Record
from search.stores.keywords import file_name
from search.stores.store import Store

log = logging.getLogger(__name__)
KEEP_BYTES = 4 * 1024 * 1024  # per image, between hashing and decoding (32 images: 128 MB at most)
Map = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]  # builtin map, or an executor's


@dataclass(frozen=True)
class Identified:
    """An item with its image's id, and its bytes where they are kept until decoding (None: read again)."""

    item: Item
    image_id: str
    data: bytes | None


@dataclass(frozen=True)
class Ready:
    """An image past decoding: the model's input, the thumbnail, and what its file says of it."""

    item: Item
    image_id: str
    image: Image.Image
    thumbnail: bytes
    facts: RecordMeta = field(default_factory=RecordMeta)  # what the file says: photo_text, taken, ocr
    data: bytes | None = None  # the file's bytes, kept only for a stage that reads them again (OCR)


@dataclass
class Outcome:
    """What a stage did to one batch, for the run's report."""

    indexed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    manifest: manifests.Manifest = field(default_factory=dict)  # source -> [size, mtime_ns, id] of files seen
    failed: list[str] = field(default_factory=list)  # ids whose image could not be used after all


def identify(items: list[Item], known: manifests.Manifest, map: Map = map) -> tuple[list[Identified], Outcome]:
    """Each item's image id: from the manifest of earlier builds where the file is unchanged (not read), else
    by hashing its bytes. Unreadable and empty items are skipped with their reason."""
    outcome = Outcome()
    found: list[Identified] = []
    for item, result in zip(items, map(lambda item: _identify(item, known), items)):
        if isinstance(result, InvalidImageError):
            outcome.skipped.append(_skip(item, result))
            continue
        if item.fingerprint:
            outcome.manifest[item.source] = [*item.fingerprint, result.image_id]
        found.append(result)
    return found, outcome


def _identify(item: Item, known: manifests.Manifest) -> Identified | InvalidImageError:
    seen = known.get(item.source)
    if item.fingerprint and seen and tuple(seen[:2]) == item.fingerprint:
        return Identified(item, seen[2], None)
    try:
        data = item.read()
    except InvalidImageError as exc:
        return exc
    if not data:
        return InvalidImageError("empty", "no bytes")
    # A batch holds its images' bytes from hashing to decoding: large files are read again instead.
    keep = len(data) <= KEEP_BYTES or not item.rereadable
    return Identified(item, content_id(data), data if keep else None)


def prepare(todo: list[Identified], inputs: Inputs, map: Map = map, *,
            keep_data: bool = False) -> tuple[list[Ready], Outcome]:
    """Decode (drafted to the model's input), scale for the model (``inputs``: the embedder, or its input steps
    alone), make the thumbnail and read the file's own description, keywords and capture date (else a date in its
    name); bad images are skipped with their reason (and listed in ``failed``). ``keep_data``: keep each file's
    bytes for ``read_texts``."""
    outcome = Outcome()
    ready: list[Ready] = []
    for one, result in zip(todo, map(lambda one: _prepare(one, inputs, keep_data), todo)):
        if isinstance(result, InvalidImageError):
            outcome.skipped.append(_skip(one.item, result))
            outcome.failed.append(one.image_id)
        else:
            ready.append(result)
    return ready, outcome


def _prepare(one: Identified, inputs: Inputs, keep_data: bool) -> Ready | InvalidImageError:
    try:
        data = one.data if one.data is not None else one.item.read()
        img = decode_image(data, min_edges=inputs.min_edges)
        return Ready(one.item, one.image_id, inputs.prepare(img), make_thumbnail(img), _facts(data, one.item.source),
                     data if keep_data else None)
    except InvalidImageError as exc:
        return exc


def read_texts(ready: list[Ready], map: Map = map) -> list[Ready]:
    """The text inside each image (Tesseract, bounded in time per image: ``images.ocr``), in its ``facts``
    (``ocr``); the bytes ``prepare`` kept for it are let go."""
    texts = list(map(lambda r: ocr.read_text(r.data) if r.data is not None else "", ready))
    return [replace(r, facts=r.facts | RecordMeta(ocr=text) if text else r.facts, data=None) for r, text in zip(ready, texts)]


def _facts(data: bytes, source: str) -> RecordMeta:
    """What an image's file says of it, as record metadata: its description and keywords (``photo_text``) and
    when it was taken (``taken``, seconds: the camera's date, else one in the file's name, else none)."""
    facts = read_facts(data)
    out = RecordMeta()
    if facts.text:
        out[PHOTO_TEXT] = facts.text
    taken = facts.taken or date_in_name(file_name(source))
    if taken is not None:
        out[TAKEN] = seconds_of(taken)
    return out


def embed(ready: list[Ready], embedder: Embedder, batch_size: int, precision: str) -> np.ndarray:
    """The batch's vectors, one row per image, at ``precision``."""
    return embedder.embed_images([r.image for r in ready], batch_size=batch_size, precision=precision)


def write(store: Store, collection: Collection, ready: list[Ready], vectors: np.ndarray,
          near_duplicates: float | None) -> Outcome:
    """Store the batch (records and thumbnails together), noting the near-duplicates of stored images or of
    earlier ones in the batch where ``near_duplicates`` (a cosine similarity) is given."""
    outcome = Outcome(indexed=len(ready))
    if near_duplicates:
        stored: list[Nearest | None] = [None] * len(ready)
        if collection.count():
            for i, found in enumerate(collection.nearest(vectors, 1)):
                if found and found[0].id != ready[i].image_id:
                    stored[i] = (found[0].id, found[0].metadata.get(SOURCE, ""), found[0].similarity)
        outcome.near_duplicates = find_near_duplicates([r.image_id for r in ready], [r.item.source for r in ready],
                                                       vectors, stored, near_duplicates)
    records = [Record(r.image_id, vector, _metadata(r)) for r, vector in zip(ready, vectors)]
    store.add(collection, records, {r.image_id: r.thumbnail for r in ready})
    return outcome


def sync(store: Store, collection: Collection, root: str, current: set[str]) -> int:
    """Remove the records from under ``root`` whose image the source no longer holds; how many went."""
    prefix = root.rstrip("/") + "/"
    stale = [i for i, m in collection.scan_metadata() if m.get(SOURCE, "").startswith(prefix) and i not in current]
    return len(store.remove(collection, stale))


def _skip(item: Item, error: InvalidImageError) -> dict[str, str]:
    """The report's note on a skipped file: the error's own words; what the decoder or the system said goes to
    the log."""
    if error.internals:
        log.info("skipped %s: %s", item.source, error.for_operator())
    return {"source": item.source, "reason": error.reason, "detail": error.detail}


def _metadata(r: Ready) -> RecordMeta:
    meta = RecordMeta(source=r.item.source, thumbnail=thumbnails.relative(r.image_id), added_at=int(time.time()))
    if r.item.label:
        meta[LABEL] = r.item.label
    if r.item.caption:
        meta[CAPTION] = r.item.caption
    return meta | r.facts
