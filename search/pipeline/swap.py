"""A model swap's first half: every image of a collection embedded again with another model into its shadow
(NAME.next, same ids and metadata) while the collection itself goes on answering (the command line then
compares both with ``search.evaluate``).

Each image is read from its original file where that file still holds the same bytes (the id is their
hash), else from its stored thumbnail; the report says how many came from each, and, for images it has
both of, how far the thumbnail's vector agrees with the original's under the new model. A re-run after a
kill embeds only what the shadow lacks. ``stores.swaps`` does the switch and the rollback.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.core.ids import content_id
from search.core.record import SOURCE, THUMBNAIL, RecordMeta, model_name
from search.embedders.base import Embedder
from search.errors import InvalidImageError
from search.images.decode import decode_image, read_file
from search.pipeline.build import Writing
from search.stores import thumbnails
from search.stores.base import ModelInfo, Record
from search.stores.store import Store
from search.stores.swaps import check, next_name

AGREEMENT_SAMPLE = 32  # images embedded from both their original and their thumbnail, to say how far they agree


@dataclass
class ReembedReport:
    """What a re-embedding did."""

    collection: str
    shadow: str
    model: str
    images: int = 0  # in the collection
    embedded: int = 0  # by this run
    already: int = 0  # in the shadow from an earlier, interrupted run (kept only if still in the collection)
    dropped: int = 0  # in the shadow from an earlier run, but deleted from the collection since
    from_original: int = 0
    from_thumbnail: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # neither could be read
    thumbnail_agreement: float | None = None  # mean cosine, thumbnail's vector to the original's
    agreement_images: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_visitor(self) -> dict[str, Any]:
        """What an album's owner is told: counts and the model by its name only (no collection names)."""
        return {"images": self.images, "reembedded": self.embedded, "from_thumbnail": self.from_thumbnail,
                "model": model_name(self.model), "seconds": round(self.seconds, 1)}

    def summary(self) -> str:
        """A few lines for the person who ran it."""
        lines = [f"Re-embedded {self.embedded:,} of {self.images:,} images of {self.collection!r} with {self.model} "
                 f"into {self.shadow!r} in {self.seconds:.1f} s ({self.already:,} were there from an earlier run)."]
        lines.append(f"{self.from_original:,} read from their original files, {self.from_thumbnail:,} from their "
                     "stored thumbnails (originals moved, changed, or not files: datasets and URLs).")
        if self.thumbnail_agreement is not None:
            lines.append(f"Thumbnail against original, {self.agreement_images} images: mean cosine "
                         f"{self.thumbnail_agreement:.4f}.")
        if self.failed:
            lines.append(f"{len(self.failed)} could not be read at all and are not in {self.shadow!r}.")
        return "\n".join(lines)


def reembed(store: Store, name: str, embedder: Embedder, batch_size: int = 32,
            on_progress: Callable[[int, int], None] | None = None, writing: Writing = nullcontext) -> ReembedReport:
    """Fill NAME.next with every image of ``name`` embedded by ``embedder``; the caller holds the write lock, or
    ``writing`` takes it around each write (as ``build_index``'s does), reading and embedding outside it."""
    start = time.perf_counter()
    check(name)
    live = store.open(name)
    with writing():
        shadow = store.open_or_create(next_name(name), ModelInfo.of(embedder),
                                      source=live.metadata.get(SOURCE, ""))
    records = live.scan_metadata()
    report = ReembedReport(name, shadow.name, embedder.name, images=len(records))
    held = {i for i, _ in records}
    there = set(shadow.all_ids())
    with writing():
        report.dropped = len(store.remove(shadow, sorted(there - held)))  # deleted from NAME since an earlier run
    todo = [(i, m) for i, m in records if i not in there]
    report.already = len(records) - len(todo)
    agreement: list[float] = []
    for begin in range(0, len(todo), batch_size):
        batch = todo[begin:begin + batch_size]
        ready: list[tuple[str, RecordMeta, Image.Image]] = []
        for image_id, metadata in batch:
            original = _original(metadata, image_id, embedder.min_edges)
            sampled = original is not None and len(agreement) < AGREEMENT_SAMPLE
            thumbnail = _thumbnail(store.folder, image_id, metadata, embedder.min_edges) if original is None or sampled else None
            picture = original or thumbnail
            if picture is None:
                report.failed.append({"id": image_id, "source": metadata.get(SOURCE, "")})
                continue
            if original is None:
                report.from_thumbnail += 1
            else:
                report.from_original += 1
                if thumbnail is not None:
                    rows = embedder.embed_images([embedder.prepare(original), embedder.prepare(thumbnail)])
                    agreement.append(float(rows[0] @ rows[1]))
            ready.append((image_id, metadata, embedder.prepare(picture)))
        if ready:
            vectors = embedder.embed_images([picture for _, _, picture in ready], batch_size=batch_size)
            with writing():
                store.add(shadow, [Record(i, v, m) for (i, m, _), v in zip(ready, vectors, strict=True)], {})
            report.embedded += len(ready)
        if on_progress:
            on_progress(report.already + begin + len(batch), len(records))
    if agreement:
        report.thumbnail_agreement, report.agreement_images = round(float(np.mean(agreement)), 4), len(agreement)
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def _original(metadata: RecordMeta, image_id: str, min_edges: tuple[int, int]) -> Image.Image | None:
    """The image from its original file, if that file still holds the bytes it was stored from."""
    source = metadata.get(SOURCE, "")
    if not Path(source).is_absolute():  # a dataset row or a URL: not read again
        return None
    return _decoded(Path(source), min_edges, image_id)


def _thumbnail(folder: Path, image_id: str, metadata: RecordMeta, min_edges: tuple[int, int]) -> Image.Image | None:
    """The image's stored thumbnail, where its record names one and the store still holds it."""
    data = thumbnails.read(folder, image_id) if metadata.get(THUMBNAIL) else None
    return _decoded(data, min_edges) if data is not None else None


def _decoded(data: bytes | Path, min_edges: tuple[int, int], image_id: str | None = None) -> Image.Image | None:
    """The image in ``data`` or the file at it (only if its bytes are still those of ``image_id``, where one is
    given), or None."""
    try:
        data = read_file(data) if isinstance(data, Path) else data
        return decode_image(data, min_edges=min_edges) if image_id is None or content_id(data) == image_id else None
    except InvalidImageError:
        return None
