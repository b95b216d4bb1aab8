"""The one query model: weighted text, image and stored-image parts, filters, a page, a cut-off.

``parse_query`` turns what an API caller sent (plain JSON) into a typed ``Query``, or a ``QueryError``
that names the offending part ("positive[1]: image 2 was not given (1 image uploaded)"). What can only
be checked against an index (unknown ids and labels, text on a pixel index) is checked by
``ImageIndex.search``. ``compose`` is the maths that turns the parts' vectors into one query vector.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search.core import metrics
from search.core.ids import is_image_id, shown
from search.errors import QueryError

MAX_K = 1000  # the deepest a query may page: offset + k
MAX_PAGE = 50  # results on one page (k)
MAX_PARTS = 20
MAX_WEIGHT = 10.0
MAX_TEXT_CHARS = 1000
MAX_LABELS = 100  # per filter list
MIN_REGION_EDGE = 8  # a region narrower than this (in the image's pixels) holds nothing to search by
MAX_BOX_COORDINATE = 1_000_000

PartKind = Literal["text", "image", "id"]
Box = tuple[int, int, int, int]  # a region: left, top, right, bottom, in the upright image's pixels
Cutoff = Literal["auto"] | float | None
_QUERY_KEYS = ("positive", "negative", "k", "offset", "metric", "index", "labels", "cutoff", "fold")
_PART_KINDS: tuple[PartKind, ...] = ("text", "image", "id")


@dataclass(frozen=True)
class Part:
    """One term of a query: a description, an uploaded image (its file path) or a stored image's id."""

    kind: PartKind
    value: str  # the text, the image file's path, or the id
    weight: float = 1.0
    name: str = ""  # where the caller put it, e.g. "positive[1]", for messages
    box: Box | None = None  # an image part's region (left, top, right, bottom, in its pixels); None: all of it


@dataclass(frozen=True)
class Query:
    """A checked query: what to look for and avoid, which page, under which metric, in which index."""

    positive: tuple[Part, ...]
    negative: tuple[Part, ...] = ()
    k: int = 12
    offset: int = 0
    metric: str = "cosine"
    index: str = ""
    include: tuple[str, ...] = ()  # labels to keep (none: every label)
    exclude: tuple[str, ...] = ()  # labels to drop
    cutoff: Cutoff = "auto"
    fold: bool = False

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every part, positives first."""
        return self.positive + self.negative


def parse_query(payload: object, images: Sequence[str | Path | None] | None = None) -> Query:
    """Check an API caller's query; ``images`` are the uploaded files that image parts name by position."""
    if not isinstance(payload, dict):
        raise QueryError(f"The query must be a JSON object, not {_type(payload)}.")
    unknown = [key for key in payload if key not in _QUERY_KEYS]
    if unknown:
        raise QueryError(f"Unknown query key {shown(unknown[0])}; the keys are {', '.join(_QUERY_KEYS)}.")
    files = list(images or [])
    positive = _parts(payload.get("positive"), "positive", files)
    negative = _parts(payload.get("negative", []), "negative", files)
    if not positive:
        raise QueryError("The query is empty: give at least one positive part (a text, an image or an id).")
    if len(positive) + len(negative) > MAX_PARTS:
        raise QueryError(f"The query has {len(positive) + len(negative)} parts; the limit is {MAX_PARTS}.")
    k = _whole(payload.get("k", 12), "k", 1, MAX_PAGE)
    offset = _whole(payload.get("offset", 0), "offset", 0, MAX_K - 1)
    if offset + k > MAX_K:
        raise QueryError(f"offset + k is {offset + k}; results go no deeper than {MAX_K}.")
    metric = payload.get("metric", "cosine")
    if metric not in metrics.METRICS:
        raise QueryError(f"metric: {shown(metric)} is not one of {', '.join(metrics.METRICS)}.")
    index = payload.get("index", "")
    if not isinstance(index, str):
        raise QueryError(f"index must be a string, not {_type(index)}.")
    include, exclude = _labels(payload.get("labels", {}))
    fold = payload.get("fold", False)
    if not isinstance(fold, bool):
        raise QueryError(f"fold must be true or false, not {_type(fold)}.")
    return Query(positive, negative, k, offset, metric, index, include, exclude,
                 _cutoff(payload.get("cutoff", "auto")), fold)


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


