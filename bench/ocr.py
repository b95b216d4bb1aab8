"""OCR cost on this machine: images/s for search.images.ocr.read_text at its default settings, on 640x480 JPEGs
with rendered text (English and Vietnamese, DejaVuSans, 16-40 px, plain and photo-like backgrounds) and on
photo-like JPEGs without text; one image at a time and one per core at once, rounds interleaved, medians.
Beside it: the same text images with Tesseract's OpenMP on every core (its default, which read_text overrides),
the share of drawn words read, and read_facts' time per JPEG (search/images/metadata.py), header only.

    python bench/ocr.py [--images 16] [--rounds 3] [--out bench/ocr.json]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytesseract
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import cpu_flags
from bench.workload import photo
from search.core.words import fold, tokens
from search.images import metadata, ocr

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = ["Phở bò tái", "Bánh mì Sài Gòn", "Cà phê sữa đá", "Hoa đào Tết", "Fresh coffee served daily",
         "Grand opening sale today", "Welcome to the night market"]
SIZES = (16, 24, 32, 40)


def text_jpeg(seed: int) -> tuple[bytes, list[str]]:
    """A 640x480 JPEG of text lines (plain paper or a photo), and the words drawn."""
    rng = np.random.default_rng(seed)
    img = photo(640, 480, seed) if seed % 2 else Image.new("RGB", (640, 480), (250, 248, 240))
    if seed % 2:  # lighten the photo so dark text stands on it, as on a sign or a poster
        img = Image.fromarray((np.asarray(img, dtype=np.float32) * 0.5 + 127).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    size = SIZES[seed % len(SIZES)]
    font = ImageFont.truetype(str(FONT), size)
    drawn, y = [], size
    for line in rng.permutation(LINES):
        if y + size * 1.3 > 480 or draw.textlength(str(line), font=font) > 600:
            continue
        draw.text((20, y), str(line), font=font, fill=(20, 20, 25))
        drawn += tokens(str(line))
        y += int(size * 1.6)
    return jpeg(img), drawn


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def images_per_second(images: list[bytes], workers: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:  # each read_text waits on its own Tesseract process
        list(pool.map(ocr.read_text, images))
    return len(images) / (time.perf_counter() - start)


def metadata_us(data: bytes, repeat: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        metadata.read_facts(data)
    return (time.perf_counter() - start) / repeat * 1e6


def tagged_jpeg() -> bytes:
    """A camera JPEG with an EXIF caption, XP keywords, a capture time and an XMP packet."""
    exif = Image.Exif()
    exif[0x010E] = "Chợ hoa ngày Tết ở Hà Nội".encode()
    exif[0x9C9E] = "tết;chợ hoa;Hà Nội".encode("utf-16-le") + b"\x00\x00"
    exif.get_ifd(0x8769)[0x9003] = "2024:01:31 12:34:56"
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>tết</rdf:li>'
           "<rdf:li>hoa đào</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>")
    out = io.BytesIO()
    photo(4000, 3000, 1).save(out, "JPEG", quality=90, exif=exif, xmp=xmp.encode())
    return out.getvalue()


def main() -> None:
    """Time read_text on both sets, then read_facts, and write the figures with the machine they came from."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ocr.json"))
    args = parser.parse_args()
    if ocr.missing():
        sys.exit(ocr.missing())
    load_at_start = os.getloadavg()[0]
    texts = [text_jpeg(i) for i in range(args.images)]
    with_text = [data for data, _ in texts]
    without_text = [jpeg(photo(640, 480, 1000 + i)) for i in range(args.images)]
    cores = os.cpu_count() or 1
    read = [ocr.read_text(data) for data in with_text]  # also warms the disk cache of Tesseract's models
    drawn = [w for _, words in texts for w in words]
    found = {fold(w) for text in read for w in tokens(text)}
    runs: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        runs.setdefault("text_images_per_second", []).append(images_per_second(with_text, 1))
        runs.setdefault("photo_images_per_second", []).append(images_per_second(without_text, 1))
        runs.setdefault(f"text_images_per_second_{cores}_at_once", []).append(images_per_second(with_text, cores))
        runs.setdefault(f"photo_images_per_second_{cores}_at_once", []).append(images_per_second(without_text, cores))
        os.environ["OMP_THREAD_LIMIT"] = str(cores)  # what Tesseract does when left alone
        try:
            runs.setdefault("text_images_per_second_openmp_all_cores", []).append(images_per_second(with_text, 1))
        finally:
            del os.environ["OMP_THREAD_LIMIT"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    plain = jpeg(photo(4000, 3000, 2))
    results = {
        "machine": f"{cores} cores of {cpu}, Tesseract {pytesseract.get_tesseract_version()}, pytesseract "
                   f"{pytesseract.__version__}", "cpu_flags": cpu_flags(),
        "load_average_1min_at_start_and_end": [load_at_start, os.getloadavg()[0]],  # the CPU is shared
        "images": args.images, "rounds": args.rounds,
        **{name: round(statistics.median(values), 2) for name, values in runs.items()},
        "text_words_read_share_folded": round(sum(fold(w) in found for w in drawn) / len(drawn), 3),
        "photo_words_read": sum(len(tokens(ocr.read_text(data))) for data in without_text),
        "metadata_us_per_jpeg": {"4000x3000 with EXIF, XP keywords and XMP": round(metadata_us(tagged_jpeg()), 1),
                                 "4000x3000 without metadata": round(metadata_us(plain), 1)},
    }
    print(json.dumps(results, indent=2, ensure_ascii=False))
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
