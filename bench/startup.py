"""Start-up (issue 24): seconds from `python app.py` to the page, and to the first search answered.

    python bench/startup.py [--starts 4] [--images 2000] [--work DIR] [--versus CHECKOUT] [--out bench/startup.json]

ViT-B/32 compute (random weights) over the serving benchmark's synthetic store. Each start is a new
process; a text search is sent as soon as the page answers (it waits for the model) and timed to its
answer. The first start may decide the precisions (remembered in the store), the later ones read them:
they are the second-start figures. Loopback only. Prints JSON with the CPU's flags.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import ROOT, RunningApp
from bench.run import CACHE, machine, vit_b32
from bench.serving import cpu_flags, make_store
from bench.stats import emit


def one_start(store: Path, model: str, root: Path = ROOT) -> dict:
    """One start of ``root``'s app: page, first search answered (seconds from the process's start)."""
    import httpx

    start = time.perf_counter()
    with RunningApp(store, loaded=False, root=root, IMAGE_SEARCH_MODEL=model) as app:
        page = time.perf_counter() - start
        answer = httpx.post(f"{app.url}api/search", json={"text": "a red dress", "k": 12}, timeout=120)
        answer.raise_for_status()
        searched = time.perf_counter() - start
    return {"page_s": round(page, 2), "first_search_s": round(searched, 2)}


def commit(checkout: Path) -> str:
    """The commit a checkout is at, short, to name it in the figures."""
    import subprocess

    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or str(checkout)


def medians(starts: list[dict]) -> dict:
    """Second-start medians: the first start may decide the precisions, the later ones read them."""
    later = starts[1:] or starts
    return {key: round(float(np.median([s[key] for s in later])), 2) for key in ("page_s", "first_search_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=None, help="keeps the store between runs")
    parser.add_argument("--model", type=Path, default=CACHE / "vit-b-32-random", help="made there if missing")
    parser.add_argument("--versus", type=Path, default=None,
                        help="another checkout (git worktree add DIR COMMIT) whose app starts in turn with this one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = str(vit_b32(args.model))
    store = (args.work or Path(tempfile.mkdtemp(prefix="startup-"))) / "store"
    if not (store / "thumbnails").exists():
        make_store(store, model, args.images)
    roots = {"this checkout": ROOT, **({f"versus {commit(args.versus)}": args.versus} if args.versus else {})}
    starts: dict[str, list[dict]] = {name: [] for name in roots}
    for _ in range(args.starts):  # in turn, so that the machine's noise falls on both
        for name, root in roots.items():
            starts[name].append(one_start(store, model, root))
    result = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "model": "ViT-B/32 (random weights)",
              "images": args.images, "starts": starts, "second_start_median": {n: medians(s) for n, s in starts.items()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
