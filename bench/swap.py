"""Model swap throughput: a collection of 640x480 JPEGs re-embedded with ViT-B/32 (random weights, the real
compute), read from the original files and, after they are moved away, from the stored thumbnails; beside it
the build of the same folder, for reference. Prints images/s for each, with the machine it ran on.

    python bench/swap.py [--images 96] [--work /tmp/swap-bench]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import cpu_flags, machine
from bench.workload import vit_b32, write_jpegs
from search.embedders.registry import load_embedder
from search.pipeline.build import BuildOptions, build_index
from search.pipeline.swap import reembed
from search.sources.base import folder_items
from search.stores.store import Store


def main() -> None:
    """Build, then re-embed twice (from originals, then from thumbnails), timing each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--work", type=Path, default=Path("/tmp/swap-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.work / "store", ignore_errors=True)
    photos = write_jpegs(args.work / "photos", args.images, (640, 480))
    model = load_embedder(str(vit_b32(args.work / "vit-b32")), precision="auto", batch_size=32)
    store = Store.connect(args.work / "store", create=True)
    out: dict = {"machine": machine("cpu"), "cpu_flags": cpu_flags(), "images": len(photos),
                 "precision": getattr(model, "precision", "fp32")}
    with store.write_lock():
        start = time.perf_counter()
        build_index(folder_items(args.work / "photos"), store, "images", model,
                    BuildOptions(source=str(args.work / "photos"), total=len(photos)))
        out["build_images_per_second"] = round(len(photos) / (time.perf_counter() - start), 1)
        report = reembed(store, "images", model)
        out["reembed_from_originals_images_per_second"] = round(report.embedded / report.seconds, 1)
        out["thumbnail_agreement_to_originals"] = report.thumbnail_agreement
        store.drop("images.next")
        (args.work / "photos").rename(args.work / "photos-moved")  # originals gone: thumbnails only
        try:
            report = reembed(store, "images", model)
        finally:
            (args.work / "photos-moved").rename(args.work / "photos")
        assert report.from_thumbnail == len(photos)
        out["reembed_from_thumbnails_images_per_second"] = round(report.embedded / report.seconds, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
