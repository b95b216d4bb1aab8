"""CLIP's two towers as ONNX graphs, run by ONNX Runtime: a runtime made for inference (Immich's ML service runs
it), 1.7-1.8x torch's speed on this project's CPUs at fp32 and at int8 (docs/benchmarks.md).

``export`` writes a checkpoint's towers once (it needs torch and the loaded model): fp32, and int8 by ONNX
Runtime's dynamic quantisation of the weights; with them the tokenizer, as one ``tokenizer.json`` carrying the
checkpoint's truncation and padding, and the image processor's settings. A CLIP checkpoint has two towers
(``clip_towers``), a sentence-transformers text model such as the multilingual one paired with CLIP has one
(``sentence_tower``). ``OnnxTowers`` runs what was written
with nothing but onnxruntime, tokenizers, numpy and Pillow: no torch, no transformers, no sentence-transformers.
The folder is complete or absent: it is written beside and renamed into place.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.core.metrics import unit
from search.embedders import precision
from search.embedders.clip_input import Pixels
from search.errors import ModelError

OPSET = 17
FORMAT = 1  # of the folder's layout: a change makes older folders unread (and written again)
IMAGE, TEXT = "image", "text"
RUNTIME_PRECISIONS = ("fp32", "int8")
_SETTINGS = "towers.json"
_TOKENIZER = "tokenizer.json"


def export(folder: Path, dimension: int, *, image: tuple[Any, Pixels] | None = None,
           text: tuple[Any, Any, int] | None = None) -> None:
    """Write towers to ``folder`` at fp32 and int8: ``image`` (a torch module from pixel values to embeddings, and
    the pixel settings its input is made with), ``text`` (a module from input ids and attention mask to
    embeddings, its fast Hugging Face tokenizer and the length it truncates at). See ``clip_towers`` and
    ``sentence_tower``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        settings: dict[str, Any] = {"format": FORMAT, "dimension": dimension, "pixels": None, "max_length": None}
        with torch.no_grad():
            if image:
                tower, pixels = image
                side = pixels.side
                torch.onnx.export(tower, (torch.zeros(2, 3, side, side),), str(work / f"{IMAGE}.fp32.onnx"),
                                  input_names=["pixel_values"], output_names=["embeds"],
                                  dynamic_axes={"pixel_values": {0: "batch"}}, opset_version=OPSET, dynamo=False)
                settings["pixels"] = dataclasses.asdict(pixels)
            if text:
                tower, tokenizer, max_length = text
                ids = torch.ones(2, 4, dtype=torch.long)
                torch.onnx.export(tower, (ids, torch.ones_like(ids)), str(work / f"{TEXT}.fp32.onnx"),
                                  input_names=["input_ids", "attention_mask"], output_names=["embeds"],
                                  dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                                "attention_mask": {0: "batch", 1: "tokens"}},
                                  opset_version=OPSET, dynamo=False)
                backend = copy.deepcopy(tokenizer.backend_tokenizer)
                backend.enable_truncation(max_length=max_length)
                backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
                backend.save(str(work / _TOKENIZER))
                settings["max_length"] = max_length
        for graph in work.glob("*.fp32.onnx"):
            quantize_dynamic(graph, graph.with_name(graph.name.replace(".fp32.", ".int8.")), weight_type=QuantType.QInt8)
        (work / _SETTINGS).write_text(json.dumps(settings))
        if folder.exists():  # another process wrote it meanwhile: theirs is as good
            shutil.rmtree(work)
            return
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def clip_towers(model: Any) -> dict[str, Any]:
    """``export``'s arguments for a sentence-transformers CLIP checkpoint: both towers."""
    from search.embedders.clip_input import image_tower, text_tower

    module = model[0]
    return {"dimension": int(module.model.config.projection_dim),
            "image": (image_tower(module.model), Pixels.of(module.processor.image_processor)),
            "text": (text_tower(module.model), module.processor.tokenizer, module.max_seq_length)}


def sentence_tower(model: Any) -> dict[str, Any]:
    """``export``'s arguments for a sentence-transformers text model (a transformer, its pooling, any dense layers):
    the whole of it, as one text tower."""
    import torch

    class Sentence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    return {"dimension": int(model.get_embedding_dimension()),
            "text": (Sentence().eval(), model[0].tokenizer, model.max_seq_length)}


def cache_folder(model: str) -> Path:
    """Where the export of ``model`` is kept: beside the Hugging Face cache, under a key of the model (its name and a
    local checkpoint's weights) and of what wrote it (torch, onnx and onnxruntime, the opset, this layout)."""
    from huggingface_hub import constants

    versions = [precision.version_of(p) for p in ("torch", "onnx", "onnxruntime")]
    key = json.dumps([model, precision.weights(model), versions, OPSET, FORMAT])
    return Path(constants.HF_HOME) / "image-search-onnx" / hashlib.sha256(key.encode()).hexdigest()[:32]


def exported(folder: Path) -> bool:
    """Whether ``folder`` holds a complete export of this layout."""
    try:
        return json.loads((folder / _SETTINGS).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class OnnxTowers:
    """An exported checkpoint's towers at one precision (``fp32`` or ``int8``), in ONNX Runtime sessions made
    when first used; unit-length rows."""

    def __init__(self, folder: Path, precision: str = "fp32", threads: int | None = None):
        if precision not in RUNTIME_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(RUNTIME_PRECISIONS)}, not {precision!r}")
        self.folder, self.precision = folder, precision
        try:
            settings = json.loads((folder / _SETTINGS).read_text())
            p = settings["pixels"]
            self.pixels = p and Pixels(int(p["shortest"]), int(p["side"]), tuple(p["mean"]), tuple(p["std"]))
            self.dimension = int(settings["dimension"])
            self.supports_text = bool(settings["max_length"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError("the model's ONNX export is missing or damaged; it is made again from the checkpoint",
                             internals=f"{folder}: {type(exc).__name__}: {exc}") from exc
        self._threads = threads or os.cpu_count() or 1
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None

    def _session(self, tower: str) -> Any:
        if tower not in self._sessions:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            with self._damaged():
                self._sessions[tower] = onnxruntime.InferenceSession(
                    str(self.folder / f"{tower}.{self.precision}.onnx"), options, providers=["CPUExecutionProvider"])
        return self._sessions[tower]

    @contextlib.contextmanager
    def _damaged(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # onnxruntime and tokenizers raise their own types for missing and malformed files
            raise ModelError("the model's ONNX export is missing or damaged; it is made again from the checkpoint",
                             internals=f"{self.folder}: {type(exc).__name__}: {exc}") from exc

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One unit-length row per image (each prepared as the checkpoint's processor would)."""
        if not self.pixels:
            raise ModelError("this model reads texts only")
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        batch = self.pixels.normalized(self.pixels.array(images))
        return unit(self._session(IMAGE).run(None, {"pixel_values": batch})[0])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text, tokenised, truncated and padded as the checkpoint's own module does."""
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        encoded = self._tokenize(list(texts))
        ids = np.array([e.ids for e in encoded], np.int64)
        mask = np.array([e.attention_mask for e in encoded], np.int64)
        return unit(self._session(TEXT).run(None, {"input_ids": ids, "attention_mask": mask})[0])

    def _tokenize(self, texts: list[str]) -> list[Any]:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            with self._damaged():
                self._tokenizer = Tokenizer.from_file(str(self.folder / _TOKENIZER))
        return self._tokenizer.encode_batch(texts)
