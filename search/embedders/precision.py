"""Choosing a tower's precision: by what the device can do, agreement with fp32, and wide speed margins.

The decision runs at the batch size that will run, every path warmed at that shape and timed in interleaved
rounds (fp32 and each candidate in turn, the order rotated every round), and it rests on the median of each
round's ratio: a neighbour that takes a core for a moment slows one round's pair alike, so the ratio of that
round holds where a median of each candidate's own times would not. The candidates (bf16 where it is native,
int8 where it has fast kernels) race: each must agree with fp32 on real photos and beat it by MIN_SPEEDUP, and
the fastest of those wins.

An embedder never decides: a ``Chooser`` does, asked by whoever loads the embedder (``settle``: the builder
waits for it; the app asks it in the background and serves at SAFE meanwhile). The chooser remembers each
decision per model, weights, batch size and tower in a file in the store, with the machine it was made on
(CPU model and flags, cores, torch, onnxruntime): later starts read it instead of measuring, and a change of
machine (an upgrade of torch, a CPU with other flags) opens the decision again.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from search.core.atomic import write_atomically

log = logging.getLogger(__name__)
FP32, BF16, INT8, AUTO = "fp32", "bf16", "int8", "auto"
ONNX_FP32, ONNX_INT8 = "onnx-fp32", "onnx-int8"  # ONNX Runtime's (embedders/onnx_runtime.py), where a family offers it
ONNX = (ONNX_FP32, ONNX_INT8)
PRECISIONS = (FP32, BF16, INT8, *ONNX)
SAFE = FP32  # what a tower runs at until its race has decided: exact, and nothing to measure first
TOWERS = ("image", "text")
# mean cosine to fp32 each needs on real images; ONNX Runtime's fp32 is the same arithmetic in another order
MIN_COSINE = {BF16: 0.999, INT8: 0.995, ONNX_FP32: 0.9999, ONNX_INT8: 0.995}
MIN_OVERLAP = {BF16: 0.0, INT8: 0.95, ONNX_FP32: 0.95, ONNX_INT8: 0.95}  # top-10 overlap of exact search with fp32's
MIN_SPEEDUP = 1.3  # the wide margin over fp32: noise on a shared machine is about 15%
MIN_PARAMETERS = 5_000_000  # an image tower smaller than this runs in milliseconds: fp32, nothing measured
RATE_DRIFT = 1.5  # a build's model this much slower or faster than its decision's rate reopens the decision
ROUNDS = 7  # interleaved rounds; the median of their ratios decides (bench/precision_race.py: beside a CPU hog)
PROBE = Path(__file__).resolve().parent / "probe"  # real photos, shipped with the package (package data)

Encode = Callable[[Sequence[Any], str], np.ndarray]  # (batch of images or texts, precision) -> unit rows
Clock = Callable[[], float]  # seconds from an arbitrary start; tests pass a fake one instead of sleeping
Machine = Callable[[str], dict[str, Any]]  # device -> what a decision made on it depends on (``machine``)


@dataclass(frozen=True)
class Trial:
    """One candidate measured against fp32 on the same images at the same batch."""

    precision: str
    cosine: float  # mean cosine between its rows and fp32's
    overlap: float  # mean overlap of top-10 exact search against fp32's
    speedup: float  # the median of the rounds' fp32 seconds / candidate seconds

    def agrees(self) -> bool:
        return self.cosine >= MIN_COSINE[self.precision] and self.overlap >= MIN_OVERLAP[self.precision]


@dataclass(frozen=True)
class Decision:
    """The precision chosen, the batch it was measured at, what was measured, and the rate it predicts."""

    precision: str
    batch_size: int
    trials: tuple[Trial, ...] = field(default=())
    reason: str = ""
    rate: float | None = None  # inputs a second at ``precision`` and ``batch_size`` in the race; None: not timed

    def trial(self, precision: str) -> Trial | None:
        return next((t for t in self.trials if t.precision == precision), None)


@dataclass(frozen=True)
class Race:
    """A tower offered to a ``Chooser``: what its decision depends on, and how to run it."""

    tower: str  # "image" or "text" (TOWERS)
    model: str  # the model's name or path
    device: str
    batch_size: int  # the batch it will run at
    parameters: int  # the tower's weights: a tiny one is not measured
    tried: tuple[str, ...]  # the candidates worth trying on this device (``candidates``)
    encode: Encode
    probes: Callable[[], list[Any]]  # real inputs to check agreement on (``probe_images``, ``probe_texts``)


@runtime_checkable
class Tunable(Protocol):
    """An embedder whose towers run at a precision set from outside (the two-tower families): it offers a race
    per tower and uses what was decided."""

    def races(self, batch_size: int) -> list[Race]: ...
    def use(self, tower: str, decision: Decision) -> None: ...


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def native_bf16(device: str) -> bool:
    """Whether bf16 runs natively: CUDA with bf16, or an x86 CPU with AVX512-BF16 or AMX.

    An x86 CPU without them emulates bf16, several times slower than fp32: not worth even measuring.
    ARM's bf16 extensions are measured.
    """
    import torch

    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(c() for c in checks if callable(c))
    return True


def int8_capable(device: str) -> bool:
    """Whether dynamic int8 quantisation has fast kernels here: an x86 CPU with AVX2 or better (fbgemm)."""
    import torch

    return device == "cpu" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def candidates(device: str, onnx: bool = False) -> list[str]:
    """The precisions worth trying here: bf16 where it is native, int8 where it has fast kernels (both on an
    x86 CPU with AVX512-BF16 or AMX: they race); with ``onnx`` (a family that can export its towers), ONNX
    Runtime's fp32 and int8 on a CPU where onnxruntime is installed."""
    torch_ones = [p for p, able in ((BF16, native_bf16(device)), (INT8, int8_capable(device))) if able]
    return torch_ones + list(ONNX) if onnx and device == "cpu" and version_of("onnxruntime") else torch_ones


