"""The one query model: weighted text, image and stored-image parts, filters, a page, a cut-off.

``Query`` and ``Part`` hold every rule a query obeys (ranges, limits, formats); making one that breaks a
rule is a ``QueryError`` that names the part at fault ("positive[1]: weight must be ..."), whoever makes
it: the page, the service, or ``parse_query``, which reads what an API caller sent (plain JSON) through a
pydantic model of its shape and turns pydantic's error locations into the same messages. What can only
be checked against an index (unknown ids and labels, text on a pixel index) is checked by
``ImageIndex.search``. ``compose`` is the maths that turns the parts' vectors into one query vector.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search.core.dates import parse_date
from search.core.ids import is_image_id, shown
from search.core.metrics import METRICS
from search.errors import QueryError

MAX_K = 1000  # the deepest a query may rank: offset + k
MAX_PAGE = 50  # results on one page (k)
MAX_PARTS = 20
MAX_WEIGHT = 10.0
MAX_TEXT_CHARS = 1000
MAX_LABELS = 100  # per filter list
MIN_REGION_EDGE = 8  # a region narrower than this (in the image's pixels) holds nothing to search by
MAX_BOX_COORDINATE = 1_000_000
DEFAULT_K = 12

PartKind = Literal["text", "image", "id"]
Box = tuple[int, int, int, int]  # a region: left, top, right, bottom, in the upright image's pixels
Cutoff = Literal["auto"] | float | None
Sort = Literal["relevance", "newest", "oldest"]
SORTS: tuple[Sort, ...] = ("relevance", "newest", "oldest")
_QUERY_KEYS = ("positive", "negative", "k", "offset", "metric", "index", "labels", "cutoff", "fold", "keywords",
               "taken", "sort")
_PART_KINDS: tuple[PartKind, ...] = ("text", "image", "id")
CANNOT_READ_TEXT = "the pixel method cannot read text; search by an image here, or choose a CLIP index."


@dataclass(frozen=True)
class Part:
    """One term of a query: a description, an image (its file's path) or a stored image's id; checked when made."""

    kind: PartKind
    value: str  # the text, the image file's path, or the id
    weight: float = 1.0
    name: str = ""  # where the caller put it, e.g. "positive[1]", for messages
    box: Box | None = None  # an image part's region (left, top, right, bottom, in its pixels); None: all of it

    def __post_init__(self) -> None:
        at = f"{self.name}: " if self.name else ""
        if self.kind not in _PART_KINDS:
            raise QueryError(f"{at}a part has exactly one of text, image or id.")
        if self.kind == "text":
            object.__setattr__(self, "value", checked_text(self.value, self.name))
        elif self.kind == "id" and not is_image_id(self.value):
            raise QueryError(f"{at}{shown(self.value)} is not an image id.")
        if not finite(self.weight):
            raise QueryError(f"{at}weight must be a finite number, not {shown(self.weight)}.")
        if not 0 < self.weight <= MAX_WEIGHT:
            raise QueryError(f"{at}weight must be above 0 and at most {MAX_WEIGHT:g}, not {self.weight:g}.")
        if self.box is not None:
            if self.kind != "image":
                raise QueryError(f"{at}only an image part takes a box.")
            object.__setattr__(self, "box", _box(self.box, at))


@dataclass(frozen=True)
class Query:
    """A checked query: what to look for and avoid, which page, under which metric, in which index."""

    positive: tuple[Part, ...]
    negative: tuple[Part, ...] = ()
    k: int = DEFAULT_K
    offset: int = 0
    metric: str = "cosine"
    index: str = ""
    include: tuple[str, ...] = ()  # labels to keep (none: every label)
    exclude: tuple[str, ...] = ()  # labels to drop
    cutoff: Cutoff = "auto"
    fold: bool = False
    keywords: float = 1.0  # the keyword channel's weight in the fusion with the vector search; 0: vectors alone
    taken_from: date | None = None  # capture dates to keep, both inclusive (None: no bound)
    taken_to: date | None = None
    sort: Sort = "relevance"  # newest / oldest: the relevant hits by capture date, then the rest

    def __post_init__(self) -> None:
        if not self.positive:
            raise QueryError("The query is empty: give at least one positive part (a text, an image or an id).")
        if len(self.parts) > MAX_PARTS:
            raise QueryError(f"The query has {len(self.parts)} parts; the limit is {MAX_PARTS}.")
        whole("k", self.k, 1, MAX_PAGE)
        whole("offset", self.offset, 0, MAX_K - 1)
        if self.offset + self.k > MAX_K:
            raise QueryError(f"offset + k is {self.offset + self.k}; results go no deeper than {MAX_K}.")
        checked_metric(self.metric)
        if not isinstance(self.index, str):
            raise QueryError(f"index must be a string, not {_type(self.index)}.")
        for side in ("include", "exclude"):
            names = getattr(self, side)
            if len(names) > MAX_LABELS or not all(isinstance(n, str) and n for n in names):
                raise QueryError(f"labels.{side} must be a list of at most {MAX_LABELS} label names.")
            object.__setattr__(self, side, tuple(dict.fromkeys(names)))
        both = set(self.include) & set(self.exclude)
        if both:
            raise QueryError(f"labels: {shown(sorted(both)[0])} is both included and excluded.")
        if self.cutoff not in (None, "auto") and not finite(self.cutoff):
            raise QueryError(f"cutoff must be \"auto\", null or a score, not {shown(self.cutoff)}.")
        if not isinstance(self.fold, bool):
            raise QueryError(f"fold must be true or false, not {_type(self.fold)}.")
        if not finite(self.keywords) or not 0 <= self.keywords <= MAX_WEIGHT:
            raise QueryError(f"keywords must be a weight from 0 to {MAX_WEIGHT:g}, not {shown(self.keywords)}.")
        for side in ("taken_from", "taken_to"):
            if getattr(self, side) is not None and not isinstance(getattr(self, side), date):
                raise QueryError(f"{side} must be a date, not {_type(getattr(self, side))}.")
        if self.taken_from and self.taken_to and self.taken_from > self.taken_to:
            raise QueryError(f"taken: from ({self.taken_from}) is after to ({self.taken_to}).")
        if self.sort not in SORTS:
            raise QueryError(f"sort: {shown(self.sort)} is not one of {', '.join(SORTS)}.")

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every part, positives first."""
        return self.positive + self.negative


def whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as a whole number from ``low`` to ``high``, or a QueryError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise QueryError(f"{name} must be a whole number from {low} to {high}, not {shown(value)}.")
    if not low <= value <= high:
        seen = value if abs(int(value)) < 10**12 else shown(str(value))  # a 4,000-digit number is not echoed whole
        raise QueryError(f"{name} must be a whole number from {low} to {high}, not {seen}.")
    return int(value)


def finite(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a number a float can hold and not NaN or infinite (a 400-digit integer is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def checked_metric(value: object) -> str:
    """``value`` as one of METRICS, or a QueryError listing them."""
    if value not in METRICS:
        raise QueryError(f"metric: {shown(value)} is not one of {', '.join(METRICS)}.")
    return str(value)


def checked_text(value: object, name: str = "") -> str:
    """A description as the text towers take it: a non-empty string of valid Unicode, at most MAX_TEXT_CHARS
    characters; stripped. ``name`` (the part's place, e.g. "positive[1]") starts the message."""
    at = f"{name}: " if name else ""
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"{at}Type a description to search for (a non-empty string).")
    if len(value) > MAX_TEXT_CHARS:
        raise QueryError(f"{at}The description is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no tokenizer can read it
        raise QueryError(f"{at}The description holds characters that are not valid Unicode.") from None
    return value.strip()


def _box(value: object, at: str) -> Box:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_BOX_COORDINATE for v in value)):
        raise QueryError(f"{at}{BOX_SHAPE}")
    left, top, right, bottom = value
    if right - left < MIN_REGION_EDGE or bottom - top < MIN_REGION_EDGE:
        raise QueryError(f"{at}the box is too small to search by; make it at least {MIN_REGION_EDGE} pixels "
                         "wide and high (right > left, bottom > top).")
    return left, top, right, bottom


BOX_SHAPE = f"box must be [left, top, right, bottom], whole numbers of pixels from 0 to {MAX_BOX_COORDINATE:,}."


# --- What an API caller sends: the query's JSON shape -------------------------------------------------------


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _PartIn(_Shape):
    text: Any = None  # the values' own rules are Part's; the shape checks only what JSON can get wrong
    image: int | None = None
    id: Any = None
    weight: float = 1.0
    box: list[int] | None = None


class _LabelsIn(_Shape):
    include: list[str] = []
    exclude: list[str] = []


class _TakenIn(_Shape):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    start: str | None = Field(None, alias="from")
    to: str | None = None


class _QueryIn(_Shape):
    positive: list[_PartIn] = []
    negative: list[_PartIn] = []
    k: int = DEFAULT_K
    offset: int = 0
    metric: str = "cosine"
    index: str = ""
    labels: _LabelsIn = _LabelsIn()
    cutoff: Literal["auto"] | float | None = "auto"
    fold: bool = False
    keywords: float = 1.0
    taken: _TakenIn = _TakenIn()
    sort: str = "relevance"


def parse_query(payload: object, images: Sequence[str | Path | None] | None = None) -> Query:
    """Check an API caller's query; ``images`` are the uploaded files that image parts name by position."""
    if not isinstance(payload, dict):
        raise QueryError(f"The query must be a JSON object, not {_type(payload)}.")
    try:
        shape = _QueryIn.model_validate(payload)
    except ValidationError as exc:
        raise QueryError(_said(exc.errors()[0])) from None
    files = list(images or [])
    positive = tuple(_part(p, f"positive[{i}]", files, payload["positive"][i]) for i, p in enumerate(shape.positive))
    negative = tuple(_part(p, f"negative[{i}]", files, payload["negative"][i]) for i, p in enumerate(shape.negative))
    taken = [checked_date(value, f"taken.{side}") for side, value in (("from", shape.taken.start), ("to", shape.taken.to))]
    return Query(positive, negative, shape.k, shape.offset, shape.metric, shape.index, tuple(shape.labels.include),
                 tuple(shape.labels.exclude), shape.cutoff, shape.fold, shape.keywords, taken[0], taken[1],
                 shape.sort)  # type: ignore[arg-type]


def checked_date(value: str | None, name: str) -> date | None:
    """A date a person or caller typed ("2024-01-31"); None where there is none (or only spaces); else a
    QueryError headed by ``name``."""
    if value is None or not value.strip():
        return None
    try:
        return parse_date(value.strip())
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None


def _part(shape: _PartIn, name: str, files: list[str | Path | None], sent: dict[str, Any]) -> Part:
    kinds = [kind for kind in _PART_KINDS if kind in sent]
    if len(kinds) != 1:
        raise QueryError(f"{name}: a part has exactly one of text, image or id.")
    box = tuple(shape.box) if shape.box is not None else None
    if kinds[0] != "image":
        return Part(kinds[0], getattr(shape, kinds[0]), shape.weight, name, box)  # type: ignore[arg-type]
    position = shape.image
    if position is None or position < 0:
        raise QueryError(f"{name}: image must be the position of an uploaded image (0, 1, ...), not {shown(position)}.")
    if position >= len(files) or not files[position]:
        raise QueryError(f"{name}: image {position} was not given ({len(files)} image{'' if len(files) == 1 else 's'} "
                         "uploaded).")
    return Part("image", str(files[position]), shape.weight, name, box)  # type: ignore[arg-type]


def _said(error: Any) -> str:
    """A pydantic error on the query's shape, in the words the rules use, with the part it is in."""
    loc, value, kind = tuple(error["loc"]), error.get("input"), error["type"]
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return f"Unknown query key {shown(loc[0])}; the keys are {', '.join(_QUERY_KEYS)}."
        if loc[0] == "labels":
            return f"labels: unknown key {shown(loc[-1])}; use include and exclude."
        if loc[0] == "taken":
            return f"taken: unknown key {shown(loc[-1])}; use from and to (dates such as \"2024-01-31\")."
        return (f"{loc[0]}[{loc[1]}]: unknown key {shown(loc[-1])}; a part has one of text, image, id, a weight, and "
                "for an image a box.")
    top = loc[0]
    if top in ("positive", "negative"):
        if len(loc) == 1:
            return f"{top} must be a list of parts, not {_type(value)}."
        at = f"{top}[{loc[1]}]: "
        if len(loc) == 2:
            return f"{at}a part must be an object such as {{\"text\": \"a red dress\"}}, not {_type(value)}."
        return at + {"image": f"image must be the position of an uploaded image (0, 1, ...), not {shown(value)}.",
                     "weight": f"weight must be a finite number, not {shown(value)}.", "box": BOX_SHAPE}[loc[2]]
    if top in ("k", "offset"):
        return f"{top} must be a whole number from {1 if top == 'k' else 0} to {MAX_PAGE if top == 'k' else MAX_K - 1}, " \
               f"not {shown(value)}."
    if top == "labels":
        return (f"labels.{loc[1]} must be a list of at most {MAX_LABELS} label names." if len(loc) > 1 else
                f"labels must be an object with include and exclude lists, not {_type(value)}.")
    if top == "taken":
        return (f"taken.{loc[1]} must be a date such as \"2024-01-31\", not {shown(value)}." if len(loc) > 1 else
                f"taken must be an object with from and to dates, not {_type(value)}.")
    return {"metric": f"metric: {shown(value)} is not one of {', '.join(METRICS)}.",
            "index": f"index must be a string, not {_type(value)}.",
            "cutoff": f"cutoff must be \"auto\", null or a score, not {shown(value)}.",
            "fold": f"fold must be true or false, not {_type(value)}.",
            "keywords": f"keywords must be a weight from 0 to {MAX_WEIGHT:g}, not {shown(value)}.",
            "sort": f"sort: {shown(value)} is not one of {', '.join(SORTS)}."}[top]


def compose(positive: Sequence[tuple[np.ndarray, float]], negative: Sequence[tuple[np.ndarray, float]],
            normalized: bool) -> np.ndarray:
    """One query vector from weighted part vectors.

    On a normalised (CLIP) index every part counts as a unit vector: positives are added, negatives
    subtracted, each times its weight, and the sum is normalised (the direction is all that cosine
    ranks by). A lone positive is returned as it is, so it ranks exactly as searching by it alone does.

    On a raw (pixel) index length matters (l1, l2), so the query stays a point among the images: the
    weighted mean of the positives, moved away from the negatives' weighted mean by up to the same
    distance again (Rocchio's rule with the negatives' share of the weight as its factor).
    """
    if len(positive) == 1 and not negative:
        return np.asarray(positive[0][0], np.float32)
    if normalized:
        total = np.zeros(len(positive[0][0]))
        for sign, side in ((1.0, positive), (-1.0, negative)):
            for vector, weight in side:
                total += sign * weight * _unit(vector)
        length = float(np.linalg.norm(total))
        if length < 1e-6:
            raise QueryError("The negative parts cancel the positive ones: nothing is left to search for.")
        return np.asarray(total / length, np.float32)
    plus = _mean(positive)
    if not negative:
        return plus
    pull = sum(w for _, w in negative) / sum(w for _, w in (*positive, *negative))
    return np.asarray(plus + pull * (plus - _mean(negative)), np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _mean(weighted: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    total = sum(w for _, w in weighted)
    return np.asarray(sum(w * np.asarray(v, np.float64) for v, w in weighted) / total, np.float32)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
