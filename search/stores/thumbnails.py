"""Thumbnails beside the store: JPEG bytes by image id, content-addressed, shared by every collection.

Layout: ``thumbnails/pack-NNNNNN.bin``, append-only files of thumbnails end to end (a new one past PACK_BYTES),
and ``thumbnails/index.sqlite``, one row per thumbnail (id -> pack, offset, length) and one per pack (its
committed end, its dead bytes). A million thumbnails are a handful of files, not a million; one is read with
one query and one ``os.pread``.

Why SQLite for the index: Python ships it; a transaction survives kill -9 whole or not at all; in WAL mode
readers (the web app) read while a writer (a build, an upload) appends, and a read-only disk is read with an
``immutable`` connection; and its write transaction (``BEGIN IMMEDIATE``) is the lock that lets one writer at
a time, of any process, append to or compact the packs.

Crash safety: a writer takes that lock, then repairs (each pack is cut back to its committed end, packs the
index does not know are deleted), appends at the committed end, fsyncs the pack, and only then commits the
rows with the pack's new end. A kill before the commit leaves dead bytes past a pack's end, which the next
writer cuts (or ``repair``, which the store runs once per process); a committed row always lies within bytes that were
on disk before it. Compaction (when over half a pack is dead) copies the live thumbnails into another pack
and repoints their rows in one transaction, then deletes the old pack; a kill in between leaves a pack nobody
names, which the next writer deletes. Pack numbers are never reused, so a reader holding an old row finds its
pack gone and asks again.

Loose files of older stores (``thumbnails/xx/<id>.jpg``) are read where the index lacks an id, and packed
(then deleted) by the first write or delete; records keep ``relative(id)`` as their "thumbnail" field, a
logical path that ``at`` maps back to the bytes.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from search.core.ids import image_id as checked_image_id
from search.core.ids import is_image_id

log = logging.getLogger(__name__)
FOLDER = "thumbnails"
INDEX = "index.sqlite"
PACK_BYTES = 512 * 1024**2  # a pack past this takes no more; compacting one copies at most half of it
BUSY_S = 600.0  # how long a writer waits for another's transaction (a compaction copies up to PACK_BYTES / 2)
CHUNK = 500  # ids per query (SQLite's limit on parameters) and loose files per migration transaction
_PACK = re.compile(r"pack-(\d{6,})\.bin")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (pack INTEGER PRIMARY KEY AUTOINCREMENT, end INTEGER NOT NULL, dead INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS thumbs (id TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
                                   length INTEGER NOT NULL) WITHOUT ROWID;
"""  # no index by pack: only a compaction asks by pack, and a scan of a million rows is short beside its copying


def path(store_folder: Path, image_id: str) -> Path:
    """The logical path of an image's thumbnail (a loose file in older stores); only a well-formed id makes one."""
    image_id = checked_image_id(image_id)
    return Path(store_folder) / FOLDER / image_id[:2] / f"{image_id}.jpg"


def relative(image_id: str) -> str:
    """The thumbnail's logical path relative to the store folder, as records keep it."""
    return path(Path("."), image_id).as_posix()


def id_of(logical: str | Path) -> str | None:
    """The image id a logical path (``path`` or ``relative``) names, or None for any other path."""
    logical = Path(logical)
    image_id = logical.name.removesuffix(".jpg")
    named = is_image_id(image_id) and logical.suffix == ".jpg" and logical.parent.name == image_id[:2]
    return image_id if named and logical.parent.parent.name == FOLDER else None


def at(logical: str | Path) -> bytes | None:
    """The bytes of the thumbnail a logical path (``path``) names, or None for any other path."""
    image_id = id_of(logical)
    # The store folder is the one holding thumbnails/<xx>/ (``id_of`` checked the two levels)
    return read(Path(logical).parent.parent.parent, image_id) if image_id else None


