"""What a build did: counts, skips with reasons, near-duplicates, timings per stage."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search.core.record import model_name

STAGES = ("identify", "decode", "ocr", "embed", "write", "sync")


@dataclass
class BuildReport:
    """What a build did; written as JSON by ``index_builder.py --report``."""

    store: str
    collection: str
    model: str
    indexed: int = 0
    duplicates: int = 0
    exact_duplicates: list[dict[str, str]] = field(default_factory=list)  # source, and the one it is a copy of
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
    predicted_rate: float | None = None  # images/s the precision race timed the bare model at, at this precision
    precision_reopened: bool = False  # the model ran 1.5x off that rate: the next build or start races again
    texts_queued: int = 0  # images whose text is read in the background after the build (albums)
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
        report["model"] = model_name(self.model)
        return report

    def summary(self, report_file: Path | None = None) -> str:
        """One paragraph for a person; ``report_file``: where the full report was written, if it was."""
        if self.indexed:
            rate = f"{self.images_per_second:.1f} images/s, " if self.seconds >= 0.1 else ""
            raced = f"; the precision race timed the bare model at {self.predicted_rate:.1f}" if self.predicted_rate else ""
            if self.precision_reopened:
                raced += " but it ran at another speed in this build: the choice is measured again next time"
            done = (f"Indexed {_count(self.indexed, 'new image')} into collection {self.collection!r} in "
                    f"{self.seconds:.1f} s ({rate}{self.precision}{raced}, model {model_name(self.model)}).")
        else:
            done = f"Nothing new to index in collection {self.collection!r}."
        notes = [f"{self.already_indexed} already indexed" if self.already_indexed else "",
                 f"{_count(self.duplicates, 'exact duplicate')} of other images" if self.duplicates else "",
                 _count(len(self.near_duplicates), "near-duplicate") if self.near_duplicates else "",
                 f"{self.removed} removed" if self.removed else ""]
        said = "; ".join(n for n in notes if n)
        text = f"{done} {said[:1].upper()}{said[1:]}." if said else done
        if self.skipped:
            reasons: dict[str, list[str]] = {}
            for s in self.skipped:
                reasons.setdefault(s["reason"], []).append(Path(s["source"]).name or s["source"])
            kinds = "; ".join(f"{len(names)} {REASON_WORDS.get(reason, reason)} (e.g. {', '.join(names[:3])})"
                              for reason, names in sorted(reasons.items()))
            where = (f"{report_file} lists each one with why" if report_file
                     else "--report FILE.json lists each one with why")
            text += f" Skipped {_count(len(self.skipped), 'file')}: {kinds}; {where}."
        return f"{text} The collection now holds {_count(self.total_in_collection, 'image')}."


REASON_WORDS = {"unsupported": "not images or of an unsupported kind", "corrupt": "damaged", "empty": "empty",
                "too_large": "too large", "read_error": "unreadable", "refused_url": "refused URLs",
                "download_error": "failed downloads"}


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"