def decide(encode: Encode, images: Sequence[Any], batch_size: int, tried: Sequence[str],
           clock: Clock = time.perf_counter) -> Decision:
    """Choose among fp32 and ``tried``, measured on ``images`` (or texts: ``probe_texts``) at ``batch_size``;
    ``clock`` times the rounds."""
    if not tried:
        return Decision(FP32, batch_size, reason="no faster arithmetic on this device")
    if len(images) < 2:
        return Decision(FP32, batch_size, reason="no real inputs to check agreement on")
    # Agreement in one pass over every image (it does not depend on the batch), speed at the real batch.
    reference = encode(images, FP32)
    trials = []
    for precision in tried:
        rows = encode(images, precision)
        cosine = float(np.mean(np.sum(rows * reference, axis=1)))
        trials.append(Trial(precision, round(cosine, 6), round(top10_overlap(reference, rows), 4), 0.0))
    agreeing = [t.precision for t in trials if t.agrees()]  # one that disagrees is not even timed
    seconds = _race(encode, _batch(images, batch_size), [FP32, *agreeing], clock) if agreeing else {}
    trials = [Trial(t.precision, t.cosine, t.overlap, _speedup(seconds, t.precision)) if t.precision in seconds
              else t for t in trials]
    return _choose(trials, batch_size, seconds)


def _choose(trials: list[Trial], batch_size: int, seconds: dict[str, list[float]]) -> Decision:
    """The fastest candidate that agrees and beats fp32 by MIN_SPEEDUP (the race's winner, by median ratio)."""
    agreeing = [t for t in trials if t.agrees() and t.speedup >= MIN_SPEEDUP]
    if not agreeing:
        return Decision(FP32, batch_size, tuple(trials), f"nothing agreed and beat fp32 by {MIN_SPEEDUP}x",
                        _rate(seconds, FP32, batch_size))
    best = max(agreeing, key=lambda t: t.speedup)
    return Decision(best.precision, batch_size, tuple(trials), f"agrees and is {best.speedup}x fp32's speed",
                    _rate(seconds, best.precision, batch_size))


