"""Precision is decided once, when the embedder is made: by capability, agreement with fp32 and wide margins."""
from __future__ import annotations

import json

import numpy as np
import pytest

from search.embedders import precision
from search.embedders.clip import ClipEmbedder
from search.embedders.precision import BF16, FP32, INT8, Decision, decide
from search.embedders.registry import load_embedder
from tests.fixtures.shapes import sample


@pytest.fixture(scope="module")
def clip(shapes_model) -> ClipEmbedder:
    """One fp32 embedder for the module: the tests read it (towers are built per precision and cached, fp32 untouched)."""
    return ClipEmbedder(str(shapes_model), device="cpu")


@pytest.fixture(scope="module")
def images(clip):
    return [clip.prepare(img) for img, _ in sample(12, seed=3)]


class Fake:
    """An encoder whose call at precision p takes ``seconds[p]`` on its own clock (never the wall's: the race is
    decided by these times alone, however loaded the machine) and adds ``noise[p]`` to fixed unit rows."""

    def __init__(self, seconds: dict[str, float], noise: dict[str, float], dim: int = 16):
        self.seconds, self.noise = seconds, noise
        self.base = np.random.default_rng(0).normal(size=(64, dim))
        self.now = 0.0
        self.timed: list[str] = []  # the precision of each call at the batch size, in order

    def clock(self) -> float:
        return self.now

    def __call__(self, batch, p):
        self.now += self.seconds[p]
        self.timed += [p] if len(batch) == 4 else []
        rows = self.base[: len(batch)] + self.noise[p] * np.random.default_rng(1).normal(size=(len(batch), len(self.base[0])))
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def race(fake: Fake, images, tried) -> Decision:
    """``decide`` at batch 4, timed by the fake's clock."""
    return decide(fake, images, 4, tried, clock=fake.clock)


