"""The CLIP family: a sentence-transformers CLIP checkpoint, images and texts in one space, unit-length rows,
with a paired multilingual text model for what CLIP's own text tower cannot read."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.embedders.base import DEFAULT_MODEL
from search.embedders.clip_input import Pixels, image_tower, text_tower
from search.embedders.text_routing import CLIP, MULTILINGUAL, Tower, route
from search.embedders.towers import Tokens, TowerEmbedder
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


class ClipEmbedder(TowerEmbedder):
    """A sentence-transformers CLIP checkpoint: images and texts in one space, unit-length rows.

    A paired text model (``text_model``, see ``paired_text_model``) reads the queries CLIP's own
    text tower cannot (non-English: ``text_routing.route``); CLIP's tower keeps English.
    Each of CLIP's towers runs at its own precision (``towers``); the paired model's texts run at bf16 where
    the images do. Making one loads nothing: ``load()`` does.
    """

    exports_onnx = True

    def __init__(self, name: str, device: str | None = None, text_model: str | None = None):
        super().__init__(name, device)
        self._paired_text_model = paired_text_model(name, text_model)
        self.model: Any = None
        self.text_model: Any = None  # the paired text model, or CLIP itself where none is
        self.text_model_name: str | None = None

    def _load(self) -> tuple[Any, Any, Tokens]:
        model = _load_sentence_transformer(self.name, self.device)
        model.eval()
        self.model = self.text_model = model
        self.dimension = int(model.get_embedding_dimension())
        paired, required = self._paired_text_model
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
        self._pixels = Pixels.of(model[0].processor.image_processor)
        self.min_edges = self._pixels.min_edges
        return image_tower(model[0].model), text_tower(model[0].model), self._text_inputs

    def _unload(self) -> None:
        self.model = self.text_model = self.text_model_name = None

    def _exported(self) -> dict[str, Any]:
        from search.embedders.onnx_runtime import clip_towers

        assert self.model is not None, "load() first"
        return clip_towers(self.model)

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
        """Whether a second text model reads the queries CLIP's own tower cannot (known once loaded)."""
        return self.text_model is not self.model

    def text_tower(self, text: str) -> Tower:
        """Which tower reads ``text``: ``"clip"`` (CLIP's own) or ``"multilingual"`` (the paired model)."""
        return route(text) if self.paired else CLIP

    def prepare(self, img: Image.Image) -> Image.Image:
        """The model's input: the shortest edge scaled to its side in one resize, the centre cropped square."""
        return self._pixels.prepare(img)

    def image_inputs(self, images: Sequence[Image.Image]) -> dict:
        """The prepared images as one normalised batch on the device."""
        return {"pixel_values": self._pixels.normalize(self._pixels.batch(images).to(self.device))}

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts, in the images' space, one row per text in order.

        Each text goes to the tower ``text_tower`` names; a batch may mix them.
        """
        texts = list(texts)
        if not self.paired:
            return self._encode_texts(self.model, texts, batch_size)
        out = np.zeros((len(texts), self.dimension), np.float32)
        towers = [self.text_tower(text) for text in texts]
        for tower, model in ((CLIP, self.model), (MULTILINGUAL, self.text_model)):
            rows = [i for i, t in enumerate(towers) if t == tower]
            if rows:
                out[rows] = self._encode_texts(model, [texts[i] for i in rows], batch_size)
        return out

    def _encode_texts(self, model, texts: list[str], batch_size: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        if model is self.model:  # CLIP's own tower, at its own precision
            return self._own_texts(texts, batch_size)
        return self._run_text(lambda: model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                                   normalize_embeddings=True, show_progress_bar=False))

    def _text_inputs(self, texts: list[str]) -> dict:
        """CLIP's text tower's inputs, tokenised by the checkpoint's own sentence-transformers module (as encode does)."""
        features = self.model[0].preprocess(texts)
        return {name: features[name].to(self.device) for name in ("input_ids", "attention_mask")}


def _load_sentence_transformer(name: str, device: str, what: str = "model"):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device=device)
    except Exception as exc:  # offline, a typo, or not a sentence-transformers checkpoint
        raise ModelError(f"cannot load the {what} {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc
