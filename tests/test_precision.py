"""--precision auto: bf16 is used only where it agrees with fp32 and is measured to be faster."""
from __future__ import annotations

import numpy as np
import pytest

from search import embedders
from search.embedders import ClipEmbedder
from tests.fixtures.shapes import sample


@pytest.fixture
def clip(shapes_model) -> ClipEmbedder:
    return ClipEmbedder(str(shapes_model), device="cpu")


@pytest.fixture
def images(clip):
    return [clip.prepare(img) for img, _ in sample(8, seed=3)]


def test_bf16_is_chosen_when_it_agrees_and_is_fast_enough(clip, images, monkeypatch):
    monkeypatch.setattr(embedders, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 0.0)
    agreement, speedup = clip.calibrate_bf16(images)
    assert agreement >= embedders.BF16_MIN_AGREEMENT and speedup > 0
    assert clip.bf16
    assert float(np.min(np.sum(clip.embed_images(images) * _fp32(clip, images), axis=1))) > 0.99


def test_bf16_is_refused_when_slower_or_disagreeing(clip, images, monkeypatch):
    monkeypatch.setattr(embedders, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 1e9)
    clip.calibrate_bf16(images)
    assert not clip.bf16
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(embedders, "BF16_MIN_AGREEMENT", 1.0 + 1e-3)  # no pass can agree this well
    clip.calibrate_bf16(images)
    assert not clip.bf16


def test_no_calibration_where_bf16_is_emulated(clip, images, monkeypatch):
    import torch

    monkeypatch.setattr(embedders.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert clip.calibrate_bf16(images) is None and not clip.bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert embedders._bf16_supported("cpu")


def _fp32(clip: ClipEmbedder, images) -> np.ndarray:
    was, clip.bf16 = clip.bf16, False
    try:
        return clip.embed_images(images)
    finally:
        clip.bf16 = was
