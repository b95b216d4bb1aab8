"""What the two-tower families (CLIP, SigLIP) share: an image tower run at one precision chosen once (fp32,
bf16 or int8; see ``precision``), in batches, one call at a time, with unit-length rows.

A family says how a batch of images becomes the tower's inputs (``image_inputs``) and which module maps
them to embeddings; this module runs it, decides its precision and quantises it for int8.
"""
from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from PIL import Image

from search.embedders import precision as chosen
from search.embedders.precision import AUTO, BF16, FP32, INT8, PRECISIONS, Decision

log = logging.getLogger(__name__)


class TowerEmbedder:
    """The image side of a two-tower model at a fixed precision; a family subclasses it with its own loading,
    ``image_inputs`` and texts. Call ``_start`` once the model is loaded."""

    normalized = True
    supports_text = True
    name: str
    dimension: int
    device: str
    min_edges: tuple[int, int]
    precision: str
    decision: Decision

    def _start(self, image_tower: Any, precision: str, batch_size: int, decisions: str | None = None) -> None:
        """Keep the fp32 image tower, then decide the precision (``auto``: measured here at ``batch_size``, or
        read from ``decisions``, where an earlier start on this machine wrote what it measured)."""
        self._towers: dict[str, Any] = {FP32: image_tower}
        # Tokenizers and torch modules are not safe for concurrent calls; the cores are shared anyway.
        self._lock = threading.Lock()
        self.decision = self._decide(precision, batch_size, decisions)
        self.precision = self.decision.precision
        log.info("images embed at %s (%s)", self.precision, self.decision.reason)

    def prepare(self, img: Image.Image) -> Image.Image:
        """The model's input image (the family's own steps; here: the image as it is)."""
        return img

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The image tower's keyword inputs for a batch, on the device."""
        raise NotImplementedError

    def _decide(self, precision: str, batch_size: int, decisions: str | None) -> Decision:
        if precision != AUTO:
            return Decision(check_precision(precision), batch_size, reason="asked for")
        return self._measured(self._towers[FP32], "image", batch_size, decisions, self._encode_images,
                              lambda: [self.prepare(img) for img in chosen.probe_images()])

    def _measured(self, tower: Any, kind: str, batch_size: int, decisions: str | None, encode: chosen.Encode,
                  probes: Callable[[], list[Any]]) -> Decision:
        """``auto``'s decision for ``tower`` (the ``kind`` of tower: "image" or "text"): remembered in ``decisions``
        by machine, model, batch and kind, else measured on ``probes()`` and remembered."""
        if sum(p.numel() for p in tower.parameters()) < chosen.MIN_PARAMETERS:
            return Decision(FP32, batch_size, reason="a model this small gains nothing from lower precision")
        key = chosen.decision_key(self.name, self.device, batch_size, kind)
        earlier = chosen.recall(decisions, key)
        if earlier is not None:
            return earlier
        tried = chosen.candidates(self.device)
        decision = chosen.decide(encode, probes() if tried else [], batch_size, tried)
        chosen.remember(decisions, key, decision)
        return decision

    def _start_text(self, tower: Any, tokens: Callable[[list[str]], dict[str, Any]], precision: str,
                    decisions: str | None) -> None:
        """Keep the fp32 text tower and its tokenizer (``tokens``: texts -> the tower's inputs on the device); its
        precision is decided on first use (``text_decision``)."""
        self._text_towers: dict[str, Any] = {FP32: tower}
        self._tokens = tokens
        self._text_asked = (precision, decisions)
        self._text_decision: Decision | None = None
        self._text_deciding = threading.Lock()

    @property
    def text_decision(self) -> Decision:
        """The text tower's precision, decided as the image tower's is, on ``probe_texts`` one text at a time, when
        a text is first embedded (a build embeds none). A query is one text, and at one text the tower's time is
        reading its weights, of which bf16 has half the bytes and int8 a quarter (ViT-B/32 here: 23, 16, 6 ms)."""
        with self._text_deciding:
            if self._text_decision is None:
                precision, decisions = self._text_asked
                self._text_decision = (
                    Decision(check_precision(precision), 1, reason="asked for") if precision != AUTO else
                    self._measured(self._text_towers[FP32], "text", 1, decisions,
                                   self._encode_text_batch, chosen.probe_texts))
                log.info("texts embed at %s (%s)", self._text_decision.precision, self._text_decision.reason)
            return self._text_decision

    def _own_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts from the text tower kept by ``_start_text``, at its precision."""
        return self._in_batches(self._encode_text_batch, list(texts), batch_size, self.text_decision.precision)

    def _encode_text_batch(self, texts: Sequence[str], precision: str) -> np.ndarray:
        """One forward pass of the text tower kept by ``_start_text`` at ``precision``."""
        return self._forward(self._text_towers, self._tokens(list(texts)), precision)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        """Unit-length embeddings for RGB images, at the embedder's precision unless ``precision`` says otherwise."""
        return self._in_batches(self._encode_images, list(images), batch_size,
                                check_precision(precision or self.precision))

    def _in_batches(self, encode: chosen.Encode, items: list[Any], batch_size: int, precision: str) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dimension), np.float32)
        return np.concatenate([encode(items[i:i + batch_size], precision) for i in range(0, len(items), batch_size)])

    def _encode_images(self, images: Sequence[Image.Image], precision: str) -> np.ndarray:
        """One forward pass of the image tower over ``images`` (prepared where they are not yet)."""
        return self._forward(self._towers, self.image_inputs(images), precision)

    def _forward(self, towers: dict[str, Any], inputs: dict[str, Any], precision: str) -> np.ndarray:
        """One forward pass of the tower ``towers`` holds for ``precision``, under the lock, as unit rows."""
        import torch

        with self._lock, torch.inference_mode(), autocast(self.device, precision == BF16):
            out = _at(towers, precision)(**inputs)
        return unit(out.float().cpu().numpy())

    def tower(self, precision: str) -> Any:
        """The image tower for ``precision`` (see ``_at``)."""
        return _at(self._towers, precision)

    def _run_text(self, run: Any) -> np.ndarray:
        """``run()`` (a text tower's forward pass) under the lock, at bf16 where the images run at bf16."""
        import torch

        with self._lock, torch.inference_mode(), autocast(self.device, self.precision == BF16):
            return unit(np.asarray(run(), dtype=np.float32))


