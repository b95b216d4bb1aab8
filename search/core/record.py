"""The store's metadata, typed: what a build keeps beside each image's vector (``RecordMeta``) and what a
collection records of the model that filled it (``CollectionMeta``), the schema's version, and how metadata
read back from a store is checked (``read``, ``read_collection``).

A backend stores metadata as flat key-value pairs, so a field's name is part of the store's format: every
module writes a record's metadata as ``RecordMeta(...)`` and reads it through the key constants here (filters
name ``LABEL`` and ``TAKEN``), and no other module spells a key. Renaming or retyping a field is a new
``STORE_FORMAT``, with its reading here.

The shape has only grown since the first store (format 1): records written before photo text, capture dates
and OCR came (November 2026) simply lack those fields, as records written by other tools may lack any. Every
field is optional for that reason, and a collection that records no ``format`` is read as format 1.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypedDict, cast, get_type_hints

STORE_FORMAT: Final = 1  # the schema's version, recorded per collection; a store of a higher one is refused on open

# A record's fields
SOURCE: Final = "source"  # also a collection's: what it was built from
THUMBNAIL: Final = "thumbnail"
ADDED_AT: Final = "added_at"
LABEL: Final = "label"
CAPTION: Final = "caption"
PHOTO_TEXT: Final = "photo_text"
TAKEN: Final = "taken"
OCR: Final = "ocr"
# A collection's fields
MODEL: Final = "model"
DIMENSION: Final = "dimension"
NORMALIZED: Final = "normalized"
CHROMADB_VERSION: Final = "chromadb_version"
FORMAT: Final = "format"


class RecordMeta(TypedDict, total=False):
    """One image's metadata as stored beside its vector."""

    source: str  # where it came from: a file's path, a URL, or a dataset's row ("name[split]#12")
    thumbnail: str  # its thumbnail's logical path in the store (``stores.thumbnails.relative``)
    added_at: int  # when it was stored, seconds since 1970
    label: str
    caption: str
    photo_text: str  # the file's own description and keywords (EXIF, IPTC, XMP)
    taken: int  # when it was taken, seconds since 1970 of the camera's clock read as UTC (``core.dates``)
    ocr: str  # the text inside the image


class CollectionMeta(TypedDict, total=False):
    """What a collection records of how it was made."""

    model: str  # a Hub name, or a local checkpoint's absolute path
    dimension: int
    normalized: bool  # unit-length vectors
    source: str  # what it was first built from ("unknown" where not said)
    built_at: str  # ISO 8601, UTC
    chromadb_version: str
    format: int  # STORE_FORMAT when it was made


_RECORD_TYPES: dict[str, type] = get_type_hints(RecordMeta)
_COLLECTION_TYPES: dict[str, type] = get_type_hints(CollectionMeta)


def read(meta: Mapping[str, Any] | None) -> RecordMeta:
    """A record's metadata as a store gave it back (None: it has none), checked: a field of the wrong type
    (written by another tool, or by hand) is left out, as if missing; keys this version does not know are
    kept as they are, so a record written again here (re-embedded, or given its OCR text) loses nothing."""
    return cast(RecordMeta, _checked(meta, _RECORD_TYPES))


def read_collection(meta: Mapping[str, Any] | None) -> CollectionMeta:
    """A collection's metadata as a store gave it back, checked as ``read`` checks a record's."""
    return cast(CollectionMeta, _checked(meta, _COLLECTION_TYPES))


def model_name(model: str) -> str:
    """A recorded model's short name, as people are shown it: a checkpoint's folder name, a Hub name's last part."""
    return Path(model).name


def _checked(meta: Mapping[str, Any] | None, types: dict[str, type]) -> dict[str, Any]:
    if not meta:  # the common case of a search's candidates, read without their metadata
        return {}
    out = dict(meta)
    for key, kind in types.items():
        if key in out and not (isinstance(out[key], kind) and (kind is bool or not isinstance(out[key], bool))):
            del out[key]
    return out
