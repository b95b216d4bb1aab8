"""The CLIP family: a sentence-transformers CLIP checkpoint, images and texts in one space, unit-length rows,
with a paired multilingual text model for what CLIP's own text tower cannot read."""
from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

from search.embedders import precision as chosen
from search.embedders.base import DEFAULT_MODEL
from search.embedders.clip_input import Pixels, image_tower
from search.embedders.precision import AUTO, BF16, FP32, INT8, PRECISIONS, Decision
from search.embedders.text_routing import CLIP, MULTILINGUAL, Tower, route
from search.errors import ModelError

log = logging.getLogger(__name__)

MULTILINGUAL_MODEL = "clip-ViT-B-32-multilingual-v1"  # DistilBERT distilled into CLIP ViT-B/32's text space
AUTO_TEXT_MODEL = "auto"  # pair the image model with its default text model, if it has one
NO_TEXT_MODEL = "none"  # IMAGE_SEARCH_TEXT_MODEL=none: CLIP's own tower reads every query
# The text model an image model is paired with by default: one that reads what its own tower cannot.
DEFAULT_TEXT_MODELS = {
    DEFAULT_MODEL: MULTILINGUAL_MODEL,
    f"sentence-transformers/{DEFAULT_MODEL}": MULTILINGUAL_MODEL,
}


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
    ``precision`` (fp32, bf16, int8, or auto: decided here, once, at ``batch_size``; see
    ``search.precision``) is fixed for the embedder's life: images run at it, and texts at bf16 when it
    is bf16 (int8 quantises the image tower alone).
    """

    normalized = True
    supports_text = True

    def __init__(self, name: str, device: str | None = None, text_model: str | None = None,
                 precision: str = FP32, batch_size: int = 32):
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
        self._pixels = Pixels.of(self.model[0].processor.image_processor)
        side = self._pixels.side
        self.min_edges = (side, max(side, 256))
        self._towers: dict[str, torch.nn.Module] = {FP32: image_tower(self.model[0].model)}
        # Tokenizers and torch modules are not safe for concurrent calls; the cores are shared anyway.
        self._lock = threading.Lock()
        self.decision = self._decide(precision, batch_size)
        self.precision = self.decision.precision
        log.info("images embed at %s (%s)", self.precision, self.decision.reason)

    def _decide(self, precision: str, batch_size: int) -> Decision:
        if precision != AUTO:
            return Decision(_check(precision), batch_size, reason="asked for")
        if sum(p.numel() for p in self._towers[FP32].parameters()) < chosen.MIN_PARAMETERS:
            return Decision(FP32, batch_size, reason="a model this small gains nothing from lower precision")
        tried = chosen.candidates(self.device)
        images = [self.prepare(img) for img in chosen.probe_images()] if tried else []
        return chosen.decide(self._encode_images, images, batch_size, tried)

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

    def prepare(self, img: Image.Image) -> Image.Image:
        """The model's input: the shortest edge scaled to its side in one resize, the centre cropped square."""
        return self._pixels.prepare(img)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        """Unit-length embeddings for RGB images, at the embedder's precision unless ``precision`` says otherwise."""
        precision = _check(precision or self.precision)
        images = list(images)
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        return np.concatenate([self._encode_images(images[i:i + batch_size], precision)
                               for i in range(0, len(images), batch_size)])

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts, in the images' space, one row per text in order.

        Each text goes to the tower ``text_tower`` names; a batch may mix them.
        """
        texts = list(texts)
        bf16 = self.precision == BF16
        if not self.paired:
            return self._encode_texts(self.model, texts, batch_size, bf16)
        out = np.zeros((len(texts), self.dimension), np.float32)
        towers = [self.text_tower(text) for text in texts]
        for tower, model in ((CLIP, self.model), (MULTILINGUAL, self.text_model)):
            rows = [i for i, t in enumerate(towers) if t == tower]
            if rows:
                out[rows] = self._encode_texts(model, [texts[i] for i in rows], batch_size, bf16)
        return out

    def _encode_images(self, images: Sequence[Image.Image], precision: str) -> np.ndarray:
        """One forward pass of the image tower over ``images`` (prepared where they are not yet)."""
        import torch

        pixels = self._pixels.normalize(self._pixels.batch(images).to(self.device))
        with self._lock, torch.inference_mode(), _autocast(self.device, precision == BF16):
            out = self.tower(precision)(pixels)
        return _unit(out.float().cpu().numpy())

    def tower(self, precision: str):
        """The image tower for ``precision``: int8's is quantised once, on first use (Linear layers only)."""
        if precision == INT8 and INT8 not in self._towers:
            import torch

            self._towers[INT8] = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(self._towers[FP32]), {torch.nn.Linear}, dtype=torch.qint8)
        return self._towers[INT8 if precision == INT8 else FP32]

    def _encode_texts(self, model, texts: list[str], batch_size: int, bf16: bool) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        with self._lock, torch.inference_mode(), _autocast(self.device, bf16):
            out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return _unit(np.asarray(out, dtype=np.float32))


def _autocast(device: str, bf16: bool):
    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in fp32 (under bf16 the model's own normalisation is only bf16-exact)."""
    rows = rows.astype(np.float32, copy=False)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def _load_sentence_transformer(name: str, device: str, what: str = "model"):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device=device)
    except Exception as exc:  # offline, a typo, or not a sentence-transformers checkpoint
        raise ModelError(f"cannot load the {what} {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc
