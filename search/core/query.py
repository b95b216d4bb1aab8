"""The one query model: weighted text, image and stored-image parts, filters, a page, a cut-off.

``Query`` and ``Part`` (pydantic models, frozen) hold every rule a query obeys (shapes, ranges, limits,
formats), each with its message, once: the page, both APIs and the library all make queries through them
(``Query.model_validate(json, context={"images": uploads})`` or ``Query(positive=..., k=...)``), and a
broken rule is a ``QueryError`` that names the part at fault ("positive[1]: weight must be ..."), never a
pydantic ValidationError. What can only be checked against an index (unknown ids and labels, text on a
pixel index) is checked by ``ImageIndex.search``. ``compose`` is the maths that turns the parts' vectors
into one query vector.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Literal, Self, TypeGuard

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from search.core.dates import parse_date
from search.core.ids import is_image_id, quoted
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
_PART_KINDS: tuple[PartKind, ...] = ("text", "image", "id")
_PART_KEYS = (*_PART_KINDS, "weight", "box")  # a part as JSON
CANNOT_READ_TEXT = "the pixel method cannot read text; search by an image here, or choose a CLIP index."


class _Model(BaseModel):
    """A frozen model whose every broken rule is a QueryError, however it is made: ``Model(field=...)``,
    ``Model.model_validate(...)``, or inside another model."""

    model_config = ConfigDict(frozen=True, strict=True)  # strict: no value is coerced past a rule

    def __init__(self, **data: Any) -> None:
        with _refusing():
            super().__init__(**data)

    # Only wraps pydantic's own __init__: so pydantic validates without calling it (as RootModel's does),
    # and a nested model keeps the validation's context (the uploaded images).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """``obj`` (a JSON object, or the model itself) checked; ``context={"images": [...]}`` names the
        uploaded files that image parts give by position."""
        with _refusing():
            return super().model_validate(obj, **options)


@contextmanager
def _refusing() -> Iterator[None]:
    """Pydantic's report as the QueryError the first broken rule raised (or, for a value of the wrong type
    that no rule reads, pydantic's words under the field's place), never a ValidationError."""
    try:
        yield
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, QueryError):
            raise cause from None
        raise QueryError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}.") from None


class Part(_Model):
    """One term of a query: a description, an image (its file's path) or a stored image's id.

    Made as ``Part(kind="text", value="a red dress")``; in a query sent as JSON a part is
    ``{"text" | "image" | "id": ..., "weight": ..., "box": ...}`` (see ``Query``).
    """

    name: str = ""  # where the caller put it, e.g. "positive[1]": first, so every rule's message starts with it
    kind: PartKind
    value: str  # the text, the image file's path, or the id
    weight: float = 1.0
    box: Box | None = None  # an image part's region (left, top, right, bottom, in its pixels); None: all of it

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, kind: object, info: ValidationInfo) -> object:
        if kind not in _PART_KINDS:
            raise QueryError(f"{_at(info)}a part has exactly one of text, image or id.")
        return kind

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: object, info: ValidationInfo) -> object:
        at, kind = _at(info), info.data.get("kind")
        if kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise QueryError(f"{at}Type a description to search for (a non-empty string).")
            if len(value) > MAX_TEXT_CHARS:
                raise QueryError(f"{at}The description is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}.")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: no tokenizer can read it
                raise QueryError(f"{at}The description holds characters that are not valid Unicode.") from None
            return value.strip()
        if kind == "id" and not is_image_id(value):
            raise QueryError(f"{at}{quoted(value)} is not an image id.")
        return value

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, weight: object, info: ValidationInfo) -> float:
        if not finite(weight):
            raise QueryError(f"{_at(info)}weight must be a finite number, not {quoted(weight)}.")
        if not 0 < weight <= MAX_WEIGHT:
            raise QueryError(f"{_at(info)}weight must be above 0 and at most {MAX_WEIGHT:g}, not {weight:g}.")
        return float(weight)

    @field_validator("box", mode="before")
    @classmethod
    def _box(cls, box: object, info: ValidationInfo) -> Box | None:
        at = _at(info)
        if box is None:
            return None
        if info.data.get("kind") != "image":
            raise QueryError(f"{at}only an image part takes a box.")
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_BOX_COORDINATE for v in box)):
            raise QueryError(f"{at}box must be [left, top, right, bottom], whole numbers of pixels from 0 to "
                             f"{MAX_BOX_COORDINATE:,}.")
        left, top, right, bottom = box
        if right - left < MIN_REGION_EDGE or bottom - top < MIN_REGION_EDGE:
            raise QueryError(f"{at}the box is too small to search by; make it at least {MIN_REGION_EDGE} pixels "
                             "wide and high (right > left, bottom > top).")
        return left, top, right, bottom


def _at(info: ValidationInfo) -> str:
    """The start of a part's messages: its name, where it has one."""
    name = info.data.get("name")
    return f"{name}: " if name else ""


def _object(data: object, keys: Sequence[str], not_object: str, unknown: str) -> dict[str, Any]:
    """``data`` as a JSON object of ``keys`` only; else a QueryError: ``not_object`` with "{type}" filled in
    (the type sent), or ``unknown`` with "{key}" (the first unknown key). Filled in by replace, not format:
    a message may show JSON's own braces."""
    if not isinstance(data, dict):
        raise QueryError(not_object.replace("{type}", _type(data)))
    for key in data:
        if key not in keys:
            raise QueryError(unknown.replace("{key}", quoted(key)))
    return data


class Labels(_Model):
    """A label filter: labels to keep (none: every label) and labels to drop; each list without repeats."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> dict[str, Any]:
        return _object(data, ("include", "exclude"), "labels must be an object with include and exclude lists, "
                       "not {type}.", "labels: unknown key {key}; use include and exclude.")

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _names(cls, names: object, info: ValidationInfo) -> tuple[str, ...]:
        if not (isinstance(names, (list, tuple)) and len(names) <= MAX_LABELS
                and all(isinstance(n, str) and n for n in names)):
            raise QueryError(f"labels.{info.field_name} must be a list of at most {MAX_LABELS} label names.")
        return tuple(dict.fromkeys(names))

    @model_validator(mode="after")
    def _apart(self) -> Self:
        both = set(self.include) & set(self.exclude)
        if both:
            raise QueryError(f"labels: {quoted(sorted(both)[0])} is both included and excluded.")
        return self


class Taken(_Model):
    """A capture-date filter, both ends inclusive and optional: ``{"from": "2024-01-01", "to": "2024-12-31"}``."""

    start: date | None = Field(None, alias="from")
    to: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> dict[str, Any]:
        return _object(data, ("from", "to"), "taken must be an object with from and to dates, not {type}.",
                       "taken: unknown key {key}; use from and to (dates such as \"2024-01-31\").")

    @field_validator("start", "to", mode="before")
    @classmethod
    def _date(cls, value: object, info: ValidationInfo) -> date | None:
        side = "from" if info.field_name == "start" else "to"
        if isinstance(value, date):
            return value
        if value is None or isinstance(value, str):
            return checked_date(value, f"taken.{side}")
        raise QueryError(f"taken.{side} must be a date such as \"2024-01-31\", not {quoted(value)}.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start and self.to and self.start > self.to:
            raise QueryError(f"taken: from ({self.start}) is after to ({self.to}).")
        return self


class Query(_Model):
    """A checked query: what to look for and avoid, which page, under which metric, in which index.

    Its fields are the JSON an API caller sends (docs/api.md), so ``Query.model_validate(payload,
    context={"images": uploads})`` reads that and ``Query(positive=(Part(...),), k=24)`` makes one in
    Python; a part given as a dict is in the JSON form, ``{"text" | "image" | "id": ..., "weight", "box"}``,
    where ``image`` is the position of an uploaded file in ``images``.
    """

    positive: tuple[Part, ...] = Field((), validate_default=True)
    negative: tuple[Part, ...] = ()
    k: int = DEFAULT_K
    offset: int = 0
    metric: str = "cosine"
    index: str = ""
    labels: Labels = Labels()
    cutoff: Cutoff = "auto"
    fold: bool = False
    keywords: float = 1.0  # the keyword channel's weight in the fusion with the vector search; 0: vectors alone
    taken: Taken = Taken()
    sort: Sort = "relevance"  # newest / oldest: the relevant hits by capture date, then the rest

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> dict[str, Any]:
        return _object(data, tuple(cls.model_fields), "The query must be a JSON object, not {type}.",
                       f"Unknown query key {{key}}; the keys are {', '.join(cls.model_fields)}.")

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _parts(cls, parts: object, info: ValidationInfo) -> tuple[Part | dict[str, Any], ...]:
        side = info.field_name
        if not isinstance(parts, (list, tuple)):
            raise QueryError(f"{side} must be a list of parts, not {_type(parts)}.")
        images = list((info.context or {}).get("images") or [])
        return tuple(p if isinstance(p, Part) else _sent_part(p, f"{side}[{i}]", images) for i, p in enumerate(parts))

    @field_validator("positive")
    @classmethod
    def _something(cls, positive: tuple[Part, ...]) -> tuple[Part, ...]:
        if not positive:
            raise QueryError("The query is empty: give at least one positive part (a text, an image or an id).")
        return positive

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, k: object) -> int:
        return whole("k", k, 1, MAX_PAGE)

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, offset: object) -> int:
        return whole("offset", offset, 0, MAX_K - 1)

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, metric: object) -> str:
        return checked_metric(metric)

    @field_validator("index", mode="before")
    @classmethod
    def _index(cls, index: object) -> str:
        if not isinstance(index, str):
            raise QueryError(f"index must be a string, not {_type(index)}.")
        return index

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff(cls, cutoff: object) -> Cutoff:
        if cutoff is None or cutoff == "auto":
            return cutoff
        if not finite(cutoff):
            raise QueryError(f"cutoff must be \"auto\", null or a score, not {quoted(cutoff)}.")
        return float(cutoff)

    @field_validator("fold", mode="before")
    @classmethod
    def _fold(cls, fold: object) -> bool:
        if not isinstance(fold, bool):
            raise QueryError(f"fold must be true or false, not {_type(fold)}.")
        return fold

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, keywords: object) -> float:
        if not finite(keywords) or not 0 <= keywords <= MAX_WEIGHT:
            raise QueryError(f"keywords must be a weight from 0 to {MAX_WEIGHT:g}, not {quoted(keywords)}.")
        return float(keywords)

    @field_validator("sort", mode="before")
    @classmethod
    def _sort(cls, sort: object) -> object:
        if sort not in SORTS:
            raise QueryError(f"sort: {quoted(sort)} is not one of {', '.join(SORTS)}.")
        return sort

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if len(self.parts) > MAX_PARTS:
            raise QueryError(f"The query has {len(self.parts)} parts; the limit is {MAX_PARTS}.")
        if self.offset + self.k > MAX_K:
            raise QueryError(f"offset + k is {self.offset + self.k}; results go no deeper than {MAX_K}.")
        return self

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every part, positives first."""
        return self.positive + self.negative

    @property
    def include(self) -> tuple[str, ...]:
        """Labels to keep (none: every label)."""
        return self.labels.include

    @property
    def exclude(self) -> tuple[str, ...]:
        """Labels to drop."""
        return self.labels.exclude

    @property
    def taken_from(self) -> date | None:
        """The first capture date to keep (None: no bound)."""
        return self.taken.start

    @property
    def taken_to(self) -> date | None:
        """The last capture date to keep (None: no bound)."""
        return self.taken.to


def _sent_part(part: object, name: str, images: list[str | Path | None]) -> dict[str, Any]:
    """A part in its JSON form, ``{"text" | "image" | "id": ..., "weight", "box"}``, as ``Part``'s fields,
    named by its place; an image part's position resolved to the uploaded file. ``Part`` checks the rest."""
    sent = _object(part, _PART_KEYS, f"{name}: a part must be an object such as {{\"text\": \"a red dress\"}}, not "
                   "{type}.", f"{name}: unknown key {{key}}; a part has one of text, image, id, a weight, and for an "
                   "image a box.")
    kinds = [kind for kind in _PART_KINDS if kind in sent]
    kind = kinds[0] if len(kinds) == 1 else None  # none or several: Part refuses the kind
    value = sent.get(kind) if kind else None
    if kind == "image":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise QueryError(f"{name}: image must be the position of an uploaded image (0, 1, ...), not {quoted(value)}.")
        if value >= len(images) or not images[value]:
            raise QueryError(f"{name}: image {value} was not given ({len(images)} image{'' if len(images) == 1 else 's'} "
                             "uploaded).")
        value = str(images[value])
    return {"name": name, "kind": kind, "value": value, **{key: sent[key] for key in ("weight", "box") if key in sent}}


def whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as a whole number from ``low`` to ``high``, or a QueryError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise QueryError(f"{name} must be a whole number from {low} to {high}, not {quoted(value)}.")
    if not low <= value <= high:
        seen = value if abs(int(value)) < 10**12 else quoted(str(value))  # a 4,000-digit number is not echoed whole
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
        raise QueryError(f"metric: {quoted(value)} is not one of {', '.join(METRICS)}.")
    return str(value)


def checked_date(value: str | None, name: str) -> date | None:
    """A date a person or caller typed ("2024-01-31"); None where there is none (or only spaces); else a
    QueryError headed by ``name``."""
    if value is None or not value.strip():
        return None
    try:
        return parse_date(value.strip())
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None


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
