"""kill -9 of the builder at several moments, then a re-run: every valid image indexed exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from search import ImageIndex
from search.stores import thumbnails
from tests.conftest import ROOT, run_builder
from tests.fixtures.shapes import write_folder


def _thumbnails(store: Path) -> int:
    return len(thumbnails.ids(store))


def _start(folder: Path, store: Path, model: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder), "--store", str(store),
         "--model", str(model), "--batch-size", "8"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_kill_9_at_several_moments_then_resume(tmp_path, random_clip):
    folder, store = tmp_path / "photos", tmp_path / "store"
    files = write_folder(folder, per_class=30, seed=11)  # 360 images
    kills = 0
    # Once during start-up, then at growing points mid-write (thumbnails land just before each batch's upsert).
    for threshold in (None, 24, 130, 260):
        proc = _start(folder, store, random_clip)
        deadline = time.monotonic() + 120
        if threshold is None:
            time.sleep(2.0)
        else:
            while _thumbnails(store) < threshold and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 3, "the builder finished before it could be killed; the test proves nothing"
    done = run_builder("--dataset", folder, "--store", store, "--model", random_clip)
    assert done.returncode == 0, done.stderr
    index = ImageIndex.open(store)
    stored = [m for _, m in index.collection.scan_metadata()]
    assert len(index) == len(files)
    assert sorted(m["source"] for m in stored) == sorted(str(f) for f in files)
    assert thumbnails.ids(store) == {i for i, _ in index.collection.scan_metadata()}  # each record's, no other
    assert all(thumbnails.at(store / m["thumbnail"]) for m in stored)
    # Every stored vector is searchable: each image finds itself first.
    for f in files[::59]:
        assert index.search_by_image(f, k=1)[0].source == str(f)
