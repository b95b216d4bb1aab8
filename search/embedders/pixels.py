"""The origin's basic method as an embedder: the image scaled to 32x32, its RGB values as a vector."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from search.core.query import CANNOT_READ_TEXT
from search.embedders.precision import FP32
from search.errors import ModelError

PIXELS = "pixels"
PIXEL_SIDE = 32


class PixelEmbedder:
    """The origin's basic method: the image scaled to 32x32, its RGB values as a vector."""

    name = PIXELS
    dimension = PIXEL_SIDE * PIXEL_SIDE * 3
    normalized = False
    supports_text = False
    min_edges = (PIXEL_SIDE, 256)
    precision = FP32  # exact arithmetic: no other applies

    def load(self) -> None:
        """Nothing to load: the method is arithmetic."""

    def unload(self) -> None:
        """Nothing to let go."""

    def prepare(self, img: Image.Image) -> Image.Image:
        """Scale to the fixed side (aspect ratio ignored, as the basic method does)."""
        return img.resize((PIXEL_SIDE, PIXEL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        """Flattened RGB in [0, 1], one row per image (exact arithmetic: batch size and precision do not apply)."""
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        side = (PIXEL_SIDE, PIXEL_SIDE)
        rows = [np.asarray(img if img.size == side else self.prepare(img), dtype=np.float32) for img in images]
        return np.stack(rows).reshape(len(rows), -1) / 255.0

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Refused: raw pixels have no text side (``supports_text`` says so before anyone asks)."""
        raise ModelError(CANNOT_READ_TEXT[:1].upper() + CANNOT_READ_TEXT[1:])
