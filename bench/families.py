"""Bare model speed per family on this machine: images/s and ms per text query, random weights, real shapes.

    python bench/families.py [--runs 2] [--rounds 3] [--batch 32] [--only NAME] [--out bench/families.json]

Each model is its published architecture (transformers' configs; weights cannot be downloaded here, and speed
does not depend on them): OpenAI CLIP ViT-B/32, SigLIP 2 B/32 at 256 px, B/16 at 224 px, L/16 at 256 px and
So400m/14 at 384 px (FixRes, Gemma's 256k vocabulary). Images: a batch of ``--batch`` (at most 8 at 384 px) at
the model's input size, fp32 and (where the CPU has native bf16) bf16 autocast, rounds interleaved, medians.
Texts: one query at a time, as the app runs them (CLIP: a typical 9-token query; SigLIP: always 64 tokens, its
padded length). The whole sequence runs ``--runs`` times; ``best`` keeps each figure's best run, as a shared
host's neighbours slow one run by up to 2x.
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
    """name -> (a maker of the model, image side, text length): made one at a time, as the largest hold GBs."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    def siglip(patch: int, side: int, **size: int):
        return SiglipModel(SiglipConfig(text_config={"vocab_size": 256000, "max_position_embeddings": 64, **size},
                                        vision_config={"patch_size": patch, "image_size": side, **size}))

    large = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
    so400m = {"hidden_size": 1152, "num_hidden_layers": 27, "num_attention_heads": 16, "intermediate_size": 4304}
    return {"clip-ViT-B-32 (OpenAI)": (lambda: CLIPModel(CLIPConfig()), 224, 9),
            "ViT-B-32-SigLIP2-256": (lambda: siglip(32, 256), 256, 64),
            "ViT-B-16-SigLIP2 (224)": (lambda: siglip(16, 224), 224, 64),
            "ViT-L-16-SigLIP2-256": (lambda: siglip(16, 256, **large), 256, 64),
            "ViT-SO400M-14-SigLIP2-384": (lambda: siglip(14, 384, **so400m), 384, 64)}


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


def best(runs: list[dict]) -> dict:
    """Per model, the best of the runs: the most images/s and the fewest ms, the figures least disturbed."""
    out: dict = {}
    for run in runs:
        for name, figures in run.items():
            kept = out.setdefault(name, dict(figures))
            for key, value in figures.items():
                if key.startswith("images_per_second"):
                    kept[key] = max(kept[key], value)
                elif key.startswith("ms_per"):
                    kept[key] = min(kept[key], value)
    return out


def main() -> None:
    """Measure every family's model and write the figures with the machine they came from."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("families.json"))
    parser.add_argument("--only", action="append", default=[], help="measure only the models whose name has this")
    parser.add_argument("--runs", type=int, default=2, help="whole runs, each model measured once in each")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    bf16 = native_bf16("cpu")
    results = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
               "batch": args.batch, "rounds": args.rounds, "runs": []}
    for _ in range(args.runs):  # whole runs repeated: a neighbour's burst on a shared host hits one, not all
        run: dict = {}
        for name, (make, side, tokens) in models().items():
            if args.only and not any(part in name for part in args.only):
                continue
            model = make()
            batch = args.batch if side * side <= 256 * 256 else min(args.batch, 8)  # a 384 px batch of 32 takes minutes
            run[name] = {"batch": batch, **measure(model, side, tokens, batch, args.rounds, bf16)}
            print(name, run[name], flush=True)
            del model
        results["runs"].append(run)
    results["best"] = best(results["runs"])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
