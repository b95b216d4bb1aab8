"""Identifiers from outside (image ids, names, keys), checked against their exact format at the boundary.

Nothing that fails these checks reaches Chroma or a file path; the messages say what a valid one is
and never echo more than a short, printable part of what was sent.
"""
from __future__ import annotations

import hashlib
import re

from search.errors import QueryError

ID_BYTES = 16
IMAGE_ID = re.compile(rf"[0-9a-f]{{{ID_BYTES * 2}}}")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,29}")  # a personal collection's name
KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")  # a visitor's secret, as secrets.token_urlsafe makes it


def content_id(data: bytes) -> str:
    """The id of an image: a hash of its bytes, so the same file is stored once."""
    return hashlib.blake2b(data, digest_size=ID_BYTES).hexdigest()


def name_key(name: str) -> str:
    """A short key for a collection's name that SQL table names and file names can hold (names may hold any
    character); the same name gives the same key in every process."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:20]


def is_image_id(value: object) -> bool:
    """Whether ``value`` is an id that ``content_id`` could have made."""
    return isinstance(value, str) and IMAGE_ID.fullmatch(value) is not None


def image_id(value: object) -> str:
    """``value`` as an image id, or a QueryError."""
    if not is_image_id(value):
        raise QueryError(f"{quoted(value)} is not an image id (ids are {ID_BYTES * 2} lower-case hex characters).")
    return value  # type: ignore[return-value]


def image_ids(values: object, limit: int) -> list[str]:
    """A list of at most ``limit`` image ids, or a QueryError naming the first bad one; duplicates dropped."""
    if not isinstance(values, (list, tuple)):
        raise QueryError("Give the image ids as a list.")
    if len(values) > limit:
        raise QueryError(f"{len(values)} ids at once is over the limit of {limit}.")
    return list(dict.fromkeys(image_id(v) for v in values))


def collection_name(value: object) -> str:
    """A personal collection's name, exactly as given, or a QueryError."""
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise QueryError(f"{quoted(value)} is not a valid collection name: use 1-30 characters, "
                         "lower-case letters, digits, '-' or '_', starting with a letter or digit.")
    return value


def visitor_key(value: object) -> str:
    """A visitor's secret key, or a QueryError."""
    if not isinstance(value, str) or KEY.fullmatch(value) is None:
        raise QueryError("This browser has no valid collection key; reload the page "
                         "(API callers: pass a key of 16-128 letters, digits, '-' or '_').")
    return value


def quoted(value: object, limit: int = 40) -> str:
    """A short, printable rendering of an outside value for a message."""
    text = value if isinstance(value, str) else type(value).__name__
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(text + ("..." if isinstance(value, str) and len(value) > limit else ""))
