"""kill -9 of real writer processes at any point of a write: what readers see before a repair, and that the
repair settles exactly what the killed writer left (the thumbnails' packs, the catalogue's journal). The
fast tier covers the same repairs on damage made in-process (tests/unit/test_thumbnails.py, test_store.py)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from search.core import ids
from search.errors import StoreError
from search.stores import thumbnails
from search.stores.base import Record
from search.stores.locking import write_lock
from tests.conftest import ROOT
from tests.unit.test_store import MODEL, _records  # the fast tier's records, written by a process killed here
from tests.unit.test_thumbnails import _check, _ends, _packs

WRITER = """
import random, sys
from pathlib import Path
from search.core.ids import content_id
from search.stores import thumbnails
thumbnails.PACK_BYTES = 200_000  # many packs, many compactions
folder, rng = Path(sys.argv[1]), random.Random(int(sys.argv[2]))
print("ready", flush=True)
while True:
    batch = [rng.randbytes(rng.randint(500, 6000)) for _ in range(rng.randint(1, 60))]
    thumbnails.write_many(folder, {content_id(d): d for d in batch})
    held = sorted(thumbnails.ids(folder))
    thumbnails.delete_many(folder, rng.sample(held, len(held) // 3))
"""


def test_kill_9_at_random_points_leaves_every_row_reading_its_own_bytes(tmp_path):
    rng = random.Random(13)
    torn = 0  # kills that left bytes no row names (mid-append or mid-compaction): the cases that matter
    for round_ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round_)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        _check(tmp_path, settled=False)  # what readers see before any repair
        torn += {int(name[5:11]): size for name, size in _packs(tmp_path).items()} != _ends(tmp_path)
        thumbnails.repair(tmp_path)
        _check(tmp_path)
        assert {int(name[5:11]): size for name, size in _packs(tmp_path).items()} == _ends(tmp_path)  # no dead tail
        if torn == 3:
            break
    assert torn, "no kill landed inside a write; the test proves nothing"


_KILLED_WRITER = """
import os, signal, sys
import numpy as np
from search.core import ids
from search.stores.base import Filter, ModelInfo, Record
from search.stores.keywords import Keywords
from search.stores.store import Store
from search.stores import thumbnails

store = Store.connect(sys.argv[1])
col = store.open_or_create("first", ModelInfo("tiny-test-model", 8, True))
start, stop, moment = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(start)
records = [Record(ids.content_id(f"x{i}".encode()), (v / np.linalg.norm(v)).astype(np.float32),
                  {"source": f"x/{i}", "label": "late", "thumbnail": thumbnails.relative(ids.content_id(f"x{i}".encode()))})
           for i, v in zip(range(start, stop), rng.normal(size=(stop - start, 8)))]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if moment == "before-vectors":
    col.upsert = die
else:
    Keywords.add = die
# The last record's thumbnail never lands (a write the store kept though it failed)
store.add(col, records, {r.id: b"jpeg" for r in records[:-1]})
"""


def _killed_writer(folder, start: int, stop: int, moment: str) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder), str(start), str(stop), moment],
                          cwd=ROOT, timeout=120, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


def test_repair_settles_exactly_what_killed_writers_left_in_flight(store, vectors):
    col = store.open_or_create("first", MODEL)
    kept = [Record(r.id, r.vector, {**r.metadata, "label": "early", "thumbnail": thumbnails.relative(r.id)})
            for r in _records(vectors[:2])]
    store.add(col, kept, {r.id: b"jpeg" for r in kept})
    _killed_writer(store.folder, 10, 14, "after-vectors")  # x10-x12 land whole but for their words; x13 has no thumbnail
    _killed_writer(store.folder, 20, 23, "before-vectors")  # thumbnails of x20, x21 land; no record
    assert len(store.catalogue.pending()[0].ids) == 7 and store.catalogue.state(col.key).count == 2
    assert store.repair() == 7
    landed = [ids.content_id(f"x{i}".encode()) for i in (10, 11, 12)]
    held = sorted(r.id for r in kept) + sorted(landed)
    assert sorted(col.all_ids()) == sorted(held)  # x13's record went with its missing thumbnail
    assert sorted(thumbnails.ids(store.folder)) == sorted(held)
    assert store.catalogue.state(col.key).count == 5 and store.catalogue.labels(col.key) == {"early": 2, "late": 3}
    assert sorted(store.catalogue.ids(col.key)) == sorted(held)
    assert {h.id for h in store.keywords.search("first", ["late"], 10)} == set(landed)  # words a kill kept from them
    assert store.catalogue.pending() == [] and store.repair() == 0
    with write_lock(store.folder), pytest.raises(StoreError, match="another process is writing"):
        store.repair()  # a writer holds the store: nothing is settled from under it
