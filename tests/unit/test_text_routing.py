"""Queries CLIP's own text tower cannot read go to the paired multilingual encoder; English stays with CLIP."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from search import ModelError
from search.config import Settings
from search.embedders.clip import AUTO_TEXT_MODEL, DEFAULT_TEXT_MODELS, ClipEmbedder, paired_text_model
from search.embedders.registry import load_embedder
from search.embedders.text_routing import CLIP, MULTILINGUAL, route
from search.index import ImageIndex
from tests.fixtures.tiny_multilingual import build_tiny_multilingual

VIETNAMESE = "hình tròn màu đỏ"
ENGLISH = "a red circle"


@pytest.fixture(scope="module")
def paired(shapes_model, multilingual) -> ClipEmbedder:
    embedder = ClipEmbedder(str(shapes_model), device="cpu", text_model=str(multilingual))
    embedder.load()
    return embedder


@pytest.fixture
def default_pairing(monkeypatch, shapes_model):
    """Make the shapes CLIP an image model with a default pairing, as clip-ViT-B-32 has."""
    def pair_with(text_model: str) -> None:
        monkeypatch.setitem(DEFAULT_TEXT_MODELS, str(shapes_model), text_model)
    load_embedder.cache_clear()
    yield pair_with
    load_embedder.cache_clear()


def own_encode(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    return model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


def test_a_vietnamese_query_goes_to_the_multilingual_model_an_english_one_to_clip(paired, shapes_model, multilingual):
    clip = SentenceTransformer(str(shapes_model), device="cpu")
    other = SentenceTransformer(str(multilingual), device="cpu")
    assert paired.paired and paired.text_model_name == str(multilingual)
    assert paired.text_tower(VIETNAMESE) == MULTILINGUAL
    assert paired.text_tower(ENGLISH) == CLIP
    vi, en = paired.embed_texts([VIETNAMESE]), paired.embed_texts([ENGLISH])
    np.testing.assert_allclose(vi, own_encode(other, [VIETNAMESE]), atol=1e-5)
    np.testing.assert_allclose(en, own_encode(clip, [ENGLISH]), atol=1e-5)
    assert float(vi[0] @ own_encode(clip, [VIETNAMESE])[0]) < 0.99  # not what CLIP's tower makes of it


def test_a_vietnamese_query_finds_its_images(local_store, multilingual):
    index = ImageIndex.open(local_store, text_model=str(multilingual))
    for query in (VIETNAMESE, ENGLISH):
        assert [h.label for h in index.search_by_text(query, k=3)] == ["red circle"] * 3, query


def test_a_mixed_batch_keeps_its_order(paired):
    texts = [ENGLISH, VIETNAMESE, "a blue square", "hình vuông màu xanh dương", "a green triangle"]
    batch = paired.embed_texts(texts)
    assert batch.shape == (5, paired.dimension)
    assert [paired.text_tower(t) for t in texts] == [CLIP, MULTILINGUAL, CLIP, MULTILINGUAL, CLIP]
    one_by_one = np.concatenate([paired.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert paired.embed_texts([]).shape == (0, paired.dimension)


def test_without_a_paired_model_clip_reads_everything(shapes_model):
    own = load_embedder(str(shapes_model), "cpu")
    assert not own.paired and own.text_tower(VIETNAMESE) == CLIP


def test_the_default_pairing_loads_softly(default_pairing, shapes_model, multilingual, tmp_path, caplog):
    default_pairing(str(multilingual))
    paired = load_embedder(str(shapes_model), "cpu", AUTO_TEXT_MODEL)
    assert paired.text_tower(VIETNAMESE) == MULTILINGUAL
    load_embedder.cache_clear()

    default_pairing(str(tmp_path / "missing-model"))  # offline, or not downloaded
    with caplog.at_level(logging.WARNING, logger="search.embedders"):
        fallback = load_embedder(str(shapes_model), "cpu", AUTO_TEXT_MODEL)
    assert not fallback.paired and fallback.text_tower(VIETNAMESE) == CLIP
    assert "default text model is not used" in caplog.text and "missing-model" in caplog.text
    load_embedder.cache_clear()
    caplog.clear()

    default_pairing(str(build_tiny_multilingual(tmp_path / "wrong-dimension", dimension=48)))
    with caplog.at_level(logging.WARNING, logger="search.embedders"):
        fallback = load_embedder(str(shapes_model), "cpu", AUTO_TEXT_MODEL)
    assert not fallback.paired and "dimension 48" in caplog.text


def test_an_explicit_text_model_must_load(shapes_model, tmp_path):
    missing = ClipEmbedder(str(shapes_model), device="cpu", text_model=str(tmp_path / "missing-model"))
    with pytest.raises(ModelError, match="cannot load the text model 'missing-model'"):
        missing.load()
    assert not missing.loaded
    wrong = ClipEmbedder(str(shapes_model), device="cpu",
                         text_model=str(build_tiny_multilingual(tmp_path / "wrong-dimension", dimension=48)))
    with pytest.raises(ModelError, match="dimension 48"):
        wrong.load()


def test_the_pairing_rule():
    assert paired_text_model("clip-ViT-B-32", "auto") == ("clip-ViT-B-32-multilingual-v1", False)
    assert paired_text_model("sentence-transformers/clip-ViT-B-32", "auto") == ("clip-ViT-B-32-multilingual-v1", False)
    assert paired_text_model("clip-ViT-L-14", "auto") == (None, False)
    assert paired_text_model("clip-ViT-B-32", "my/encoder") == ("my/encoder", True)
    assert paired_text_model("clip-ViT-B-32", "none") == (None, False)
    assert paired_text_model("clip-ViT-B-32", None) == (None, False)
    assert load_embedder("pixels", None, AUTO_TEXT_MODEL).name == "pixels"  # auto asks nothing of pixels
    with pytest.raises(ModelError, match="text model"):
        load_embedder("pixels", None, "my/encoder")


def test_settings_pair_by_default_and_the_variable_overrides(environment):
    assert environment().text_model == AUTO_TEXT_MODEL == Settings(text_model="").text_model
    assert environment(IMAGE_SEARCH_TEXT_MODEL="none").text_model is None
    assert environment(IMAGE_SEARCH_TEXT_MODEL=" my/encoder ").text_model == "my/encoder"


@pytest.mark.parametrize(("text", "tower"), [
    # English, CLIP's own tower
    ("a red circle", CLIP),
    ("red dress", CLIP),
    ("men casual shirts", CLIP),
    ("Watches", CLIP),
    ("flip flops", CLIP),
    ("red", CLIP),
    ("42", CLIP),
    # English with a French or German name: CLIP still
    ("café au lait", CLIP),
    ("Pokémon t-shirt", CLIP),
    ("crème brûlée on a plate", CLIP),
    ("Müller's bakery sign", CLIP),
    ("Beyoncé concert tee", CLIP),
    # Vietnamese with diacritics
    ("hình tròn màu đỏ", MULTILINGUAL),
    ("áo sơ mi trắng", MULTILINGUAL),
    ("giày thể thao", MULTILINGUAL),
    ("đồng hồ", MULTILINGUAL),
    ("váy", MULTILINGUAL),  # only accents Western languages share, but Vietnamese by the identifier
    ("HÌNH TRÒN", MULTILINGUAL),
    ("hi\u0300nh tro\u0300n ma\u0300u đo\u0309", MULTILINGUAL),  # decomposed, as some keyboards send it
    # Vietnamese without diacritics: the identifier catches most
    ("hinh tron mau do", MULTILINGUAL),
    ("ao thun", MULTILINGUAL),
    ("xanh duong", MULTILINGUAL),
    ("tui xach", MULTILINGUAL),
    ("São Paulo skyline", MULTILINGUAL),  # ã: Vietnamese or Portuguese, both read by the multilingual model
    # other scripts
    ("красный круг", MULTILINGUAL),
    ("赤い丸", MULTILINGUAL),
    ("วงกลมสีแดง", MULTILINGUAL),
])
def test_the_routing_rule(text, tower):
    assert route(text) == tower
