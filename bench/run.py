"""Benchmarks: indexing throughput and query latency, each measured beside its reference.

    python bench/run.py [--quick] [--device cpu|cuda] [--out bench/results]

The model is the ViT-B/32 architecture (`CLIPConfig()` defaults) with random weights, saved in
sentence-transformers format: the same compute as clip-ViT-B-32, whose weights cannot be downloaded
here. --quick runs the tiny CLIP and small sizes, to check that the benchmark works, not to measure.
Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
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

from bench.stats import percentiles  # noqa: E402
from search.build import BuildOptions, build_index  # noqa: E402
from search.embedders import ClipEmbedder  # noqa: E402
from search.index import ImageIndex  # noqa: E402
from search.sources import folder_items  # noqa: E402
from search.store import ModelInfo, Record, Store  # noqa: E402
from tests.fixtures.app_process import RunningApp  # noqa: E402

CACHE = ROOT / "bench" / ".cache"


def vit_b32(path: Path) -> Path:
    """ViT-B/32 with random weights in sentence-transformers format (made once, cached)."""
    if (path / "modules.json").exists():
        return path
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from tests.fixtures.tiny_clip import save_sentence_transformer, write_tokenizer_files

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    return save_sentence_transformer(CLIPModel(CLIPConfig()), processor, path)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: smooth colour fields, edges and sensor noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def write_jpegs(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` JPEGs of ``size`` on disk (quality 90, as cameras and sites save them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            photo(*size, seed=i).save(path, quality=90)
        paths.append(path)
    return paths


def timed(fn, repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _forward(embedder: ClipEmbedder, batch: int, bf16: bool):
    """A callable running the bare model once on a preprocessed batch of random pixels."""
    import torch

    model = embedder.model[0].model
    side = embedder.min_edges[0]
    pixels = torch.randn(batch, 3, side, side, device=embedder.device)

    def run():
        ctx = torch.autocast(embedder.device, dtype=torch.bfloat16, enabled=bf16)
        with torch.inference_mode(), ctx:
            model.get_image_features(pixel_values=pixels)
        if embedder.device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    return run


def bare_model(embedder: ClipEmbedder, batches: list[int], repeat: int) -> dict:
    """Images/s of the model alone on preprocessed tensors, fp32 and bf16, best batch."""
    result = {}
    for dtype in ("fp32", "bf16"):
        result[dtype] = round(max(b / min(timed(_forward(embedder, b, dtype == "bf16"), repeat)) for b in batches), 1)
    return result


def pipeline(embedder: ClipEmbedder, folder: Path, store: Path, batch: int) -> dict:
    """JPEG files on disk to a finished store (thumbnails included), as index_builder.py runs it."""
    shutil.rmtree(store, ignore_errors=True)
    report = build_index(folder_items(folder), Store.connect(store, create=True), "bench", embedder,
                         BuildOptions(batch_size=batch, near_duplicate_similarity=None))
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    return {"images": report.indexed, "images_per_second": report.images_per_second, "precision": report.precision,
            "bf16_agreement": report.bf16_agreement, "store_bytes_per_image": round(size / max(1, report.indexed))}


def pipeline_beside_bare(embedder: ClipEmbedder, folder: Path, stores: Path, batch: int, rounds: int) -> dict:
    """Pipeline runs alternated with bare-model runs at the same batch size and precision; medians.

    Alternating, and comparing medians with medians, keeps the host's drift (about 15% between
    minutes on a shared machine) out of the ratio.
    """
    runs, bare = [], []
    for i in range(rounds):
        runs.append(pipeline(embedder, folder, stores / f"round-{i}", batch))
        bare.append(batch / float(np.median(timed(_forward(embedder, batch, runs[-1]["precision"] == "bf16"), 3))))
    result = dict(runs[-1])
    result["images_per_second"] = round(float(np.median([r["images_per_second"] for r in runs])), 2)
    result["runs_images_per_second"] = [r["images_per_second"] for r in runs]
    result["bare_model_same_batch"] = round(float(np.median(bare)), 2)
    result["ratio_to_bare_model"] = round(result["images_per_second"] / result["bare_model_same_batch"], 3)
    return result


def naive(embedder: ClipEmbedder, paths: list[Path], store: Path) -> dict:
    """One image at a time: decode, embed (fp32), collection.add, as the origin and Chroma's loader do."""
    shutil.rmtree(store, ignore_errors=True)
    col = Store.connect(store, create=True).open_or_create("naive", ModelInfo.of(embedder))
    start = time.perf_counter()
    for i, path in enumerate(paths):
        vector = embedder.model.encode([Image.open(path).convert("RGB")], normalize_embeddings=True)
        col.upsert([Record(str(i), vector[0], {"source": str(path)})])
    return {"images": len(paths), "images_per_second": round(len(paths) / (time.perf_counter() - start), 2)}


