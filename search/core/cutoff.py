"""Where relevance stops, estimated per query from that query's own ranking.

The rule: take the query's best scores against the index (after label filters), best first, and
cut at the largest drop between two neighbours; hits scoring at least the score just above the drop
are relevant. Relevant images form a tight group at the top of a ranking and the rest thin out
below it, so the widest gap near the top is where that group ends: a specific query ("a red
circle") keeps a small group, a vague one (a colour, any shape) a large one. Two bounds: it reads
at most ``DEPTH`` scores, and it cuts no lower than halfway down what the query ranks (relevant
images are a minority; further down lie the gaps between kinds of irrelevant images). No threshold
is global: a flat score cut-off fails because scores shift from query to query (Immich #5996).

How it was checked (/work/notes/cutoff.md; tests/unit/test_query.py, test_compose.py): on generated
shapes (12 classes, 20 images each, the tiny trained CLIP), with an image's class as relevance,
text queries for a class scored precision 0.93 / recall 1.00, colour-only queries 0.98 / 1.00,
shape-only 0.96 / 0.99, and queries by a stored image 0.89 / 0.97. Flat thresholds each suit one
kind of query only: 0.8 gives F1 0.97 for class queries but 0.39 and 0.03 for colour and shape
ones; 0.5 gives 0.99 for colour ones but 0.82 for class ones; this rule's F1 is 0.91 or more for
all four kinds. Depth matters: 30 or 50 cut inside the vague queries' 60-80 relevant images
(recall 0.2-0.3); 200 or every score reach gaps inside the irrelevant bulk (precision 0.74-0.82).
The halfway bound lifts the 4-per-class store's precision from 0.69 to 0.77 (class queries) and
0.75 to 0.87 (colour). On the pixel index, whose rankings barely follow the classes, it marks only
the nearest image or two.
"""
from __future__ import annotations

import numpy as np

DEPTH = 100  # ranked scores the cut-off reads; the same whatever page is asked for


def auto_cutoff(scores: np.ndarray, total: int) -> float | None:
    """The lowest score still judged relevant; None for no scores.

    ``scores``: the ranking's best scores, best first (``DEPTH`` of them where there are so many);
    ``total``: how many images the query ranks.
    """
    top = np.asarray(scores, dtype=np.float64)[: min(DEPTH, total // 2 + 1)]
    if not len(top):
        return None
    if len(top) == 1:
        return float(top[0])
    return float(top[int(np.argmax(top[:-1] - top[1:]))])


NO_MATCH_MARGIN = 0.05  # of the spread; see ``match_floor``


def match_floor(tops: np.ndarray, lows: np.ndarray) -> float:
    """The top score under which a text query has no good match in a collection, from the collection's own
    labels searched as text: ``tops`` their best scores, ``lows`` their ``DEPTH``-th (the bulk's level).

    A query for something the collection holds scores about as high as its labels do; one for something it
    lacks stays below the weakest label by more than a small part of the spread between labels' best scores
    and the bulk. Scale-free: the floor moves with the model's scores (SigLIP's sit elsewhere than CLIP's).
    Measured on the shapes with the tiny CLIP (6 of the 12 classes held, 8 images each, each class asked for in
    four phrasings unlike the labels): over 4 draws held classes' queries were never below the floor (0 of 96)
    and absent classes' were in 92 of 96 (a margin of 0.01 gives 96 of 96, 0.25 only 76; 0.05 keeps room for
    labels that make poor prompts); tests/e2e/test_words.py holds 3 draws to it: 0 of 72 and 68 of 72.
    """
    tops, lows = np.asarray(tops, np.float64), np.asarray(lows, np.float64)
    return float(tops.min() - NO_MATCH_MARGIN * max(float(np.median(tops) - np.median(lows)), 0.0))
