"""Visitors' uploads at once (public mode, a key each), with the fake model: each decodes and embeds outside the
albums' lock while writes take turns, every visitor sees only their own images, and the caps hold under the race."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.config import AlbumLimits
from search.errors import ServiceUnavailable
from search.service import store_size
from search.service.albums import Albums, FairLock
from search.service.store_size import StoreSize
from search.stores.store import Store
from tests.fixtures import fake_embedder

JOIN_S = 30  # no thread outlives this: a lock held too long fails the test instead of hanging it


class Recording(fake_embedder.ColourEmbedder):
    """The fake model, noting which threads embedded and how many were embedding at once; with ``meet``, a call
    waits (JOIN_S at most) until another is embedding too, so side-by-side embedding is seen however the threads
    are scheduled. Calls from the thread named ``hold`` wait for ``release`` (``holding`` says one is waiting)."""

    def __init__(self, hold: str | None = None, meet: bool = False):
        super().__init__()
        self.threads: set[str] = set()
        self.inside = self.most = 0  # calls embedding now, and the most at once
        self.met = threading.Event()
        self.meet = meet
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()
        self.fail = False  # the held call raises once released
        self._lock = threading.Lock()

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32, *,
                     precision: str | None = None) -> np.ndarray:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside > 1:
                self.met.set()
        try:
            if self.meet and not self.met.wait(JOIN_S):
                self.met.set()  # no one came: the others need not wait too, and ``most`` stays 1
            if threading.current_thread().name == self.hold:
                self.holding.set()
                assert self.release.wait(JOIN_S)
                if self.fail:
                    raise RuntimeError("the model failed")
            return super().embed_images(images, batch_size, precision=precision)
        finally:
            with self._lock:
                self.inside -= 1


def _photos(folder: Path, visitor: int, count: int = 3) -> list[str]:
    """``count`` small swatches of a colour of the visitor's own, named after the visitor."""
    folder.mkdir(parents=True, exist_ok=True)
    colour = ((visitor * 53) % 200 + 30, (visitor * 97) % 200 + 30, (visitor * 29) % 200 + 30)
    paths = []
    for shade in range(count):
        path = folder / f"v{visitor:02d}-{shade}.png"
        Image.new("RGB", (40 + shade, 30), tuple(min(255, c + 7 * shade) for c in colour)).save(path)
        paths.append(str(path))
    return paths


def _key(visitor: int) -> str:
    return f"visitor-{visitor:02d}-0123456789abcdef"


def _albums(tmp_path: Path, embedder: Recording, limits: AlbumLimits = AlbumLimits()) -> Albums:
    return Albums(Store.connect(tmp_path / "store", create=True), embedder, public=True, limits=limits,
                  read_texts=False)


