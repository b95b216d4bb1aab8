"""Where images come from: a folder, a dataset (Hub name, parquet or save_to_disk folder)."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from search.errors import SourceError
from search.images.decode import read_file

IMAGE_COLUMNS = ("image", "img", "picture", "photo", "images")
LABEL_COLUMNS = ("label", "labels", "class", "category", "articleType", "subCategory", "masterCategory")
CAPTION_COLUMNS = ("caption", "captions", "text", "title", "description", "productDisplayName", "sentences", "name")
DATA_FILE_SUFFIXES = (".parquet", ".arrow")
# What a folder build reads: files named as images of the decoder's formats, phones' HEIC and AVIF and cameras' RAW
# (read through their preview) included; the content, not the name, then decides how each is decoded. Anything else
# is listed in the report as not an image, without being read or hashed (a photo folder often holds far more).
IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".gif", ".webp", ".bmp", ".dib",
                            ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif", ".dng", ".cr2", ".cr3", ".nef",
                            ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw", ".rwl", ".3fr",
                            ".iiq", ".erf", ".kdc", ".dcr", ".mrw", ".x3f"))


@dataclass(frozen=True)
class Item:
    """One image to index: where it came from, how to get its bytes, and what is known of it."""

    source: str
    read: Callable[[], bytes]
    label: str | None = None
    caption: str | None = None
    fingerprint: tuple[int, int] | None = None  # (size, mtime_ns) of a file, to skip re-reading it
    rereadable: bool = True  # whether a second read gives the same bytes cheaply (a download does not)


@dataclass
class Source:
    """An iterable of items with a description for the store's metadata and, where known, a length."""

    description: str
    items: Iterator[Item]
    total: int | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # files not read at all (not images), as reported


def open_source(
    source: str,
    *,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> Source:
    """Open a folder of images, a saved or parquet dataset, or a dataset on the Hub by name. ``name``: what to
    call a dataset opened from elsewhere (a Hub dataset from its copy in the local cache), so that its
    description and its items' sources are the same as where it is read from the Hub."""
    path = Path(source).expanduser()
    columns = dict(image_column=image_column, label_column=label_column, caption_column=caption_column)
    if path.is_dir() and not _is_dataset_folder(path):
        path = path.resolve()  # sources are stored as absolute paths, so re-runs and --sync match them
        files = folder_files(path)
        images = [f for f in files if is_image_file(f)]
        total = len(images) if limit is None else min(limit, len(images))
        skipped = [{"source": str(f), "reason": "unsupported", "detail": f"not an image file ({f.suffix or 'no suffix'}); "
                    "not read"} for f in files if not is_image_file(f)]
        return Source(str(path), islice(folder_items(path, images), limit), total, skipped)
    dataset = _load_dataset(source, path, split)
    items = dataset_items(dataset, name or source, split, **columns)
    return Source(f"{name or source} [{split}]", islice(items, limit), limit)


def folder_files(root: Path) -> list[Path]:
    """Every regular, non-hidden file below ``root``, in a stable order (links to folders not followed)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return [f for f in found if f.is_file()]


def is_image_file(path: Path) -> bool:
    """Whether a folder build reads ``path``: its name ends as an image's does."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def folder_items(root: Path, files: list[Path] | None = None) -> Iterator[Item]:
    """Items for a folder's image files (or ``files``); an image's label is the folder it is in, as a path
    from ``root`` ("animals/cats"), so two folders of one name in different places stay apart."""
    for file in files if files is not None else [f for f in folder_files(root) if is_image_file(f)]:
        label = file.parent.relative_to(root).as_posix() if file.parent != root else None
        try:
            stat = file.stat()
            fingerprint = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            fingerprint = None
        yield Item(str(file), partial(read_file, file), label=label, fingerprint=fingerprint)


def dataset_items(
    dataset: Any,
    name: str,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
) -> Iterator[Item]:
    """Items for a ``datasets`` Dataset or IterableDataset; columns are detected where not given."""
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    features = dataset.features or {}
    image_column = image_column or _detect(features, IMAGE_COLUMNS, lambda f: isinstance(f, ImageFeature))
    if image_column is None or image_column not in features:
        raise SourceError(f"no image column in {name}; columns: {', '.join(features)}; pass --image-column")
    label_column = label_column or _detect(features, LABEL_COLUMNS, lambda f: isinstance(f, ClassLabel))
    caption_column = caption_column or _detect(features, CAPTION_COLUMNS, None, exclude={label_column})
    for column in (label_column, caption_column):
        if column and column not in features:
            raise SourceError(f"no column {column!r} in {name}; columns: {', '.join(features)}")
    if isinstance(features[image_column], ImageFeature):
        # Decoding is ours to do defensively; the dataset only hands over bytes.
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    label_feature = features.get(label_column) if label_column else None
    for row_number, row in enumerate(dataset):
        source = f"{name}[{split}]#{row_number}"
        yield Item(
            source,
            _row_reader(row.get(image_column)),
            label=_text(row.get(label_column), label_feature) if label_column else None,
            caption=_text(row.get(caption_column), None) if caption_column else None,
        )


def _load_dataset(source: str, path: Path, split: str) -> Any:
    import datasets

    try:
        if path.is_dir() and _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if path.is_file() and path.suffix in DATA_FILE_SUFFIXES:
            return datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train", streaming=True)
        # A Hub name and a local folder of parquet files take the same path: datasets resolves both.
        return datasets.load_dataset(source, split=split, streaming=True)
    except Exception as exc:  # offline, unknown name, missing split, unreadable files
        raise SourceError(f"cannot load the dataset {source!r} (split {split!r}): {type(exc).__name__}: {exc}") from exc


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return (path / "state.json").exists() or (path / "dataset_dict.json").exists()


def _is_dataset_folder(path: Path) -> bool:
    if _is_saved_dataset(path):
        return True
    return any(f.suffix in DATA_FILE_SUFFIXES for f in islice(path.rglob("*"), 10_000))


def _detect(features: dict, names: tuple[str, ...], is_kind: Callable | None, exclude: set | None = None) -> str | None:
    exclude = exclude or set()
    if is_kind is not None:
        for column, feature in features.items():
            if is_kind(feature) and column not in exclude:
                return column
    lowered = {c.lower(): c for c in features if c not in exclude}
    return next((lowered[n.lower()] for n in names if n.lower() in lowered), None)


def _row_reader(value: Any) -> Callable[[], bytes]:
    """How to get a row's image bytes; a partial, not a closure, so an item can travel to another process."""
    if isinstance(value, dict) and value.get("bytes"):
        return partial(bytes, value["bytes"])
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and path:
        return partial(read_file, Path(path))
    return partial(bytes)


def _text(value: Any, feature: Any) -> str | None:
    if value is None:
        return None
    if feature is not None and hasattr(feature, "int2str") and isinstance(value, int):
        return feature.int2str(value) if value >= 0 else None
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
        return value.strip() if value else None
    text = str(value).strip()
    return text or None
