"""Embedders: the basic one on raw pixels and the advanced one on CLIP, behind one interface."""
from __future__ import annotations

import functools
import logging
import platform
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from .errors import ModelError, QueryError
from .text_routing import CLIP, MULTILINGUAL, Tower, route

log = logging.getLogger(__name__)

DEFAULT_MODEL = "clip-ViT-B-32"
MULTILINGUAL_MODEL = "clip-ViT-B-32-multilingual-v1"  # DistilBERT distilled into CLIP ViT-B/32's text space
AUTO_TEXT_MODEL = "auto"  # pair the image model with its default text model, if it has one
NO_TEXT_MODEL = "none"  # IMAGE_SEARCH_TEXT_MODEL=none: CLIP's own tower reads every query
# The text model an image model is paired with by default: one that reads what its own tower cannot.
DEFAULT_TEXT_MODELS = {
    DEFAULT_MODEL: MULTILINGUAL_MODEL,
    f"sentence-transformers/{DEFAULT_MODEL}": MULTILINGUAL_MODEL,
}
PIXELS = "pixels"
PIXEL_SIDE = 32
BF16_MIN_AGREEMENT = 0.999  # mean cosine to fp32 below which bf16 is not used
BF16_MIN_SPEEDUP = 1.2  # and the speed-up it must bring to be worth any loss at all


FP32, BF16 = "fp32", "bf16"


@dataclass(frozen=True)
class Calibration:
    """bf16 measured against fp32 on the same images."""

    agreement: float  # mean cosine between the two passes' embeddings
    speedup: float  # fp32 time / bf16 time

    @property
    def precision(self) -> str:
        """bf16 where it agrees with fp32 and is worth it, else fp32."""
        good = self.agreement >= BF16_MIN_AGREEMENT and self.speedup >= BF16_MIN_SPEEDUP
        return BF16 if good else FP32