def _run(jobs: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run each job on a thread named by its key, all released together; what each returned or raised."""
    results: dict[str, object] = {}
    start = threading.Barrier(len(jobs))

    def run(name: str, job: Callable[[], object]) -> None:
        start.wait(JOIN_S)
        try:
            results[name] = job()
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=run, args=(n, j), name=n, daemon=True) for n, j in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S)
    assert not any(t.is_alive() for t in threads), "an upload did not finish"
    return results


def _record_writes(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[int]:
    """For each ``Store.add`` of ``store``, how many were writing when it started (itself included)."""
    writes: list[int] = []
    writing = [0]
    lock = threading.Lock()
    add = store.add

    def counted(*args: object, **kwargs: object) -> None:
        with lock:
            writing[0] += 1
            writes.append(writing[0])
        try:
            add(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                writing[0] -= 1

    monkeypatch.setattr(store, "add", counted)
    return writes


def test_sixteen_visitors_upload_at_once_embedding_side_by_side_and_writing_in_turn(tmp_path, monkeypatch):
    embedder = Recording(meet=True)
    albums = _albums(tmp_path, embedder)
    writes = _record_writes(monkeypatch, albums.store)
    visitors = range(16)
    files = {v: _photos(tmp_path / "uploads", v) for v in visitors}
    results = _run({f"visitor-{v:02d}": (lambda v=v: albums.add(_key(v), "trip", files[v])) for v in visitors})

    assert all(getattr(r, "indexed", None) == 3 for r in results.values()), results
    assert embedder.threads == set(results)
    assert embedder.most > 1, "no two visitors embedded at once"
    assert writes == [1] * 16, "two writes overlapped"
    for v in visitors:  # each sees their own three images, and only those
        key, own = _key(v), {Path(f).name for f in files[v]}
        assert albums.names(key) == ["trip"]
        hits, total = albums.browse(key, "trip")
        assert total == 3 and {h.source for h in hits} == own
        found = albums.index(key, "trip").search_by_text("red", k=10)
        assert {h.source for h in found} == own


def test_two_visitors_racing_for_the_last_album_one_gets_it_and_the_other_is_told(tmp_path):
    albums = _albums(tmp_path, Recording(), AlbumLimits(albums_total=1))
    results = _run({f"visitor-{v:02d}": (lambda v=v: albums.add(_key(v), "trip", _photos(tmp_path / "up", v)))
                    for v in (1, 2)})
    refused = [r for r in results.values() if isinstance(r, ServiceUnavailable)]
    assert len(refused) == 1 and "no room for more collections" in str(refused[0])
    assert refused[0].retry_after == 3600  # a full demo: room comes back as visitors delete, not in seconds
    assert sum(getattr(r, "indexed", 0) == 3 for r in results.values()) == 1
    held = [n for n in albums.store.names() if n.startswith("mine-")]
    assert len(held) == 1 and albums.store.open(held[0]).count() == 3


def test_an_upload_under_way_holds_its_room_and_keeps_no_one_waiting_and_a_failed_one_leaves_no_album(tmp_path):
    embedder = Recording(hold="visitor-01")
    albums = _albums(tmp_path, embedder, AlbumLimits(albums_total=2, images_total=5))
    failed: list[BaseException] = []

    def upload() -> None:
        try:
            albums.add(_key(1), "trip", _photos(tmp_path / "up", 1))
        except RuntimeError as exc:
            failed.append(exc)

    first = threading.Thread(target=upload, name="visitor-01", daemon=True)
    first.start()
    try:
        assert embedder.holding.wait(JOIN_S)  # made its album, and embeds: nothing of it is written yet
        with pytest.raises(ServiceUnavailable, match="no room for more images"):  # its 3 count as if written: 3 + 3 > 5
            albums.add(_key(2), "trip", _photos(tmp_path / "up", 2))
        # Another visitor's upload that fits is not kept waiting by the one embedding.
        assert albums.add(_key(3), "trip", _photos(tmp_path / "up", 3, count=2)).indexed == 2
        with pytest.raises(ServiceUnavailable, match="no room for more collections"):
            albums.add(_key(4), "trip", _photos(tmp_path / "up", 4, count=1))
        with pytest.raises(ServiceUnavailable, match="still being added") as busy:
            albums.drop(_key(1), "trip")
        assert busy.value.retry_after == 30
        embedder.fail = True
    finally:
        embedder.release.set()
        first.join(JOIN_S)
    assert not first.is_alive() and len(failed) == 1
    assert albums.names(_key(1)) == []  # the failed upload's album went with it, and its room came back
    assert albums.add(_key(4), "trip", _photos(tmp_path / "up", 4)).indexed == 3


def test_the_store_is_walked_once_and_then_kept_as_uploads_add_to_it(tmp_path, monkeypatch):
    walks = []
    monkeypatch.setattr(store_size, "folder_bytes", lambda folder: walks.append(folder) or 1000)
    albums = _albums(tmp_path, Recording())
    for v in range(3):
        albums.add(_key(v), "trip", _photos(tmp_path / "up", v))
    assert len(walks) == 1


def test_a_store_size_adds_what_is_written_and_walks_again_in_the_background_once_stale(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    size = StoreSize(tmp_path, recheck_s=3600)
    assert size.bytes() == 100
    (tmp_path / "b").write_bytes(b"x" * 50)
    size.add(10)
    assert size.bytes() == 110  # not walked again: what was reported is added
    size.stale()
    size.bytes()  # starts a walk, and answers from the last one meanwhile
    deadline = time.monotonic() + JOIN_S
    while size.bytes() != 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert size.bytes() == 150


def test_the_copies_an_albums_text_is_read_from_are_made_and_read_with_the_lock_free(tmp_path, monkeypatch):
    from search.images import ocr
    from search.pipeline import text_queue

    monkeypatch.setattr(ocr, "missing", lambda: None)  # Tesseract as if installed: its reading is faked below
    albums = Albums(Store.connect(tmp_path / "store", create=True), Recording(), public=True, read_texts=True)
    held: list[tuple[str, bool]] = []  # (what ran, whether the albums' lock was held meanwhile)
    read_image = text_queue.read_image

    def copy(*args: object, **kwargs: object) -> Image.Image:
        held.append(("copy", albums._lock.locked()))
        return read_image(*args, **kwargs)  # type: ignore[arg-type]

    def read_text(data: bytes) -> str:
        held.append(("read", albums._lock.locked()))
        return "words"

    monkeypatch.setattr(text_queue, "read_image", copy)
    monkeypatch.setattr(ocr, "read_text", read_text)
    assert albums.add(_key(1), "trip", _photos(tmp_path / "up", 1)).texts_queued == 3
    deadline = time.monotonic() + JOIN_S
    while text_queue.waiting(albums.store) and time.monotonic() < deadline:
        albums.start_reading()
        time.sleep(0.05)
    assert albums._reader is not None
    albums._reader.join(JOIN_S)
    assert sorted(held) == [("copy", False)] * 3 + [("read", False)] * 3
    hits, _ = albums.browse(_key(1), "trip")
    assert [h.metadata.get("ocr") for h in hits] == ["words"] * 3
    assert not list((albums.store.folder / text_queue.FOLDER).glob("*"))  # read: the copies and their folder went


class _Leaving(threading.Condition):
    """The lock's condition, where the thread named "leaves" stops waiting with an error."""

    def wait_for(self, predicate, timeout=None):
        if threading.current_thread().name == "leaves":
            raise RuntimeError("stopped waiting")
        return super().wait_for(predicate, timeout)


def test_the_albums_lock_lets_writers_in_in_the_order_they_came_past_one_that_stopped_waiting():
    lock, order, errors = FairLock(), [], []
    lock._turns = _Leaving()
    lock.__enter__()  # held: everyone below queues behind it

    def writer(n: int) -> None:
        try:
            with lock:
                order.append(n)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=writer, args=(n,), name="leaves" if n == 4 else f"w{n}") for n in range(1, 8)]
    for n, thread in enumerate(threads, start=1):
        thread.start()
        while lock._next != n + 1:  # its ticket drawn before the next one starts
            time.sleep(0.001)
    lock.__exit__()
    for thread in threads:
        thread.join(10)
    assert order == [1, 2, 3, 5, 6, 7] and errors == ["stopped waiting"]
    assert not lock.locked()
    with lock:  # and it is taken again at once
        assert lock.locked()
