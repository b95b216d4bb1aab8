"""Image search by image and by text over a Chroma store; see docs/architecture.md for the architecture."""
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

__all__ = [
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