class Embedder(Protocol):
    """What the builder and the index need from a model."""

    name: str
    dimension: int
    normalized: bool  # rows have unit length, so cosine, ip and l2 rank alike
    supports_text: bool
    min_edges: tuple[int, int]  # the smallest (shortest, longest) edges decoding may draft down to

    def prepare(self, img: Image.Image) -> Image.Image: ...
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *, precision: str = FP32) -> np.ndarray: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class PixelEmbedder:
    """The origin's basic method: the image scaled to 32x32, its RGB values as a vector."""

    name = PIXELS
    dimension = PIXEL_SIDE * PIXEL_SIDE * 3
    normalized = False
    supports_text = False
    min_edges = (PIXEL_SIDE, 256)

    def prepare(self, img: Image.Image) -> Image.Image:
        """Scale to the fixed side (aspect ratio ignored, as the basic method does)."""
        return img.resize((PIXEL_SIDE, PIXEL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *, precision: str = FP32) -> np.ndarray:
        """Flattened RGB in [0, 1], one row per image (exact arithmetic: batch size and precision do not apply)."""
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        side = (PIXEL_SIDE, PIXEL_SIDE)
        rows = [np.asarray(img if img.size == side else self.prepare(img), dtype=np.float32) for img in images]
        return np.stack(rows).reshape(len(rows), -1) / 255.0

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise QueryError(
            "This index uses the basic pixel method, which cannot read text. "
            "Search it with an image, or build an index with a CLIP model (e.g. clip-ViT-B-32) for text search."
        )


def paired_text_model(name: str, text_model: str | None) -> tuple[str | None, bool]:
    """The text model to pair with the image model ``name``, and whether failing to load it is an error.

    ``text_model``: None or ``"none"`` pairs nothing; ``"auto"`` pairs the image model's default text
    model (DEFAULT_TEXT_MODELS: the multilingual encoder for clip-ViT-B-32, nothing for others), which
    may fail softly; any other name or path is an explicit choice, which must load.
    """
    if text_model is None or text_model.strip().lower() in ("", NO_TEXT_MODEL):
        return None, False
    if text_model.strip().lower() == AUTO_TEXT_MODEL:
        return DEFAULT_TEXT_MODELS.get(name), False
    return text_model, True


class ClipEmbedder:
    """A sentence-transformers CLIP checkpoint: images and texts in one space, unit-length rows.

    A paired text model (``text_model``, see ``paired_text_model``) reads the queries CLIP's own
    text tower cannot (non-English: ``text_routing.route``); CLIP's tower keeps English.
    """

    normalized = True
    supports_text = True

    def __init__(self, name: str, device: str | None = None, text_model: str | None = None):
        import torch

        self.name = name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _load_sentence_transformer(name, self.device)
        self.model.eval()
        self.dimension = int(self.model.get_embedding_dimension())
        self.text_model = self.model  # the paired text model, or CLIP itself where none is
        self.text_model_name: str | None = None
        paired, required = paired_text_model(name, text_model)
        if paired:
            try:
                self.text_model = self._load_text_model(paired)
                self.text_model_name = paired
                log.info("queries CLIP's text tower cannot read (not English) go to %s", paired)
            except ModelError as exc:
                if required:
                    raise
                log.warning("the default text model is not used, CLIP's own text tower reads every query: %s",
                            exc.for_operator())
        size = self._image_processor_size()
        self.min_edges = (size, max(size, 256))
        self._input_side = size
        # Tokenizers and torch modules are not safe for concurrent calls; the cores are shared anyway.
        self._lock = threading.Lock()

    def _load_text_model(self, name: str):
        model = _load_sentence_transformer(name, self.device, what="text model")
        model.eval()
        dimension = int(model.get_embedding_dimension() or 0)
        if dimension != self.dimension:
            raise ModelError(f"the text model {Path(name).name!r} has dimension {dimension}, the image model "
                             f"{self.dimension}: they are not in one space", internals=name)
        return model

    @property
    def paired(self) -> bool:
        """Whether a second text model reads the queries CLIP's own tower cannot."""
        return self.text_model is not self.model

    def text_tower(self, text: str) -> Tower:
        """Which tower reads ``text``: ``"clip"`` (CLIP's own) or ``"multilingual"`` (the paired model)."""
        return route(text) if self.paired else CLIP

    def _image_processor_size(self) -> int:
        try:
            size = self.model[0].processor.image_processor.size
            return int(size["shortest_edge"])
        except Exception:  # a checkpoint without a processor size keeps CLIP's own
            return 224

    def prepare(self, img: Image.Image) -> Image.Image:
        """Scale the shortest edge down to the model's input so the model's processor has little left to do."""
        side = self._input_side
        short = min(img.size)
        if short <= side:
            return img
        scale = side / short
        size = (max(side, round(img.width * scale)), max(side, round(img.height * scale)))
        return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *, precision: str = FP32) -> np.ndarray:
        """Unit-length embeddings for RGB images, at ``precision`` (fp32, or bf16 autocast)."""
        return self._encode(self.model, list(images), batch_size, _bf16(precision))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts, in the images' space, one row per text in order.

        Each text goes to the tower ``text_tower`` names; a batch may mix them.
        """
        texts = list(texts)
        if not self.paired:
            return self._encode(self.model, texts, batch_size, False)
        out = np.zeros((len(texts), self.dimension), np.float32)
        towers = [self.text_tower(text) for text in texts]
        for tower, model in ((CLIP, self.model), (MULTILINGUAL, self.text_model)):
            rows = [i for i, t in enumerate(towers) if t == tower]
            if rows:
                out[rows] = self._encode(model, [texts[i] for i in rows], batch_size, False)
        return out

    def calibrate_bf16(self, images: Sequence[Image.Image]) -> Calibration | None:
        """Measure bf16 against fp32 on ``images``: agreement and speed-up (it changes nothing here).

        None where bf16 cannot help and was not tried. Speed is measured, not assumed: bf16's gain
        differs widely between chips.
        """
        if not images or self.device not in ("cpu", "cuda") or not _bf16_supported(self.device):
            return None
        images = list(images)
        probe = images[:2]
        for bf16 in (False, True):  # warm both paths so neither pays first-call costs below
            self._encode(self.model, probe[:1], 1, bf16)
        start = time.perf_counter()
        full = self._encode(self.model, probe, len(probe), False)
        middle = time.perf_counter()
        half = self._encode(self.model, probe, len(probe), True)
        speedup = (middle - start) / max(time.perf_counter() - middle, 1e-9)
        if speedup >= BF16_MIN_SPEEDUP and len(images) > len(probe):  # worth checking agreement more widely
            full = self._encode(self.model, images, len(images), False)
            half = self._encode(self.model, images, len(images), True)
        return Calibration(float(np.mean(np.sum(full * half, axis=1))), speedup)

    def _encode(self, model, inputs: list, batch_size: int, bf16: bool) -> np.ndarray:
        import torch

        if not inputs:
            return np.zeros((0, self.dimension), np.float32)
        autocast = torch.autocast(self.device, dtype=torch.bfloat16) if bf16 else nullcontext()
        with self._lock, torch.inference_mode(), autocast:
            out = model.encode(
                inputs,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        out = np.asarray(out, dtype=np.float32)
        # Normalise again in fp32: under bf16 autocast the model's own normalisation is only bf16-exact.
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _bf16(precision: str) -> bool:
    if precision not in (FP32, BF16):
        raise ValueError(f"precision must be {FP32!r} or {BF16!r}, not {precision!r}")
    return precision == BF16


def _load_sentence_transformer(name: str, device: str, what: str = "model"):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device=device)
    except Exception as exc:  # offline, a typo, or not a sentence-transformers checkpoint
        raise ModelError(f"cannot load the {what} {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc


def _bf16_supported(device: str) -> bool:
    """Whether bf16 can be faster here: worth calibrating at all.

    An x86 CPU without AVX512-BF16 or AMX emulates bf16, several times slower than fp32, so even
    measuring it would cost a build seconds; other CPUs (ARM's bf16 extensions) are measured.
    """
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if all(callable(c) for c in checks):
            return any(c() for c in checks if callable(c))
    return True


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_MODEL, device: str | None = None, text_model: str | None = None) -> Embedder:
    """Load an embedder once per process: ``pixels`` or a sentence-transformers CLIP name or path.

    ``text_model``: a text model to pair for non-English queries (see ``paired_text_model``; ``"auto"``
    is the app's default).
    """
    if name == PIXELS:
        if paired_text_model(name, text_model)[1]:
            raise ModelError("the pixel method has no text side; a text model cannot be paired with it")
        return PixelEmbedder()
    return ClipEmbedder(name, device=device, text_model=text_model)