def _parts(value: object, side: str, files: list[str | Path | None]) -> tuple[Part, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise QueryError(f"{side} must be a list of parts, not {_type(value)}.")
    return tuple(_part(item, f"{side}[{i}]", files) for i, item in enumerate(value))


def _part(item: object, name: str, files: list[str | Path | None]) -> Part:
    if not isinstance(item, dict):
        raise QueryError(f"{name}: a part must be an object such as {{\"text\": \"a red dress\"}}, not {_type(item)}.")
    unknown = [key for key in item if key not in (*_PART_KINDS, "weight", "box")]
    if unknown:
        raise QueryError(f"{name}: unknown key {shown(unknown[0])}; a part has one of text, image, id, a weight, "
                         "and for an image a box.")
    kinds = [kind for kind in _PART_KINDS if kind in item]
    if len(kinds) != 1:
        raise QueryError(f"{name}: a part has exactly one of text, image or id.")
    kind = kinds[0]
    value = item[kind]
    weight = _weight(item.get("weight", 1.0), name)
    if "box" in item and kind != "image":
        raise QueryError(f"{name}: only an image part takes a box.")
    if kind == "text":
        return Part("text", checked_text(value, name), weight, name)
    if kind == "image":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise QueryError(f"{name}: image must be the position of an uploaded image (0, 1, ...), not {shown(value)}.")
        if value >= len(files) or not files[value]:
            uploaded = f"{len(files)} image{'' if len(files) == 1 else 's'} uploaded"
            raise QueryError(f"{name}: image {value} was not given ({uploaded}).")
        return Part("image", str(files[value]), weight, name, _box(item.get("box"), name))
    if not is_image_id(value):
        raise QueryError(f"{name}: {shown(value)} is not an image id.")
    return Part("id", value, weight, name)


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


def _box(value: object, name: str) -> Box | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_BOX_COORDINATE for v in value)):
        raise QueryError(f"{name}: box must be [left, top, right, bottom], whole numbers of pixels from 0 "
                         f"to {MAX_BOX_COORDINATE:,}.")
    left, top, right, bottom = value
    if right - left < MIN_REGION_EDGE or bottom - top < MIN_REGION_EDGE:
        raise QueryError(f"{name}: the box is too small to search by; make it at least {MIN_REGION_EDGE} pixels "
                         "wide and high (right > left, bottom > top).")
    return left, top, right, bottom


def _weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QueryError(f"{name}: weight must be a finite number, not {shown(value)}.")
    if not 0 < value <= MAX_WEIGHT:
        raise QueryError(f"{name}: weight must be above 0 and at most {MAX_WEIGHT:g}, not {value:g}.")
    return float(value)


def _whole(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown_value = value if isinstance(value, int) and not isinstance(value, bool) else shown(value)
        raise QueryError(f"{name} must be a whole number from {low} to {high}, not {shown_value}.")
    return value


def _labels(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, dict):
        raise QueryError(f"labels must be an object with include and exclude lists, not {_type(value)}.")
    unknown = [key for key in value if key not in ("include", "exclude")]
    if unknown:
        raise QueryError(f"labels: unknown key {shown(unknown[0])}; use include and exclude.")
    lists = []
    for key in ("include", "exclude"):
        names = value.get(key, [])
        if not isinstance(names, list) or len(names) > MAX_LABELS or not all(isinstance(n, str) and n for n in names):
            raise QueryError(f"labels.{key} must be a list of at most {MAX_LABELS} label names.")
        lists.append(tuple(dict.fromkeys(names)))
    both = set(lists[0]) & set(lists[1])
    if both:
        raise QueryError(f"labels: {shown(sorted(both)[0])} is both included and excluded.")
    return lists[0], lists[1]


def _cutoff(value: object) -> Cutoff:
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QueryError(f"cutoff must be \"auto\", null or a score, not {shown(value)}.")
    return float(value)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _mean(weighted: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    total = sum(w for _, w in weighted)
    return np.asarray(sum(w * np.asarray(v, np.float64) for v, w in weighted) / total, np.float32)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
