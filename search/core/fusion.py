"""Two rankings made one: the vector search's and the keyword channel's, by reciprocal rank fusion.

Why rank fusion rather than a weighted sum of scores: cosine similarities and BM25 scores live on scales
that shift from model to model and from query to query (a BM25 score grows with a word's rarity), while
ranks mean the same everywhere. An image both channels put near the top comes first; one only a single
channel found keeps a place by that channel's rank. ``RRF_K`` is the constant of Cormack et al. (2009),
which damps the difference between the first few ranks so that neither channel alone decides.
"""
from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def fuse(vector: Sequence[str], keyword: Sequence[str], weight: float = 1.0) -> list[str]:
    """The ids of both rankings (best first each) in fused order: each scores 1/(RRF_K + rank) per ranking it
    is in, the keyword ranking's share times ``weight``; ties keep the vector ranking's order. No keyword hit,
    or a weight of 0: the vector ranking as it is."""
    if not keyword or weight <= 0:
        return list(vector)
    score: dict[str, float] = {}
    for rank, image_id in enumerate(vector):
        score[image_id] = 1.0 / (RRF_K + rank + 1)
    for rank, image_id in enumerate(keyword):
        score[image_id] = score.get(image_id, 0.0) + weight / (RRF_K + rank + 1)
    place = {image_id: i for i, image_id in enumerate(dict.fromkeys([*vector, *keyword]))}
    return sorted(score, key=lambda i: (-score[i], place[i]))
