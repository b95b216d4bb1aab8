"""Choosing an embedder's precision once: by what the device can do, agreement with fp32, and wide speed margins.

The decision runs at the batch size that will run, every path warmed at that shape and timed in
interleaved rounds (medians of ROUNDS), so a first-call cost or a noisy neighbour does not decide it. The
candidates (bf16 where it is native, int8 where it has fast kernels) race: each must agree with fp32 on real
photos and beat it by MIN_SPEEDUP, and the fastest of those wins. Where two run close to each other (this
2-core EPYC: int8 about 1.4x bf16) two measurements could pick differently, so the decision is remembered
per machine, model and batch size (``decision_key``) in a file in the store: later starts read it instead of
measuring (seconds saved) and cannot flip.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from search.core.atomic import write_atomically

FP32, BF16, INT8, AUTO = "fp32", "bf16", "int8", "auto"
PRECISIONS = (FP32, BF16, INT8)
MIN_COSINE = {BF16: 0.999, INT8: 0.995}  # mean cosine to fp32 each needs on real images
MIN_OVERLAP = {BF16: 0.0, INT8: 0.95}  # top-10 overlap of exact search with fp32's
MIN_SPEEDUP = 1.3  # the wide margin over fp32: noise on a shared machine is about 15%
MIN_PARAMETERS = 5_000_000  # an image tower smaller than this runs in milliseconds: fp32, nothing measured
ROUNDS = 5  # interleaved rounds per candidate; the median decides
PROBE = Path(__file__).resolve().parent / "probe"  # real photos, shipped with the package (package data)

Encode = Callable[[Sequence[Any], str], np.ndarray]  # (batch of images or texts, precision) -> unit rows
Clock = Callable[[], float]  # seconds from an arbitrary start; tests pass a fake one instead of sleeping


@dataclass(frozen=True)
class Trial:
    """One candidate measured against fp32 on the same images at the same batch."""

    precision: str
    cosine: float  # mean cosine between its rows and fp32's
    overlap: float  # mean overlap of top-10 exact search against fp32's
    speedup: float  # median fp32 seconds / median candidate seconds

    def agrees(self) -> bool:
        return self.cosine >= MIN_COSINE[self.precision] and self.overlap >= MIN_OVERLAP[self.precision]


@dataclass(frozen=True)
class Decision:
    """The precision chosen, the batch it was measured at, and what was measured."""

    precision: str
    batch_size: int
    trials: tuple[Trial, ...] = field(default=())
    reason: str = ""

    def trial(self, precision: str) -> Trial | None:
        return next((t for t in self.trials if t.precision == precision), None)


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


def candidates(device: str) -> list[str]:
    """The precisions worth trying here: bf16 where it is native, int8 where it has fast kernels (both on an
    x86 CPU with AVX512-BF16 or AMX: they race)."""
    return [p for p, able in ((BF16, native_bf16(device)), (INT8, int8_capable(device))) if able]


def decide(encode: Encode, images: Sequence[Any], batch_size: int, tried: Sequence[str],
           clock: Clock = time.perf_counter) -> Decision:
    """Choose among fp32 and ``tried``, measured on ``images`` (or texts: ``probe_texts``) at ``batch_size``;
    ``clock`` times the rounds."""
    if not tried:
        return Decision(FP32, batch_size, reason="no faster arithmetic on this device")
    if len(images) < 2:
        return Decision(FP32, batch_size, reason="no real inputs to check agreement on")
    batch = _batch(images, batch_size)
    encode(batch, FP32)  # warm: the first call at a shape pays its setup
    # Agreement in one pass over every image (it does not depend on the batch), speed at the real batch.
    reference = encode(images, FP32)
    trials = []
    for precision in tried:
        rows = encode(images, precision)
        cosine = float(np.mean(np.sum(rows * reference, axis=1)))
        trial = Trial(precision, round(cosine, 6), round(top10_overlap(reference, rows), 4), 0.0)
        if trial.agrees():
            trial = Trial(precision, trial.cosine, trial.overlap, round(_speedup(encode, batch, precision, clock), 3))
        trials.append(trial)
    return _choose(trials, batch_size)


def _choose(trials: list[Trial], batch_size: int) -> Decision:
    """The fastest candidate that agrees and beats fp32 by MIN_SPEEDUP (the race's winner, by median speed)."""
    agreeing = [t for t in trials if t.agrees() and t.speedup >= MIN_SPEEDUP]
    if not agreeing:
        return Decision(FP32, batch_size, tuple(trials), f"nothing agreed and beat fp32 by {MIN_SPEEDUP}x")
    best = max(agreeing, key=lambda t: t.speedup)
    return Decision(best.precision, batch_size, tuple(trials), f"agrees and is {best.speedup}x fp32's speed")


def decision_key(model: str, device: str, batch_size: int, tower: str = "image") -> str:
    """What a decision depends on: the machine (CPU model and flags, cores, torch), the model (its name, and a
    local checkpoint's weights by size and time), the batch size and the tower ("image" or "text")."""
    import torch

    cpu = ""
    if device == "cpu" and Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
        cpu = f"{name} {os.cpu_count()} {' '.join(sorted(f for f in flags if f.startswith(('avx', 'amx'))))}"
    elif device == "cuda":
        cpu = torch.cuda.get_device_name(0)
    folder = Path(model)
    weights = sorted(f"{w.relative_to(folder)}:{w.stat().st_size}:{w.stat().st_mtime_ns}"
                     for pattern in ("*.safetensors", "*.bin") for w in folder.rglob(pattern)) if folder.is_dir() else []
    parts = [device, cpu, torch.__version__, platform.machine(), model, weights, batch_size]
    text = json.dumps(parts if tower == "image" else [*parts, tower])  # image keys as they were before texts had theirs
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def recall(path: str | None, key: str) -> Decision | None:
    """The decision ``path`` remembers for ``key``, if any."""
    if not path:
        return None
    try:
        entry = json.loads(Path(path).read_text())[key]
        trials = tuple(Trial(**t) for t in entry["trials"])
        return Decision(entry["precision"], entry["batch_size"], trials, f"{entry['reason']} (measured {entry['at']})")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(path: str | None, key: str, decision: Decision) -> None:
    """Add ``decision`` to the file at ``path`` (atomically; a store that cannot be written just re-measures)."""
    if not path:
        return
    target = Path(path)
    try:
        known = json.loads(target.read_text()) if target.exists() else {}
    except (OSError, ValueError):
        known = {}
    known[key] = {"precision": decision.precision, "batch_size": decision.batch_size, "reason": decision.reason,
                  "trials": [asdict(t) for t in decision.trials], "at": time.strftime("%Y-%m-%d")}
    try:
        write_atomically(target, json.dumps(known, indent=1))
    except OSError:
        pass


def _batch(images: Sequence[Any], batch_size: int) -> list[Any]:
    """``batch_size`` inputs, the given ones repeated where there are fewer."""
    return [images[i % len(images)] for i in range(batch_size)]


def _seconds(encode: Encode, batch: list[Any], precision: str, clock: Clock) -> float:
    start = clock()
    encode(batch, precision)
    return clock() - start


def _speedup(encode: Encode, batch: list[Any], precision: str, clock: Clock) -> float:
    """Median fp32 time over median ``precision`` time, both warmed, rounds interleaved.

    A candidate slower than fp32 in a first round cannot clear the margin: it stops there.
    """
    encode(batch, precision)  # warm at this shape
    full: list[float] = []
    other: list[float] = []
    for _ in range(ROUNDS):
        full.append(_seconds(encode, batch, FP32, clock))
        other.append(_seconds(encode, batch, precision, clock))
        if other[-1] > full[-1]:
            break
    return statistics.median(full) / max(statistics.median(other), 1e-9)


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
