"""CLIP's towers exported to ONNX and run by ONNX Runtime (search/embedders/onnx_runtime.py) give the vectors
sentence-transformers gives, from the same tokens and the same pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search.embedders import precision
from search.embedders.onnx_runtime import OnnxTowers, clip_towers, export, exported, sentence_tower
from search.embedders.precision import top10_overlap
from search.errors import ModelError
from tests.fixtures.shapes import sample

TEXTS = ["a red circle", "a blue square on the left", "hoa sen ở Huế năm 2022", "", "ảnh chụp " * 200,
         "tam giác xanh lá", "😀 emoji and   spaces\tand\nlines"]


@pytest.fixture(scope="module")
def model(shapes_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(shapes_model), device="cpu")


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "towers"
    export(out, **clip_towers(model))
    return out


@pytest.fixture(scope="module")
def photos():
    return [img for img, _ in sample(24, seed=5)]


def test_the_export_is_complete_and_marked(folder):
    assert exported(folder)
    assert {p.name for p in folder.iterdir()} == {"image.fp32.onnx", "image.int8.onnx", "text.fp32.onnx",
                                                  "text.int8.onnx", "tokenizer.json", "towers.json"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no half-written folder left


def test_tokens_are_the_checkpoints_own(model, folder):
    towers = OnnxTowers(folder)
    ours = towers._tokenize(TEXTS)
    theirs = model[0].preprocess(TEXTS)
    assert np.array_equal(np.array([e.ids for e in ours]), theirs["input_ids"].numpy())
    assert np.array_equal(np.array([e.attention_mask for e in ours]), theirs["attention_mask"].numpy())


def test_fp32_gives_sentence_transformers_vectors(model, folder, photos):
    import torch

    from search.embedders.clip_input import image_tower

    towers = OnnxTowers(folder, "fp32")
    images = towers.embed_images(photos)
    with torch.no_grad():  # the same pixels through torch's tower
        reference = image_tower(model[0].model)(torch.from_numpy(towers.pixels.normalized(towers.pixels.array(photos))))
    reference = torch.nn.functional.normalize(reference, dim=1).numpy()
    assert float(np.min(np.sum(images * reference, axis=1))) >= 0.9999
    real = precision.probe_images(12)  # and sentence-transformers' own processing, where photos are photos
    reference = model.encode(real, convert_to_numpy=True, normalize_embeddings=True)
    assert float(np.min(np.sum(towers.embed_images(real) * reference, axis=1))) >= 0.999
    texts = towers.embed_texts(TEXTS)
    reference = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert float(np.min(np.sum(texts * reference, axis=1))) >= 0.9999
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_int8_agrees_with_fp32(folder, photos):
    fp32, int8 = OnnxTowers(folder, "fp32"), OnnxTowers(folder, "int8")
    a, b = fp32.embed_images(photos), int8.embed_images(photos)
    assert float(np.mean(np.sum(a * b, axis=1))) >= 0.99 and top10_overlap(a, b) >= 0.9
    assert float(np.mean(np.sum(fp32.embed_texts(TEXTS) * int8.embed_texts(TEXTS), axis=1))) >= 0.99


def test_empty_batches(folder):
    towers = OnnxTowers(folder)
    assert towers.embed_images([]).shape == (0, towers.dimension) and towers.embed_texts([]).shape == (0, towers.dimension)


def test_a_damaged_export_is_a_model_error(folder, tmp_path):
    with pytest.raises(ModelError, match="missing or damaged"):
        OnnxTowers(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "towers.json").write_text((folder / "towers.json").read_text())
    (broken / "text.fp32.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="missing or damaged"):
        OnnxTowers(broken).embed_texts(["a"])
    (broken / "towers.json").write_text(json.dumps({"format": 1}))
    assert exported(broken)
    with pytest.raises(ModelError):
        OnnxTowers(broken)
    with pytest.raises(ValueError, match="precision"):
        OnnxTowers(folder, "bf16")


def test_a_second_export_leaves_the_first(model, folder):
    before = (folder / "image.fp32.onnx").stat().st_mtime_ns
    export(folder, **clip_towers(model))
    assert (folder / "image.fp32.onnx").stat().st_mtime_ns == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_a_sentence_transformers_text_model_is_one_text_tower(tmp_path):
    """The multilingual model paired with CLIP (DistilBERT, mean pooling, a dense layer) exports whole."""
    from sentence_transformers import SentenceTransformer

    from tests.fixtures.tiny_multilingual import build_tiny_multilingual

    model = SentenceTransformer(str(build_tiny_multilingual(tmp_path / "multilingual")), device="cpu")
    export(tmp_path / "towers", **sentence_tower(model))
    towers = OnnxTowers(tmp_path / "towers")
    assert towers.supports_text and not (tmp_path / "towers" / "image.fp32.onnx").exists()
    texts = ["hình tròn màu đỏ", "áo váy xanh dương", "a red circle " * 40, ""]
    rows = towers.embed_texts(texts)
    reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    assert float(np.min(np.sum(rows * reference, axis=1))) >= 0.9999
    with pytest.raises(ModelError, match="texts only"):
        towers.embed_images([sample(1, seed=0)[0][0]])


@pytest.fixture
def clip(shapes_model, tmp_path, monkeypatch):
    """A loaded CLIP embedder whose ONNX exports go to a folder of the test's own."""
    from huggingface_hub import constants

    from search.embedders.clip import ClipEmbedder

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    embedder = ClipEmbedder(str(shapes_model), device="cpu")
    embedder.load()
    return embedder


