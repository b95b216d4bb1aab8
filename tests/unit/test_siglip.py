"""The SigLIP family: a SigLIP 2 checkpoint in the Hub's layout embeds images and texts exactly as transformers'
own reference does (the documented get_image_features / get_text_features with the checkpoint's processor,
text padded to 64 tokens), for real photos at several sizes and for English and Vietnamese text."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.embedders.registry import family_of, load_embedder, model_inputs
from search.embedders.siglip import SiglipEmbedder, is_siglip
from search.errors import ModelError
from tests.fixtures.tiny_siglip import MAX_TOKENS, save_fixres, save_naflex

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a photo of a red circle", "A Photo Of The Blue Square", "ảnh con mèo", "hình tròn màu đỏ",
         "anh con meo", " ".join(["a red circle"] * 40)]  # the last is over 64 tokens: truncated, as the reference


@pytest.fixture(scope="module", params=["fixres", "naflex"])
def checkpoint(request, tmp_path_factory) -> Path:
    save = save_fixres if request.param == "fixres" else save_naflex
    return save(tmp_path_factory.mktemp(request.param) / "tiny-siglip2")


def _photos() -> list[Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples").glob("*.jpg"))[:3]]
    big = photos[0]
    return [*photos, big.resize((37, 91)), big.resize((1000, 240)), big.crop((0, 0, 300, 300))]


def _reference(folder: Path, photos: list[Image.Image], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """transformers' documented usage, one input at a time."""
    import torch
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        images = [model.get_image_features(**processor(images=img, return_tensors="pt")).pooler_output[0]
                  for img in photos]
        words = [model.get_text_features(**processor(text=[t], padding="max_length", max_length=64, truncation=True,
                                                     return_tensors="pt")).pooler_output[0] for t in texts]
    unit = [torch.nn.functional.normalize(torch.stack(rows), dim=1).numpy() for rows in (images, words)]
    return unit[0], unit[1]


def test_vectors_equal_transformers_reference_for_photos_and_texts(checkpoint):
    embedder = load_embedder(str(checkpoint))
    assert isinstance(embedder, SiglipEmbedder) and family_of(str(checkpoint)).name == "siglip"
    photos = _photos()
    images, texts = embedder.embed_images([embedder.prepare(p) for p in photos], batch_size=4), embedder.embed_texts(TEXTS)
    ref_images, ref_texts = _reference(checkpoint, photos, TEXTS)
    assert images.shape == (len(photos), embedder.dimension) and texts.shape == (len(TEXTS), embedder.dimension)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(images * ref_images, axis=1)) > 0.9999
    assert np.min(np.sum(texts * ref_texts, axis=1)) > 0.9999
    assert embedder.max_tokens == MAX_TOKENS


def test_text_is_padded_to_the_full_length_the_model_was_trained_at(checkpoint):
    """Padding to the longest text of a batch instead (an easy mistake) gives other vectors for short texts."""
    import torch

    embedder = load_embedder(str(checkpoint))
    short = "a red circle"
    inputs = embedder.processor(text=[short], padding="longest", return_tensors="pt")
    with torch.no_grad():
        unpadded = embedder.model.get_text_features(**inputs).pooler_output[0].numpy()
    unpadded /= np.linalg.norm(unpadded)
    padded = embedder.embed_texts([short])[0]
    assert float(padded @ unpadded) < 0.999  # the tower reads the padding: it matters
    assert np.allclose(embedder.embed_texts([short, TEXTS[-1]])[0], padded, atol=1e-5)  # one batch or alone


def test_a_batch_gives_each_image_the_vector_it_has_alone(checkpoint):
    embedder = load_embedder(str(checkpoint))
    photos = [embedder.prepare(p) for p in _photos()]
    together = embedder.embed_images(photos, batch_size=len(photos))
    alone = np.concatenate([embedder.embed_images([p]) for p in photos])
    assert np.min(np.sum(together * alone, axis=1)) > 0.9999


def test_the_input_steps_are_read_from_the_configuration_alone(checkpoint, tmp_path):
    """What a Ray worker that only decodes needs: the processor's edge, with no weights to read."""
    copy = shutil.copytree(checkpoint, tmp_path / "no-weights", ignore=shutil.ignore_patterns("*.safetensors"))
    inputs, embedder = model_inputs(str(copy)), load_embedder(str(checkpoint))
    photo = _photos()[0]
    assert inputs.min_edges == embedder.min_edges and inputs.prepare(photo) is embedder.prepare(photo) is photo


def test_every_text_goes_to_siglips_own_tower_and_no_text_model_can_be_paired(checkpoint):
    embedder = load_embedder(str(checkpoint))
    assert {embedder.text_tower(t) for t in TEXTS} == {"clip"}
    with pytest.raises(ModelError, match="its own text tower"):
        load_embedder(str(checkpoint), text_model="clip-ViT-B-32-multilingual-v1")
    assert load_embedder(str(checkpoint), text_model="auto") is not None  # the app's default pairs nothing


def test_which_names_are_siglip(tmp_path, checkpoint):
    assert is_siglip(str(checkpoint)) and is_siglip("google/siglip2-base-patch16-224")
    assert not is_siglip("clip-ViT-B-32") and not is_siglip(str(ROOT / "tests" / "fixtures" / "tiny-clip-shapes"))
    assert family_of("clip-ViT-B-32").name == "clip"
    with pytest.raises(ModelError, match="cannot load the model"):
        load_embedder("google/siglip2-not-downloaded-here")  # offline: a clear refusal, no download


def test_siglips_towers_each_decide_their_precision_the_text_at_one_text(checkpoint, tmp_path, monkeypatch):
    import json

    from search.embedders import precision
    from search.embedders.precision import Chooser, settle

    reference = _reference(checkpoint, _photos()[:1], TEXTS)[1]
    monkeypatch.setattr(precision, "MIN_PARAMETERS", 0)  # measure even the tiny model
    monkeypatch.setattr(precision, "candidates", lambda device, onnx=False: ["int8"])
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)  # the tiny tower is not faster at int8; its agreement counts
    remembered = tmp_path / "precision.json"
    first = SiglipEmbedder(str(checkpoint), device="cpu")
    assert not remembered.exists() and first.model is None  # made, nothing loaded, nothing decided
    first.load()
    settle(first, "auto", 1, Chooser(str(remembered)))
    assert len(json.loads(remembered.read_text())) == 2  # the image tower's and the text tower's
    assert first.decision is not None and first.text_decision is not None
    assert [t.precision for t in first.decision.trials] == ["int8"]  # NaFlex's too: its Linear patch embedding kept
    text = first.text_decision
    assert [t.precision for t in text.trials] == ["int8"] and text.batch_size == 1
    assert text.precision == ("int8" if text.trials[0].agrees() else "fp32") == first.text_precision
    rows = first.embed_texts(TEXTS)
    assert np.min(np.sum(rows * reference, axis=1)) > (0.99 if text.precision == "int8" else 0.9999)

    monkeypatch.setattr(precision, "decide", lambda *a, **k: pytest.fail("measured again"))
    again = SiglipEmbedder(str(checkpoint), device="cpu")
    again.load()
    settle(again, "auto", 1, Chooser(str(remembered)))
    assert again.text_precision == text.precision
    settle(again, "bf16", 1, Chooser(None))
    assert again.text_precision == "bf16"  # as asked
