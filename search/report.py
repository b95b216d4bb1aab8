"""What a build did: counts, skips with reasons, near-duplicates, timings per stage."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("identify", "decode", "embed", "write", "sync")


@dataclass
class BuildReport:
    """What a build did; written as JSON by ``index_builder.py --report``."""

    store: str
    collection: str
    model: str
    indexed: int = 0
    duplicates: int = 0
    already_indexed: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    total_in_collection: int = 0
    precision: str = "fp32"
    bf16_agreement: float | None = None
    bf16_speedup: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def timed(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` (stages on different threads overlap: their sum exceeds ``seconds``)."""
        self.stage_seconds[stage] = round(self.stage_seconds[stage] + seconds, 4)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)

    def for_visitor(self) -> dict[str, Any]:
        """The report without the server's internals: no store folder, the model by its name only."""
        report = self.to_dict()
        del report["store"]
        report["model"] = Path(self.model).name
        return report

    def summary(self) -> str:
        """One paragraph for a person."""
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return (
            f"Indexed {self.indexed} new images into collection {self.collection!r} "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s, {self.precision}, "
            f"model {Path(self.model).name}). "
            f"{self.already_indexed} were already indexed, {self.duplicates} were exact duplicates, "
            f"{len(self.near_duplicates)} near-duplicates, {self.removed} removed; skipped: {skipped}. "
            f"The collection now holds {self.total_in_collection} images."
        )