def read(store_folder: Path, image_id: str) -> bytes | None:
    """An image's thumbnail, or None where the store has none."""
    image_id = checked_image_id(image_id)
    for _ in range(3):  # a compaction or a migration may move it between the query and the read
        place = _rows(store_folder, "SELECT pack, offset, length FROM thumbs WHERE id = ?", (image_id,))
        with contextlib.suppress(FileNotFoundError):
            if not place:
                return path(store_folder, image_id).read_bytes()
            pack, offset, length = place[0]
            fd = os.open(_pack_path(store_folder, pack), os.O_RDONLY)
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
            if len(data) == length:
                return data
    return None


def exists(store_folder: Path, image_id: str) -> bool:
    """Whether the store holds an image's thumbnail."""
    loose = path(store_folder, image_id).is_file()  # looked at first: a migration packs it, then deletes it
    return loose or bool(_rows(store_folder, "SELECT 1 FROM thumbs WHERE id = ?", (image_id,)))


def ids(store_folder: Path) -> set[str]:
    """The ids of every thumbnail the store holds (packed, or loose in an older store)."""
    loose = set(_loose(Path(store_folder) / FOLDER))  # listed first: a migration packs them, then deletes them
    return loose | {i for (i,) in _rows(store_folder, "SELECT id FROM thumbs")}


def write(store_folder: Path, image_id: str, data: bytes) -> bool:
    """Write a thumbnail, once; whether this call made it (False: it was there already)."""
    return bool(write_many(store_folder, {image_id: data}))


def write_many(store_folder: Path, thumbs: Mapping[str, bytes]) -> list[str]:
    """Write thumbnails (JPEG bytes by id) in one transaction; the ids this call made (the others were there)."""
    thumbs = {checked_image_id(i): data for i, data in thumbs.items()}
    if not thumbs:
        return []
    _migrate(store_folder)
    with _writing(store_folder) as db:
        held = _held(db, list(thumbs))
        made = [i for i in thumbs if i not in held]
        _append(db, Path(store_folder) / FOLDER, ((i, thumbs[i]) for i in made))
    return made


def delete(store_folder: Path, image_id: str) -> None:
    """Delete a thumbnail, if it is there."""
    delete_many(store_folder, [image_id])


def delete_many(store_folder: Path, image_ids: Collection[str]) -> None:
    """Delete thumbnails (those there) in one transaction; a pack left over half dead is compacted."""
    image_ids = [checked_image_id(i) for i in image_ids]
    if not image_ids:
        return
    _migrate(store_folder)
    with _writing(store_folder) as db:
        for chunk in _chunks(image_ids):
            marks = ",".join("?" * len(chunk))
            dead = db.execute(f"SELECT SUM(length), pack FROM thumbs WHERE id IN ({marks}) GROUP BY pack", chunk).fetchall()
            db.executemany("UPDATE packs SET dead = dead + ? WHERE pack = ?", dead)
            db.execute(f"DELETE FROM thumbs WHERE id IN ({marks})", chunk)
        wasted = _wasted(db)
    _compact_each(store_folder, wasted)


def repair(store_folder: Path) -> None:
    """Make the packs agree with the index now (every write does so first): loose files packed, dead tails a
    killed writer left cut, packs it never committed deleted, packs a kill left over half dead compacted."""
    _migrate(store_folder)
    with _writing(store_folder) as db:
        wasted = _wasted(db)
    _compact_each(store_folder, wasted)


def _wasted(db: sqlite3.Connection) -> list[int]:
    return [pack for (pack,) in db.execute("SELECT pack FROM packs WHERE dead * 2 > end")]


def _compact_each(store_folder: Path, packs: list[int]) -> None:
    for pack in packs:
        try:
            _compact(store_folder, pack)
        except OSError as exc:  # no room to copy into: the deletes stand, and the next one tries again
            log.warning("thumbnail pack %d of %s not compacted: %s", pack, store_folder, exc)


