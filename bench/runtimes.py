"""Runtimes side by side: torch (fp32, int8 by dynamic quantisation, as towers.py runs them) against ONNX Runtime
(fp32, int8: search/embedders/onnx_runtime.py) on CLIP ViT-B/32's image tower at a build's batch and its text
tower at one query, in interleaved rounds (A, B, C, D, A, B, ...), so a busy moment slows every candidate alike.

    python bench/runtimes.py [--model PATH] [--rounds 5] [--batch 32]

Agreement with torch fp32 on the probe photos (mean cosine, top-10 overlap) comes with each. Prints a table and
keeps the figures in bench/runtimes.json with the machine's CPU flags and the load average around them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import CACHE, cpu_flags, machine
from bench.workload import vit_b32

RESULTS = Path(__file__).with_name("runtimes.json")
QUERY = "a photo of two dogs playing on a beach at sunset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=CACHE / "vit-b-32-random")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    result = measure(vit_b32(args.model) if args.model == CACHE / "vit-b-32-random" else args.model,
                     args.rounds, args.batch)
    print(table(result))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


def measure(model_path: Path, rounds: int, batch: int) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from search.embedders.clip_input import Pixels, image_tower, text_tower
    from search.embedders.onnx_runtime import OnnxTowers, clip_towers, export
    from search.embedders.precision import probe_images, top10_overlap

    model = SentenceTransformer(str(model_path), device="cpu")
    module = model[0]
    pixels = Pixels.of(module.processor.image_processor)
    folder = Path(tempfile.mkdtemp(prefix="runtimes-")) / "towers"
    export(folder, **clip_towers(model))
    photos = probe_images(batch)
    inputs = torch.from_numpy(pixels.normalized(pixels.array(photos)))
    tokens = module.preprocess([QUERY])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    images_fp32, texts_fp32 = image_tower(module.model), text_tower(module.model)
    quantize = torch.ao.quantization.quantize_dynamic
    images_int8 = quantize(copy.deepcopy(images_fp32), {torch.nn.Linear}, dtype=torch.qint8)
    texts_int8 = quantize(copy.deepcopy(texts_fp32), {torch.nn.Linear}, dtype=torch.qint8)
    onnx = {p: OnnxTowers(folder, p) for p in ("fp32", "int8")}

    def torch_images(tower: Any) -> Callable[[], np.ndarray]:
        return lambda: torch.nn.functional.normalize(tower(inputs), dim=1).numpy()

    def torch_text(tower: Any) -> Callable[[], np.ndarray]:
        return lambda: tower(ids, mask).numpy()

    image_runs = {"torch fp32": torch_images(images_fp32), "torch int8": torch_images(images_int8),
                  "onnxruntime fp32": lambda: onnx["fp32"].embed_images(photos),
                  "onnxruntime int8": lambda: onnx["int8"].embed_images(photos)}
    text_runs = {"torch fp32": torch_text(texts_fp32), "torch int8": torch_text(texts_int8),
                 "onnxruntime fp32": lambda: onnx["fp32"].embed_texts([QUERY]),
                 "onnxruntime int8": lambda: onnx["int8"].embed_texts([QUERY])}
    out: dict[str, Any] = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "torch_threads": torch.get_num_threads(),
                           "batch": batch, "rounds": rounds, "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with torch.no_grad():
        reference = image_runs["torch fp32"]()
        agreement = {}
        for name, run in image_runs.items():
            rows = run()
            agreement[name] = {"mean_cosine": round(float(np.mean(np.sum(rows * reference, axis=1))), 5),
                               "top10_overlap": round(top10_overlap(reference, rows), 4)}
        image_seconds = interleaved(image_runs, rounds)
        text_seconds = interleaved(text_runs, rounds * 10)
    base_image = statistics.median(image_seconds["torch fp32"])
    base_text = statistics.median(text_seconds["torch fp32"])
    out["runtimes"] = {
        name: {"images_per_s": round(batch / statistics.median(image_seconds[name]), 2),
               "image_speedup": round(base_image / statistics.median(image_seconds[name]), 2),
               "text_ms": round(1000 * statistics.median(text_seconds[name]), 1),
               "text_speedup": round(base_text / statistics.median(text_seconds[name]), 2),
               **agreement[name]}
        for name in image_runs}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def interleaved(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each run, one call of each in turn per round, after one warm-up call each."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def table(r: dict[str, Any]) -> str:
    lines = [f"{r['machine']}; flags {' '.join(r['cpu_flags'])}; load {r['load_average_before']} -> "
             f"{r['load_average_after']}", "",
             f"| runtime | images/s (batch {r['batch']}) | vs torch fp32 | text ms (one query) | vs torch fp32 | "
             "cosine to torch fp32 | top-10 overlap |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in r["runtimes"].items():
        lines.append(f"| {name} | {f['images_per_s']} | {f['image_speedup']}x | {f['text_ms']} | {f['text_speedup']}x "
                     f"| {f['mean_cosine']} | {f['top10_overlap']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
