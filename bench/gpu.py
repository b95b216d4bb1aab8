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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import NullStore, agreement, bare_model, pipeline, vit_b32, write_jpegs  # noqa: E402
from search.embedders import ClipEmbedder  # noqa: E402


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
    embedder = ClipEmbedder(str(model), device=args.device, precision="auto", batch_size=args.batch)
    save("auto_decision", {"precision": embedder.precision, "reason": embedder.decision.reason,
                           "trials": [t.__dict__ for t in embedder.decision.trials],
                           "seconds_to_load_and_decide": round(time.perf_counter() - start, 1)})
    save("agreement_with_fp32", agreement(embedder))
    save("bare_model_images_per_second", bare_model(embedder, args.batch, 5))
    start = time.perf_counter()
    folder = work / "jpeg-640x480"
    write_jpegs(folder, args.n, (640, 480), distinct=200)
    save("jpegs_written_seconds", round(time.perf_counter() - start, 1))
    runs = [pipeline(embedder, folder, NullStore(work), args.batch, args.workers) for _ in range(2)]
    save("pipeline_no_store", runs)
    bare = result["bare_model_images_per_second"][embedder.precision]
    best = max(r["images_per_second"] for r in runs)
    save("pipeline_ratio_to_bare_model", round(best / bare, 3))


if __name__ == "__main__":
    main()
