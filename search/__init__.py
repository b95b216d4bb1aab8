"""Image search by image and by text over a Chroma store; see docs/architecture.md for the architecture.

The names below are imported when first used (PEP 562), not with the package: ``index_builder.py --help``
and a builder's start would otherwise pay for the query and index modules they do not use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.core.hits import Hit
    from search.core.metrics import METRICS
    from search.embedders.base import DEFAULT_MODEL
    from search.embedders.pixels import PIXELS
    from search.embedders.registry import load_embedder
    from search.errors import (
        InvalidImageError,
        ModelError,
        QueryError,
        SearchError,
        ServiceUnavailable,
        SourceError,
        StoreError,
    )
    from search.index import ImageIndex

_HOMES = {
    "DEFAULT_MODEL": "search.embedders.base",
    "METRICS": "search.core.metrics",
    "PIXELS": "search.embedders.pixels",
    "Hit": "search.core.hits",
    "ImageIndex": "search.index",
    "InvalidImageError": "search.errors",
    "ModelError": "search.errors",
    "QueryError": "search.errors",
    "SearchError": "search.errors",
    "ServiceUnavailable": "search.errors",
    "SourceError": "search.errors",
    "StoreError": "search.errors",
    "load_embedder": "search.embedders.registry",
}
__all__ = [  # what _HOMES holds, spelled out for linters and star imports
    "DEFAULT_MODEL",
    "METRICS",
    "PIXELS",
    "Hit",
    "ImageIndex",
    "InvalidImageError",
    "ModelError",
    "QueryError",
    "SearchError",
    "ServiceUnavailable",
    "SourceError",
    "StoreError",
    "load_embedder",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
