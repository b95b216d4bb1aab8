"""The store's catalogue: what filters, totals and the page read of every record, kept as records change.

One SQLite database in the store folder (``catalogue.sqlite3``) holds, per collection, each record's id, label,
capture time and vector (float16: 1 KB at 512-d), how many records carry each label, and a version that every
write changes; beside them, a journal of the writes under way. ``Store`` writes it in step with the backend, so
nothing on the start path or on a query has to scan a collection: labels and their counts are one small read, a
date range is counted on an index, a cache is keyed by the version (a sync that removes N and adds N changes it,
where a count would not), and a filter that admits few records ranks them exactly from their vectors here
(``vectors``), where the backend's own filtered search costs hundreds of milliseconds and grows with the
collection.

Collections are keyed by the backend's own identity (``Collection.key``), not by name, so a switch or a
rollback, which only renames collections, leaves every row right.

The journal is what makes a kill -9 cheap to repair: a write names its ids (and its process) here before it
touches thumbnails, vectors or words, and clears them in the same transaction that brings the catalogue up
to date. Whoever next takes the store's write lock settles just those ids (``Store.repair``) instead of
listing every thumbnail and scanning every collection.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from search.core.record import LABEL, TAKEN
from search.stores.base import Filter, Record, sqlite_database

FILE = "catalogue.sqlite3"
# A catalogue of another version is made again from the backend (it holds nothing else), unless MIGRATIONS
# brings it up to date. 2: records is a rowid table: a WITHOUT ROWID one keeps whole rows in its B-tree pages,
# 4.7 KB a record for a 1 KB vector. 3: records_facts, so that admitting a query's candidates reads a compact
# index instead of their 1 KB rows (2,000 candidates at 300k, pages not cached: 90-110 ms against 0.3-1.6 s).
SCHEMA_VERSION = 3
_FACTS = "CREATE INDEX IF NOT EXISTS records_facts ON records(cid, id, label, taken)"
MIGRATIONS = {2: [_FACTS]}  # version: the statements that bring it to the next
_TOKEN = secrets.token_hex(8)  # tells this process from an earlier one that had the same process id
_CHUNK = 500  # ids per IN (...): well under SQLite's limit on bound variables
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS collections(cid INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
                                       version INTEGER NOT NULL DEFAULT 0, count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS records(cid INTEGER NOT NULL, id TEXT NOT NULL, label TEXT, taken INTEGER, vector BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS records_key ON records(cid, id);
CREATE INDEX IF NOT EXISTS records_label ON records(cid, label, id);
CREATE INDEX IF NOT EXISTS records_taken ON records(cid, taken);
CREATE INDEX IF NOT EXISTS records_id ON records(id);
{_FACTS};
CREATE TABLE IF NOT EXISTS labels(cid INTEGER NOT NULL, label TEXT NOT NULL, n INTEGER NOT NULL,
                                  PRIMARY KEY (cid, label)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal(key TEXT NOT NULL, id TEXT NOT NULL, writer TEXT NOT NULL,
                                   PRIMARY KEY (key, id, writer)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class State:
    """A collection as the catalogue knows it: how many records, and a number every write changes."""

    count: int
    version: int


@dataclass(frozen=True)
class Pending:
    """Ids a write named in the journal and never cleared: its process died, or its clean-up failed."""

    key: str
    ids: list[str]


def row(record: Record) -> tuple[str, str | None, int | None, bytes]:
    """What the catalogue keeps of a record: its id, label and capture time (seconds) where it has them, and its
    vector as float16 bytes."""
    label, taken = record.metadata.get(LABEL), record.metadata.get(TAKEN)
    return (record.id, label if isinstance(label, str) else None,
            taken if isinstance(taken, int) and not isinstance(taken, bool) else None,
            np.asarray(record.vector, np.float16).tobytes())


class Catalogue:
    """A store's catalogue (``FILE`` in its folder; in memory where the folder cannot be written)."""

    def __init__(self, folder: Path | None):
        self._db = sqlite_database(None if folder is None else folder / FILE)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it consistent; the journal repairs the rest
            self._db.execute("BEGIN IMMEDIATE")
            # Made now, or by a version MIGRATIONS cannot bring up to date: the store's records are not in it yet
            # (``Store`` fills it)
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            while version in MIGRATIONS:
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            self.fresh = version != SCHEMA_VERSION
            if self.fresh:
                for (table,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    self._db.execute(f"DROP TABLE {table}")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")

    # --- Reads ------------------------------------------------------------------------------------------

    def state(self, key: str) -> State | None:
        """The collection's count and version; None where the catalogue has never held it."""
        with self._lock:
            found = self._db.execute("SELECT count, version FROM collections WHERE key = ?", (key,)).fetchone()
        return State(int(found[0]), int(found[1])) if found else None

    def labels(self, key: str) -> Counter[str | None]:
        """How many records carry each label (None: those without one)."""
        with self._lock:
            cid = self._cid(key)
            if cid is None:
                return Counter()
            counts: Counter[str | None] = Counter(dict(self._db.execute(
                "SELECT label, n FROM labels WHERE cid = ?", (cid,)).fetchall()))
            total = int(self._db.execute("SELECT count FROM collections WHERE cid = ?", (cid,)).fetchone()[0])
        if total > sum(counts.values()):
            counts[None] = total - sum(counts.values())
        return counts

    def total(self, key: str, where: Filter) -> int:
        """How many records ``where`` admits."""
        if where.taken_from is None and where.taken_until is None:
            return sum(n for label, n in self.labels(key).items() if where.passes(label, None))
        sql, args = _filtered("count(*)", where)
        with self._lock:
            cid = self._cid(key)
            return 0 if cid is None else int(self._db.execute(sql, (cid, *args)).fetchone()[0])

    def ids(self, key: str, where: Filter | None = None) -> list[str]:
        """The ids ``where`` admits (all of them without one), sorted."""
        sql, args = _filtered("id", where or Filter())
        with self._lock:
            cid = self._cid(key)
            return [] if cid is None else [i for (i,) in self._db.execute(sql + " ORDER BY id", (cid, *args))]

    def vectors(self, key: str, where: Filter | None = None) -> tuple[list[str], np.ndarray]:
        """The ids ``where`` admits (all without one), in the order they were written, and their vectors (float32
        rows, as stored in float16)."""
        sql, args = _filtered("rowid", where or Filter())
        found: list[tuple[str, bytes]] = []
        with self._lock:
            cid = self._cid(key)
            # Rows read in rowid order, not the filter index's: pages in file order, 2.6x faster at 27k of 300k
            rows = [] if cid is None else sorted(r for (r,) in self._db.execute(sql, (cid, *args)))
            for part in _chunks(rows):
                found += self._db.execute(f"SELECT id, vector FROM records WHERE rowid IN ({','.join('?' * len(part))}) "
                                          "ORDER BY rowid", part).fetchall()
        if not found:
            return [], np.zeros((0, 0), np.float32)
        matrix = np.frombuffer(b"".join(v for _, v in found), np.float16).reshape(len(found), -1)
        return [i for i, _ in found], matrix.astype(np.float32)

    def admitted(self, key: str, ids: Sequence[str], where: Filter) -> set[str]:
        """Those of ``ids`` that the collection holds and ``where`` admits."""
        return {i for i, label, taken in self._facts(key, ids) if where.passes(label, taken)}

    def taken(self, key: str, ids: Sequence[str]) -> dict[str, int | None]:
        """The capture time (seconds; None where unknown) of those of ``ids`` that the collection holds."""
        return {i: taken for i, _, taken in self._facts(key, ids)}

    def _facts(self, key: str, ids: Sequence[str]) -> list[tuple[str, str | None, int | None]]:
        """(id, label, taken) of those of ``ids`` that the collection holds."""
        out: list[tuple[str, str | None, int | None]] = []
        with self._lock:
            cid = self._cid(key)
            for part in _chunks(ids) if cid is not None else ():
                # By id, then the filter: left to itself SQLite walks the filter's index (0.8 s for 5,000 of 300k)
                out += self._db.execute(f"SELECT id, label, taken FROM records INDEXED BY records_facts WHERE cid = ? "
                                        f"AND id IN ({','.join('?' * len(part))})", (cid, *part)).fetchall()
        return out

    def vectors_of(self, key: str, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Those of ``ids`` the collection holds, in their order, and their vectors (float32 rows)."""
        found: dict[str, bytes] = {}
        with self._lock:
            cid = self._cid(key)
            for part in _chunks(ids) if cid is not None else ():
                found.update(self._db.execute(f"SELECT id, vector FROM records WHERE cid = ? AND id IN "
                                              f"({','.join('?' * len(part))})", (cid, *part)).fetchall())
        held = [i for i in ids if i in found]
        if not held:
            return [], np.zeros((0, 0), np.float32)
        return held, np.frombuffer(b"".join(found[i] for i in held), np.float16).reshape(len(held), -1).astype(np.float32)

    def first_of(self, key: str, labels: Sequence[str]) -> dict[str, str]:
        """The first id (in sorted order) of each of ``labels`` that the collection holds."""
        out: dict[str, str] = {}
        with self._lock:
            cid = self._cid(key)
            for label in labels if cid is not None else ():
                found = self._db.execute("SELECT min(id) FROM records WHERE cid = ? AND label = ?", (cid, label)).fetchone()
                if found and found[0]:
                    out[label] = found[0]
        return out

    def first_ids(self, key: str, n: int) -> list[str]:
        """The collection's first ``n`` ids, in sorted order."""
        with self._lock:
            cid = self._cid(key)
            return [] if cid is None else [i for (i,) in self._db.execute(
                "SELECT id FROM records WHERE cid = ? ORDER BY id LIMIT ?", (cid, n))]

    def held_elsewhere(self, key: str, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that another collection than ``key``'s holds."""
        out: set[str] = set()
        with self._lock:
            cid = self._cid(key)
            for part in _chunks(ids):
                marks = ",".join("?" * len(part))
                out.update(i for (i,) in self._db.execute(
                    f"SELECT DISTINCT id FROM records WHERE id IN ({marks}) AND cid IS NOT ?", (*part, cid)))
        return out

    def keys(self) -> set[str]:
        """The collections the catalogue holds, by key."""
        with self._lock:
            return {k for (k,) in self._db.execute("SELECT key FROM collections")}

    def in_flight(self, key: str) -> bool:
        """Whether a live writer has named ids of the collection in the journal (its count may be ahead of ours)."""
        with self._lock:
            writers = {w for (w,) in self._db.execute("SELECT DISTINCT writer FROM journal WHERE key = ?", (key,))}
        return any(_alive(w) for w in writers)

    def pending(self) -> list[Pending]:
        """The journal's entries left by processes that are gone (a live writer's are its own business)."""
        with self._lock:
            rows = self._db.execute("SELECT key, id, writer FROM journal ORDER BY key, id").fetchall()
        by_key: dict[str, list[str]] = {}
        for key, image_id, writer in rows:
            if not _alive(writer):
                by_key.setdefault(key, []).append(image_id)
        return [Pending(key, ids) for key, ids in by_key.items()]

    # --- Writes -----------------------------------------------------------------------------------------

    def begin(self, key: str, ids: Sequence[str]) -> None:
        """Name the ids a write is about to change, before it touches anything (the journal)."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO journal(key, id, writer) VALUES (?, ?, ?)",
                                 [(key, i, _writer()) for i in ids])

    def settle(self, key: str, held: Iterable[Record], gone: Iterable[str], *, pending: bool = False) -> None:
        """Make the catalogue say what the collection now holds of the ids a write named: ``held`` are there
        as given, ``gone`` are not; clear them from the journal (this process's entries, or with ``pending``
        anyone's: a dead writer's) and change the version, in one transaction."""
        rows, gone = [row(r) for r in held], list(gone)
        with self._transaction():
            cid = self._cid_made(key)
            before = self._labels_of(cid, [r[0] for r in rows] + gone)
            self._db.executemany("INSERT OR REPLACE INTO records(cid, id, label, taken, vector) VALUES (?, ?, ?, ?, ?)",
                                 [(cid, *r) for r in rows])
            for part in _chunks(gone):
                self._db.execute(f"DELETE FROM records WHERE cid = ? AND id IN ({','.join('?' * len(part))})", (cid, *part))
            delta: Counter[str | None] = Counter(r[1] for r in rows)
            delta.subtract(before.values())
            self._count_labels(cid, delta)
            added = len(rows) - sum(1 for r in rows if r[0] in before) - sum(1 for i in gone if i in before)
            self._db.execute("UPDATE collections SET count = count + ?, version = version + 1 WHERE cid = ?", (added, cid))
            ids = [r[0] for r in rows] + gone
            for part in _chunks(ids):
                marks = ",".join("?" * len(part))
                if pending:
                    self._db.execute(f"DELETE FROM journal WHERE key = ? AND id IN ({marks})", (key, *part))
                else:
                    self._db.execute(f"DELETE FROM journal WHERE key = ? AND writer = ? AND id IN ({marks})",
                                     (key, _writer(), *part))

    def replace(self, key: str, records: Iterable[Record]) -> None:
        """Make the collection's rows exactly ``records`` (read as they come: a million need not fit in memory):
        a store the catalogue has not held yet, or one whose count disagrees with the backend's (written by
        another writer it could not see)."""
        with self._transaction():
            cid = self._cid_made(key)
            self._db.execute("DELETE FROM records WHERE cid = ?", (cid,))
            self._db.execute("DELETE FROM labels WHERE cid = ?", (cid,))
            rows = map(row, records)
            while part := list(islice(rows, _CHUNK)):
                self._db.executemany("INSERT OR REPLACE INTO records(cid, id, label, taken, vector) VALUES (?, ?, ?, ?, ?)",
                                     [(cid, *r) for r in part])
            self._db.execute("INSERT INTO labels(cid, label, n) SELECT cid, label, count(*) FROM records "
                             "WHERE cid = ? AND label IS NOT NULL GROUP BY label", (cid,))
            self._db.execute("UPDATE collections SET count = (SELECT count(*) FROM records WHERE cid = ?), "
                             "version = version + 1 WHERE cid = ?", (cid, cid))

    def drop(self, key: str) -> list[str]:
        """Forget a whole collection; the ids it held."""
        with self._transaction():
            cid = self._cid(key)
            if cid is None:
                return []
            ids = [i for (i,) in self._db.execute("SELECT id FROM records WHERE cid = ?", (cid,))]
            for table in ("records", "labels", "collections"):
                self._db.execute(f"DELETE FROM {table} WHERE cid = ?", (cid,))
            self._db.execute("DELETE FROM journal WHERE key = ?", (key,))
        return ids

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # --- Inside -----------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _cid(self, key: str) -> int | None:
        found = self._db.execute("SELECT cid FROM collections WHERE key = ?", (key,)).fetchone()
        return int(found[0]) if found else None

    def _cid_made(self, key: str) -> int:
        self._db.execute("INSERT OR IGNORE INTO collections(key) VALUES (?)", (key,))
        return int(self._db.execute("SELECT cid FROM collections WHERE key = ?", (key,)).fetchone()[0])

    def _labels_of(self, cid: int, ids: Sequence[str]) -> dict[str, str | None]:
        """The labels the catalogue holds for those of ``ids`` it has."""
        out: dict[str, str | None] = {}
        for part in _chunks(ids):
            out.update(self._db.execute(f"SELECT id, label FROM records WHERE cid = ? AND id IN "
                                        f"({','.join('?' * len(part))})", (cid, *part)).fetchall())
        return out

    def _count_labels(self, cid: int, delta: Counter[str | None]) -> None:
        changes = [(cid, label, n) for label, n in delta.items() if label is not None and n]
        self._db.executemany("INSERT INTO labels(cid, label, n) VALUES (?, ?, ?) "
                             "ON CONFLICT(cid, label) DO UPDATE SET n = n + excluded.n", changes)
        self._db.execute("DELETE FROM labels WHERE cid = ? AND n <= 0", (cid,))


def _filtered(what: str, where: Filter) -> tuple[str, list[Any]]:
    """A SELECT of ``what`` over one collection's records (its cid the first argument) that ``where`` admits,
    with the meaning of ``Filter.admits``."""
    sql = f"SELECT {what} FROM records WHERE cid = ?"
    args: list[Any] = []
    if where.include:
        sql += f" AND label IN ({','.join('?' * len(where.include))})"
        args += list(where.include)
    if where.exclude:  # a record without a label is not excluded by any label
        sql += f" AND (label IS NULL OR label NOT IN ({','.join('?' * len(where.exclude))}))"
        args += list(where.exclude)
    if where.taken_from is not None:
        sql += " AND taken >= ?"
        args.append(where.taken_from)
    if where.taken_until is not None:
        sql += " AND taken < ?"
        args.append(where.taken_until)
    return sql, args


def _chunks(ids: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _writer() -> str:
    """This process as journal entries name it (a forked child has its own process id)."""
    return f"{os.getpid()}:{_TOKEN}"


def _alive(writer: str) -> bool:
    """Whether the process that wrote a journal entry still runs. This one's own entries are a write under way
    (or one whose clean-up failed: the caller settles those itself); an entry with this process's id but another
    token is an earlier process's that had the same id (a container restarts its ids from the same numbers)."""
    pid_text, _, token = writer.partition(":")
    pid = int(pid_text) if pid_text.isdigit() else 0
    if pid == os.getpid():
        return token == _TOKEN
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
