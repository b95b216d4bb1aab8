"""Ingest on a GPU machine without Chroma: the bare model and JPEG files to embeddings and thumbnails.

    python bench/gpu.py [--device cuda] [--n 20000] [--batch 256] [--workers 14] [--out results.json]

The pipeline is build_index with a store that keeps nothing (workload.NullStore): every stage of a
build except Chroma's write, whose cost bench/run.py measures on a CPU. Writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import NullStore, agreement, bare_model, clip, pipeline, vit_b32, write_jpegs  # noqa: E402
from search.core.ids import content_id  # noqa: E402
from search.embedders.clip import ClipEmbedder  # noqa: E402
from search.embedders.clip_input import Pixels  # noqa: E402
from search.images.decode import decode_image, make_thumbnail  # noqa: E402

PIXELS = Pixels()


def prepare_one(path: Path) -> int:
    """What the build does to one file besides the model: read, hash, decode drafted, prepare, thumbnail."""
    data = path.read_bytes()
    content_id(data)
    img = decode_image(data, min_edges=(PIXELS.side, max(PIXELS.side, 256)))
    PIXELS.prepare(img)
    return len(make_thumbnail(img))


def prepare_rate(paths: list[Path], pool: Executor) -> float:
    """Files per second through ``prepare_one`` on ``pool``."""
    start = time.perf_counter()
    list(pool.map(prepare_one, paths, chunksize=64 if isinstance(pool, ProcessPoolExecutor) else 1))
    return round(len(paths) / (time.perf_counter() - start), 1)


def embed_rate(embedder: ClipEmbedder, paths: list[Path], batch: int) -> float:
    """Images per second through embed_images alone (stacking, transfer, model), nothing else running."""
    from PIL import Image

    images = [PIXELS.prepare(Image.open(p).convert("RGB")) for p in paths[:batch]]
    embedder.embed_images(images, batch_size=batch)
    start = time.perf_counter()
    for _ in range(5):
        embedder.embed_images(images, batch_size=batch)
    return round(5 * len(images) / (time.perf_counter() - start), 1)


def scaling(embedder: ClipEmbedder, paths: list[Path], batch: int) -> dict:
    """Where the pipeline's time goes: preparation on threads (one GIL) or processes, and embedding alone."""
    out: dict = {"embed_images_alone": embed_rate(embedder, paths, batch)}
    for workers in (1, 4, os.cpu_count() or 2):
        with ThreadPoolExecutor(workers) as threads:
            out[f"prepare_threads_{workers}"] = prepare_rate(paths, threads)
        with ProcessPoolExecutor(workers) as processes:
            out[f"prepare_processes_{workers}"] = prepare_rate(paths, processes)
    return out


def main() -> None:
    """Measure, printing each figure as it comes and saving them all."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--n", type=int, default=20000, help="640x480 JPEGs to ingest")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--model", type=Path, help="a checkpoint; default: ViT-B/32 with random weights")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    result: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                    "torch": torch.__version__, "cpu_cores": os.cpu_count(), "batch": args.batch,
                    "workers": args.workers}

    def save(key: str, value: object) -> None:
        result[key] = value
        print(key, value, flush=True)
        args.out.write_text(json.dumps(result, indent=2))

    start = time.perf_counter()
    model = args.model or vit_b32(work / "vit-b-32")
    embedder = clip(str(model), args.device, "auto", args.batch)
    assert embedder.decision is not None
    save("auto_decision", {"precision": embedder.precision, "reason": embedder.decision.reason,
                           "trials": [t.__dict__ for t in embedder.decision.trials], "rate": embedder.decision.rate,
                           "seconds_to_load_and_decide": round(time.perf_counter() - start, 1)})
    save("agreement_with_fp32", agreement(embedder))
    save("bare_model_images_per_second", bare_model(embedder, args.batch, 5))
    start = time.perf_counter()
    folder = work / "jpeg-640x480"
    write_jpegs(folder, args.n, (640, 480), distinct=200)
    save("jpegs_written_seconds", round(time.perf_counter() - start, 1))
    save("images_per_second_by_part", scaling(embedder, sorted(folder.glob("*.jpg"))[: min(args.n, 6000)], args.batch))
    runs = [pipeline(embedder, folder, NullStore(work), args.batch, args.workers) for _ in range(2)]
    save("pipeline_no_store", runs)
    bare = result["bare_model_images_per_second"][embedder.precision]
    best = max(r["images_per_second"] for r in runs)
    save("pipeline_ratio_to_bare_model", round(best / bare, 3))


if __name__ == "__main__":
    main()
