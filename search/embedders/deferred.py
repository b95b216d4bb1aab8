"""An embedder whose model loads when something first needs it: a build that finds nothing new to embed
(a re-run over an unchanged folder) then never pays for PyTorch and the model (tens of seconds on 2 cores)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from PIL import Image

from search.embedders.base import Embedder
from search.errors import ModelError

log = logging.getLogger(__name__)
E = TypeVar("E")


class Deferred:
    """Answers ``name``, ``dimension`` and ``normalized`` as given (what a collection records of the model);
    the rest of an ``Embedder`` loads the model (once, on whichever thread asks first) and is the loaded one's.
    Anything else of the model (its decision): ``loaded(deferred)`` first."""

    def __init__(self, name: str, dimension: int, normalized: bool, load: Callable[[], Embedder]):
        self.name = name
        self.dimension = dimension
        self.normalized = normalized
        self._load = load
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded."""
        return self._embedder is not None

    def embedder(self) -> Embedder:
        """The loaded embedder, loading it now where it is not yet."""
        with self._lock:
            if self._embedder is None:
                log.info("loading the model %s: there are images to embed", self.name)
                embedder = self._load()
                if (embedder.dimension, embedder.normalized) != (self.dimension, self.normalized):
                    raise ModelError(f"the model {self.name!r} makes {embedder.dimension}-d vectors, not the "
                                     f"{self.dimension}-d ones the collection holds: its files changed since")
                self._embedder = embedder
            return self._embedder

    def load(self) -> None:
        """Load the model now, where it is not yet."""
        self.embedder()

    def unload(self) -> None:
        """Let this one's loaded model go (the next use loads it again)."""
        with self._lock:
            self._embedder = None

    @property
    def supports_text(self) -> bool:
        return self.embedder().supports_text

    @property
    def min_edges(self) -> tuple[int, int]:
        return self.embedder().min_edges

    @property
    def precision(self) -> str:
        return self.embedder().precision

    def prepare(self, img: Image.Image) -> Image.Image:
        return self.embedder().prepare(img)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        return self.embedder().embed_images(images, batch_size, precision=precision)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder().embed_texts(texts)


def loaded(embedder: E) -> E | Embedder:
    """``embedder`` with its model loaded: a Deferred's own, loaded now (on the caller's thread); else itself."""
    return embedder.embedder() if isinstance(embedder, Deferred) else embedder