def test_a_candidate_is_chosen_only_when_it_agrees_and_clears_the_margin(images):
    fast_bf16 = Fake({FP32: 0.02, BF16: 0.005, INT8: 0.02}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert race(fast_bf16, images, [BF16, INT8]).precision == BF16
    barely = Fake({FP32: 0.02, BF16: 0.018, INT8: 0.02}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    decision = race(barely, images, [BF16])
    assert decision.precision == FP32 and decision.trial(BF16).speedup == 1.111  # inside the noise: not worth it
    disagreeing = Fake({FP32: 0.02, BF16: 0.002, INT8: 0.002}, {FP32: 0, BF16: 0.5, INT8: 0.5})
    decision = race(disagreeing, images, [BF16, INT8])
    assert decision.precision == FP32 and not any(t.agrees() for t in decision.trials)
    assert all(t.speedup == 0.0 for t in decision.trials)  # one that disagrees is not even timed


def test_the_candidates_race_and_the_fastest_that_agrees_wins(images):
    int8_faster = Fake({FP32: 0.04, BF16: 0.012, INT8: 0.004}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    decision = race(int8_faster, images, [BF16, INT8])
    assert decision.precision == INT8 and (decision.trial(BF16).speedup, decision.trial(INT8).speedup) == (3.333, 10.0)
    bf16_faster = Fake({FP32: 0.04, BF16: 0.004, INT8: 0.012}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert race(bf16_faster, images, [BF16, INT8]).precision == BF16
    int8_wrong = Fake({FP32: 0.04, BF16: 0.012, INT8: 0.004}, {FP32: 0, BF16: 0.001, INT8: 0.5})
    decision = race(int8_wrong, images, [BF16, INT8])
    assert decision.precision == BF16 and not decision.trial(INT8).agrees()


def test_a_candidate_slower_than_fp32_in_its_first_round_is_timed_no_further(images):
    slower = Fake({FP32: 0.02, BF16: 0.03}, {FP32: 0, BF16: 0.001})
    decision = race(slower, images, [BF16])
    assert decision.precision == FP32 and decision.trial(BF16).speedup == 0.667
    assert slower.timed == [FP32, BF16, FP32, BF16]  # warmed both, then one round of each
    faster = Fake({FP32: 0.02, BF16: 0.01}, {FP32: 0, BF16: 0.001})
    race(faster, images, [BF16])
    assert faster.timed == [FP32, BF16] + [FP32, BF16] * precision.ROUNDS


def test_a_decision_is_remembered_per_machine_model_and_batch_and_not_measured_again(shapes_model, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "MIN_PARAMETERS", 0)  # measure even the tiny model
    monkeypatch.setattr(precision, "candidates", lambda device: [INT8])
    remembered = tmp_path / "precision.json"
    first = ClipEmbedder(str(shapes_model), device="cpu", precision="auto", batch_size=4, decisions=str(remembered))
    assert first.decision.trials and remembered.exists()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(precision, "decide", no_measuring)
    again = ClipEmbedder(str(shapes_model), device="cpu", precision="auto", batch_size=4, decisions=str(remembered))
    assert again.precision == first.precision and again.decision.trials == first.decision.trials
    assert "measured" in again.decision.reason
    key = precision.decision_key(str(shapes_model), "cpu", 4)
    assert key != precision.decision_key(str(shapes_model), "cpu", 32)  # another batch size: its own decision
    assert key != precision.decision_key("clip-ViT-B-32", "cpu", 4)
    remembered.write_text("{not json")  # damaged: measured again, never a failure
    assert precision.recall(str(remembered), key) is None


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
    assert decide(Fake({FP32: 0}, {FP32: 0}), [], 8, []).precision == FP32
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
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert precision.candidates("cpu") == [BF16, INT8]  # both fast here: they race
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


def test_the_int8_tower_is_quantize_dynamics_own_and_shares_the_rest_with_fp32(clip, images):
    import copy

    import torch

    from search.embedders.towers import _quantized

    fp32 = clip.tower(FP32)
    before = {k: v.clone() for k, v in fp32.state_dict().items()}
    ours = _quantized(fp32, torch)
    theirs = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    inputs = clip.image_inputs([clip.prepare(img) for img in images[:4]])
    with torch.inference_mode():
        assert torch.equal(ours(**inputs), theirs(**inputs))
    assert all(torch.equal(v, before[k]) for k, v in fp32.state_dict().items())  # fp32 untouched
    assert any(type(m).__name__ == "Linear" and m.__module__.startswith("torch.ao") for m in ours.modules())
    assert not any(type(m) is torch.nn.Linear for m in ours.modules())
    norms = [m for m in fp32.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(any(n.weight is o.weight for o in ours.modules() if isinstance(o, torch.nn.LayerNorm))
                         for n in norms)  # shared, not copied


def test_clips_text_tower_is_the_checkpoints_own_and_decides_its_precision_at_one_text_once(shapes_model, tmp_path,
                                                                                            monkeypatch):
    from sentence_transformers import SentenceTransformer

    texts = ["a red circle", "ảnh hình tròn màu đỏ", "x " * 120]  # the last is past CLIP's 77 tokens: truncated
    reference = SentenceTransformer(str(shapes_model), device="cpu").encode(texts, normalize_embeddings=True)
    plain = ClipEmbedder(str(shapes_model), device="cpu", precision="auto")
    assert plain.text_decision.precision == FP32 and not plain.text_decision.trials  # tiny: nothing measured
    assert np.min(np.sum(plain.embed_texts(texts) * reference, axis=1)) > 0.99999
    monkeypatch.setattr(precision, "MIN_PARAMETERS", 0)  # measure even the tiny model
    monkeypatch.setattr(precision, "candidates", lambda device: [INT8])
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)  # the tiny tower is not faster at int8; its agreement counts
    remembered = tmp_path / "precision.json"
    first = ClipEmbedder(str(shapes_model), device="cpu", precision="auto", decisions=str(remembered))
    decided = json.loads(remembered.read_text())
    assert len(decided) == 1  # the image tower's decision; the text's waits for a text
    rows = first.embed_texts(texts)
    text = first.text_decision
    assert [t.precision for t in text.trials] == [INT8] and text.batch_size == 1 and len(json.loads(remembered.read_text())) == 2
    assert text.precision == (INT8 if text.trials[0].agrees() else FP32)
    assert np.min(np.sum(rows * reference, axis=1)) > 0.99  # int8 where it agreed on the probe texts

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(precision, "decide", no_measuring)
    again = ClipEmbedder(str(shapes_model), device="cpu", precision="auto", decisions=str(remembered))
    assert again.text_decision.precision == text.precision and "measured" in again.text_decision.reason
    text_key = precision.decision_key(str(shapes_model), "cpu", 1, "text")
    assert text_key in json.loads(remembered.read_text())
    assert text_key != precision.decision_key(str(shapes_model), "cpu", 1)  # the app's image tower runs at batch 1 too
    assert ClipEmbedder(str(shapes_model), device="cpu", precision="bf16").text_decision.precision == BF16  # as asked
