"""The store layer against a real embedded Chroma in a temp folder: typed records in, typed results out."""
from __future__ import annotations

from collections import Counter

import httpx
import numpy as np
import pytest
from chromadb.errors import InternalError, NotFoundError

from search.core import ids
from search.errors import QueryError, StoreError, StoreUnavailableError
from search.stores import catalogue as catalogue_module
from search.stores import thumbnails
from search.stores.base import Filter, ModelInfo, Record
from search.stores.catalogue import Catalogue
from search.stores.locking import write_lock
from search.stores.store import Store
from tests.fixtures.stores import unit

MODEL = ModelInfo("tiny-test-model", 8, True)


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
    queries = unit(vectors[:3] + 0.05)
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
    store.add(second, records[:1], {})  # the first image is in both collections
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


def test_the_catalogue_agrees_with_a_brute_force_count_through_adds_removes_a_sync_and_a_drop(store):
    rng = np.random.default_rng(1)
    first, second = store.open_or_create("first", MODEL), store.open_or_create("second", MODEL)

    def batch(start: int, count: int) -> list[Record]:
        return [Record(ids.content_id(f"r{i}".encode()), unit(rng.normal(size=(1, 8)))[0],
                       {"source": f"r/{i}", "taken": 1_000_000 + i * 1000} | ({"label": f"l{i % 5}"} if i % 7 else {}))
                for i in range(start, start + count)]

    def agrees(col) -> None:
        rows = col.scan_metadata()
        assert store.catalogue.state(col.key).count == len(rows) == col.count()
        assert store.catalogue.labels(col.key) == Counter(m.get("label") for _, m in rows)
        for where in (Filter(("l1", "l2")), Filter(exclude=("l0",)), Filter(taken_from=1_030_000, taken_until=1_090_000),
                      Filter(("l3",), taken_from=1_010_000)):
            assert store.catalogue.total(col.key, where) == sum(where.admits(m) for _, m in rows)
            assert store.catalogue.ids(col.key, where) == sorted(i for i, m in rows if where.admits(m))

    records = batch(0, 60)
    store.add(first, records, {r.id: b"jpeg" for r in records})
    store.add(second, records[:10], {})
    versions = [store.catalogue.state(first.key).version]
    agrees(first)
    store.remove(first, [r.id for r in records[:20]])  # a sync that removes 20 and adds 20: same count, new version
    fresh = batch(100, 20)
    store.add(first, fresh, {r.id: b"jpeg" for r in fresh})
    versions.append(store.catalogue.state(first.key).version)
    assert store.catalogue.state(first.key).count == 60 and versions[1] > versions[0]
    agrees(first)
    assert thumbnails.exists(store.folder, records[0].id) and not thumbnails.exists(store.folder, records[15].id)
    relabelled = [Record(r.id, r.vector, {**r.metadata, "label": "moved"}) for r in fresh[:5]]
    store.add(first, relabelled, {})  # the same ids again: labels move, the count does not
    agrees(first)
    store.drop("first")  # its thumbnails go, but those "second" still holds
    assert store.catalogue.state(first.key) is None
    assert thumbnails.ids(store.folder) == {r.id for r in records[:10]}
    agrees(second)


def test_a_store_from_before_the_catalogue_is_catalogued_once_and_swept(store, vectors):
    col = store.open_or_create("first", MODEL)
    records = [Record(r.id, r.vector, {**r.metadata, "label": "old", "thumbnail": thumbnails.relative(r.id)})
               for r in _records(vectors[:3])]
    for r in records[:2]:
        thumbnails.write(store.folder, r.id, b"jpeg")
    col.upsert(records)  # written as a version without the catalogue wrote: x2's thumbnail never landed
    thumbnails.write(store.folder, "e" * 32, b"orphan: its record never landed")
    store.catalogue.close()
    for made in store.folder.glob("catalogue.sqlite3*"):
        made.unlink()
    opened = Store.connect(store.folder)
    catalogue = opened.catalogue_for(opened.open("first"))  # takes the write lock: catalogues and sweeps once
    assert catalogue.state(col.key).count == 2 and catalogue.labels(col.key) == {"old": 2}
    assert sorted(thumbnails.ids(store.folder)) == sorted(r.id for r in records[:2])
    assert sorted(col.all_ids()) == sorted(r.id for r in records[:2])


def test_a_catalogue_of_the_previous_version_is_migrated_in_place_not_made_again(store, vectors):
    col = store.open_or_create("first", MODEL)
    store.add(col, _records(vectors[:5]), {})
    db = store.catalogue._db
    db.execute("DROP INDEX records_facts")  # as version 2 left it
    db.execute("PRAGMA user_version = 2")
    store.catalogue.close()
    reopened = Catalogue(store.folder)
    assert not reopened.fresh and reopened.state(col.key).count == 5  # kept: nothing to scan the backend for
    assert reopened._db.execute("SELECT name FROM sqlite_master WHERE name = 'records_facts'").fetchone()
    assert reopened._db.execute("PRAGMA user_version").fetchone()[0] == catalogue_module.SCHEMA_VERSION
    assert reopened.admitted(col.key, col.all_ids()[:3], Filter(exclude=("other",))) == set(col.all_ids()[:3])


def test_a_reader_that_cannot_take_the_lock_scans_for_itself_and_never_writes_the_catalogue(store, vectors):
    col = store.open_or_create("first", MODEL)
    col.upsert(_records(vectors[:4]))  # behind the catalogue's back (as another machine's writer to a server)
    with write_lock(store.folder):
        catalogue = store.catalogue_for(col)
        assert catalogue is not store.catalogue and catalogue.state(col.key).count == 4
        assert store.catalogue.state(col.key) is None
    assert store.catalogue_for(col) is store.catalogue and store.catalogue.state(col.key).count == 4


def test_a_store_with_loose_thumbnails_keeps_them_through_its_first_repair_which_packs_them(store, vectors):
    col = store.open_or_create("first", MODEL)
    records = [Record(r.id, r.vector, {**r.metadata, "thumbnail": thumbnails.relative(r.id)}) for r in _records(vectors[:4])]
    col.upsert(records)
    for r in records:  # as a store written before packs (and before the catalogue) holds them
        thumbnails.path(store.folder, r.id).parent.mkdir(parents=True, exist_ok=True)
        thumbnails.path(store.folder, r.id).write_bytes(r.id.encode())
    assert thumbnails.read(store.folder, records[0].id) == records[0].id.encode()
    assert Store.connect(store.folder).repair() == 0  # nothing lost, nothing orphaned
    assert not any(p.is_dir() for p in (store.folder / thumbnails.FOLDER).iterdir())  # packed, the loose files gone
    assert all(thumbnails.read(store.folder, r.id) == r.id.encode() for r in records) and col.count() == 4
