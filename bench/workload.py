"""What the speed benchmarks run: the ViT-B/32 model, photo-like JPEGs, the bare model, and the pipeline.

Needs neither Chroma nor Gradio, so that a GPU machine without them (bench/gpu.py) runs it too.
"""
from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.embedders.clip import ClipEmbedder
from search.embedders.precision import FP32, PRECISIONS, Chooser, probe_images, settle, top10_overlap
from search.pipeline.build import BuildOptions, build_index
from search.sources.base import folder_items

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def vit_b32(path: Path) -> Path:
    """ViT-B/32 with random weights in sentence-transformers format (made once, cached)."""
    if (path / "modules.json").exists():
        return path
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from bench.checkpoints import save_sentence_transformer, write_tokenizer_files

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    return save_sentence_transformer(CLIPModel(CLIPConfig()), processor, path)


def clip(model: str, device: str = "cpu", precision: str = FP32, batch: int = 32) -> ClipEmbedder:
    """The CLIP checkpoint ``model`` loaded, at ``precision`` (``auto``: raced now at ``batch``, remembered nowhere)."""
    embedder = ClipEmbedder(model, device=device)
    embedder.load()
    settle(embedder, precision, batch, Chooser(None))
    return embedder


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: smooth colour fields, edges and sensor noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def write_jpegs(folder: Path, n: int, size: tuple[int, int], distinct: int | None = None) -> list[Path]:
    """``n`` JPEGs of ``size`` on disk (quality 90, as cameras save them).

    ``distinct``: only that many photos are made; each file also carries its own comment segment, so
    every file hashes apart (for sets too large to encode one by one).
    """
    folder.mkdir(parents=True, exist_ok=True)
    encoded: dict[int, bytes] = {}
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            seed = i % (distinct or n)
            if seed not in encoded:
                out = io.BytesIO()
                photo(*size, seed=seed).save(out, "JPEG", quality=90)
                encoded[seed] = out.getvalue()
            path.write_bytes(with_comment(encoded[seed], str(i)))
        paths.append(path)
    return paths


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a comment segment of its own: other bytes (another content id), no re-encoding."""
    comment = text.encode()
    # SOI, then a COM segment (marker, length, text), then the rest of the JPEG.
    return b"\xff\xd8\xff\xfe" + (2 + len(comment)).to_bytes(2, "big") + comment + jpeg[2:]


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def forward(embedder: ClipEmbedder, batch: int, precision: str) -> Callable[[], None]:
    """The bare image tower once on a ready batch of pixels at ``precision`` (warmed once here)."""
    import torch

    side = embedder.min_edges[0]
    pixels = torch.randn(batch, 3, side, side, device=embedder.device)
    tower = embedder.tower(precision)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(embedder.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            tower(pixels)
        if embedder.device == "cuda":
            torch.cuda.synchronize()

    run()
    return run


def precisions(device: str) -> list[str]:
    """fp32, bf16, and int8 where it runs (CPUs)."""
    return [p for p in PRECISIONS if p != "int8" or device == "cpu"]


def bare_model(embedder: ClipEmbedder, batch: int, rounds: int) -> dict[str, float]:
    """Images/s of the bare tower per precision at ``batch``: rounds interleaved, medians."""
    runs = {p: forward(embedder, batch, p) for p in precisions(embedder.device)}
    seconds: dict[str, list[float]] = {p: [] for p in runs}
    for _ in range(rounds):
        for p, run in runs.items():
            seconds[p] += timed(run, 1)
    return {p: round(batch / float(np.median(s)), 1) for p, s in seconds.items()}


def agreement(embedder: ClipEmbedder, images: Sequence[Image.Image] | None = None) -> dict[str, dict[str, float]]:
    """Each precision against fp32 on real photos: mean cosine and top-10 overlap of exact search."""
    images = [embedder.prepare(i) for i in (images or probe_images())]
    full = embedder.embed_images(images, precision="fp32")
    out = {}
    for p in precisions(embedder.device)[1:]:
        rows = embedder.embed_images(images, precision=p)
        out[p] = {"mean_cosine": round(float(np.mean(np.sum(full * rows, axis=1))), 5),
                  "top10_overlap": round(top10_overlap(full, rows), 3)}
    return out


class NullStore:
    """A store that keeps nothing: the pipeline measured without Chroma's write (where it is not installed)."""

    server = None

    def __init__(self, folder: Path):
        self.folder = folder
        self.thumbnail_bytes = 0

    def open_or_create(self, name: str, info: Any, source: str = "") -> NullStore:
        return self

    def held(self, ids: Sequence[str]) -> list[str]:
        return []

    def add(self, collection: Any, records: Sequence[Any], thumbs: dict[str, bytes]) -> None:
        self.records = getattr(self, "records", 0) + len(records)
        self.thumbnail_bytes += sum(len(data) for data in thumbs.values())

    def count(self) -> int:
        return getattr(self, "records", 0)


def pipeline(embedder: ClipEmbedder, folder: Path, store: Any, batch: int, workers: int = 2) -> dict[str, Any]:
    """JPEG files on disk to ``store`` through build_index, with its stage timings."""
    report = build_index(folder_items(folder), store, "bench", embedder,
                         BuildOptions(batch_size=batch, workers=workers, near_duplicate_similarity=None))
    return {"images": report.indexed, "images_per_second": report.images_per_second, "precision": report.precision,
            "seconds": report.seconds, "stage_seconds": report.stage_seconds}