def _compact(store_folder: Path, pack: int) -> None:
    """Copy a pack's live thumbnails into another pack, then delete it (its dead bytes are the space reclaimed)."""
    root = Path(store_folder) / FOLDER
    with _writing(store_folder) as db:
        if not db.execute("SELECT 1 FROM packs WHERE pack = ? AND dead * 2 > end", (pack,)).fetchone():
            return  # another writer compacted it first
        live = db.execute("SELECT id, offset, length FROM thumbs WHERE pack = ? ORDER BY offset", (pack,)).fetchall()
        fd = os.open(_pack_path(store_folder, pack), os.O_RDONLY)
        try:
            _append(db, root, ((i, os.pread(fd, length, offset)) for i, offset, length in live), avoid=pack)
        finally:
            os.close(fd)
        db.execute("DELETE FROM packs WHERE pack = ?", (pack,))
    # Committed: no row names the pack, and its number is never given again, so no writer can have made it anew.
    _pack_path(store_folder, pack).unlink(missing_ok=True)
    log.info("compacted thumbnail pack %d of %s (%d live thumbnails kept)", pack, store_folder, len(live))


@contextlib.contextmanager
def _writing(store_folder: Path) -> Iterator[sqlite3.Connection]:
    """The index in a write transaction (the writers' lock), the packs repaired; committed if the block ends well."""
    root = Path(store_folder) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / INDEX, timeout=BUSY_S, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # the packs are fsynced; a commit lost to power loss names nothing
        db.executescript(_SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        try:
            _repair(db, root)
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:  # a full or read-only disk, as the OSError the store's guard names
        code = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EROFS}.get(exc.sqlite_errorcode & 0xFF)
        if code is None:
            raise
        raise OSError(code, str(exc)) from exc
    finally:
        db.close()


def _repair(db: sqlite3.Connection, root: Path) -> None:
    """Make the packs agree with the committed index: dead bytes a killed writer appended are cut, packs it
    made (or compacted away) and never committed are deleted, and rows past a pack's bytes (a damaged disk) go."""
    ends = dict(db.execute("SELECT pack, end FROM packs").fetchall())
    sizes = {}
    for entry in os.scandir(root):
        number = _number(entry.name)
        if number is None:
            continue
        if number not in ends:
            os.unlink(entry.path)
            continue
        sizes[number] = entry.stat().st_size
        if sizes[number] > ends[number]:
            os.truncate(entry.path, ends[number])
    for pack, end in ends.items():
        if sizes.get(pack, 0) < end:
            log.warning("thumbnail pack %d of %s is shorter than its index says; its lost thumbnails are forgotten",
                        pack, root)
            db.execute("DELETE FROM thumbs WHERE pack = ? AND offset + length > ?", (pack, sizes.get(pack, 0)))
            kept, live = db.execute("SELECT COALESCE(MAX(offset + length), 0), COALESCE(SUM(length), 0) FROM thumbs "
                                    "WHERE pack = ?", (pack,)).fetchone()
            db.execute("UPDATE packs SET end = ?, dead = ? WHERE pack = ?", (kept, kept - live, pack))
            if pack in sizes:
                os.truncate(root / _name(pack), kept)


def _append(db: sqlite3.Connection, root: Path, items: Iterable[tuple[str, bytes]], avoid: int | None = None) -> None:
    """Append thumbnails at the committed end of the last pack (a new one once it is full, or where it is
    ``avoid``), fsync, and write their rows and the packs' ends; the caller's commit makes them real."""
    last = db.execute("SELECT pack, end FROM packs ORDER BY pack DESC LIMIT 1").fetchone()
    pack, end = last if last and last[0] != avoid else (None, 0)
    rows: list[tuple[str, int, int, int]] = []
    files: dict[int, int] = {}
    try:
        for image_id, data in items:
            if pack is None or (end and end + len(data) > PACK_BYTES):
                if pack is not None:
                    db.execute("UPDATE packs SET end = ? WHERE pack = ?", (end, pack))
                pack, end = _new_pack(db, root)
            if pack not in files:
                files[pack] = os.open(root / _name(pack), os.O_WRONLY | os.O_CREAT, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.pwrite(files[pack], view, end + len(data) - len(view)):]
            rows.append((image_id, pack, end, len(data)))
            end += len(data)
        if pack is not None:
            db.execute("UPDATE packs SET end = ? WHERE pack = ?", (end, pack))
        for fd in files.values():
            os.fsync(fd)
    finally:
        for fd in files.values():
            os.close(fd)
    db.executemany("INSERT OR REPLACE INTO thumbs (id, pack, offset, length) VALUES (?, ?, ?, ?)", rows)


