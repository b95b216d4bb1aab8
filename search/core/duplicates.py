"""Near-duplicates: images whose embeddings are nearly identical (re-encodes, resizes, crops, bursts)."""
from __future__ import annotations

from typing import Any

import numpy as np

NEAR_DUPLICATE_SIMILARITY = 0.95  # cosine between unit CLIP vectors; exact copies are caught by hash


Nearest = tuple[str, str, float]  # a stored image's id, its source, and its cosine similarity to a new one


def find_near_duplicates(ids: list[str], sources: list[str], vectors: np.ndarray, stored: list[Nearest | None],
                         similarity: float) -> list[dict[str, Any]]:
    """Pairs of a new image and the most similar earlier one above ``similarity``: the nearest stored image
    (``stored``, one per new image, None where there is none) or one earlier in this batch."""
    found: list[dict[str, Any]] = []
    within = vectors @ vectors.T
    for i in range(len(ids)):
        candidates = [found_stored] if (found_stored := stored[i]) else []
        if i:
            j = int(np.argmax(within[i, :i]))
            candidates.append((ids[j], sources[j], float(within[i, j])))
        best = max(candidates, key=lambda c: c[2], default=None)
        if best and best[2] >= similarity:
            found.append({"source": sources[i], "id": ids[i], "similar_to": best[0],
                          "similar_source": best[1], "similarity": round(best[2], 4)})
    return found


def fold_near_duplicates(order: list[str], vectors: dict[str, np.ndarray], similarity: float) -> list[tuple[str, list[str]]]:
    """Group ranked ids: each keeps its place unless it is a near-duplicate of a better-ranked kept one."""
    kept: list[tuple[str, list[str]]] = []
    for image_id in order:
        v = vectors[image_id]
        for head, members in kept:
            if float(v @ vectors[head]) >= similarity:
                members.append(image_id)
                break
        else:
            kept.append((image_id, []))
    return kept
