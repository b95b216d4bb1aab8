"""Does the precision race decide alike on a busy machine? It runs the race (search/embedders/precision.py, as
``index_builder.py --precision auto`` runs it) ``--runs`` times beside a process that keeps one core busy and
``--runs`` times beside nothing, and says how often each set agrees with its most common decision.

    python bench/precision_race.py [--runs 10] [--batch 32] [--model PATH] [--out bench/precision_race.json]

The model is ViT-B/32 with random weights (its speed is the trained one's), made once in bench/.cache. Nothing is
remembered between runs: each run races from scratch. CPU flags are printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import CACHE, cpu_flags, machine  # noqa: E402
from bench.workload import clip, vit_b32  # noqa: E402
from search.embedders.precision import Decision, Race, decide  # noqa: E402


def hog() -> None:
    """Keep one core busy until terminated."""
    while True:
        pass


def races(race: Race, runs: int) -> list[Decision]:
    """``runs`` decisions for ``race``, each measured from scratch (MIN_PARAMETERS does not apply: a small model races too)."""
    return [decide(race.encode, race.probes(), race.batch_size, race.tried) for _ in range(runs)]


def summary(decisions: list[Decision]) -> dict:
    """The most common decision, how many runs made it, and each run's precision and speedups."""
    counts = Counter(d.precision for d in decisions)
    common, agreeing = counts.most_common(1)[0]
    return {"decision": common, "agreeing": agreeing, "runs": len(decisions),
            "each": [{"precision": d.precision, "speedups": {t.precision: t.speedup for t in d.trials},
                      "rate": d.rate} for d in decisions]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", type=Path, help="a CLIP checkpoint (default: ViT-B/32, random weights)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    if args.runs < 1 or args.batch < 1:
        parser.error("--runs and --batch must be at least 1")
    embedder = clip(str(args.model or vit_b32(CACHE / "vit-b-32-random")))
    race = embedder.races(args.batch)[0]
    if not race.tried:
        print("nothing to race on this CPU (no native bf16, no fast int8): fp32 every time")
        return
    started = time.perf_counter()
    quiet = summary(races(race, args.runs))
    busy_neighbour = multiprocessing.Process(target=hog, daemon=True)
    busy_neighbour.start()
    try:
        busy = summary(races(race, args.runs))
    finally:
        busy_neighbour.terminate()
        busy_neighbour.join()
    result = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "batch": args.batch, "tried": list(race.tried),
              "quiet": quiet, "beside_a_cpu_hog": busy, "seconds": round(time.perf_counter() - started, 1)}
    print(f"{result['machine']}; flags {' '.join(result['cpu_flags'])}; batch {args.batch}; racing fp32 against "
          f"{', '.join(race.tried)}")
    for name, said in (("quiet", quiet), ("beside a CPU hog", busy)):
        print(f"{name}: {said['agreeing']} of {said['runs']} runs chose {said['decision']} "
              f"(speedups: {[e['speedups'] for e in said['each']]})")
    if quiet["decision"] != busy["decision"]:
        print("the quiet and the busy machine's most common decisions differ")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
