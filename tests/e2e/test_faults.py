"""Faults: a second writer, a damaged store, a store from a newer version. Clear errors, never a crash."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search import ImageIndex, StoreError
from search.embedders.registry import load_embedder
from search.stores.base import ModelInfo, Record
from search.stores.locking import write_lock
from search.stores.store import Store
from tests.conftest import ROOT, run_builder
from tests.fixtures.shapes import write_folder

OPEN_AND_SEARCH = """
import sys
from search import ImageIndex, SearchError
try:
    index = ImageIndex.open(sys.argv[1])
    print("opened", len(index), len(index.search_by_text("a red circle", k=3)))
except SearchError as exc:
    print("refused:", exc)
"""


@pytest.fixture(scope="module")
def big_store(tmp_path_factory, random_clip) -> Path:
    """2,500 vectors: past Chroma's sync threshold, so its HNSW files on disk are in use."""
    store = tmp_path_factory.mktemp("big") / "store"
    opened = Store.connect(store, create=True)
    col = opened.open_or_create("images", ModelInfo.of(load_embedder(str(random_clip))))
    vectors = np.random.default_rng(0).normal(size=(2500, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(0, 2500, 500):
        col.upsert([Record(f"id{j}", vectors[j], {"source": f"s{j}"}) for j in range(i, i + 500)])
    del opened, col
    return store


def _open_in_child(store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OPEN_AND_SEARCH, str(store)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def _damage(store: Path, how: str) -> None:
    segments = [d for d in store.iterdir() if d.is_dir() and len(d.name) == 36]
    assert segments, "no HNSW segment on disk to damage"
    for seg in segments:
        for f in seg.iterdir():
            data = f.read_bytes()
            if how == "truncate":
                f.write_bytes(data[: len(data) // 3])
            elif how == "zero":
                f.write_bytes(b"")
            elif how == "garbage":
                f.write_bytes(np.random.default_rng(1).integers(0, 256, max(16, len(data)), dtype=np.uint8).tobytes())


@pytest.mark.parametrize("how", ["truncate", "zero", "garbage", "sqlite"])
def test_a_damaged_store_is_refused_with_a_clear_message(tmp_path, big_store, how):
    store = tmp_path / "store"
    shutil.copytree(big_store, store)
    assert "opened 2500 3" in _open_in_child(store).stdout
    if how == "sqlite":
        db = store / "chroma.sqlite3"
        db.write_bytes(db.read_bytes()[:8192])
    else:
        _damage(store, how)
    child = _open_in_child(store)
    assert child.returncode == 0, f"the process died: {child.returncode} {child.stderr[-2000:]}"
    assert "refused:" in child.stdout and ("damaged" in child.stdout or "cannot be opened" in child.stdout)
    assert "index_builder.py" in child.stdout  # and it says how to rebuild


def test_a_store_from_a_newer_version_says_so(tmp_path, random_clip):
    store = tmp_path / "store"
    Store.connect(store, create=True).open_or_create("images", ModelInfo.of(load_embedder(str(random_clip))))
    import chromadb  # a newer writer, simulated from outside the product
    from chromadb.config import Settings

    outside = chromadb.PersistentClient(path=str(store), settings=Settings(anonymized_telemetry=False)).get_collection("images")
    outside.modify(metadata={**outside.metadata, "chromadb_version": "99.0.0"})
    with pytest.raises(StoreError, match="newer version"):
        ImageIndex.open(store)


def test_a_second_writer_is_refused_at_once(tmp_path, random_clip):
    folder, store = tmp_path / "photos", tmp_path / "store"
    write_folder(folder, per_class=40, seed=3)
    first = subprocess.Popen([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder),
                              "--store", str(store), "--model", str(random_clip), "--batch-size", "4"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        lock = store / ".write.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().startswith("process")) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The holder frozen while it holds the lock: a second writer that waited for the lock would never return
        # (run_builder's timeout), so its answer proves it did not wait, however slow its start-up.
        os.kill(first.pid, signal.SIGSTOP)
        second = run_builder("--dataset", folder, "--store", store, "--model", random_clip)
        assert second.returncode == 2
        assert f"process {first.pid} is writing to the store" in second.stderr
        with pytest.raises(StoreError, match="is writing"), write_lock(store):
            pass
    finally:
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=300) == 0, first.stderr.read()
    with write_lock(store):  # released when the first builder ended
        assert len(ImageIndex.open(store)) == 480
