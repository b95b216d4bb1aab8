"""The search page's query: what the person asked for, kept between events so that any change of a
control re-runs it, and turned into the library's ``Query`` when it runs.

A query is parts: the main one (a description, an image, a fetched URL's image, or a stored image) and,
added with the composer, more parts "more like" or "less like" with a weight; results marked good or bad
are parts too (feedback), kept apart so they can be undone one at a time. Each holds the library's own
``Part`` (so its rules are checked when it is made) and what the page shows of it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search.core.query import Part, Query


@dataclass(frozen=True)
class Shown:
    """A part of the page's query: the library's ``Part`` and how the page shows it."""

    part: Part
    negative: bool = False
    preview: str | None = None  # the picture the query panel shows (a copy of the image, or of a thumbnail)
    label: str = ""  # how the page names it: a file or URL's name, a result's label
    scale: float = 1.0  # pixels of ``picture`` per pixel of ``preview`` (taps arrive in the preview's)
    thumbnail: str | None = None  # a stored image's thumbnail (an id part's picture)

    @property
    def kind(self) -> str:
        return self.part.kind

    @property
    def value(self) -> str:
        return self.part.value

    @property
    def picture(self) -> str | None:
        """The whole image a region can be drawn on: the image itself, or a stored image's thumbnail."""
        return self.part.value if self.part.kind == "image" else self.thumbnail

    def describe(self) -> str:
        """How a chip shows it: "+ “a red dress”", "− “long sleeves” ×0.5", "+ image photo.jpg"."""
        sign = "−" if self.negative else "+"
        kind = {"text": "", "image": "image ", "id": "like "}[self.part.kind]
        what = f"“{self.part.value}”" if self.part.kind == "text" else f"{kind}{self.label}".strip()
        weight = f" ×{self.part.weight:g}" if self.part.weight != 1.0 else ""
        return f"{sign} {what}{weight}"


@dataclass(frozen=True)
class PageQuery:
    """The query the page searches by; empty until the person asks for something."""

    parts: tuple[Shown, ...] = ()
    feedback: tuple[Shown, ...] = ()  # results marked good or bad, oldest first

    @property
    def main(self) -> Shown | None:
        """The part the query panel shows: the first one."""
        return self.parts[0] if self.parts else None

    @property
    def size(self) -> int:
        """How many parts the search will combine."""
        return len(self.parts) + len(self.feedback)

    def with_main(self, part: Shown) -> PageQuery:
        """The same query with its main part replaced (a region of it, a corner marked on it)."""
        return replace(self, parts=(part, *self.parts[1:]))

    def adding(self, part: Shown) -> PageQuery:
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

    def marking(self, image_id: str, good: bool, label: str) -> PageQuery:
        """Feedback on a result: more like it (good) or less like it (bad); a second mark replaces the first."""
        kept = tuple(p for p in self.feedback if p.value != image_id)
        return replace(self, feedback=(*kept, Shown(Part(kind="id", value=image_id), negative=not good, label=label)))

    def undoing(self) -> PageQuery:
        """The query before its latest feedback."""
        return replace(self, feedback=self.feedback[:-1])

    def chips(self) -> list[str]:
        """Every part after the main one, numbered, as the page lists them (the main one is in the query panel)."""
        return [f"{i}. {p.describe()}" for i, p in enumerate(self.parts[1:] + self.feedback, 1)]

    def query(self, **options: Any) -> Query:
        """The library's query of these parts (``options``: the rest of ``Query``'s fields: k, offset, metric, ...).

        Parts are named for messages as the page numbers them: the main one needs no name, the others
        are "part N" as their chips number them."""
        every = self.parts + self.feedback
        named = [p.part.model_copy(update={"name": f"part {i + 1}" if i else ""}) for i, p in enumerate(every)]
        return Query(positive=tuple(part for part, p in zip(named, every) if not p.negative),
                     negative=tuple(part for part, p in zip(named, every) if p.negative), **options)


def image_part(path: str, preview: str, scale: float, name: str | None = None, negative: bool = False,
               weight: float = 1.0) -> Shown:
    """An image file as a part, shown as the copy ``preview`` (``scale`` of the image's pixels to the copy's),
    named by ``name`` (a URL's last segment) or the file's own name."""
    return Shown(Part(kind="image", value=path, weight=weight), negative=negative, preview=preview, label=name or Path(path).name,
                 scale=scale)
