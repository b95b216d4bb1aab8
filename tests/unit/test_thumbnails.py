"""Packed thumbnails: bytes by id in a few pack files and a SQLite index, read in one seek, compacted, migrated
from loose files, read on a read-only disk, and agreeing with their index after any kill -9."""
from __future__ import annotations

import errno
import os
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from search.core.ids import content_id
from search.errors import QueryError
from search.stores import thumbnails


def _thumbs(count: int, seed: int, size: int = 3000) -> dict[str, bytes]:
    """Distinct byte strings keyed by their content id, so any read can be checked against its id."""
    rng = random.Random(seed)
    data = [rng.randbytes(rng.randint(size // 2, size)) for _ in range(count)]
    return {content_id(d): d for d in data}


def _packs(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (folder / thumbnails.FOLDER).glob("pack-*.bin")}


def test_written_thumbnails_read_back_once_each_and_go_when_deleted(tmp_path):
    thumbs = _thumbs(50, seed=1)
    first, rest = dict(list(thumbs.items())[:10]), dict(list(thumbs.items())[10:])
    assert thumbnails.write_many(tmp_path, first) == list(first)
    assert thumbnails.write_many(tmp_path, thumbs) == list(rest)  # those there already are not written again
    one = next(iter(thumbs))
    assert not thumbnails.write(tmp_path, one, b"other bytes") and thumbnails.read(tmp_path, one) == thumbs[one]
    assert all(thumbnails.read(tmp_path, i) == d for i, d in thumbs.items())
    assert thumbnails.ids(tmp_path) == set(thumbs) and thumbnails.exists(tmp_path, one)
    assert list(_packs(tmp_path)) == ["pack-000001.bin"]  # 50 thumbnails, one file
    thumbnails.delete(tmp_path, one)
    thumbnails.delete(tmp_path, one)  # gone already: nothing to do
    assert thumbnails.read(tmp_path, one) is None and not thumbnails.exists(tmp_path, one)
    assert thumbnails.ids(tmp_path) == set(thumbs) - {one}
    assert thumbnails.read(tmp_path / "no-store", one) is None and thumbnails.ids(tmp_path / "no-store") == set()


def test_a_reader_that_comes_between_the_index_file_and_its_tables_sees_no_thumbnail(tmp_path):
    (tmp_path / thumbnails.FOLDER).mkdir()
    sqlite3.connect(tmp_path / thumbnails.FOLDER / thumbnails.INDEX).execute("PRAGMA journal_mode=WAL").connection.close()
    assert thumbnails.ids(tmp_path) == set() and thumbnails.read(tmp_path, "a" * 32) is None
    assert not thumbnails.exists(tmp_path, "a" * 32)


def test_ids_from_outside_are_checked_before_any_file_is_touched(tmp_path):
    calls = (thumbnails.read, thumbnails.exists, thumbnails.delete, lambda folder, bad: thumbnails.write(folder, bad, b"x"),
             lambda folder, bad: thumbnails.write_many(folder, {bad: b"x"}))
    for bad in ("../victim", "A" * 32, "a" * 31, "a" * 32 + "\x00", "/etc/passwd"):
        for call in calls:
            with pytest.raises(QueryError, match="not an image id"):
                call(tmp_path, bad)
    assert not (tmp_path / thumbnails.FOLDER).exists()


def test_a_read_is_one_open_of_its_pack_and_one_pread(tmp_path, monkeypatch):
    thumbs = _thumbs(20, seed=2)
    thumbnails.write_many(tmp_path, thumbs)
    opened, preads = [], []
    real_open, real_pread = os.open, os.pread
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    monkeypatch.setattr(os, "pread", lambda *a: preads.append(a[1:]) or real_pread(*a))
    image_id = list(thumbs)[7]
    assert thumbnails.read(tmp_path, image_id) == thumbs[image_id]
    assert opened == ["pack-000001.bin"] and preads == [(len(thumbs[image_id]), sum(map(len, list(thumbs.values())[:7])))]


def test_the_logical_path_records_keep_maps_to_the_bytes(tmp_path):
    image_id, data = next(iter(_thumbs(1, seed=3).items()))
    thumbnails.write(tmp_path, image_id, data)
    logical = tmp_path / thumbnails.relative(image_id)
    assert not logical.exists() and thumbnails.at(logical) == data and thumbnails.at(str(logical)) == data
    for other in (tmp_path / "photo.jpg", tmp_path / "thumbnails" / f"{image_id}.jpg",
                  tmp_path / "thumbnails" / "ff" / f"{image_id}.jpg", tmp_path / "x" / image_id[:2] / f"{image_id}.jpg"):
        assert thumbnails.at(other) is None


def test_a_batch_past_a_pack_s_limit_starts_another_and_compaction_reclaims_dead_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "PACK_BYTES", 60_000)
    thumbs = _thumbs(120, seed=4)
    thumbnails.write_many(tmp_path, thumbs)
    packs = _packs(tmp_path)
    assert len(packs) >= 4 and max(packs.values()) <= 60_000
    gone = [i for n, i in enumerate(thumbs) if n % 3]  # two thirds of every pack
    thumbnails.delete_many(tmp_path, gone)
    kept = {i: d for i, d in thumbs.items() if i not in gone}
    assert all(thumbnails.read(tmp_path, i) == d for i, d in kept.items())
    assert thumbnails.ids(tmp_path) == set(kept)
    _check(tmp_path)  # at most half of any pack is dead now: a third of what was there is left, in at most twice that
    assert sum(_packs(tmp_path).values()) <= 2 * sum(map(len, kept.values())) < sum(packs.values())
    assert "pack-000001.bin" not in _packs(tmp_path)  # compacted away, its number never used again
    thumbnails.delete_many(tmp_path, list(kept))
    assert _packs(tmp_path) == {} and thumbnails.ids(tmp_path) == set()


def test_less_than_half_dead_is_left_as_it_is(tmp_path):
    thumbs = _thumbs(10, seed=5)
    thumbnails.write_many(tmp_path, thumbs)
    before = _packs(tmp_path)
    thumbnails.delete_many(tmp_path, list(thumbs)[:4])
    assert _packs(tmp_path) == before


def test_a_full_disk_is_the_os_error_the_store_names_and_a_compaction_without_room_waits(tmp_path, monkeypatch):
    thumbs = _thumbs(10, seed=14)
    thumbnails.write_many(tmp_path, thumbs)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL

    def sqlite_full(*args):
        raise full

    def no_room(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(thumbnails, "_repair", sqlite_full)
    with pytest.raises(OSError) as raised:
        thumbnails.write_many(tmp_path, _thumbs(1, seed=15))
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()
    real_compact = thumbnails._compact
    monkeypatch.setattr(thumbnails, "_compact", no_room)
    thumbnails.delete_many(tmp_path, list(thumbs)[:8])  # the deletes stand though the pack could not be compacted
    assert thumbnails.ids(tmp_path) == set(list(thumbs)[8:]) and len(_packs(tmp_path)) == 1
    monkeypatch.setattr(thumbnails, "_compact", real_compact)
    thumbnails.delete_many(tmp_path, list(thumbs)[8:9])  # room again: the next delete compacts
    _check(tmp_path)
    assert sum(_packs(tmp_path).values()) == len(thumbs[list(thumbs)[9]])


def test_an_older_store_s_loose_files_are_read_then_packed_by_the_first_write(tmp_path):
    thumbs = _thumbs(30, seed=6)
    for image_id, data in thumbs.items():  # the layout before packs
        thumbnails.path(tmp_path, image_id).parent.mkdir(parents=True, exist_ok=True)
        thumbnails.path(tmp_path, image_id).write_bytes(data)
    leftover = thumbnails.path(tmp_path, next(iter(thumbs))).with_name("tmpab12.tmp")  # a killed writer's
    leftover.write_bytes(b"partial")
    assert all(thumbnails.read(tmp_path, i) == d for i, d in thumbs.items())
    assert thumbnails.ids(tmp_path) == set(thumbs) and all(thumbnails.exists(tmp_path, i) for i in thumbs)
    new = _thumbs(3, seed=7)
    assert thumbnails.write_many(tmp_path, {**new, next(iter(thumbs)): b"other"}) == list(new)
    assert [p.name for p in (tmp_path / thumbnails.FOLDER).iterdir() if p.is_dir()] == []  # no loose file left
    assert all(thumbnails.read(tmp_path, i) == d for i, d in {**thumbs, **new}.items())
    assert thumbnails.ids(tmp_path) == set(thumbs) | set(new)


def test_a_read_only_disk_is_read_in_place(tmp_path):
    store, mounted = tmp_path / "store", tmp_path / "read-only"
    thumbs = _thumbs(20, seed=8)
    thumbnails.write_many(store, thumbs)
    mounted.mkdir()
    if subprocess.run(["mount", "--bind", str(store), str(mounted)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a file system for the test")
    try:
        assert not subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], capture_output=True).returncode
        assert all(thumbnails.read(mounted, i) == d for i, d in thumbs.items())
        assert thumbnails.ids(mounted) == set(thumbs) and thumbnails.exists(mounted, next(iter(thumbs)))
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_a_writer_repairs_what_a_killed_one_left(tmp_path):
    thumbs = _thumbs(10, seed=9)
    thumbnails.write_many(tmp_path, thumbs)
    pack = tmp_path / thumbnails.FOLDER / "pack-000001.bin"
    committed = pack.stat().st_size
    with open(pack, "ab") as out:  # bytes appended, the commit never made
        out.write(b"half a thumbnail")
    (tmp_path / thumbnails.FOLDER / "pack-000007.bin").write_bytes(b"a pack made, never committed")
    assert all(thumbnails.read(tmp_path, i) == d for i, d in thumbs.items())  # readers never see them
    thumbnails.repair(tmp_path)
    assert _packs(tmp_path) == {"pack-000001.bin": committed}
    with open(pack, "ab") as out:  # killed again
        out.write(b"half a thumbnail")
    new = _thumbs(1, seed=10)
    thumbnails.write_many(tmp_path, new)  # a write repairs first
    assert _packs(tmp_path) == {"pack-000001.bin": committed + len(next(iter(new.values())))}
    assert all(thumbnails.read(tmp_path, i) == d for i, d in {**thumbs, **new}.items())


def test_rows_past_a_damaged_pack_s_end_are_forgotten(tmp_path):
    thumbs = _thumbs(10, seed=11)
    thumbnails.write_many(tmp_path, thumbs)
    pack = tmp_path / thumbnails.FOLDER / "pack-000001.bin"
    os.truncate(pack, sum(map(len, list(thumbs.values())[:6])) + 5)  # a disk that lost the end of a file
    thumbnails.write_many(tmp_path, _thumbs(1, seed=12))
    assert set(list(thumbs)[:6]) <= thumbnails.ids(tmp_path) and not set(list(thumbs)[6:]) & thumbnails.ids(tmp_path)
    _check(tmp_path)
    assert sum(_packs(tmp_path).values()) == sum(len(thumbnails.read(tmp_path, i) or b"") for i in thumbnails.ids(tmp_path))




def _check(folder: Path, settled: bool = True) -> None:
    """Every row reads back the bytes its id is the hash of, none lies past its pack's end, and each pack's dead
    bytes are counted exactly; ``settled`` (not killed between a delete and its compaction): none is over half
    dead."""
    index = sqlite3.connect(folder / thumbnails.FOLDER / thumbnails.INDEX)
    try:
        rows = index.execute("SELECT id, pack, offset, length FROM thumbs").fetchall()
        packs = index.execute("SELECT pack, end, dead FROM packs").fetchall()
    finally:
        index.close()
    sizes = {int(name[5:11]): size for name, size in _packs(folder).items()}
    assert all(pack in sizes and offset + length <= sizes[pack] for _, pack, offset, length in rows)
    assert all(content_id(thumbnails.read(folder, i) or b"") == i for i, *_ in rows)
    for pack, end, dead in packs:
        assert dead == end - sum(length for _, p, _, length in rows if p == pack) and (dead * 2 <= end or not settled)


def _ends(folder: Path) -> dict[int, int]:
    index = sqlite3.connect(folder / thumbnails.FOLDER / thumbnails.INDEX)
    try:
        return dict(index.execute("SELECT pack, end FROM packs").fetchall())
    finally:
        index.close()
