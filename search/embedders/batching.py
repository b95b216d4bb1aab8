"""Concurrent single queries embedded in one model call: ``QueryBatcher`` wraps an embedder.

A model call costs nearly the same for one query as for a few: at batch 1 the text tower is bound by
reading its weights, not by arithmetic. So when queries arrive together, the first one (the leader)
waits up to ``max_wait_ms`` for companions, embeds them all in one call, and hands each its row;
queries that arrive while that call runs form the next batch. A query that comes after a quiet spell (no
other within twice the deadline) does not wait at all; one alone in a busy spell waits at most the deadline.
Calls with several inputs (an album upload) go straight to the model.

Batches are formed per kind of call: texts, and images at each precision asked for. Texts of a batch may go to
different towers (search/embedders/text_routing.py): the wrapped embedder splits a batch by tower itself.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from search.embedders.base import Embedder

Run = Callable[[list[Any]], np.ndarray]  # inputs -> one row per input


@dataclass
class _Query:
    """One caller's input, and what its batch's leader leaves for it."""

    item: Any
    done: threading.Event = field(default_factory=threading.Event)
    row: np.ndarray | None = None
    error: BaseException | None = None
    lead: bool = False  # woken to gather and run the next batch, not with a result


class _Lane:
    """Pending queries of one kind of call; at most one batch of them runs at a time."""

    def __init__(self, run: Run, max_batch: int, max_wait_s: float, on_batch: Callable[[int], None]):
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._pending: list[_Query] = []
        self._busy = False  # a leader is gathering or running a batch
        self._arrived = threading.Condition()
        self._last_arrival = float("-inf")

    def submit(self, item: Any) -> np.ndarray:
        query = _Query(item)
        with self._arrived:
            now = time.monotonic()
            # Companions are worth waiting for only while queries come close together: one after a quiet spell
            # (a person's query on an idle app) runs at once instead of waiting out the deadline alone.
            crowded = now - self._last_arrival < 2 * self.max_wait_s
            self._last_arrival = now
            self._pending.append(query)
            first = not self._busy
            self._busy = True
            self._arrived.notify_all()
        if first:
            self._lead(wait=crowded)
        else:
            query.done.wait()
            if query.lead:  # handed the lead: its companions gathered while the last batch ran
                self._lead(wait=False)
        if query.error is not None:
            raise query.error
        assert query.row is not None
        return query.row

    def _lead(self, wait: bool) -> None:
        deadline = time.monotonic() + (self.max_wait_s if wait else 0.0)
        with self._arrived:
            while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        try:
            self._answer(batch)
            self.on_batch(len(batch))
        finally:  # whatever happened, every member is answered and the lane moves on
            with self._arrived:
                successor = self._pending[0] if self._pending else None
                self._busy = successor is not None
            for query in batch:
                if query.row is None and query.error is None:
                    query.error = RuntimeError("the batch's model call was interrupted")
                query.done.set()
            if successor is not None:
                successor.lead = True
                successor.done.set()

    def _answer(self, batch: list[_Query]) -> None:
        """Rows for the batch; where it fails, each query alone, so one bad input fails only itself."""
        try:
            rows = self.run([q.item for q in batch])
            if len(rows) != len(batch):
                raise RuntimeError(f"the model returned {len(rows)} rows for {len(batch)} inputs")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for query in batch:
                self._answer([query])
            return
        for query, row in zip(batch, rows):
            query.row = row


class QueryBatcher:
    """An ``Embedder`` around ``inner`` (a loaded one) that merges concurrent single-input calls into one call
    of ``inner`` per kind; everything else is ``inner``'s, said explicitly (the ``Embedder`` protocol is all it
    offers: what else a family has, ``inner`` has).

    ``max_batch`` bounds a batch; ``max_wait_ms`` bounds how long the first query of a batch waits for
    others. ``batches`` counts the batches run, ``batched`` the queries in them.
    """

    def __init__(self, inner: Embedder, max_batch: int = 16, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_ms not negative")
        self.inner = inner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.batches = 0
        self.batched = 0
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def normalized(self) -> bool:
        return self.inner.normalized

    @property
    def supports_text(self) -> bool:
        return self.inner.supports_text

    @property
    def min_edges(self) -> tuple[int, int]:
        return self.inner.min_edges

    @property
    def precision(self) -> str:
        return self.inner.precision

    def load(self) -> None:
        """Load the wrapped embedder."""
        self.inner.load()

    def unload(self) -> None:
        """Let the wrapped embedder's model go."""
        self.inner.unload()

    def prepare(self, img: Image.Image) -> Image.Image:
        """As the wrapped embedder prepares images (per query: decoding and scaling stay in parallel)."""
        return self.inner.prepare(img)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text; a single text joins the texts being embedded with it."""
        texts = list(texts)
        if len(texts) != 1:
            return self.inner.embed_texts(texts)
        return self._lane(("texts",), self.inner.embed_texts).submit(texts[0])[None, :]

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        """One row per image; a single image joins the images being embedded with it (at the same ``precision``)."""
        images = list(images)
        if len(images) != 1:
            return self.inner.embed_images(images, batch_size, precision=precision)
        lane = self._lane(("images", precision),
                          lambda batch: self.inner.embed_images(batch, self.max_batch, precision=precision))
        return lane.submit(images[0])[None, :]

    def _lane(self, kind: Hashable, run: Run) -> _Lane:
        with self._lock:
            if kind not in self._lanes:
                self._lanes[kind] = _Lane(run, self.max_batch, self.max_wait_s, self._count)
            return self._lanes[kind]

    def _count(self, size: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched += size
