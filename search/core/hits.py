"""A result, and its one plain form for callers of the APIs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.core.dates import taken_text
from search.core.record import TAKEN, RecordMeta


@dataclass(frozen=True)
class Hit:
    """One result: ``score`` is higher for more similar images, whatever the metric."""

    id: str
    score: float
    label: str | None
    caption: str | None
    image: str | None  # absolute path of the thumbnail
    source: str | None = None
    metadata: RecordMeta = field(default_factory=RecordMeta, compare=False, repr=False)
    similar: tuple[str, ...] = ()  # near-duplicates folded into this hit
    relevant: bool | None = None  # above the query's cut-off; None where no cut-off was asked for
    matched: dict[str, list[str]] = field(default_factory=dict, compare=False)  # words found, by field (caption, ...)

    @property
    def taken(self) -> str | None:
        """When the photo was taken (ISO 8601, as the camera or the file name tells it), where known."""
        seconds = self.metadata.get(TAKEN)
        return taken_text(seconds) if isinstance(seconds, int) else None

    def record(self, *, relevance: bool = True) -> dict[str, Any]:
        """The hit as plain data: id, score, label, caption, image (the thumbnail's path), similar, taken, matched
        (the query's words found, by field), and with ``relevance`` whether it is above the cut-off. Each API
        swaps ``image`` for what its callers fetch."""
        out: dict[str, Any] = {"id": self.id, "score": round(self.score, 6), "label": self.label, "caption": self.caption,
                               "image": self.image, "similar": list(self.similar), "taken": self.taken,
                               "matched": self.matched}
        if relevance:
            out["relevant"] = self.relevant
        return out


@dataclass(frozen=True)
class Ranked:
    """One page of a query's ranking, how many images it ranks, and the cut-off score it used."""

    hits: list[Hit]
    total: int
    cutoff: float | None
    no_match: bool = False  # nothing stands out for the query's text: the hits are only the nearest there are
