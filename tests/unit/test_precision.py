"""Precision is decided by a Chooser, not by the embedder: by capability, agreement with fp32 and wide margins
measured in interleaved rounds, remembered with the machine it was made on. Embedders are cheap to make and
``load()`` loads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search.embedders import precision
from search.embedders.clip import ClipEmbedder
from search.embedders.precision import BF16, FP32, INT8, Chooser, Decision, decide, settle
from search.embedders.registry import load_embedder
from search.errors import ModelError
from tests.fixtures.fake_embedder import Racing
from tests.fixtures.shapes import sample

HERE = {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx", "avx2"], "torch": "2.5.1", "onnxruntime": None}


def loaded(embedder: ClipEmbedder) -> ClipEmbedder:
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def clip(shapes_model) -> ClipEmbedder:
    """One fp32 embedder for the module: the tests read it (towers are built per precision and cached, fp32 untouched)."""
    return loaded(ClipEmbedder(str(shapes_model), device="cpu"))


@pytest.fixture(scope="module")
def images(clip):
    return [clip.prepare(img) for img, _ in sample(12, seed=3)]


class Fake:
    """An encoder whose call at precision p takes ``seconds[p]`` on its own clock, never the wall's: the race is
    decided by these times alone, however loaded the machine. ``busy`` scripts a neighbour: how many times slower
    each timed call is, in the order they come after the warm-ups. It adds ``noise[p]`` to fixed unit rows."""

    def __init__(self, seconds: dict[str, float], noise: dict[str, float], dim: int = 16,
                 busy: tuple[float, ...] = ()):
        self.seconds, self.noise, self.busy = seconds, noise, busy
        self.racers = len(seconds)  # each warmed once before ``busy`` counts
        self.base = np.random.default_rng(0).normal(size=(64, dim))
        self.now = 0.0
        self.timed: list[str] = []  # the precision of each call at the batch size, in order

    def clock(self) -> float:
        return self.now

    def __call__(self, batch, p):
        if len(batch) == 4:
            self.timed.append(p)
            call = len(self.timed) - 1 - self.racers
            self.now += self.seconds[p] * (self.busy[call] if 0 <= call < len(self.busy) else 1.0)
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
    assert decision.rate == 200.0  # fp32's: 4 inputs in 0.02 s
    disagreeing = Fake({FP32: 0.02, BF16: 0.002, INT8: 0.002}, {FP32: 0, BF16: 0.5, INT8: 0.5})
    decision = race(disagreeing, images, [BF16, INT8])
    assert decision.precision == FP32 and not any(t.agrees() for t in decision.trials)
    assert all(t.speedup == 0.0 for t in decision.trials) and disagreeing.timed == []  # not even timed


def test_the_candidates_race_and_the_fastest_that_agrees_wins(images):
    int8_faster = Fake({FP32: 0.04, BF16: 0.012, INT8: 0.004}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    decision = race(int8_faster, images, [BF16, INT8])
    assert decision.precision == INT8 and (decision.trial(BF16).speedup, decision.trial(INT8).speedup) == (3.333, 10.0)
    assert decision.rate == 1000.0  # the rate the race predicts: int8's, 4 inputs in 4 ms
    bf16_faster = Fake({FP32: 0.04, BF16: 0.004, INT8: 0.012}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    assert race(bf16_faster, images, [BF16, INT8]).precision == BF16
    int8_wrong = Fake({FP32: 0.04, BF16: 0.012, INT8: 0.004}, {FP32: 0, BF16: 0.001, INT8: 0.5})
    decision = race(int8_wrong, images, [BF16, INT8])
    assert decision.precision == BF16 and not decision.trial(INT8).agrees()


def test_rounds_interleave_every_racer_in_a_rotating_order(images):
    fake = Fake({FP32: 0.04, BF16: 0.02, INT8: 0.01}, {FP32: 0, BF16: 0.001, INT8: 0.001})
    race(fake, images, [BF16, INT8])
    warm, rounds = fake.timed[:3], fake.timed[3:]
    assert warm == [FP32, BF16, INT8]  # each warmed at the batch before any round
    assert rounds[:9] == [FP32, BF16, INT8, BF16, INT8, FP32, INT8, FP32, BF16]
    assert len(rounds) == 3 * precision.ROUNDS


def test_a_neighbour_busy_for_a_while_does_not_move_the_decision(images):
    """A neighbour takes the cores 4x for calls 3 to 9 of the race, from the middle of its second round: rounds
    whose two calls it slowed alike keep their ratio, and the one it split is outvoted. The median of the rounds'
    ratios is the quiet machine's (int8 at 1.4x fp32); the ratio of each racer's median time would be 5.6x."""
    busy = Fake({FP32: 0.14, INT8: 0.1}, {FP32: 0, INT8: 0.001}, busy=(1, 1, 1) + (4,) * 7)
    decision = race(busy, images, [INT8])
    assert decision.precision == INT8 and decision.trial(INT8).speedup == 1.4
    assert decision.rate == 40.0  # int8's median round is a quiet one


def test_a_candidate_that_cannot_reach_the_margin_leaves_the_race(images):
    slower = Fake({FP32: 0.02, BF16: 0.03}, {FP32: 0, BF16: 0.001})
    decision = race(slower, images, [BF16])
    assert decision.precision == FP32 and decision.trial(BF16).speedup == 0.667
    short = precision.ROUNDS // 2 + 1  # this many rounds below the margin: its median cannot reach it
    assert slower.timed.count(BF16) == 1 + short and slower.timed.count(FP32) == 1 + short
    faster = Fake({FP32: 0.02, BF16: 0.01}, {FP32: 0, BF16: 0.001})
    race(faster, images, [BF16])
    assert faster.timed.count(BF16) == 1 + precision.ROUNDS


def test_a_decision_is_remembered_with_its_machine_and_not_measured_again(tmp_path):
    remembered = tmp_path / "precision.json"
    model = Racing({FP32: 0.04, BF16: 0.03, INT8: 0.01})
    image, text = model.races(4)
    first = Chooser(str(remembered), clock=model.clock, machine=lambda device: HERE).choose(image)
    assert first.precision == INT8 and first.trials and model.raced
    entry = next(iter(json.loads(remembered.read_text()).values()))
    assert entry["machine"] == HERE and entry["rate"] == first.rate == 400.0
    model.raced.clear()
    again = Chooser(str(remembered), clock=model.clock, machine=lambda device: HERE)
    recalled = again.choose(image)
    assert (recalled.precision, recalled.trials, recalled.rate) == (INT8, first.trials, first.rate)
    assert "measured" in recalled.reason and model.raced == []  # read, not measured
    assert again.recalled(text) is None  # the text tower's decision is its own
    key = precision.decision_key(model.name, "cpu", 4)
    assert key != precision.decision_key(model.name, "cpu", 32)  # another batch size: its own decision
    assert key != precision.decision_key(model.name, "cpu", 4, "text")
    remembered.write_text("{not json")  # damaged: measured again, never a failure
    assert Chooser(str(remembered), machine=lambda device: HERE).recalled(image) is None


@pytest.mark.parametrize("change", [{"flags": ["avx", "avx2", "avx512_bf16", "avx512f"]}, {"torch": "2.6.0"},
                                    {"onnxruntime": "1.20.1"}])
def test_a_changed_machine_opens_the_decision_again(tmp_path, change):
    remembered = str(tmp_path / "precision.json")
    model = Racing({FP32: 0.04, BF16: 0.03, INT8: 0.01})
    image = model.races(4)[0]
    Chooser(remembered, clock=model.clock, machine=lambda device: HERE).choose(image)
    model.raced.clear()
    now = {**HERE, **change}
    assert Chooser(remembered, machine=lambda device: now).recalled(image) is None
    Chooser(remembered, clock=model.clock, machine=lambda device: now).choose(image)
    assert model.raced  # raced again, and the file now holds the new machine's decision
    assert next(iter(json.loads(Path(remembered).read_text()).values()))["machine"] == now


def test_a_chooser_asks_once_and_keeps_what_it_was_told(tmp_path):
    model = Racing({FP32: 0.04, BF16: 0.03, INT8: 0.01})
    image = model.races(4)[0]
    chooser = Chooser(str(tmp_path / "precision.json"), clock=model.clock, machine=lambda device: HERE)
    first = chooser.choose(image)
    (tmp_path / "precision.json").unlink()
    assert chooser.choose(image) is first and chooser.recalled(image) is first  # from memory


def test_the_machine_is_described_by_what_a_decision_depends_on():
    import torch

    here = precision.machine("cpu")
    assert here["torch"] == torch.__version__ and "onnxruntime" in here and "flags" in here
    assert all(f.startswith(("avx", "amx")) for f in here["flags"])


def test_nothing_is_measured_without_fast_arithmetic_or_for_a_tiny_model(clip, monkeypatch):
    assert decide(Fake({FP32: 0}, {FP32: 0}), [], 8, []).precision == FP32
    monkeypatch.setattr(precision, "decide", lambda *a, **k: pytest.fail("measured"))
    tiny = clip.races(4)[0]  # the shapes model: far below MIN_PARAMETERS
    assert Chooser(None).choose(tiny) == Decision(FP32, 4, reason="a model this small gains nothing from lower precision")
    monkeypatch.setattr(precision, "MIN_PARAMETERS", 0)
    monkeypatch.setattr(precision, "candidates", lambda device, onnx=False: [])
    assert Chooser(None).choose(clip.races(4)[0]).reason == "no faster arithmetic on this device"


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


def test_a_cpu_without_native_bf16_never_races_it(clip, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr(precision, "int8_capable", lambda device: True)
    assert {race.tried for race in clip.races(4)} == {(INT8, *precision.ONNX)}  # ONNX Runtime: CLIP on a CPU
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert {race.tried for race in clip.races(4)} == {(BF16, INT8, *precision.ONNX)}


def test_making_an_embedder_loads_nothing_and_load_loads(shapes_model, tmp_path):
    missing = ClipEmbedder(str(tmp_path / "no-such-model"), device="cpu")  # cheap: nothing read yet
    assert not missing.loaded and not any(tmp_path.iterdir())
    with pytest.raises(ModelError, match="cannot load"):
        missing.load()
    embedder = ClipEmbedder(str(shapes_model), device="cpu")
    assert not embedder.loaded and embedder.model is None and embedder.precision == FP32
    embedder.load()
    assert embedder.loaded and embedder.dimension > 0 and embedder.decision is None  # nothing decided yet
    rows = embedder.embed_texts(["a red circle"])
    embedder.unload()
    assert not embedder.loaded and embedder.model is None
    embedder.load()
    assert np.array_equal(embedder.embed_texts(["a red circle"]), rows)


def test_the_embedder_keeps_its_precision_and_a_call_may_override_it(shapes_model, images):
    bf16 = loaded(ClipEmbedder(str(shapes_model), device="cpu"))
    settle(bf16, BF16, 32, Chooser(None))
    full = loaded(ClipEmbedder(str(shapes_model), device="cpu"))
    assert bf16.precision == BF16 and bf16.decision == Decision(BF16, 32, reason="asked for")
    assert bf16.text_precision == BF16 and full.precision == full.text_precision == FP32
    a, b = bf16.embed_images(images), full.embed_images(images)
    assert not np.array_equal(a, b) and float(np.min(np.sum(a * b, axis=1))) > 0.99
    assert np.array_equal(bf16.embed_images(images, precision=FP32), b)
    with pytest.raises(ValueError, match="precision"):
        full.embed_images(images, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        settle(full, "fp16", 32, Chooser(None))


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
    assert one.decision.reason.startswith("a model this small")  # type: ignore[attr-defined]


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


def test_clips_text_tower_is_the_checkpoints_own_and_decides_its_precision_at_one_text(shapes_model, tmp_path,
                                                                                       monkeypatch):
    from sentence_transformers import SentenceTransformer

    texts = ["a red circle", "ảnh hình tròn màu đỏ", "x " * 120]  # the last is past CLIP's 77 tokens: truncated
    reference = SentenceTransformer(str(shapes_model), device="cpu").encode(texts, normalize_embeddings=True)
    plain = loaded(ClipEmbedder(str(shapes_model), device="cpu"))
    assert plain.text_precision == FP32
    assert np.min(np.sum(plain.embed_texts(texts) * reference, axis=1)) > 0.99999
    monkeypatch.setattr(precision, "MIN_PARAMETERS", 0)  # measure even the tiny model
    monkeypatch.setattr(precision, "candidates", lambda device, onnx=False: [INT8])
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)  # the tiny tower is not faster at int8; its agreement counts
    remembered = tmp_path / "precision.json"
    first = loaded(ClipEmbedder(str(shapes_model), device="cpu"))
    settle(first, "auto", 4, Chooser(str(remembered)))
    assert len(json.loads(remembered.read_text())) == 2  # the image tower's at 4, the text tower's at one text
    text = first.text_decision
    assert text is not None and [t.precision for t in text.trials] == [INT8] and text.batch_size == 1
    assert text.precision == (INT8 if text.trials[0].agrees() else FP32) == first.text_precision
    assert np.min(np.sum(first.embed_texts(texts) * reference, axis=1)) > 0.99  # int8 where it agreed
    monkeypatch.setattr(precision, "decide", lambda *a, **k: pytest.fail("measured again"))
    again = loaded(ClipEmbedder(str(shapes_model), device="cpu"))
    settle(again, "auto", 4, Chooser(str(remembered)))
    assert again.text_precision == text.precision and "measured" in again.text_decision.reason
