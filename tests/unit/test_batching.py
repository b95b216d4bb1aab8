"""QueryBatcher: concurrent single queries share model calls, and answer as if each ran alone."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from search.embedders import batching
from search.embedders.batching import QueryBatcher
from search.embedders.registry import load_embedder
from search.errors import QueryError

JOIN_S = 30  # no wait outlives this: a query that never comes fails the test instead of hanging it
TEXTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle", "red", "a blue triangle", "x", "circle"]


class Recording:
    """A fake embedder: a row per text from its length; records each call. With ``first_waits_for``, its first call
    returns only once that event is set (JOIN_S at most), so the queries that come meanwhile meet in the next batch
    however the threads are scheduled."""

    name, dimension, normalized, supports_text, min_edges, precision = "fake", 2, False, True, (1, 1), "int8"

    def __init__(self, first_waits_for: threading.Event | None = None):
        self.calls: list[list[str]] = []
        self.first_waits_for = first_waits_for
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def prepare(self, img: Image.Image) -> Image.Image:
        return img

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        return np.array([[img.width, img.height] for img in images], np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.first_waits_for is not None and len(self.calls) == 1:
            assert self.first_waits_for.wait(JOIN_S), "the other queries never came"
        if "boom" in texts:
            raise QueryError("boom is refused")
        return np.array([[len(t), 1.0] for t in texts], np.float32)


class Arrivals:
    """The queries a batcher has taken in: each single query joins its lane and notifies it once, under the lane's
    lock (so a query counted here is pending for the next leader)."""

    def __init__(self, expected: int):
        self.expected = expected
        self.count = 0
        self.all_in = threading.Event()

    def condition(self) -> threading.Condition:
        arrivals = self

        class Counted(threading.Condition):
            def notify_all(self) -> None:
                arrivals.count += 1
                if arrivals.count >= arrivals.expected:
                    arrivals.all_in.set()
                super().notify_all()

        return Counted()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(batching, "threading", SimpleNamespace(Condition=self.condition, Lock=threading.Lock))


def gated(monkeypatch: pytest.MonkeyPatch, n: int) -> Recording:
    """A fake whose first call waits until all ``n`` queries have reached the batcher."""
    arrivals = Arrivals(n)
    arrivals.install(monkeypatch)
    return Recording(first_waits_for=arrivals.all_in)


def together(fn: Callable[[int], object], n: int) -> list[object]:
    """``fn(i)`` for i < n in n threads started at once; results or raised errors, by i."""
    out: list[object] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def test_batched_rows_equal_unbatched_rows_for_the_tiny_clip(shapes_model):
    clip = load_embedder(str(shapes_model), "cpu", None)
    batcher = QueryBatcher(clip, max_wait_ms=50)
    alone = [clip.embed_texts([t])[0] for t in TEXTS]
    rows = together(lambda i: batcher.embed_texts([TEXTS[i]]), len(TEXTS))
    for i, row in enumerate(rows):
        assert isinstance(row, np.ndarray) and row.shape == (1, clip.dimension)
        np.testing.assert_allclose(row[0], alone[i], rtol=0, atol=1e-6)  # a padded batch rounds differently
    assert batcher.batches < len(TEXTS)
    images = [Image.new("RGB", (40 + 8 * i, 48), (30 * i, 90, 200)) for i in range(4)]
    alone_images = [clip.embed_images([clip.prepare(img)])[0] for img in images]
    rows = together(lambda i: batcher.embed_images([batcher.prepare(images[i])]), len(images))
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row[0], alone_images[i], rtol=0, atol=1e-6)  # type: ignore[index]


def test_concurrent_queries_make_fewer_model_calls(monkeypatch):
    fake = gated(monkeypatch, len(TEXTS))
    batcher = QueryBatcher(fake, max_batch=16, max_wait_ms=20)
    rows = together(lambda i: batcher.embed_texts([TEXTS[i]]), len(TEXTS))
    assert [float(r[0][0]) for r in rows] == [float(len(t)) for t in TEXTS]  # type: ignore[index]
    # The first runs at once (nobody came before it); all that came while it ran share one call.
    assert [len(c) for c in fake.calls] == [1, len(TEXTS) - 1], fake.calls
    assert batcher.batched == len(TEXTS)


def test_a_batch_is_bounded_by_max_batch(monkeypatch):
    fake = gated(monkeypatch, len(TEXTS))
    batcher = QueryBatcher(fake, max_batch=3, max_wait_ms=50)
    together(lambda i: batcher.embed_texts([TEXTS[i]]), len(TEXTS))
    assert [len(c) for c in fake.calls] == [1, 3, 3, 1], fake.calls  # the seven that waited, three at a time


def test_a_failing_query_fails_alone(monkeypatch):
    fake = gated(monkeypatch, 6)
    batcher = QueryBatcher(fake, max_wait_ms=20)
    texts = ["boom", *TEXTS[:5]]
    rows = together(lambda i: batcher.embed_texts([texts[i]]), len(texts))
    assert isinstance(rows[0], QueryError) and str(rows[0]) == "boom is refused"
    assert [float(r[0][0]) for r in rows[1:]] == [float(len(t)) for t in texts[1:]]  # type: ignore[index]


class Clock:
    """The batcher's time, moved by the test: a leader's wait for companions (the only wait with one caller)
    is recorded and passes at once, moving the clock by the time it asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def condition(self) -> threading.Condition:
        clock = self

        class Waited(threading.Condition):
            def wait(self, timeout: float | None = None) -> bool:
                assert timeout is not None, "a leader waits only so long"
                clock.waits.append(round(timeout, 6))
                clock.now += timeout
                return False

        return Waited()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The batching module's clock and its lanes' condition, faked (one caller at a time only)."""
    fake = Clock()
    monkeypatch.setattr(batching, "time", SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(batching, "threading", SimpleNamespace(Condition=fake.condition, Lock=threading.Lock))
    return fake


def test_a_query_after_a_quiet_spell_runs_at_once_and_one_close_behind_waits_out_the_deadline(clock):
    fake = Recording()
    batcher = QueryBatcher(fake, max_wait_ms=200)
    batcher.embed_texts(["alone"])
    assert clock.waits == []  # nobody came close before it: no one to wait for
    clock.now += 0.3
    batcher.embed_texts(["close behind"])  # within twice the deadline of the last: companions may come
    assert clock.waits == [0.2]  # the whole deadline, and no more
    clock.now += 0.41
    batcher.embed_texts(["after a quiet spell"])
    assert clock.waits == [0.2] and fake.calls == [["alone"], ["close behind"], ["after a quiet spell"]]


def test_several_inputs_in_one_call_go_straight_to_the_model(clock):
    fake = Recording()
    batcher = QueryBatcher(fake, max_wait_ms=1000)
    batcher.embed_texts(["first"])
    assert batcher.embed_texts(["a", "bb"]).shape == (2, 2)  # close behind a query, yet no wait: not a batch
    assert clock.waits == [] and fake.calls == [["first"], ["a", "bb"]] and batcher.batches == 1


def test_the_wrapper_is_an_embedder_and_offers_nothing_else():
    fake = Recording()
    batcher = QueryBatcher(fake)
    assert (batcher.name, batcher.dimension, batcher.normalized, batcher.supports_text, batcher.min_edges,
            batcher.precision) == ("fake", 2, False, True, (1, 1), "int8")
    batcher.load()
    assert fake.loaded
    batcher.unload()
    assert not fake.loaded
    assert not hasattr(batcher, "calls") and batcher.inner is fake  # no passing through: what else there is, inner has
    with pytest.raises(ValueError):
        QueryBatcher(fake, max_batch=0)
