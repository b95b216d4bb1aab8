"""The search page's query: what the person asked for, kept between events so that any change of a
control re-runs it, and turned into the service's query (``SearchService.search``) when it runs.

A query is parts: the main one (a description, an image, a fetched URL's image, or a stored image) and,
added with the composer, more parts "more like" or "less like" with a weight; results marked good or bad
are parts too (feedback), kept apart so they can be undone one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

Kind = Literal["text", "image", "id"]
MAX_PARTS = 20  # the service refuses more; the page says so before asking


@dataclass(frozen=True)
class Part:
    """One part of a query: ``value`` is the description, the image file's path, or the stored image's id."""

    kind: Kind
    value: str
    weight: float = 1.0
    negative: bool = False
    preview: str | None = None  # the picture the page shows for it (a copy of the image, or a stored thumbnail)
    name: str = ""  # how the page names it: a file or URL's name, a result's label
    scale: float = 1.0  # pixels of ``picture`` per pixel of ``preview`` (taps arrive in the preview's)
    box: tuple[int, int, int, int] | None = None  # a region of the image, in its pixels; None: all of it
    thumbnail: str | None = None  # a stored image's thumbnail (an id part's picture)

    @property
    def picture(self) -> str | None:
        """The whole image a region can be drawn on: the image itself, or a stored image's thumbnail."""
        return self.value if self.kind == "image" else self.thumbnail

    def describe(self) -> str:
        """How a chip shows it: "+ a red dress", "− long sleeves ×0.5", "+ image photo.jpg"."""
        sign = "−" if self.negative else "+"
        what = f"“{self.value}”" if self.kind == "text" else f"{'result' if self.kind == 'id' else 'image'} {self.name}".strip()
        weight = f" ×{self.weight:g}" if self.weight != 1.0 else ""
        return f"{sign} {what}{weight}"


@dataclass(frozen=True)
class PageQuery:
    """The query the page searches by; empty until the person asks for something."""

    parts: tuple[Part, ...] = ()
    feedback: tuple[Part, ...] = ()  # results marked good or bad, oldest first

    @property
    def main(self) -> Part | None:
        """The part the query panel shows: the first one."""
        return self.parts[0] if self.parts else None

    @property
    def size(self) -> int:
        """How many parts the service will combine."""
        return len(self.parts) + len(self.feedback)

    def starting(self, part: Part) -> PageQuery:
        """A new search: this part alone (composer parts and feedback belong to the old one)."""
        return PageQuery((part,))

    def with_main(self, part: Part) -> PageQuery:
        """The same query with its main part replaced (a region of it, a corner marked on it)."""
        return replace(self, parts=(part, *self.parts[1:]))

    def adding(self, part: Part) -> PageQuery:
        """The composer's "add": one more part."""
        return replace(self, parts=(*self.parts, part))

    def without(self, chip: int) -> PageQuery:
        """The query without the part ``chips()`` lists at ``chip`` (the main part is not a chip)."""
        parts, feedback = list(self.parts), list(self.feedback)
        position = chip + 1
        if 1 <= position < len(parts):
            del parts[position]
        elif 0 <= position - len(parts) < len(feedback):
            del feedback[position - len(parts)]
        return PageQuery(tuple(parts), tuple(feedback))

    def marking(self, image_id: str, good: bool, preview: str | None, name: str) -> PageQuery:
        """Feedback on a result: more like it (good) or less like it (bad); a second mark replaces the first."""
        kept = tuple(p for p in self.feedback if p.value != image_id)
        return replace(self, feedback=(*kept, Part("id", image_id, negative=not good, preview=preview, name=name)))

    def undoing(self) -> PageQuery:
        """The query before its latest feedback."""
        return replace(self, feedback=self.feedback[:-1])

    def chips(self) -> list[str]:
        """Every part after the main one, numbered, as the page lists them (the main one is in the query panel)."""
        return [f"{i}. {p.describe()}" for i, p in enumerate(self.parts[1:] + self.feedback, 1)]

    def request(self) -> tuple[dict[str, Any], list[str]]:
        """The service's query (positive and negative parts) and the image files it names by position."""
        positive: list[dict[str, Any]] = []
        negative: list[dict[str, Any]] = []
        images: list[str] = []
        for part in self.parts + self.feedback:
            entry: dict[str, Any]
            if part.kind == "image":
                images.append(part.value)
                entry = {"image": len(images) - 1}
                if part.box is not None:
                    entry["box"] = list(part.box)
            else:
                entry = {part.kind: part.value}
            if part.weight != 1.0:
                entry["weight"] = part.weight
            (negative if part.negative else positive).append(entry)
        return {"positive": positive, "negative": negative}, images


def image_part(path: str, shown: str, scale: float, name: str | None = None, negative: bool = False,
               weight: float = 1.0) -> Part:
    """An image file as a part, shown as the copy ``shown`` (``scale`` of the image's pixels to the copy's),
    named by ``name`` (a URL's last segment) or the file's own name."""
    return Part("image", path, weight, negative, preview=shown, name=name or Path(path).name, scale=scale)
