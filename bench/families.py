"""Bare model speed per family on this machine: images/s and ms per text query, random weights, real shapes.

    python bench/families.py [--rounds 3] [--batch 32] [--out bench/families.json]

Each model is its published architecture (transformers' configs; weights cannot be downloaded here, and speed
does not depend on them): OpenAI CLIP ViT-B/32, SigLIP 2 B/32 at 256 px and B/16 at 224 px (FixRes, Gemma's
256k vocabulary). Images: a batch of ``--batch`` at the model's input size, fp32 and (where the CPU has native
bf16) bf16 autocast, rounds interleaved, medians. Texts: one query at a time, as the app runs them (CLIP: a
typical 9-token query; SigLIP: always 64 tokens, its padded length).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import cpu_flags, machine
from search.embedders.precision import native_bf16
from search.embedders.towers import autocast


def models() -> dict:
    """name -> (model, image side, text length)."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    def siglip(patch: int, side: int):
        return SiglipModel(SiglipConfig(text_config={"vocab_size": 256000, "max_position_embeddings": 64},
                                        vision_config={"patch_size": patch, "image_size": side}))

    return {"clip-ViT-B-32 (OpenAI)": (CLIPModel(CLIPConfig()), 224, 9),
            "ViT-B-32-SigLIP2-256": (siglip(32, 256), 256, 64),
            "ViT-B-16-SigLIP2 (224)": (siglip(16, 224), 224, 64)}


def median_seconds(run, rounds: int) -> float:
    run()  # warm: the first call at a shape pays its setup
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, side: int, tokens: int, batch: int, rounds: int, bf16: bool) -> dict:
    import torch

    model.eval()
    pixels = torch.randn(batch, 3, side, side)
    ids = torch.randint(5, 1000, (1, tokens))
    out: dict = {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        def images(p=precision):
            with torch.inference_mode(), autocast("cpu", p == "bf16"):
                model.get_image_features(pixel_values=pixels)

        def text(p=precision):
            with torch.inference_mode(), autocast("cpu", p == "bf16"):
                model.get_text_features(input_ids=ids)

        out[f"images_per_second_{precision}"] = round(batch / median_seconds(images, rounds), 1)
        out[f"ms_per_text_query_{precision}"] = round(1000 * median_seconds(text, max(rounds, 10)), 1)
    return out


def main() -> None:
    """Measure every family's model and write the figures with the machine they came from."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("families.json"))
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    bf16 = native_bf16("cpu")
    results = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
               "batch": args.batch, "rounds": args.rounds, "models": {}}
    for name, (model, side, tokens) in models().items():
        results["models"][name] = measure(model, side, tokens, args.batch, args.rounds, bf16)
        print(name, results["models"][name], flush=True)
        del model
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
