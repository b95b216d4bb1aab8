"""What the two-tower families (CLIP, SigLIP) share: a lifecycle (cheap to make, ``load`` loads), and an image
tower and a text tower, each run at a precision set from outside (fp32 until then; see ``precision``), in
batches, one call at a time, with unit-length rows.

A family says how it loads its towers (``_load``), how a batch of images becomes the image tower's inputs
(``image_inputs``) and how its texts are read; this module runs the towers, offers them to the precision race
(``races``), uses what was decided (``use``) and quantises them for int8.
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

from search.core.metrics import unit
from search.embedders import precision as chosen
from search.embedders.precision import BF16, FP32, INT8, ONNX, SAFE, Decision, Race, check_precision

log = logging.getLogger(__name__)
Tokens = Callable[[list[str]], dict[str, Any]]  # texts -> the text tower's inputs on the device


class TowerEmbedder:
    """The two towers of a model; a family subclasses it with its own ``_load``, ``image_inputs`` and texts.

    Making one loads nothing; ``load()`` loads the model (``dimension`` and ``min_edges`` are known from then
    on) with both towers at SAFE; ``use`` sets a tower's precision (``precision.settle`` or the app's
    background race); ``unload()`` lets the model go.
    """

    normalized = True
    supports_text = True
    exports_onnx = False  # its towers can run on ONNX Runtime (``_exported``): the race tries it on a CPU
    dimension: int
    min_edges: tuple[int, int]

    def __init__(self, name: str, device: str | None = None):
        self.name = name
        self.device = device or ""  # "": CUDA where there is one, else the CPU, once loaded
        self.precision = SAFE  # the image tower's
        self.decision: Decision | None = None  # the image tower's, once one is made
        self.text_decision: Decision | None = None
        self._towers: dict[str, Any] = {}  # the image tower by precision (fp32's, int8's once made)
        self._text_towers: dict[str, Any] = {}
        self._tokens: Tokens | None = None
        self._onnx: dict[str, Any] = {}  # ONNX Runtime's towers by precision (onnx_runtime.OnnxTowers), once used
        # Tokenizers and torch modules are not safe for concurrent calls; the cores are shared anyway.
        self._lock = threading.Lock()
        self._exporting = threading.Lock()  # one ONNX export at a time

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return bool(self._towers)

    def load(self) -> None:
        """Load the model, its towers at SAFE (again after ``unload``; nothing where it is loaded)."""
        with self._lock:
            if self.loaded:
                return
            self.device = default_device(self.device or None)
            image, text, self._tokens = self._load()
            self._towers, self._text_towers = {FP32: image}, {FP32: text}
            self.precision, self.decision, self.text_decision = SAFE, None, None

    def unload(self) -> None:
        """Let the model go (``load`` brings it back, at SAFE)."""
        with self._lock:
            self._towers, self._text_towers, self._tokens, self._onnx = {}, {}, None, {}
            self._unload()

    def _load(self) -> tuple[Any, Any, Tokens]:
        """The family's model loaded: its fp32 image tower, its fp32 text tower and its tokenizer."""
        raise NotImplementedError

    def _unload(self) -> None:
        """The family's own references to its model dropped."""
        raise NotImplementedError

    def _exported(self) -> dict[str, Any]:
        """``onnx_runtime.export``'s arguments for the loaded model's towers (a family that ``exports_onnx``)."""
        raise NotImplementedError

    def races(self, batch_size: int) -> list[Race]:
        """Each tower as the precision race runs it: the image tower at ``batch_size`` on the probe photos, the
        text tower at one text on the probe texts (a query is one text, and at one text the tower's time is
        reading its weights, of which bf16 has half the bytes and int8 a quarter: ViT-B/32 here 23, 16, 6 ms)."""
        tried = tuple(chosen.candidates(self.device, onnx=self.exports_onnx))
        return [Race("image", self.name, self.device, batch_size, _parameters(self._towers[FP32]), tried,
                     self._encode_images, lambda: [self.prepare(img) for img in chosen.probe_images()]),
                Race("text", self.name, self.device, 1, _parameters(self._text_towers[FP32]), tried,
                     self._encode_text_batch, chosen.probe_texts)]

    def use(self, tower: str, decision: Decision) -> None:
        """Run ``tower`` ("image" or "text") at ``decision``'s precision from the next call on; an int8 copy
        made for the race and not chosen is let go."""
        check_precision(decision.precision)
        with self._lock:
            towers = self._towers if tower == "image" else self._text_towers
            if decision.precision != INT8:
                towers.pop(INT8, None)
            if tower == "image":
                self.precision, self.decision = decision.precision, decision
            else:
                self.text_decision = decision
            for unused in set(self._onnx) - {self.precision, self.text_precision}:  # its sessions hold the weights
                del self._onnx[unused]
        log.info("%s: the %s tower runs at %s (%s)", self.name, tower, decision.precision, decision.reason)

    @property
    def text_precision(self) -> str:
        """The text tower's precision (SAFE until one is decided)."""
        return self.text_decision.precision if self.text_decision else SAFE

    def prepare(self, img: Image.Image) -> Image.Image:
        """The model's input image (the family's own steps; here: the image as it is)."""
        return img

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The image tower's keyword inputs for a batch, on the device."""
        raise NotImplementedError

    def _own_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings for texts from the family's own text tower, at its precision."""
        return self._in_batches(self._encode_text_batch, list(texts), batch_size, self.text_precision)

    def _encode_text_batch(self, texts: Sequence[str], precision: str) -> np.ndarray:
        """One forward pass of the text tower at ``precision``."""
        if precision in ONNX:
            runtime = self._runtime(precision)
            with self._lock:
                return runtime.embed_texts(list(texts))
        assert self._tokens is not None, "load() first"
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
        if precision in ONNX:
            runtime = self._runtime(precision)
            with self._lock:
                return runtime.embed_images(images)
        return self._forward(self._towers, self.image_inputs(images), precision)

    def _runtime(self, precision: str) -> Any:
        """ONNX Runtime's towers at ``precision`` ("onnx-fp32" or "onnx-int8"), exported from the loaded model the
        first time this model is asked for them on this machine (``onnx_runtime.cache_folder``)."""
        from search.embedders import onnx_runtime

        runtime = self._onnx.get(precision)
        if runtime is None:
            if not self.exports_onnx:
                raise ValueError(f"{self.name} does not run on ONNX Runtime")
            folder = onnx_runtime.cache_folder(self.name)
            # Not under the lock: the export traces the fp32 towers for a minute, queries go on meanwhile
            with self._exporting:
                if not onnx_runtime.exported(folder):
                    log.info("%s: exporting its towers to ONNX in %s", self.name, folder)
                    onnx_runtime.export(folder, **self._exported())
            runtime = self._onnx[precision] = onnx_runtime.OnnxTowers(folder, precision.removeprefix("onnx-"))
        return runtime

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


def _parameters(tower: Any) -> int:
    return sum(p.numel() for p in tower.parameters())


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
