"""The Ray engine beside its reference, the local runner, in one run: a folder of 640x480 JPEGs embedded with
ViT-B/32 (random weights, the real compute) into a fresh store by each, alternated ``--repeat`` times, on a
Ray started here with every core. Prints and adds to ``--out`` (one entry per invocation: the figures of a
shared machine are noisy) images/s for each, Ray's start and the model actors' loading apart from the build,
how far the two engines' vectors agree, and the machine with its CPU flags. The first round is Ray's cold one
(its workers load the model, as a single command's build does); the medians are of the later rounds.

    python bench/ray_build.py [--images 192] [--repeat 3] [--work /tmp/ray-bench] [--out bench/ray_build.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import cpu_flags, machine
from bench.workload import vit_b32, write_jpegs
from search.embedders.registry import load_embedder
from search.pipeline.build import BuildOptions, ModelSpec, build_index
from search.pipeline.ray_engine import RayEngine
from search.sources.base import folder_items
from search.stores.store import Store


def main() -> None:
    """Build the folder with each engine in turn, timing each, then compare the two stores' vectors."""
    import numpy as np
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ray-bench"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    photos = write_jpegs(args.work / "photos", args.images, (640, 480))
    model_path = str(vit_b32(args.work / "vit-b32"))
    decisions = str(args.work / "precision.json")  # both engines' auto precision, decided once for this machine
    model = load_embedder(model_path, precision="auto", batch_size=32, decisions=decisions)
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    options = BuildOptions(source=str(args.work / "photos"), total=len(photos))
    rounds = []
    for old in args.work.glob("store-*"):
        shutil.rmtree(old)
    for n in range(args.repeat):
        # A store folder per build: Chroma keeps a client per path in the process, data and all.
        stores = {name: args.work / f"store-{name}-{n}" for name in ("local", "ray")}
        start = time.perf_counter()
        local = build_index(folder_items(args.work / "photos"), Store.connect(stores["local"], create=True), "images",
                            model, options)
        local_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ours = RayEngine().run(folder_items(args.work / "photos"), Store.connect(stores["ray"], create=True), "images",
                               ModelSpec(model_path, decisions=decisions), options)
        ray_seconds = time.perf_counter() - start
        assert local.indexed == ours.indexed == len(photos), (local.to_dict(), ours.to_dict())
        rounds.append({"ray_workers": "warm" if n else "cold (loading the model in each, as one command's build does)",
                       "local_images_per_second": round(len(photos) / local_seconds, 1),
                       "ray_images_per_second": round(len(photos) / ours.seconds, 1),
                       "ray_actors_start_seconds": round(ray_seconds - ours.seconds, 1),
                       "ray_with_actors_start_images_per_second": round(len(photos) / ray_seconds, 1),
                       "local_stage_seconds": local.stage_seconds, "ray_stage_seconds": ours.stage_seconds,
                       "precision": {"local": local.precision, "ray": ours.precision}})
    vectors = {name: dict(zip(*Store.connect(folder).open("images").scan_vectors())) for name, folder in stores.items()}
    cosines = [float(np.dot(v, vectors["local"][i]) / np.linalg.norm(v) / np.linalg.norm(vectors["local"][i]))
               for i, v in vectors["ray"].items()]
    ray.shutdown()
    steady = rounds[1:] or rounds  # after the first round, Ray's workers have the model loaded
    local_median = statistics.median(r["local_images_per_second"] for r in steady)
    ray_median = statistics.median(r["ray_images_per_second"] for r in steady)
    result = {"at": time.strftime("%Y-%m-%d %H:%M"), "machine": machine("cpu"), "cpu_flags": cpu_flags(),
              "images": len(photos), "size": "640x480 JPEG", "model": "ViT-B/32 (random weights)",
              "ray_start_seconds": round(ray_start, 1), "rounds": rounds,
              "median_images_per_second_warm": {"local": round(local_median, 1), "ray": round(ray_median, 1)},
              "ray_to_local": round(ray_median / local_median, 2),
              "vectors": {"same_ids": sorted(vectors["ray"]) == sorted(vectors["local"]),
                          "min_cosine_ray_to_local": round(min(cosines), 6)}}
    print(json.dumps(result, indent=2))
    earlier = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*earlier, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
