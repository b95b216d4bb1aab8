"""What every embedder is: a lifecycle (made cheaply, then ``load``ed), one batch method per kind of input, and
its capabilities declared as attributes.

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
    """What the builder and the index need from a model: its capabilities, its lifecycle, then its three methods.

    Making one loads nothing (immich's ``InferenceModel``): ``load()`` loads the model, after which
    ``dimension``, ``min_edges`` and the three methods answer; ``unload()`` lets it go.
    """

    # Read-only, so that an embedder may say them only once its model is loaded (embedders/deferred.py) or
    # pass on another's (embedders/batching.py).
    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def normalized(self) -> bool: ...  # rows have unit length, so cosine, ip and l2 rank alike
    @property
    def supports_text(self) -> bool: ...
    @property
    def min_edges(self) -> tuple[int, int]: ...  # the smallest (shortest, longest) edges decoding may draft down to
    @property
    def precision(self) -> str: ...  # what images embed at unless a call says otherwise ("fp32" where arithmetic is exact)

    def load(self) -> None: ...
    def unload(self) -> None: ...
    def prepare(self, img: Image.Image) -> Image.Image: ...
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
