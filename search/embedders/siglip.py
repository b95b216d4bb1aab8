"""The SigLIP family: SigLIP and SigLIP 2 checkpoints through transformers, one model for every language.

Images and texts are embedded exactly as transformers' own ``get_image_features`` / ``get_text_features``
with the checkpoint's processor (its input size and normalisation from its own config; SigLIP 2's NaFlex
checkpoints keep the aspect ratio), pooled and scaled to unit length. SigLIP's text tower was trained on
text padded to its full length (64 tokens), so every query is padded so too; longer ones are truncated.
Every text query goes to the model's own text tower: no routing, no second model.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.embedders.text_routing import CLIP, Tower
from search.embedders.towers import Tokens, TowerEmbedder
from search.errors import ModelError

log = logging.getLogger(__name__)
MODEL_TYPES = ("siglip", "siglip2")  # transformers' model_type for SigLIP (and SigLIP 2 FixRes) and SigLIP 2 NaFlex


def is_siglip(name: str) -> bool:
    """Whether ``name`` is a SigLIP checkpoint: a folder whose config says so, or a Hub name that says so."""
    config = Path(name) / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("model_type") in MODEL_TYPES
        except (OSError, ValueError):
            return False
    return "siglip" in name.lower() and not Path(name).exists()


class SiglipEmbedder(TowerEmbedder):
    """A SigLIP or SigLIP 2 checkpoint by Hub name or path: images and texts in one space, unit-length rows.

    Each tower runs at its own precision, as CLIP's (``towers``). Making one loads nothing: ``load()`` does.
    """

    model: Any = None
    processor: Any = None

    def _load(self) -> tuple[Any, Any, Tokens]:
        model, self.processor = _load(self.name, self.device)
        config = model.config
        dimension = int(config.vision_config.hidden_size)
        if getattr(config.text_config, "projection_size", dimension) != dimension:
            raise ModelError(f"the model {Path(self.name).name!r} has towers of different widths", internals=self.name)
        self.model, self.dimension = model, dimension
        self.max_tokens = int(config.text_config.max_position_embeddings)  # 64 for every published checkpoint
        self.min_edges = SiglipInputs(_side(self.processor.image_processor, config.vision_config)).min_edges
        return _Pooled.around(model.vision_model), _Pooled.around(model.text_model), self._text_inputs

    def _unload(self) -> None:
        self.model = self.processor = None

    def text_tower(self, text: str) -> Tower:
        """Every text goes to SigLIP's own text tower."""
        return CLIP

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The checkpoint's processor over the batch, on the device."""
        inputs = self.processor(images=list(images), return_tensors="pt")
        return {key: value.to(self.device) for key, value in inputs.items()}

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts, in the images' space, one row per text in order (at the text tower's
        own precision, ``text_precision``)."""
        return self._own_texts(texts, batch_size)

    def _text_inputs(self, texts: list[str]) -> dict[str, Any]:
        """The processor's tokens, padded to the checkpoint's length (64) as SigLIP was trained, on the device."""
        inputs = self.processor(text=texts, padding="max_length", max_length=self.max_tokens, truncation=True,
                                return_tensors="pt")
        return {key: value.to(self.device) for key, value in inputs.items()}


class _Pooled:
    """get_image_features' or get_text_features' arithmetic as one module (a tower and its pooling head), which
    autocast runs and dynamic quantisation can copy and convert."""

    @staticmethod
    def around(tower: Any) -> Any:
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tower = tower

            def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
                return self.tower(**inputs).pooler_output

        return Pooled()


@dataclass(frozen=True)
class SiglipInputs:
    """SigLIP's input steps before its processor: decoding drafts to the processor's edge, and the image goes to the
    processor as it is (the processor, in ``image_inputs``, scales it)."""

    side: int

    @property
    def min_edges(self) -> tuple[int, int]:
        """The edge the processor scales to, for both edges."""
        return self.side, self.side

    def prepare(self, img: Image.Image) -> Image.Image:
        """The image as it is."""
        return img


def siglip_inputs(name: str) -> SiglipInputs:
    """The input steps of the SigLIP checkpoint ``name``, from its processor's and model's configuration alone (no
    weights are read)."""
    from transformers import AutoConfig, AutoImageProcessor

    try:
        return SiglipInputs(_side(AutoImageProcessor.from_pretrained(name), AutoConfig.from_pretrained(name).vision_config))
    except Exception as exc:  # offline, a typo, or not a SigLIP checkpoint
        raise ModelError(f"cannot read the image settings of the model {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc


def _side(image_processor: Any, vision_config: Any) -> int:
    """The edge the processor scales images to: FixRes's size, or NaFlex's patch budget as a square."""
    size = getattr(image_processor, "size", None) or {}
    if "height" in size:
        return int(min(size["height"], size["width"]))
    patches = getattr(image_processor, "max_num_patches", None)
    if not patches:
        return int(getattr(vision_config, "image_size", 224))
    patch = int(getattr(image_processor, "patch_size", 0) or getattr(vision_config, "patch_size", 16))
    return patch * int(int(patches) ** 0.5)


def _load(name: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoProcessor

    try:
        model = AutoModel.from_pretrained(name).to(device).eval()
        processor = AutoProcessor.from_pretrained(name)
    except Exception as exc:  # offline, a typo, or not a SigLIP checkpoint
        raise ModelError(f"cannot load the model {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc
    if getattr(model.config, "model_type", None) not in MODEL_TYPES:
        raise ModelError(f"the model {Path(name).name!r} is not a SigLIP checkpoint",
                         internals=f"{name}: model_type {getattr(model.config, 'model_type', None)!r}")
    return model, processor
