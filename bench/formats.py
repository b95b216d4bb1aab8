"""Decoding rate per format on this machine: images/s through search.images.decode.decode_image as a build calls it
for CLIP (min_edges 224/256, the build's pixel limit), one thread, for the example photos at a phone-like 3 MP
(2016x1512) saved as JPEG, HEIC with a 320-pixel thumbnail (as phones write it), HEIC without one (decoded whole),
AVIF and a DNG whose preview is that JPEG; medians of interleaved rounds. Not a test: figures depend on the machine,
which the JSON names (CPU flags, cores, load).

    python bench/formats.py [--rounds 5] [--out bench/formats.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pillow_heif
import rawpy
from PIL import Image
from PIL import __version__ as pillow_version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.camera import dng, encode
from bench.run import cpu_flags
from search.images.decode import decode_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = (2016, 1512)
CLIP_EDGES = (224, 256)


def files() -> dict[str, list[bytes]]:
    """The example photos at SIZE in each format."""
    photos = [Image.open(p).convert("RGB").resize(SIZE) for p in sorted(EXAMPLES.glob("*.jpg"))[:3]]
    jpegs = [encode(p, "JPEG", quality=90) for p in photos]
    return {
        "JPEG": jpegs,
        "HEIC (thumbnail)": [encode(p, "HEIF", quality=60, thumbnails=[320]) for p in photos],
        "HEIC (whole)": [encode(p, "HEIF", quality=60) for p in photos],
        "AVIF": [encode(p, "AVIF", quality=60, speed=8) for p in photos],
        "DNG (JPEG preview)": [dng(p, preview_jpeg=j) for p, j in zip(photos, jpegs, strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("formats.json"))
    args = parser.parse_args()
    made = files()
    rates: dict[str, list[float]] = {name: [] for name in made}
    for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere falls on every format alike
        for name, batch in made.items():
            start = time.perf_counter()
            for data in batch:
                decode_image(data, min_edges=CLIP_EDGES)
            rates[name].append(len(batch) / (time.perf_counter() - start))
    out = {
        "what": f"decode_image(min_edges={CLIP_EDGES}) of the example photos at {SIZE[0]}x{SIZE[1]}, one thread",
        "images_per_second": {name: round(statistics.median(r), 1) for name, r in rates.items()},
        "decoded_size": {name: list(decode_image(batch[0], min_edges=CLIP_EDGES).size) for name, batch in made.items()},
        "file_kb": {name: round(statistics.mean(len(d) for d in batch) / 1024) for name, batch in made.items()},
        "rounds": args.rounds,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
                    "load_1_5_15": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"pillow": pillow_version, "pillow_heif": pillow_heif.__version__, "libheif":
                     pillow_heif.libheif_version(), "rawpy": rawpy.__version__,
                     "libraw": ".".join(map(str, rawpy.libraw_version))},
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