def test_clip_offers_onnx_runtime_to_the_race_on_a_cpu(clip, monkeypatch):
    assert all(set(race.tried) >= set(precision.ONNX) for race in clip.races(32))
    assert precision.ONNX_INT8 not in precision.candidates("cuda", onnx=True)
    monkeypatch.setattr(precision, "version_of", lambda package: None)  # onnxruntime not installed
    assert not set(precision.candidates("cpu", onnx=True)) & set(precision.ONNX)


def test_clip_embeds_on_onnx_runtime_as_on_torch(clip, photos, tmp_path):
    reference = clip.embed_images(photos)
    for chosen in precision.ONNX:
        rows = clip.embed_images(photos, precision=chosen)
        assert float(np.mean(np.sum(rows * reference, axis=1))) >= precision.MIN_COSINE[chosen]
        assert top10_overlap(reference, rows) >= precision.MIN_OVERLAP[chosen]
    assert [p.name for p in (tmp_path / "hf" / "image-search-onnx").iterdir()] == [clip_folder(clip).name]


def clip_folder(embedder) -> Path:
    from search.embedders.onnx_runtime import cache_folder

    return cache_folder(embedder.name)


def test_a_decided_runtime_serves_both_towers_and_the_other_is_let_go(clip):
    texts = ["a red circle", "a blue square"]
    torch_rows = clip.embed_texts(texts)
    clip.embed_images([], precision=precision.ONNX_FP32)
    clip.use("text", precision.Decision(precision.ONNX_INT8, 1, reason="test"))
    clip.use("image", precision.Decision(precision.ONNX_INT8, 32, reason="test"))
    assert set(clip._onnx) <= {precision.ONNX_INT8}  # fp32's sessions, used once, are gone
    rows = clip.embed_texts(texts)
    assert float(np.mean(np.sum(rows * torch_rows, axis=1))) >= precision.MIN_COSINE[precision.ONNX_INT8]
    assert set(clip._onnx) == {precision.ONNX_INT8}
    clip.unload()
    assert clip._onnx == {}


def test_a_family_without_an_export_refuses_onnx(shapes_model):
    from search.embedders.towers import TowerEmbedder

    class NoExport(TowerEmbedder):
        pass

    with pytest.raises(ValueError, match="ONNX Runtime"):
        NoExport("x")._runtime(precision.ONNX_FP32)
