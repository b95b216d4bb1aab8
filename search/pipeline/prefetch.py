"""Run a generator one step ahead on its own thread, so its work overlaps the consumer's."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(steps: Generator[tuple[int, T], None, None], on_step: Callable[[int], Any], depth: int = 2) -> Iterator[T]:
    """Yield each ``(n, value)``'s value, produced ahead on a thread; ``on_step(n)`` after each is consumed.

    The producer's exceptions are raised here; closing this generator stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for step in steps:
                if not put(step):
                    break
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            steps.close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (got := q.get()) is not _DONE:
            if isinstance(got, BaseException):
                raise got
            n, value = got
            yield value
            on_step(n)
    finally:
        stop.set()
        thread.join(timeout=5)
