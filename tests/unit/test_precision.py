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
    measured = clip.calibrate_bf16(images)
    assert measured.agreement >= embedders.BF16_MIN_AGREEMENT and measured.speedup > 0
    assert measured.precision == "bf16"
    bf16 = clip.embed_images(images, precision=measured.precision)
    assert float(np.min(np.sum(bf16 * clip.embed_images(images), axis=1))) > 0.99


def test_bf16_is_refused_when_slower_or_disagreeing(clip, images, monkeypatch):
    monkeypatch.setattr(embedders, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 1e9)
    assert clip.calibrate_bf16(images).precision == "fp32"
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(embedders, "BF16_MIN_AGREEMENT", 1.0 + 1e-3)  # no pass can agree this well
    assert clip.calibrate_bf16(images).precision == "fp32"


def test_no_calibration_where_bf16_is_emulated(clip, images, monkeypatch):
    import torch

    monkeypatch.setattr(embedders.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert clip.calibrate_bf16(images) is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert embedders._bf16_supported("cpu")



def test_calibrating_changes_nothing_a_query_sees(clip, images, monkeypatch):
    """A build's calibration must not switch the shared embedder's queries to bf16 (issue 11)."""
    monkeypatch.setattr(embedders, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(embedders, "BF16_MIN_SPEEDUP", 0.0)
    before = clip.embed_images(images)
    assert clip.calibrate_bf16(images).precision == "bf16"
    assert np.array_equal(clip.embed_images(images), before)
    assert not np.array_equal(clip.embed_images(images, precision="bf16"), before)
    with pytest.raises(ValueError, match="precision"):
        clip.embed_images(images, precision="fp16")
