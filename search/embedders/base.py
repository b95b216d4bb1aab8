"""What every embedder is: one batch method per kind of input, and its capabilities declared as attributes.

A model family (pixels, CLIP, ...) is a module of its own that makes ``Embedder``s; ``registry`` knows the
families by name and loads the one a model's name or files call for.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

DEFAULT_MODEL = "clip-ViT-B-32"


class Inputs(Protocol):
    """How an image becomes a model's input, known from its configuration alone (no weights): what decoding and
    ``prepare`` need, wherever they run (a Ray engine's CPU workers never load the model)."""

    @property
    def min_edges(self) -> tuple[int, int]: ...  # the smallest (shortest, longest) edges decoding may draft down to

    def prepare(self, img: Image.Image) -> Image.Image: ...


class Embedder(Protocol):
    """What the builder and the index need from a model: its capabilities, then its three methods."""

    name: str
    dimension: int
    normalized: bool  # rows have unit length, so cosine, ip and l2 rank alike

    # Read-only, so that an embedder may say them only once its model is loaded (embedders/deferred.py).
    @property
    def supports_text(self) -> bool: ...
    @property
    def min_edges(self) -> tuple[int, int]: ...  # the smallest (shortest, longest) edges decoding may draft down to

    def prepare(self, img: Image.Image) -> Image.Image: ...
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
