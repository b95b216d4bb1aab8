"""Benchmarks: indexing throughput and query latency, each measured beside its reference.

    python bench/run.py [--quick] [--device cpu|cuda] [--out bench/results]

The model is the ViT-B/32 architecture (`CLIPConfig()` defaults) with random weights, saved in
sentence-transformers format: the same compute as clip-ViT-B-32, whose weights cannot be downloaded
here. --quick runs the tiny CLIP and small sizes, to check that the benchmark works, not to measure.
Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from bench.app_process import RunningApp  # noqa: E402
from bench.stats import percentiles  # noqa: E402
from bench.workload import (  # noqa: E402
    CPU_FLAGS,
    agreement,
    bare_model,
    clip,
    forward,
    photo,
    pipeline,
    timed,
    vit_b32,
    write_jpegs,
)
from search.core.ids import content_id  # noqa: E402
from search.core.record import RecordMeta  # noqa: E402
from search.embedders.clip import ClipEmbedder  # noqa: E402
from search.embedders.precision import MIN_COSINE, MIN_OVERLAP  # noqa: E402
from search.index import ImageIndex  # noqa: E402
from search.stores import thumbnails  # noqa: E402
from search.stores.base import ModelInfo, Record  # noqa: E402
from search.stores.store import Store  # noqa: E402

CACHE = ROOT / "bench" / ".cache"


def pipeline_beside_bare(embedder: ClipEmbedder, folder: Path, stores: Path, batch: int, rounds: int,
                         best: str) -> dict:
    """Pipeline runs alternated with bare-model runs at the same batch, at the pipeline's precision and at
    the best this machine has; medians.

    Alternating, and comparing medians with medians, keeps the host's drift (about 15% between
    minutes on a shared machine) out of the ratios.
    """
    runs, bare, bare_best = [], [], []
    for i in range(rounds):
        store = stores / f"round-{i}"
        shutil.rmtree(store, ignore_errors=True)
        runs.append(pipeline(embedder, folder, Store.connect(store, create=True), batch))
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        runs[-1]["store_bytes_per_image"] = round(size / max(1, runs[-1]["images"]))
        bare.append(batch / float(np.median(timed(forward(embedder, batch, runs[-1]["precision"]), 3))))
        bare_best.append(batch / float(np.median(timed(forward(embedder, batch, best), 3))))
    result = dict(runs[-1])
    result["images_per_second"] = round(float(np.median([r["images_per_second"] for r in runs])), 2)
    result["runs_images_per_second"] = [r["images_per_second"] for r in runs]
    result["stage_seconds"] = {k: round(float(np.median([r["stage_seconds"][k] for r in runs])), 3)
                               for k in runs[-1]["stage_seconds"]}
    result["bare_model_same_batch"] = round(float(np.median(bare)), 2)
    result["ratio_to_bare_model"] = round(result["images_per_second"] / result["bare_model_same_batch"], 3)
    result["bare_model_best_precision"] = round(float(np.median(bare_best)), 2)
    result["ratio_to_best_precision"] = round(result["images_per_second"] / result["bare_model_best_precision"], 3)
    return result


def naive(embedder: ClipEmbedder, paths: list[Path], store: Path) -> dict:
    """One image at a time: decode, embed (fp32), collection.add, as the origin and Chroma's loader do."""
    shutil.rmtree(store, ignore_errors=True)
    col = Store.connect(store, create=True).open_or_create("naive", ModelInfo.of(embedder))
    start = time.perf_counter()
    for i, path in enumerate(paths):
        vector = embedder.model.encode([Image.open(path).convert("RGB")], normalize_embeddings=True)
        col.upsert([Record(str(i), vector[0], RecordMeta(source=str(path)))])
    return {"images": len(paths), "images_per_second": round(len(paths) / (time.perf_counter() - start), 2)}