def agreement(embedder: ClipEmbedder, paths: list[Path], queries: int = 20) -> dict:
    """bf16 against fp32: mean cosine of embeddings, and overlap of top-10 exact search results."""
    images = [embedder.prepare(Image.open(p).convert("RGB")) for p in paths]
    fp32 = embedder.embed_images(images)
    bf16 = embedder.embed_images(images, precision="bf16")
    overlaps = []
    for q in range(min(queries, len(paths))):
        top32 = set(np.argsort(-(fp32 @ fp32[q]))[1:11])
        top16 = set(np.argsort(-(bf16 @ bf16[q]))[1:11])
        overlaps.append(len(top32 & top16) / 10)
    return {"mean_cosine": round(float(np.mean(np.sum(fp32 * bf16, axis=1))), 5),
            "top10_overlap": round(float(np.mean(overlaps)), 3)}


def synthetic_store(store: Path, embedder: ClipEmbedder, n: int) -> tuple[np.ndarray, float]:
    """``n`` unit vectors in clusters (as real embeddings are), with a shared thumbnail; returns them and the load time."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(10, n // 100), embedder.dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shutil.rmtree(store, ignore_errors=True)
    col = Store.connect(store, create=True).open_or_create("images", ModelInfo.of(embedder))
    thumb = store / "thumbnails" / "00" / "placeholder.jpg"
    thumb.parent.mkdir(parents=True)
    photo(256, 192, 0).save(thumb)
    start = time.perf_counter()
    col.upsert([Record(f"v{j}", vectors[j], {"source": f"synthetic/{j}", "thumbnail": "thumbnails/00/placeholder.jpg"})
                for j in range(n)])
    return vectors, time.perf_counter() - start


def write_synthetic_store(store: Path, model: str, device: str, n: int) -> float:
    """synthetic_store in a process of its own; returns the load time."""
    return synthetic_store(store, ClipEmbedder(model, device=device), n)[1]


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
    ClipEmbedder(model, device=device)
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
    embedder = ClipEmbedder(model, device=args.device)
    print(f"model {model} on {args.device}", flush=True)
    results: dict = {"machine": machine(args.device), "model": "tiny-clip-shapes" if quick else "ViT-B/32 (random weights)",
                     "quick": quick}
    results["bare_model_images_per_second"] = bare_model(embedder, [8] if quick else [16, 32], 1 if quick else 2)
    print(results["bare_model_images_per_second"], flush=True)
    jpegs_640 = work / "jpeg-640x480"
    paths = write_jpegs(jpegs_640, sizes["n_640"], (640, 480))
    write_jpegs(work / "jpeg-12mp", sizes["n_12mp"], (4000, 3000))
    rounds = 1 if quick else 3
    results["pipeline_640x480"] = pipeline_beside_bare(embedder, jpegs_640, work / "store-640", 32, rounds)
    results["pipeline_12mp"] = pipeline_beside_bare(embedder, work / "jpeg-12mp", work / "store-12mp", 32, rounds)
    print(results["pipeline_640x480"], results["pipeline_12mp"], flush=True)
    results["naive_one_at_a_time"] = naive(embedder, paths[: sizes["n_naive"]], work / "store-naive")
    results["speedup_over_naive"] = round(
        results["pipeline_640x480"]["images_per_second"] / results["naive_one_at_a_time"]["images_per_second"], 2)
    results["bf16_vs_fp32"] = agreement(embedder, paths[: min(len(paths), 32)])
    print(results["naive_one_at_a_time"], results["bf16_vs_fp32"], flush=True)
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


def markdown(r: dict) -> str:
    """The figures as a table."""
    p, p12, bare = r["pipeline_640x480"], r["pipeline_12mp"], r["bare_model_images_per_second"]
    rows = [
        ("Bare model, images/s (fp32 / bf16)", f"{bare['fp32']} / {bare['bf16']}"),
        ("Pipeline, 640x480 JPEGs to store, images/s (median of runs)",
         f"{p['images_per_second']} ({p['precision']}), {p['ratio_to_bare_model']:.0%} of the bare model "
         f"({p['bare_model_same_batch']}, same batch, alternated)"),
        ("Pipeline, 12 MP JPEGs, images/s", f"{p12['images_per_second']}, {p12['ratio_to_bare_model']:.0%} of the bare model "
                                            f"({p12['bare_model_same_batch']})"),
        ("Naive one-at-a-time, images/s", f"{r['naive_one_at_a_time']['images_per_second']} "
                                          f"(pipeline is {r['speedup_over_naive']}x faster)"),
        ("bf16 vs fp32: mean cosine / top-10 overlap",
         f"{r['bf16_vs_fp32']['mean_cosine']} / {r['bf16_vs_fp32']['top10_overlap']}"),
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
    head = f"Machine: {r['machine']}. Model: {r['model']}.\n\n| measure | figure |\n|---|---|\n"
    return head + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


if __name__ == "__main__":
    main()
