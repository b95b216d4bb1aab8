"""Image search by image and by text over a Chroma store; see README.md for the architecture."""
from .embedders import DEFAULT_MODEL, PIXELS, load_embedder
from .errors import InvalidImageError, ModelError, QueryError, SearchError, SourceError, StoreError
from .index import Hit, ImageIndex
from .metrics import METRICS

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
    "SourceError",
    "StoreError",
    "load_embedder",
]
