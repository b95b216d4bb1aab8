"""Where relevance stops, estimated per query from the query's own scores against the index.

First version: scores far above the bulk of the index (median + Z robust standard deviations) count.
"""
from __future__ import annotations

import numpy as np

Z = 4.0


def auto_cutoff(top: np.ndarray, background: np.ndarray) -> float | None:
    """The lowest score still judged relevant; None where there are no scores to judge by.

    ``top``: the best scores of the ranking, best first; ``background``: the query's scores against a
    sample of the index (every row of a small one).
    """
    if not len(top) or not len(background):
        return None
    middle = float(np.median(background))
    spread = 1.4826 * float(np.median(np.abs(background - middle))) or 1e-6
    return middle + Z * spread