def _new_pack(db: sqlite3.Connection, root: Path) -> tuple[int, int]:
    pack = db.execute("INSERT INTO packs (end, dead) VALUES (0, 0)").lastrowid
    assert pack is not None
    os.close(os.open(root / _name(pack), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    folder = os.open(root, os.O_RDONLY)  # the new name survives a power loss as the bytes written to it do
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return pack, 0


def _held(db: sqlite3.Connection, image_ids: list[str]) -> set[str]:
    held: set[str] = set()
    for chunk in _chunks(image_ids):
        held.update(i for (i,) in db.execute(f"SELECT id FROM thumbs WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    return held


def _migrate(store_folder: Path) -> None:
    """Pack the loose files an older store wrote, a chunk per transaction, deleting each chunk once committed."""
    root = Path(store_folder) / FOLDER
    loose = _loose(root)
    for chunk in _chunks(sorted(loose)):
        with _writing(store_folder) as db:
            held = _held(db, chunk)
            _append(db, root, ((i, data) for i in chunk if i not in held and (data := _bytes(loose[i])) is not None))
        for image_id in chunk:
            loose[image_id].unlink(missing_ok=True)
    if loose:
        log.info("packed %d loose thumbnails of %s", len(loose), store_folder)
    for sub in _subfolders(root):  # what is left: temporary files of killed writers
        for entry in os.scandir(sub):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        with contextlib.suppress(OSError):
            os.rmdir(sub)


def _loose(root: Path) -> dict[str, Path]:
    """The loose thumbnails of an older store, by id."""
    return {entry.name.removesuffix(".jpg"): Path(entry.path) for sub in _subfolders(root)
            for entry in os.scandir(sub) if entry.name.endswith(".jpg") and is_image_id(entry.name[:-4])
            and entry.name.startswith(sub.name)}


def _subfolders(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and len(e.name) == 2]
    except OSError:  # no thumbnails yet
        return []


def _bytes(file: Path) -> bytes | None:
    try:
        return file.read_bytes()
    except FileNotFoundError:  # another writer packed it first
        return None


def _rows(store_folder: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """A read of the index (none yet: no rows), read-only; on a read-only disk, as an immutable file."""
    index = Path(os.path.abspath(store_folder)) / FOLDER / INDEX
    if not index.is_file():
        return []
    try:
        return _query(f"{index.as_uri()}?mode=ro", sql, parameters)
    except sqlite3.OperationalError:
        if os.access(index.parent, os.W_OK):
            raise
        return _query(f"{index.as_uri()}?immutable=1", sql, parameters)  # no -shm file can be made there


def _query(uri: str, sql: str, parameters: tuple) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=BUSY_S)) as db:
        try:
            return db.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):  # the first writer has made the file, not yet its tables
                return []
            raise


def _chunks(items: list[str]) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, CHUNK)):
        yield chunk


def _pack_path(store_folder: Path, pack: int) -> Path:
    return Path(store_folder) / FOLDER / _name(pack)


def _name(pack: int) -> str:
    return f"pack-{pack:06d}.bin"


def _number(name: str) -> int | None:
    match = _PACK.fullmatch(name)
    return int(match.group(1)) if match else None