def _race(encode: Encode, batch: list[Any], racers: list[str], clock: Clock) -> dict[str, list[float]]:
    """Each racer's seconds per round at ``batch`` (``racers[0]`` is fp32, the reference), every one warmed at
    that shape first and the rounds interleaved, each in another order, so that none always follows the same one.

    A candidate leaves the race once more than half its rounds fall short of MIN_SPEEDUP: the median cannot
    reach it then.
    """
    for precision in racers:
        encode(batch, precision)  # warm: the first call at a shape pays its setup
    seconds: dict[str, list[float]] = {p: [] for p in racers}
    running = list(racers)
    for turn in range(ROUNDS):
        if len(running) < 2:
            break
        for precision in running[turn % len(running):] + running[:turn % len(running)]:
            start = clock()
            encode(batch, precision)
            seconds[precision].append(clock() - start)
        short = [p for p in running[1:] if sum(r < MIN_SPEEDUP for r in _ratios(seconds, p)) > ROUNDS // 2]
        running = [p for p in running if p not in short]
    return seconds


def _ratios(seconds: dict[str, list[float]], precision: str) -> list[float]:
    """fp32's seconds over ``precision``'s, round by round."""
    return [full / max(other, 1e-9) for full, other in zip(seconds[FP32], seconds[precision])]


def _speedup(seconds: dict[str, list[float]], precision: str) -> float:
    return round(statistics.median(_ratios(seconds, precision)), 3)


def _rate(seconds: dict[str, list[float]], precision: str, batch_size: int) -> float | None:
    """Inputs a second at ``precision`` by the median of its rounds; None where it ran none."""
    timed = seconds.get(precision)
    return round(batch_size / max(statistics.median(timed), 1e-9), 2) if timed else None


def machine(device: str) -> dict[str, Any]:
    """What a decision made on ``device`` depends on besides the model: the CPU's model, cores and vector flags
    (or the GPU's name), the architecture, and the versions of torch and of onnxruntime (None where it is not
    installed)."""
    import torch

    said: dict[str, Any] = {"device": device, "arch": platform.machine(), "torch": torch.__version__,
                            "onnxruntime": version_of("onnxruntime")}
    if device == "cuda":
        return {**said, "gpu": torch.cuda.get_device_name(0)}
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return {**said, "cpu": name, "cores": os.cpu_count(),
            "flags": sorted(f for f in set(flags) if f.startswith(("avx", "amx")))}


def version_of(package: str) -> str | None:
    """The installed version of ``package``; None where it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def decision_key(model: str, device: str, batch_size: int, tower: str = "image") -> str:
    """Which decision: the model (its name, and a local checkpoint's weights by size and time), the device, the
    batch size and the tower. The machine is not part of it: a decision remembers its own (``machine``)."""
    text = json.dumps([device, model, weights(model), batch_size, tower])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def weights(model: str) -> list[str]:
    """A local checkpoint's weight files by name, size and time (what changes when it is trained again); none for
    a Hub name, whose files do not change under it."""
    folder = Path(model)
    return sorted(f"{w.relative_to(folder)}:{w.stat().st_size}:{w.stat().st_mtime_ns}"
                  for pattern in ("*.safetensors", "*.bin") for w in folder.rglob(pattern)) if folder.is_dir() else []


class Chooser:
    """Decides towers' precisions, once each: recalled from ``path`` (a store's precision.json) where it holds a
    decision made on this machine as it is now, else raced and remembered there. Known decisions are kept in
    memory too, so a process asks the file once.

    ``clock`` times the race's rounds and ``machine`` says what the machine is (tests pass their own).
    """

    def __init__(self, path: str | None, *, clock: Clock = time.perf_counter, machine: Machine = machine):
        self.path = path
        self.clock = clock
        self.machine = machine
        self._known: dict[str, Decision] = {}
        self._lock = threading.Lock()  # the memory and the file
        self._racing = threading.Lock()  # one race at a time: two at once would time each other

    def recalled(self, race: Race) -> Decision | None:
        """The decision known for ``race`` without measuring: none to make (a tiny tower, nothing faster to try),
        in memory, or in the file and made on this machine as it is now; else None."""
        if race.parameters < MIN_PARAMETERS:
            return Decision(FP32, race.batch_size, reason="a model this small gains nothing from lower precision")
        if not race.tried:
            return Decision(FP32, race.batch_size, reason="no faster arithmetic on this device")
        key = decision_key(race.model, race.device, race.batch_size, race.tower)
        with self._lock:
            if key not in self._known:
                found = _read(self.path, key, self.machine(race.device)) if self.path else None
                if found is None:
                    return None
                self._known[key] = found
            return self._known[key]

    def choose(self, race: Race) -> Decision:
        """The decision for ``race``: recalled, else raced now (at ``race.batch_size``) and remembered."""
        with self._racing:
            decided = self.recalled(race)
            if decided is not None:
                return decided
            log.info("racing the %s tower's precisions at batch %d: %s against fp32", race.tower, race.batch_size,
                     ", ".join(race.tried))
            decided = decide(race.encode, race.probes(), race.batch_size, race.tried, self.clock)
            key = decision_key(race.model, race.device, race.batch_size, race.tower)
            with self._lock:
                self._known[key] = decided
                if self.path:
                    _write(self.path, key, decided, self.machine(race.device))
            return decided


def settle(embedder: object, asked: str, batch_size: int, chooser: Chooser) -> None:
    """Set each of ``embedder``'s towers to ``asked`` or, where it is ``auto``, to what ``chooser`` decides now
    (the image tower at ``batch_size``, the text tower at one text: ``Tunable.races``). An embedder that is not
    ``Tunable`` (pixels) has no precision to set."""
    if asked != AUTO:
        check_precision(asked)
    if not isinstance(embedder, Tunable):
        return
    for race in embedder.races(batch_size):
        embedder.use(race.tower, chooser.choose(race) if asked == AUTO else
                     Decision(asked, race.batch_size, reason="asked for"))


def _read(path: str, key: str, here: dict[str, Any]) -> Decision | None:
    """The decision ``path`` remembers for ``key``, where it was made on the machine ``here`` describes; a
    damaged or foreign entry is no decision."""
    try:
        entry = json.loads(Path(path).read_text())[key]
        trials = tuple(Trial(**t) for t in entry["trials"])
        if any(t.precision not in MIN_COSINE for t in trials):
            return None
        rate = None if entry.get("rate") is None else float(entry["rate"])
        decision = Decision(check_precision(entry["precision"]), int(entry["batch_size"]), trials,
                            f"{entry['reason']} (measured {entry['at']})", rate)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if entry.get("machine") != here:
        log.info("the remembered precision decision was made on another machine or software (%s, now %s): "
                 "racing again", entry.get("machine"), here)
        return None
    return decision


def _write(path: str, key: str, decision: Decision, here: dict[str, Any]) -> None:
    """Add ``decision`` to the file at ``path`` (atomically; a store that cannot be written just re-measures)."""
    target = Path(path)
    try:
        known = json.loads(target.read_text()) if target.exists() else {}
    except (OSError, ValueError):
        known = {}
    # Entries that say no machine were keyed by it before (an older release): no key reaches them any longer.
    known = {k: v for k, v in known.items() if isinstance(v, dict) and "machine" in v} if isinstance(known, dict) else {}
    known[key] = {"precision": decision.precision, "batch_size": decision.batch_size, "reason": decision.reason,
                  "rate": decision.rate, "trials": [asdict(t) for t in decision.trials], "machine": here,
                  "at": time.strftime("%Y-%m-%d")}
    try:
        write_atomically(target, json.dumps(known, indent=1))
    except OSError:
        pass


def drifted(predicted: float | None, measured: float) -> bool:
    """Whether a build's model ran at ``measured`` inputs a second so far from the ``predicted`` rate its decision
    was made at (RATE_DRIFT either way) that the decision was made in another moment than this machine's usual."""
    return predicted is not None and predicted > 0 and not predicted / RATE_DRIFT <= measured <= predicted * RATE_DRIFT


def reopen(path: str | None, model: str, device: str, batch_size: int, tower: str = "image") -> None:
    """Forget the decision ``path`` remembers for this tower: the next load races again."""
    if not path or not Path(path).exists():
        return
    try:
        known = json.loads(Path(path).read_text())
        if isinstance(known, dict) and known.pop(decision_key(model, device, batch_size, tower), None) is not None:
            write_atomically(Path(path), json.dumps(known, indent=1))
    except (OSError, ValueError):
        pass  # a store that cannot be read or written races again anyway


def _batch(images: Sequence[Any], batch_size: int) -> list[Any]:
    """``batch_size`` inputs, the given ones repeated where there are fewer."""
    return [images[i % len(images)] for i in range(batch_size)]


def top10_overlap(reference: np.ndarray, rows: np.ndarray) -> float:
    """Mean overlap of each row's 10 nearest others, by exact search, between the two sets of rows."""
    k = min(10, len(reference) - 1)
    if k < 1:
        return 1.0
    overlaps = []
    for q in range(len(reference)):
        a = set(np.argsort(-(reference @ reference[q]))[1:k + 1])
        b = set(np.argsort(-(rows @ rows[q]))[1:k + 1])
        overlaps.append(len(a & b) / k)
    return float(np.mean(overlaps))


def probe_images(count: int = 36) -> list[Image.Image]:
    """Real photos (the shipped examples), each also cropped and mirrored, so exact search has neighbours."""
    photos = [Image.open(p).convert("RGB") for p in sorted(PROBE.glob("*.jpg"))]
    out: list[Image.Image] = []
    for img in photos:
        w, h = img.size
        crops = [(0, 0, w, h), (0, 0, w * 2 // 3, h * 2 // 3), (w // 3, h // 3, w, h), (w // 6, h // 6, w * 5 // 6, h * 5 // 6)]
        out += [img.crop(box) for box in crops]
        out += [ImageOps.mirror(img), ImageOps.mirror(img.crop(crops[1]))]
    return out[:count]


def probe_texts() -> list[str]:
    """Descriptions such as visitors type, in English and Vietnamese, for a text tower's agreement (shipped beside the photos)."""
    return [line for line in (PROBE / "texts.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