def _at(towers: dict[str, Any], precision: str) -> Any:
    """The tower for ``precision`` among ``towers`` (fp32's, and int8's once made): int8's is quantised from
    fp32's once, on first use (Linear layers only); bf16 runs fp32's under autocast."""
    if precision == INT8 and INT8 not in towers:
        import torch

        towers[INT8] = _quantized(towers[FP32], torch)
    return towers[INT8 if precision == INT8 else FP32]


def _quantized(module: Any, torch: Any) -> Any:
    """``module`` with its Linear layers dynamically quantised to int8 (as ``quantize_dynamic`` does), but for
    the input layers (``embeddings``), and every other weight shared with it, not copied. quantize_dynamic needs a
    deep copy to leave the fp32 tower intact, and copies it once more itself: those fp32 copies were the builder's
    peak memory (ViT-B/32 at int8: 1.81 GB, against 1.20 at fp32; 1.62 with one copy)."""
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    clone = copy.copy(module)  # its own table of children; parameters, buffers and hooks shared
    clone._modules = {}
    for name, child in module.named_children():
        if name == "embeddings":  # the input layer stays fp32: SigLIP 2 NaFlex reads its Linear patch embedding's dtype
            clone._modules[name] = child
        elif type(child) is torch.nn.Linear:
            child.qconfig = torch.ao.quantization.default_dynamic_qconfig
            clone._modules[name] = QuantizedLinear.from_float(child)
            del child.qconfig
        else:
            clone._modules[name] = _quantized(child, torch)
    return clone


def default_device(device: str | None) -> str:
    """``device``, or CUDA where there is one, else the CPU."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: str, bf16: bool) -> Any:
    """bf16 autocast on ``device``, or nothing."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in fp32 (under bf16 the model's own normalisation is only bf16-exact)."""
    rows = rows.astype(np.float32, copy=False)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision
