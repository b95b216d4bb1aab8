"""index_builder.py end to end on folders and local datasets, with the random tiny CLIP."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from search import ImageIndex, StoreError
from search.stores import thumbnails
from search.stores.thumbnails import path as thumbnail_path
from tests.conftest import SKIP_REASONS, hostile_files, run_builder, without_the_hub
from tests.fixtures.shapes import CLASSES, caption, sample
from tests.fixtures.tiny_clip import build_random_tiny_clip

VALID_IN_SHAPES_FOLDER = 3 * len(CLASSES)


def first(folder: Path, cls: str) -> Path:
    """The first generated image of a class."""
    return sorted((folder / cls).glob("0*.jpg"))[0]


def test_folder_build_reports_indexed_duplicates_and_skips(tmp_path, shapes_folder, random_clip):
    store, report_file = tmp_path / "store", tmp_path / "report.json"
    done = run_builder("--dataset", shapes_folder, "--store", store, "--model", random_clip, "--report", report_file)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_file.read_text())
    assert report["indexed"] == VALID_IN_SHAPES_FOLDER
    assert report["duplicates"] == 1
    assert {Path(s["source"]).name: s["reason"] for s in report["skipped"]} == SKIP_REASONS
    assert report["images_per_second"] > 0 and report["seconds"] > 0
    assert f"Indexed {VALID_IN_SHAPES_FOLDER} new images" in done.stdout

    index = ImageIndex.open(store)
    assert len(index) == VALID_IN_SHAPES_FOLDER
    hits = index.search_by_image(first(shapes_folder, "blue square"), k=3)
    assert hits[0].label == "blue square" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert Path(hits[0].image) == thumbnail_path(store, hits[0].id).resolve()  # a logical path, read from the packs
    thumb = Image.open(io.BytesIO(thumbnails.at(hits[0].image) or b""))
    assert max(thumb.size) <= 256


def test_rerun_adds_nothing_and_new_files_only_are_embedded(tmp_path, shapes_folder, random_clip):
    store = tmp_path / "store"
    assert run_builder("--dataset", shapes_folder, "--store", store, "--model", random_clip).returncode == 0
    extra, _ = sample(1, seed=99)[0]
    extra.save(shapes_folder / "green circle" / "new.png")
    report_file = tmp_path / "again.json"
    done = run_builder("--dataset", shapes_folder, "--store", store, "--model", random_clip, "--report", report_file)
    report = json.loads(report_file.read_text())
    assert done.returncode == 0
    assert report["indexed"] == 1
    assert report["already_indexed"] == VALID_IN_SHAPES_FOLDER
    assert report["total_in_collection"] == VALID_IN_SHAPES_FOLDER + 1


def test_pixel_method_builds_and_refuses_text(tmp_path, shapes_folder):
    store = tmp_path / "store"
    done = run_builder("--dataset", shapes_folder, "--store", store, "--model", "pixels", "--collection", "pixels")
    assert done.returncode == 0, done.stderr
    index = ImageIndex.open(store, "pixels")
    assert index.embedder.dimension == 32 * 32 * 3 and not index.supports_text
    query = first(shapes_folder, "yellow triangle")
    for metric in ("cosine", "l2", "l1", "correlation"):
        assert index.search_by_image(query, k=1, metric=metric)[0].source == str(query)
    # Inner product on raw pixels favours bright images over the query itself: exact, not HNSW.
    by_ip = index.search_by_image(query, k=len(index), metric="ip")
    assert [h.score for h in by_ip] == sorted((h.score for h in by_ip), reverse=True)
    assert by_ip[0].score > next(h.score for h in by_ip if h.source == str(query))
    with pytest.raises(Exception, match="cannot read text"):
        index.search_by_text("a yellow triangle")


def _shapes_dataset(n: int, seed: int):
    import datasets

    rows = sample(n, seed)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "caption": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(
        {"image": [img for img, _ in rows], "label": [CLASSES.index(c) for _, c in rows],
         "caption": [caption(c) for _, c in rows]},
        features=features,
    )


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet_folder", "parquet_file"])
def test_local_datasets_take_the_datasets_code_path(tmp_path, random_clip, layout):
    dataset = _shapes_dataset(24, seed=3)
    if layout == "save_to_disk":
        source = tmp_path / "saved"
        dataset.save_to_disk(str(source))
    elif layout == "parquet_folder":  # what a Hub dataset repo looks like; load_dataset(name) reads it
        source = tmp_path / "hub-like" / "data"
        source.mkdir(parents=True)
        dataset.to_parquet(str(source / "train-00000-of-00001.parquet"))
        source = source.parent
    else:
        source = tmp_path / "rows.parquet"
        dataset.to_parquet(str(source))
    store, report_file = tmp_path / "store", tmp_path / "r.json"
    done = run_builder("--dataset", source, "--store", store, "--model", random_clip, "--limit", 20, "--report", report_file)
    assert done.returncode == 0, done.stderr
    assert json.loads(report_file.read_text())["indexed"] == 20
    hit = ImageIndex.open(store).search_by_text("a red circle", k=1)[0]
    assert hit.label in CLASSES and hit.caption == caption(hit.label)


def test_fatal_errors_exit_non_zero_with_a_message(tmp_path, random_clip, shapes_folder):
    missing = run_builder("--dataset", tmp_path / "nope", "--store", tmp_path / "s", "--model", random_clip)
    assert missing.returncode != 0 and "cannot load the dataset" in missing.stderr
    bad_model = run_builder("--dataset", shapes_folder, "--store", tmp_path / "s", "--model", tmp_path / "no-model")
    assert bad_model.returncode != 0 and "cannot load the model" in bad_model.stderr
    short = run_builder("--dataset", shapes_folder, "--store", tmp_path / "s", "--model", random_clip, "--collection", "ab")
    assert short.returncode != 0 and "3 to 63 characters" in short.stderr
    assert run_builder("--dataset", shapes_folder, "--store", tmp_path / "s", "--limit", "0").returncode == 2


@pytest.mark.parametrize("how", ["unreachable", "HF_HUB_OFFLINE=1"])
def test_without_the_hub_the_builder_says_at_once_all_that_is_missing_and_leaves_no_store(tmp_path, how):
    """Issue 33: 15 retries over 103 s, then the model alone, with no next step, and an empty store left behind."""
    # "At once": no retry is made (a retry is what took minutes), whatever the machine's load
    done = run_builder("--dataset", "ashraq/fashion-product-images-small", "--store", tmp_path / "store",
                       env=without_the_hub(tmp_path, how), timeout=60)
    assert done.returncode == 2, done.stderr
    said = done.stderr
    assert said.count("error:") == 1 and "the Hugging Face Hub cannot be reached" in said
    assert "neither the model 'clip-ViT-B-32' nor the dataset 'ashraq/fashion-product-images-small'" in said
    for choice in ("--model /path/to/folder", "--model pixels", "keywords", "--dataset FOLDER"):
        assert choice in said, choice
    assert ("unset HF_HUB_OFFLINE" if how == "HF_HUB_OFFLINE=1" else "nothing answered at http://127.0.0.1:") in said
    assert "Retrying" not in said and not (tmp_path / "store").exists()


def test_a_build_that_indexes_nothing_leaves_no_store_and_an_existing_store_is_kept(tmp_path, shapes_folder):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.jpg").write_bytes(hostile_files()["truncated.jpg"])
    done = run_builder("--dataset", bad, "--store", tmp_path / "store", "--model", "pixels")
    assert done.returncode == 0 and "Skipped 1 file" in done.stdout and not (tmp_path / "store").exists()
    kept = tmp_path / "kept"
    assert run_builder("--dataset", shapes_folder, "--store", kept, "--model", "pixels", "--limit", 2).returncode == 0
    offline = run_builder("--dataset", shapes_folder, "--store", kept, "--collection", "clip",
                          env=without_the_hub(tmp_path, "unreachable"))
    assert offline.returncode == 2 and "the model 'clip-ViT-B-32' is not in the local" in offline.stderr
    assert "dataset" not in offline.stderr.split("error:")[1].split(".")[0]  # the folder is here: only the model
    assert run_builder("--dataset", bad, "--store", kept, "--model", "pixels").returncode == 0
    assert len(ImageIndex.open(kept)) == 2  # neither run touched what it held


def test_a_collection_refuses_another_model(tmp_path, shapes_folder, random_clip):
    store = tmp_path / "store"
    assert run_builder("--dataset", shapes_folder, "--store", store, "--model", random_clip, "--limit", 3).returncode == 0
    pixels = run_builder("--dataset", shapes_folder, "--store", store, "--model", "pixels")
    assert pixels.returncode != 0 and "holds 64-d vectors" in pixels.stderr
    same_size = build_random_tiny_clip(tmp_path / "other-clip", seed=1)
    other = run_builder("--dataset", shapes_folder, "--store", store, "--model", same_size)
    assert other.returncode != 0 and "was built with" in other.stderr
    with pytest.raises(StoreError, match="3072-d vectors"):
        ImageIndex.open(store, model="pixels")


def test_missing_store_says_what_to_run(tmp_path):
    with pytest.raises(StoreError, match="index_builder.py"):
        ImageIndex.open(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()


def test_query_inputs_and_errors(tmp_path, shapes_folder, random_clip):
    from search import QueryError

    store = tmp_path / "store"
    assert run_builder("--dataset", shapes_folder, "--store", store, "--model", random_clip).returncode == 0
    index = ImageIndex.open(store)
    query = first(shapes_folder, "green square")
    by_path = index.search_by_image(query, k=5)
    assert [h.id for h in index.search_by_image(query.read_bytes(), k=5)] == [h.id for h in by_path]
    assert [h.id for h in index.search_by_image(Image.open(query), k=5)] == [h.id for h in by_path]
    # The stored vector may come from a bf16 pass: the image itself is first, near-ties may swap after it.
    assert index.search_by_id(by_path[0].id, k=5)[0].id == by_path[0].id
    for metric in ("l2", "l1", "correlation", "ip"):
        hits = index.search_by_image(query, k=5, metric=metric)
        assert hits[0].id == by_path[0].id
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(index.search_by_text("blue", k=50)) == len(index)
    for bad in ("", "   ", "x" * 10_000):
        with pytest.raises(QueryError):
            index.search_by_text(bad)
    for k in (0, -1, 10_001, 2.5):
        with pytest.raises(QueryError):
            index.search_by_text("a", k=k)
    with pytest.raises(QueryError, match="is not one of cosine"):
        index.search_by_text("a", metric="hamming")
    junk = io.BytesIO(b"not an image")
    with pytest.raises(ValueError, match="^This kind of file cannot be used: not an image") as raised:
        index.search_by_image(junk.getvalue())
    assert raised.value.reason == "unsupported"  # the code stays for reports
    index.remove([h.id for h in index.search_by_text("blue", k=50)])
    assert len(index) == 0
    for metric in ("cosine", "l2", "l1", "correlation", "ip"):
        assert index.search_by_image(query, k=5, metric=metric) == []


def test_a_second_text_model_encodes_queries(tmp_path, shapes_folder, shapes_model, random_clip):
    """IMAGE_SEARCH_TEXT_MODEL: a text encoder aligned to the image space (multilingual, say) answers text."""
    from search import ModelError

    store = tmp_path / "store"
    assert run_builder("--dataset", shapes_folder, "--store", store, "--model", shapes_model).returncode == 0
    own = ImageIndex.open(store)
    paired = ImageIndex.open(store, text_model=str(random_clip))
    assert paired.embedder.text_model is not paired.embedder.model
    # The paired model reads what CLIP's own tower cannot (non-English); English stays with CLIP's tower.
    vi, en = "hình tròn màu đỏ", "a red circle"
    assert float(own.embedder.embed_texts([vi])[0] @ paired.embedder.embed_texts([vi])[0]) < 0.99
    assert float(own.embedder.embed_texts([en])[0] @ paired.embedder.embed_texts([en])[0]) > 0.9999
    assert [h.id for h in paired.search_by_image(first(shapes_folder, "red circle"), k=3)] == \
        [h.id for h in own.search_by_image(first(shapes_folder, "red circle"), k=3)]  # images still use the image model
    with pytest.raises(ModelError, match="text model"):
        ImageIndex.open(store, model="pixels", text_model=str(random_clip))
