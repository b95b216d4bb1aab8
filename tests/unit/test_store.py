"""The store layer against a real embedded Chroma in a temp folder: typed records in, typed results out."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from chromadb.errors import InternalError, NotFoundError

from search.core import ids
from search.errors import QueryError, StoreError, StoreUnavailableError
from search.stores import thumbnails
from search.stores.base import ModelInfo, Record
from search.stores.locking import write_lock
from search.stores.store import Store

MODEL = ModelInfo("tiny-test-model", 8, True)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.connect(tmp_path / "store", create=True)


@pytest.fixture
def vectors() -> np.ndarray:
    return _unit(np.random.default_rng(0).normal(size=(30, 8)))


def _records(vectors: np.ndarray, label: str = "x") -> list[Record]:
    return [Record(ids.content_id(f"{label}{i}".encode()), v, {"source": f"{label}/{i}", "n": i})
            for i, v in enumerate(vectors)]


def test_a_collection_records_its_model_and_refuses_another(store):
    col = store.open_or_create("images", MODEL, "a folder")
    assert (col.model, col.dimension, col.normalized, col.metadata["source"]) == ("tiny-test-model", 8, True, "a folder")
    assert store.open_or_create("images", MODEL).name == "images"  # open again: same collection
    with pytest.raises(StoreError, match="4-d vectors") as wrong_size:
        store.open_or_create("images", ModelInfo("tiny-test-model", 4, True))
    assert "tiny-test-model" not in str(wrong_size.value) and "tiny-test-model" in wrong_size.value.for_operator()
    with pytest.raises(StoreError, match="built with another model"):
        store.open_or_create("images", ModelInfo("another-model", 8, True))
    assert store.names() == ["images"]


def test_upsert_in_batches_then_read_back_by_id_and_by_scan(store, vectors, monkeypatch):
    col = store.open_or_create("images", MODEL)
    monkeypatch.setattr(store.backend, "_max_batch", 7)  # 30 records: five writes
    records = _records(vectors)
    col.upsert(records)
    assert col.count() == 30
    col.upsert(records[:3])  # the same ids again replace, never add
    assert col.count() == 30
    wanted = [records[4].id, "0" * 32, records[9].id]
    assert sorted(col.held(wanted)) == sorted([records[4].id, records[9].id])
    got = col.vectors(wanted)
    assert set(got) == {records[4].id, records[9].id}
    assert np.allclose(got[records[9].id], vectors[9], atol=1e-6)
    assert col.metadatas([records[4].id]) == {records[4].id: {"source": "x/4", "n": 4}}
    scanned_ids, matrix = col.scan_vectors()
    assert matrix.shape == (30, 8) and sorted(scanned_ids) == sorted(r.id for r in records)
    by_id = {r.id: r.vector for r in records}
    assert all(np.allclose(row, by_id[i], atol=1e-6) for i, row in zip(scanned_ids, matrix))
    assert sorted(i for i, _ in col.scan_metadata()) == sorted(col.all_ids())


def test_nearest_gives_cosine_similarities_best_first(store, vectors):
    col = store.open_or_create("images", MODEL)
    records = _records(vectors)
    col.upsert(records)
    queries = _unit(vectors[:3] + 0.05)
    found = col.nearest(queries, 5)
    assert len(found) == 3 and all(len(row) == 5 for row in found)
    for query, row in zip(queries, found):
        exact = vectors @ query
        assert [n.id for n in row] == [records[i].id for i in np.argsort(-exact)[:5]]
        assert np.allclose([n.similarity for n in row], np.sort(exact)[::-1][:5], atol=1e-4)
        assert all(n.metadata["source"].startswith("x/") for n in row)
    assert col.nearest(queries[:0], 5) == []


def test_remove_keeps_thumbnails_another_collection_still_uses(store, vectors):
    first, second = store.open_or_create("first", MODEL), store.open_or_create("second", MODEL)
    records = _records(vectors[:4])
    store.add(first, records, {r.id: b"jpeg bytes" for r in records})
    second.upsert(records[:1])  # the first image is in both collections
    stranger = "f" * 32
    gone = store.remove(first, [r.id for r in records] + [stranger])
    assert sorted(gone) == sorted(r.id for r in records)  # what went, never what was only asked for
    assert thumbnails.exists(store.folder, records[0].id)  # still used by "second"
    assert not any(thumbnails.exists(store.folder, r.id) for r in records[1:])
    assert first.count() == 0 and second.count() == 1
    assert store.remove(first, [records[1].id]) == []


def test_thumbnail_paths_come_only_from_image_ids(store):
    image_id = ids.content_id(b"image")
    assert thumbnails.relative(image_id) == f"thumbnails/{image_id[:2]}/{image_id}.jpg"
    assert thumbnails.write(store.folder, image_id, b"x") and not thumbnails.write(store.folder, image_id, b"y")
    for bad in ("../victim", "./../thumbnails/ab/" + "a" * 32, "A" * 32, "a" * 31, "/etc/passwd", "a" * 32 + "\x00"):
        with pytest.raises(QueryError, match="not an image id"):
            thumbnails.path(store.folder, bad)


def test_a_missing_collection_names_no_other(store):
    store.open_or_create("mine-secret-album", MODEL)
    with pytest.raises(StoreError, match="no collection 'images'") as missing:
        store.open("images")
    assert "mine-secret-album" not in str(missing.value) and "mine-secret-album" in missing.value.for_operator()
    with pytest.raises(StoreError, match="3 to 63 characters"):
        store.open("ab")
    store.drop("mine-secret-album")
    assert store.names() == []


def test_a_store_that_goes_away_is_a_store_error_and_a_bug_is_not(store):
    with pytest.raises(StoreUnavailableError, match="stopped answering"), store.guard():
        raise httpx.ConnectError("[Errno 111] Connection refused")
    with pytest.raises(StoreUnavailableError, match="^the server's disk is full"), store.guard():
        raise OSError(28, "No space left on device")
    with pytest.raises(StoreUnavailableError, match="^the server's disk is full"), store.guard():
        raise InternalError("Database error: error returned from database: (code: 13) database or disk is full")
    with pytest.raises(StoreError, match="^the store is read-only"), store.guard():
        raise InternalError("error returned from database: (code: 8) attempt to write a readonly database")
    with pytest.raises(StoreUnavailableError, match="stopped working"), store.guard():
        raise InternalError("something else broke")
    with pytest.raises(StoreError, match="no longer in the store"), store.guard():
        raise NotFoundError("Collection [mine-x] does not exist")
    with pytest.raises(TypeError), store.guard():
        raise TypeError("a bug stays a bug")


def test_no_store_says_how_to_build_one(tmp_path):
    with pytest.raises(StoreError, match="index_builder.py") as missing:
        Store.connect(tmp_path / "nothing-here")
    assert str(tmp_path) not in str(missing.value) and str(tmp_path) in missing.value.for_operator()
    assert not (tmp_path / "nothing-here").exists()


def test_records_and_their_thumbnails_land_together_or_not_at_all(store, vectors):
    col = store.open_or_create("first", MODEL)
    records = _records(vectors[:3])
    thumbnails.write(store.folder, records[0].id, b"kept: another write made it")

    class Full:  # Chroma's collection on a disk that just filled up
        def __getattr__(self, name):
            return getattr(real, name)

        def upsert(self, **rows):
            real.upsert(**rows)  # Chroma keeps what it logged, then fails to apply it
            raise OSError(28, "No space left on device")
    real, col._chroma = col._chroma, Full()
    with pytest.raises(StoreUnavailableError, match="disk is full"):
        store.add(col, records, {r.id: b"jpeg" for r in records})
    assert thumbnails.read(store.folder, records[0].id) == b"kept: another write made it"  # not this call's to delete
    assert thumbnails.ids(store.folder) == {records[0].id}
    assert col.held([r.id for r in records]) == [records[0].id]  # no record is left without its thumbnail


def test_a_sweep_removes_what_a_killed_writer_left_and_nothing_else(store, vectors):
    col = store.open_or_create("first", MODEL)
    records = [Record(r.id, r.vector, {**r.metadata, "thumbnail": thumbnails.relative(r.id)}) for r in _records(vectors[:3])]
    store.add(col, records[:2], {r.id: b"jpeg" for r in records[:2]})
    thumbnails.write(store.folder, records[2].id, b"orphan: its record never landed")
    pack = next((store.folder / thumbnails.FOLDER).glob("pack-*.bin"))
    with open(pack, "ab") as out:
        out.write(b"half-written")  # appended by a writer killed before its commit
    ghost = Record("e" * 32, records[0].vector, {"thumbnail": thumbnails.relative("e" * 32)})
    col.upsert([ghost])  # a record whose thumbnail never landed (a write the store kept though it failed)
    assert store.sweep() == 2
    assert thumbnails.ids(store.folder) == {r.id for r in records[:2]}
    packs = (store.folder / thumbnails.FOLDER).glob("pack-*.bin")
    assert sum(p.stat().st_size for p in packs) == 2 * len(b"jpeg")  # the dead tail cut, the orphan's bytes reclaimed
    assert sorted(col.all_ids()) == sorted(r.id for r in records[:2])
    assert store.sweep() == 0
    with write_lock(store.folder), pytest.raises(StoreError, match="another process is writing"):
        store.sweep()  # a writer holds the store: nothing is swept from under it


def test_a_store_with_loose_thumbnails_keeps_them_through_its_sweep_which_packs_them(store, vectors):
    col = store.open_or_create("first", MODEL)
    records = [Record(r.id, r.vector, {**r.metadata, "thumbnail": thumbnails.relative(r.id)}) for r in _records(vectors[:4])]
    col.upsert(records)
    for r in records:  # as a store written before packs holds them
        thumbnails.path(store.folder, r.id).parent.mkdir(parents=True, exist_ok=True)
        thumbnails.path(store.folder, r.id).write_bytes(r.id.encode())
    assert thumbnails.read(store.folder, records[0].id) == records[0].id.encode()
    assert store.sweep() == 0  # nothing lost, nothing orphaned
    assert not any(p.is_dir() for p in (store.folder / thumbnails.FOLDER).iterdir())  # packed, the loose files gone
    assert all(thumbnails.read(store.folder, r.id) == r.id.encode() for r in records) and col.count() == 4
