"""Precision is decided once, when the embedder is made: by capability, agreement with fp32 and wide margins."""
from __future__ import annotations

import time

import numpy as np
import pytest

from search.embedders import precision
from search.embedders.clip import ClipEmbedder
from search.embedders.precision import BF16, FP32, INT8, Decision, decide
from search.embedders.registry import load_embedder
from tests.fixtures.shapes import sample


@pytest.fixture
def clip(shapes_model) -> ClipEmbedder:
    return ClipEmbedder(str(shapes_model), device="cpu")


@pytest.fixture
def images(clip):
    return [clip.prepare(img) for img, _ in sample(12, seed=3)]


def fake(seconds: dict[str, float], noise: dict[str, float], dim: int = 16):
    """An encoder that takes ``seconds[p]`` per call and adds ``noise[p]`` to fixed unit rows."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, dim))

    def encode(batch, p):
        time.sleep(seconds[p])
        rows = base[: len(batch)] + noise[p] * np.random.default_rng(1).normal(size=(len(batch), dim))
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return encode


def test_a_candidate_is_chosen_only_when_it_agrees_and_clears_the_margin(images):
    fast_bf16 = fake({FP32: 0.02, BF16: 0.005, INT8: 0.02}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert decide(fast_bf16, images, 4, [BF16, INT8]).precision == BF16
    barely = fake({FP32: 0.02, BF16: 0.018, INT8: 0.02}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert decide(barely, images, 4, [BF16]).precision == FP32  # 1.1x is inside the noise: not worth it
    disagreeing = fake({FP32: 0.02, BF16: 0.002, INT8: 0.002}, {FP32: 0, BF16: 0.5, INT8: 0.5})
    decision = decide(disagreeing, images, 4, [BF16, INT8])
    assert decision.precision == FP32 and not any(t.agrees() for t in decision.trials)


def test_a_later_candidate_must_beat_the_earlier_choice_by_the_margin_too(images):
    close = fake({FP32: 0.03, BF16: 0.01, INT8: 0.009}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert decide(close, images, 4, [BF16, INT8]).precision == BF16
    far = fake({FP32: 0.03, BF16: 0.02, INT8: 0.005}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert decide(far, images, 4, [BF16, INT8]).precision == INT8


def test_timing_runs_at_the_batch_that_will_run_warmed_first(images):
    shapes: list[tuple[str, int]] = []

    def encode(batch, p):
        shapes.append((p, len(batch)))
        return np.full((len(batch), 8), 8 ** -0.5)

    decide(encode, images, 5, [BF16])
    timed = [s for s in shapes if s[1] == 5]
    assert timed[0] == (FP32, 5) and timed[1] == (BF16, 5)  # both warmed at the batch before any round
    assert len([s for s in timed if s[0] == BF16]) >= 2


def test_nothing_is_measured_without_fast_arithmetic_or_for_a_tiny_model(shapes_model, monkeypatch):
    monkeypatch.setattr(precision, "candidates", lambda device: [])
    assert decide(fake({FP32: 0}, {FP32: 0}), [], 8, []).precision == FP32
    tiny = ClipEmbedder(str(shapes_model), device="cpu", precision="auto")
    assert tiny.precision == FP32 and tiny.decision.trials == ()


def test_capability(monkeypatch):
    import torch

    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.native_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bf16("cpu")
    assert precision.candidates("cpu") == [BF16]  # native bf16: int8 is not raced against it
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert precision.candidates("cpu") == [INT8]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert precision.candidates("cpu") == []


def test_the_embedder_keeps_its_precision_and_a_call_may_override_it(shapes_model, images):
    bf16 = ClipEmbedder(str(shapes_model), device="cpu", precision="bf16")
    full = ClipEmbedder(str(shapes_model), device="cpu")
    assert bf16.precision == BF16 and bf16.decision == Decision(BF16, 32, reason="asked for")
    a, b = bf16.embed_images(images), full.embed_images(images)
    assert not np.array_equal(a, b) and float(np.min(np.sum(a * b, axis=1))) > 0.99
    assert np.array_equal(bf16.embed_images(images, precision=FP32), b)
    with pytest.raises(ValueError, match="precision"):
        full.embed_images(images, precision="fp16")


def test_int8_agrees_with_fp32(clip, images):
    a, b = clip.embed_images(images, precision=INT8), clip.embed_images(images)
    assert float(np.mean(np.sum(a * b, axis=1))) >= precision.MIN_COSINE[INT8]
    assert precision.top10_overlap(b, a) >= precision.MIN_OVERLAP[INT8]


def test_prepared_images_agree_with_the_clip_processor(clip):
    """The one-resize-and-crop input and array normalisation match the checkpoint's own processor."""
    photos = precision.probe_images(12)
    old = np.asarray(clip.model.encode(photos, convert_to_numpy=True, normalize_embeddings=True))
    new = clip.embed_images([clip.prepare(p) for p in photos])
    assert float(np.min(np.sum(old * new, axis=1))) >= 0.999
    assert all(clip.prepare(p).size == (clip.min_edges[0],) * 2 for p in photos)


def test_load_embedder_decides_once(shapes_model):
    one = load_embedder(str(shapes_model), "cpu")
    assert one is load_embedder(str(shapes_model), "cpu") and one.precision == FP32  # type: ignore[attr-defined]