def synthetic_store(store: Path, embedder: ClipEmbedder, n: int) -> tuple[np.ndarray, float]:
    """``n`` unit vectors in clusters (as real embeddings are), with a shared thumbnail; returns them and the load time."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(10, n // 100), embedder.dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shutil.rmtree(store, ignore_errors=True)
    col = Store.connect(store, create=True).open_or_create("images", ModelInfo.of(embedder))
    out = io.BytesIO()
    photo(256, 192, 0).save(out, "JPEG")
    placeholder = content_id(out.getvalue())
    thumbnails.write(store, placeholder, out.getvalue())
    start = time.perf_counter()
    col.upsert([Record(f"v{j}", vectors[j], RecordMeta(source=f"synthetic/{j}", thumbnail=thumbnails.relative(placeholder)))
                for j in range(n)])
    return vectors, time.perf_counter() - start


def write_synthetic_store(store: Path, model: str, device: str, n: int) -> float:
    """synthetic_store in a process of its own; returns the load time."""
    return synthetic_store(store, clip(model, device), n)[1]


def probes(vectors: np.ndarray, n: int, cosine: float, seed: int) -> np.ndarray:
    """``n`` unit queries, each at about ``cosine`` similarity from a random stored vector."""
    rng = np.random.default_rng(seed)
    d = vectors.shape[1]
    # Noise of norm t around a unit vector gives a cosine of 1 / sqrt(1 + t^2).
    scale = np.sqrt(1 / cosine**2 - 1) / np.sqrt(d)
    out = vectors[rng.integers(0, len(vectors), n)] + scale * rng.normal(size=(n, d))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def queries(store: Path, model: str, repeat: int) -> dict:
    """Vector search alone, recall@10 of HNSW against exact search, and whole text and image queries.

    Recall is measured on two kinds of query: near a stored image (cosine 0.9, as an image query of a
    photo in the collection is) and far from all of them (cosine 0.4, as CLIP's text queries are).
    """
    index = ImageIndex.open(store, model=model)
    ids, rows = index.collection.scan_vectors()
    vectors = np.asarray(rows, np.float32)
    kinds = {"image_like": probes(vectors, repeat, 0.9, 1), "text_like": probes(vectors, repeat, 0.4, 2)}
    for p in kinds["image_like"][:10]:  # warm-up, untimed
        index.search_by_vector(p, k=10)
    vector_times, recalls = [], {}
    for kind, batch in kinds.items():
        found = []
        for p in batch:
            start = time.perf_counter()
            hits = index.search_by_vector(p, k=10)
            vector_times.append(time.perf_counter() - start)
            exact = {ids[i] for i in np.argsort(-(vectors @ p))[:10]}
            found.append(len(exact & {h.id for h in hits}) / 10)
        recalls[kind] = round(float(np.mean(found)), 4)
    query_image = ROOT / "examples" / "astronaut.jpg"
    index.search_by_text("warm up", k=10)
    text = timed(lambda: index.search_by_text("a red dress", k=10), repeat)
    image = timed(lambda: index.search_by_image(query_image, k=10), repeat)
    return {"vector_search": percentiles(vector_times), "recall_at_10": recalls,
            "text_query": percentiles(text), "image_query": percentiles(image)}


def through_app(store: Path, model: str, repeat: int) -> dict:
    """Start-up time and query latency through gradio_client against the running app."""
    from gradio_client import handle_file

    start = time.perf_counter()
    with RunningApp(store, IMAGE_SEARCH_MODEL=model) as app:
        startup = time.perf_counter() - start
        client = app.client()
        lean = app.client(download_files=False)
        image = handle_file(str(ROOT / "examples" / "astronaut.jpg"))
        client.predict("warm up", 10, api_name="/search_by_text")
        result = {
            "startup_seconds": round(startup, 2),
            "text_query": percentiles(timed(lambda: lean.predict("a red dress", 10, api_name="/search_by_text"), repeat)),
            "image_query": percentiles(timed(lambda: lean.predict(image, 10, api_name="/search_by_image"), repeat)),
            "text_query_with_10_thumbnail_downloads": percentiles(
                timed(lambda: client.predict("a red dress", 10, api_name="/search_by_text"), max(3, repeat // 4))),
            "app_rss_mb": round(app.rss_mb(), 1),
        }
    return result


def builder_memory(folder: Path, store: Path, model: str) -> float:
    """Peak RSS (MB) of index_builder.py indexing ``folder``, in its own process."""
    shutil.rmtree(store, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder),
                    "--store", str(store), "--model", model], check=True, cwd=ROOT, capture_output=True)
    return round(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)


def model_load_seconds(model: str, device: str) -> float:
    """Loading the model alone, the part of start-up that is not the store."""
    start = time.perf_counter()
    clip(model, device)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    """Run every measurement and write the JSON and markdown reports."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the benchmark runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    quick = args.quick
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    model = str(ROOT / "tests" / "fixtures" / "tiny-clip-shapes") if quick else str(vit_b32(CACHE / "vit-b-32-random"))
    sizes = dict(n_640=48, n_12mp=4, n_naive=8, stores=(2000,), repeat=10) if quick else \
        dict(n_640=384, n_12mp=48, n_naive=48, stores=(10_000, 100_000), repeat=100)
    # As index_builder.py makes it: precision auto, decided once at the batch the build runs.
    embedder = clip(model, args.device, "auto", 32)
    assert embedder.decision is not None
    print(f"model {model} on {args.device}: {embedder.precision} ({embedder.decision.reason})", flush=True)
    results: dict = {"machine": machine(args.device), "cpu_flags": cpu_flags(),
                     "model": "tiny-clip-shapes" if quick else "ViT-B/32 (random weights)", "quick": quick,
                     "auto_precision": {"chosen": embedder.precision, "reason": embedder.decision.reason,
                                        "trials": [t.__dict__ for t in embedder.decision.trials]}}
    results["agreement_with_fp32"] = agreement(embedder)
    bare = results["bare_model_images_per_second"] = bare_model(embedder, 32, 3 if quick else 5)
    best = max((p for p in bare if p == "fp32" or agrees(p, results["agreement_with_fp32"][p])), key=bare.__getitem__)
    results["best_precision"] = best
    print(results["agreement_with_fp32"], bare, flush=True)
    jpegs_640 = work / "jpeg-640x480"
    paths = write_jpegs(jpegs_640, sizes["n_640"], (640, 480))
    write_jpegs(work / "jpeg-12mp", sizes["n_12mp"], (4000, 3000), distinct=8)
    rounds = 1 if quick else 3
    results["pipeline_640x480"] = pipeline_beside_bare(embedder, jpegs_640, work / "store-640", 32, rounds, best)
    results["pipeline_12mp"] = pipeline_beside_bare(embedder, work / "jpeg-12mp", work / "store-12mp", 32, rounds, best)
    print(results["pipeline_640x480"], results["pipeline_12mp"], flush=True)
    results["naive_one_at_a_time"] = naive(embedder, paths[: sizes["n_naive"]], work / "store-naive")
    results["speedup_over_naive"] = round(
        results["pipeline_640x480"]["images_per_second"] / results["naive_one_at_a_time"]["images_per_second"], 2)
    print(results["naive_one_at_a_time"], flush=True)
    results["builder_peak_rss_mb"] = builder_memory(jpegs_640, work / "store-mem", model)
    results["model_load_seconds"] = model_load_seconds(model, args.device)
    for n in sizes["stores"]:
        store = work / f"store-{n}"
        # Written by one process and measured by another, as a store is built and then served: Chroma
        # folds fresh writes into HNSW in the background of the process that wrote them.
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(1) as pool:
            load = pool.apply(write_synthetic_store, (store, model, args.device, n))
        with spawn.Pool(1) as pool:
            measured = pool.apply(queries, (store, model, sizes["repeat"]))
        entry = {"load_seconds": round(load, 1), **measured}
        entry["through_app"] = through_app(store, model, max(10, sizes["repeat"] // 2))
        results[f"queries_{n}_vectors"] = entry
        print(n, entry, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def machine(device: str) -> str:
    """What the figures came from."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores of {cpu}, torch {torch.__version__} (CPU)"


def cpu_flags() -> list[str]:
    """The CPU's flags that decide bf16 and int8 speed (AVX2, AVX-512, VNNI, BF16, AMX)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in CPU_FLAGS if f in flags]


def agrees(precision: str, measured: dict) -> bool:
    """Whether ``precision`` agreed with fp32 on real photos as well as auto requires."""
    return measured["mean_cosine"] >= MIN_COSINE[precision] and measured["top10_overlap"] >= MIN_OVERLAP[precision]


def markdown(r: dict) -> str:
    """The figures as a table."""
    p, p12, bare, best = r["pipeline_640x480"], r["pipeline_12mp"], r["bare_model_images_per_second"], r["best_precision"]
    agree = ", ".join(f"{k} {v['mean_cosine']} / {v['top10_overlap']}" for k, v in r["agreement_with_fp32"].items())
    rows = [
        ("Bare model, images/s at batch 32 (interleaved, medians)", ", ".join(f"{k} {v}" for k, v in bare.items())),
        ("Agreement with fp32 on real photos: mean cosine / top-10 overlap", agree),
        ("Precision auto chose (at batch 32) / best this machine has",
         f"{r['auto_precision']['chosen']} ({r['auto_precision']['reason']}) / {best}"),
        ("Pipeline, 640x480 JPEGs to store, images/s (median of runs)",
         f"{p['images_per_second']} ({p['precision']}), {p['ratio_to_bare_model']:.0%} of the bare model "
         f"({p['bare_model_same_batch']}, same batch and precision, alternated); "
         f"{p['ratio_to_best_precision']:.0%} of the best ({best}, {p['bare_model_best_precision']})"),
        ("Pipeline, 640x480: stage seconds (median; stages overlap)", _stages(p)),
        ("Pipeline, 12 MP JPEGs, images/s",
         f"{p12['images_per_second']} ({p12['precision']}), {p12['ratio_to_bare_model']:.0%} of the bare model "
         f"({p12['bare_model_same_batch']}); {p12['ratio_to_best_precision']:.0%} of the best"),
        ("Pipeline, 12 MP: stage seconds (median; stages overlap)", _stages(p12)),
        ("Naive one-at-a-time (fp32, as the origin), images/s", f"{r['naive_one_at_a_time']['images_per_second']} "
                                                                f"(pipeline is {r['speedup_over_naive']}x faster)"),
        ("Builder peak RSS", f"{r['builder_peak_rss_mb']} MB"),
        ("Store bytes per image (vectors, metadata, thumbnail)", f"{p['store_bytes_per_image']:,}"),
        ("Model load", f"{r['model_load_seconds']} s"),
    ]
    for key in sorted(k for k in r if k.startswith("queries_")):
        q, n = r[key], key.split("_")[1]
        a = q["through_app"]
        rows += [
            (f"{n} vectors: vector search p50 / p95", f"{q['vector_search']['p50_ms']} / {q['vector_search']['p95_ms']} ms"),
            (f"{n} vectors: HNSW recall@10 vs exact (image-like / text-like queries)",
             f"{q['recall_at_10']['image_like']} / {q['recall_at_10']['text_like']}"),
            (f"{n} vectors: text query in-process p50 / p95", f"{q['text_query']['p50_ms']} / {q['text_query']['p95_ms']} ms"),
            (f"{n} vectors: image query in-process p50 / p95", f"{q['image_query']['p50_ms']} / {q['image_query']['p95_ms']} ms"),
            (f"{n} vectors: text / image query via gradio_client p50",
             f"{a['text_query']['p50_ms']} / {a['image_query']['p50_ms']} ms"),
            (f"{n} vectors: app start-up (model load {r['model_load_seconds']} s) / app RSS",
             f"{a['startup_seconds']} s / {a['app_rss_mb']} MB"),
        ]
    head = (f"Machine: {r['machine']}; CPU flags: {' '.join(r['cpu_flags']) or 'none of ' + ' '.join(CPU_FLAGS)}. "
            f"Model: {r['model']}.\n\n| measure | figure |\n|---|---|\n")
    return head + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def _stages(p: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in p["stage_seconds"].items() if v) + f" (of {p['seconds']} s)"


if __name__ == "__main__":
    main()
