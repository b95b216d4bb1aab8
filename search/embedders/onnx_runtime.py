"""CLIP's two towers as ONNX graphs, run by ONNX Runtime: a runtime made for inference (Immich's ML service runs
it), 1.7-1.8x torch's speed on this project's CPUs at fp32 and at int8 (docs/benchmarks.md).

``export`` writes a checkpoint's towers once (it needs torch and the loaded model): fp32, and int8 by ONNX
Runtime's dynamic quantisation of the weights; with them the tokenizer, as one ``tokenizer.json`` carrying the
checkpoint's truncation and padding, and the image processor's settings. ``OnnxTowers`` runs what was written
with nothing but onnxruntime, tokenizers, numpy and Pillow: no torch, no transformers, no sentence-transformers.
The folder is complete or absent: it is written beside and renamed into place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.embedders.clip_input import Pixels
from search.errors import ModelError

OPSET = 17
FORMAT = 1  # of the folder's layout: a change makes older folders unread (and written again)
IMAGE, TEXT = "image", "text"
RUNTIME_PRECISIONS = ("fp32", "int8")
_SETTINGS = "towers.json"
_TOKENIZER = "tokenizer.json"


def export(clip: Any, tokenizer: Any, pixels: Pixels, max_length: int, folder: Path) -> None:
    """Write ``clip``'s (a transformers CLIPModel) image and text towers to ``folder`` at fp32 and int8, with
    ``tokenizer`` (a fast Hugging Face tokenizer), truncating at ``max_length``, and ``pixels``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from search.embedders.clip_input import image_tower, text_tower

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        side = pixels.side
        with torch.no_grad():
            torch.onnx.export(image_tower(clip), (torch.zeros(2, 3, side, side),), str(work / f"{IMAGE}.fp32.onnx"),
                              input_names=["pixel_values"], output_names=["embeds"],
                              dynamic_axes={"pixel_values": {0: "batch"}}, opset_version=OPSET, dynamo=False)
            ids = torch.ones(2, 4, dtype=torch.long)
            torch.onnx.export(text_tower(clip), (ids, torch.ones_like(ids)), str(work / f"{TEXT}.fp32.onnx"),
                              input_names=["input_ids", "attention_mask"], output_names=["embeds"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}},
                              opset_version=OPSET, dynamo=False)
        for tower in (IMAGE, TEXT):
            quantize_dynamic(work / f"{tower}.fp32.onnx", work / f"{tower}.int8.onnx", weight_type=QuantType.QInt8)
        backend = tokenizer.backend_tokenizer
        backend.enable_truncation(max_length=max_length)
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        backend.save(str(work / _TOKENIZER))
        settings = {"format": FORMAT, "pixels": dataclasses.asdict(pixels), "max_length": max_length,
                    "dimension": int(clip.config.projection_dim)}
        (work / _SETTINGS).write_text(json.dumps(settings))
        if folder.exists():  # another process wrote it meanwhile: theirs is as good
            shutil.rmtree(work)
            return
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


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
            self.pixels = Pixels(int(p["shortest"]), int(p["side"]), tuple(p["mean"]), tuple(p["std"]))
            self.dimension = int(settings["dimension"])
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
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        batch = self.pixels.normalized(self.pixels.array(images))
        return _unit(self._session(IMAGE).run(None, {"pixel_values": batch})[0])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text, tokenised, truncated and padded as the checkpoint's own module does."""
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        encoded = self._tokenize(list(texts))
        ids = np.array([e.ids for e in encoded], np.int64)
        mask = np.array([e.attention_mask for e in encoded], np.int64)
        return _unit(self._session(TEXT).run(None, {"input_ids": ids, "attention_mask": mask})[0])

    def _tokenize(self, texts: list[str]) -> list[Any]:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            with self._damaged():
                self._tokenizer = Tokenizer.from_file(str(self.folder / _TOKENIZER))
        return self._tokenizer.encode_batch(texts)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
