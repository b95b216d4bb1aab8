"""What the keyword channel costs (issue 23): a text query with and without it, the FTS5 search alone, and
writing a collection's words, over synthetic stores with product-like captions.

    python bench/words.py [--images 2000 20000] [--repeat 40]

ViT-B/32 compute (random weights, as bench/run.py makes it) for the text tower; clustered unit vectors with
valid ids and captions drawn from a small vocabulary (English and Vietnamese), so most queries find words.
Queries alternate fused / vectors alone query by query, so noise on the machine falls on both. Prints JSON
and writes bench/words.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import CACHE, cpu_flags, machine
from bench.stats import percentiles
from bench.workload import vit_b32
from search.core.query import Part, Query
from search.core.record import RecordMeta
from search.core.words import query_words
from search.index import ImageIndex
from search.stores.base import ModelInfo, Record
from search.stores.keywords import Keywords
from search.stores.store import Store

WORDS = ("red", "blue", "black", "white", "dress", "shirt", "shoes", "running", "leather", "cotton", "summer",
         "Nike", "Adidas", "Puma", "áo dài", "phở bò", "bánh mì", "giày thể thao", "túi xách", "nón lá")
QUERIES = ("red dress", "Nike running shoes", "áo dài trắng", "giay the thao", "a photo of a cat", "leather bag")


def make_store(folder: Path, model: str, n: int) -> None:
    """``n`` clustered unit vectors, each with a caption of 3-6 words from WORDS."""
    from bench.workload import clip

    embedder = clip(model)
    rng = np.random.default_rng(0)
    pick = random.Random(0)
    centres = rng.normal(size=(max(10, n // 100), embedder.dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store.connect(folder, create=True)
    col = store.open_or_create("images", ModelInfo.of(embedder))
    for start in range(0, n, 1000):
        records = [Record(f"{j:032x}", vectors[j], RecordMeta(source=f"synthetic/{j}", caption=" ".join(
            pick.sample(WORDS, pick.randint(3, 6))))) for j in range(start, min(n, start + 1000))]
        store.add(col, records, {})


def measure(folder: Path, model: str, repeat: int) -> dict:
    index = ImageIndex.open(folder, "images", model=model, text_model="none")
    index.store.keywords_of(index.collection)  # the words, written from the records' metadata if missing
    times: dict[str, list[float]] = {"fused": [], "vectors_alone": [], "fts5_search": []}
    for i in range(repeat + 3):
        text = QUERIES[i % len(QUERIES)]
        for way, weight in (("fused", 1.0), ("vectors_alone", 0.0)):
            began = time.perf_counter()
            index.search(Query(positive=(Part(kind="text", value=text),), k=12, keywords=weight))
            if i >= 3:
                times[way].append(time.perf_counter() - began)
        began = time.perf_counter()
        index.store.keywords.search("images", query_words(text), 100)
        if i >= 3:
            times["fts5_search"].append(time.perf_counter() - began)
    return {way: percentiles(t) for way, t in times.items()}


def write_cost(n: int) -> dict:
    """Seconds to write ``n`` records' words into a fresh keyword table, and its size on disk."""
    pick = random.Random(1)
    records = [(f"{j:032x}", RecordMeta(caption=" ".join(pick.sample(WORDS, 5)), source=f"/photos/IMG_{j:05d}.jpg"))
               for j in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        words = Keywords(Path(tmp))
        began = time.perf_counter()
        words.reconcile("images", records)
        seconds = time.perf_counter() - began
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        words.close()
    return {"records": n, "seconds": round(seconds, 3), "records_per_second": round(n / seconds), "bytes": size}


def main() -> None:
    """Build each store once (kept under bench/.cache), measure, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    model = str(vit_b32(CACHE / "vit-b32"))
    out: dict = {"machine": machine("cpu"), "cpu_flags": " ".join(cpu_flags()), "model": "ViT-B/32 (random weights)",
                 "latency": {}, "writing_words": [write_cost(n) for n in args.images]}
    for n in args.images:
        folder = CACHE / f"words-{n}"
        if not (folder / "chroma.sqlite3").exists():
            make_store(folder, model, n)
        out["latency"][str(n)] = measure(folder, model, args.repeat)
    print(json.dumps(out, indent=2))
    (Path(__file__).parent / "words.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
