"""The benchmark runs end to end (--quick: tiny model, small sizes); its speed is not judged here."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from search.embedders.precision import PRECISIONS
from tests.conftest import ROOT


def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf")})  # its ONNX exports land there
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.with_suffix(".json").read_text())
    assert set(r["bare_model_images_per_second"]) == set(PRECISIONS)  # ONNX Runtime's two among them
    assert min(r["bare_model_images_per_second"].values()) > 0
    assert r["best_precision"] in r["bare_model_images_per_second"] and r["auto_precision"]["chosen"] == "fp32"  # tiny
    assert set(r["cpu_flags"]) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
    for p in ("pipeline_640x480", "pipeline_12mp"):
        assert r[p]["ratio_to_best_precision"] > 0 and r[p]["stage_seconds"]["decode"] > 0
    assert r["pipeline_640x480"]["images"] == 48 and r["pipeline_12mp"]["images"] == 4
    assert r["naive_one_at_a_time"]["images_per_second"] > 0
    assert 0.99 <= r["agreement_with_fp32"]["bf16"]["mean_cosine"] <= 1.0 + 1e-5
    assert r["agreement_with_fp32"]["int8"]["mean_cosine"] >= 0.99
    assert r["agreement_with_fp32"]["onnx-fp32"]["mean_cosine"] >= 0.9999
    q = r["queries_2000_vectors"]
    # Recall is a property of the index settings, not a speed: at 2,000 vectors HNSW is near exact.
    assert min(q["recall_at_10"].values()) >= 0.95 and q["vector_search"]["p50_ms"] > 0
    assert q["through_app"]["startup_seconds"] > 0 and q["through_app"]["text_query"]["p50_ms"] > 0
    assert "| Bare model" in out.with_suffix(".md").read_text()


def test_scale_grow_writes_records_with_thumbnails_and_words_and_resumes(tmp_path):
    from PIL import Image

    from bench.scale import Synthetic, grow
    from search.core.words import query_words
    from search.stores import thumbnails
    from search.stores.store import Store

    model, folder = str(ROOT / "tests" / "fixtures" / "tiny-clip-shapes"), tmp_path / "store"
    assert grow(folder, 30, model, "images") == 30
    assert grow(folder, 50, model, "images") == 50  # continues from the 30 there, as a re-run after a kill does
    store = Store.connect(folder)
    col = store.open("images")
    data = Synthetic(col.dimension or 0)
    records = dict(col.scan_metadata())
    assert set(records) == {data.image_id(j) for j in range(50)}
    last = records[data.image_id(49)]
    assert {"source", "thumbnail", "added_at", "label", "caption"} <= set(last)
    stored = thumbnails.at(folder / last["thumbnail"])  # the record's logical path, read from the packs
    assert stored == data.thumbnail(49)
    Image.open(io.BytesIO(stored)).verify()
    found = store.keywords_of(col).search("images", query_words(last["caption"]), 100)
    assert data.image_id(49) in {hit.id for hit in found}
