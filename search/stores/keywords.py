"""The keyword channel's index: each record's words (caption, label, file name, photo text, text in the image)
in SQLite FTS5, ranked by BM25, one table per collection, beside the vectors in the store folder.

Why FTS5 rather than an in-memory BM25 (bm25s): albums change one image at a time, and FTS5 adds and
deletes rows in place inside a transaction, persists with the store, ranks by BM25 itself and comes with
Python (no dependency); bm25s would rebuild its matrix on every change.

The index is derived from the records' metadata, never the other way round: ``Store`` writes a record's
words after the record and deletes them after it, and ``reconcile`` makes a table agree with its
collection again where a kill came in between (the counts differ) or a switch replaced it. Each word is
indexed twice, in its exact form (NFC, lower-cased) and accent-folded (``core.words.fold``): a query's
words are matched in both, and the exact column weighs more, so "phở" ranks the images that carry its
diacritics above those that say "pho".
"""
from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from search.core.ids import name_key
from search.core.record import CAPTION, LABEL, OCR, PHOTO_TEXT, SOURCE, RecordMeta
from search.core.words import fold, tokens
from search.stores.base import sqlite_database

FILE = "keywords.sqlite3"
FIELDS = ("caption", "label", "name", "photo", "ocr")  # where a word can be found, as answers name it
EXACT_WEIGHT, FOLDED_WEIGHT = 2.0, 1.0  # BM25 column weights: diacritics typed and found count double
COMMON = 20_000  # records a query word may be in and still be scored (``Keywords.search``)
_DATASET_ROW = re.compile(r"\[[^\]]*\]#\d+$")  # "name[split]#12": a dataset row has no file name


@dataclass(frozen=True)
class KeywordHit:
    """A record the keyword channel found, with its BM25 score (higher is better)."""

    id: str
    score: float


def fields(meta: RecordMeta) -> dict[str, str]:
    """The searchable text of a record's metadata, by field (``FIELDS``); empty fields left out."""
    out = {"caption": meta.get(CAPTION), "label": meta.get(LABEL), "name": file_name(meta.get(SOURCE) or ""),
           "photo": meta.get(PHOTO_TEXT), "ocr": meta.get(OCR)}
    return {k: v for k, v in out.items() if isinstance(v, str) and v.strip()}


def file_name(source: str) -> str:
    """A source's file name without its suffix, as words ("hoa-dao-tet-2024.jpg" -> "hoa-dao-tet-2024");
    "" for a dataset row. A URL's name is its path's last segment, percent-decoded."""
    if not source or _DATASET_ROW.search(source):
        return ""
    path = unquote(urlsplit(source).path) if "://" in source else source
    name = path.rstrip("/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and stem and len(suffix) <= 5 else name


class Keywords:
    """A store's keyword tables (``FILE`` in its folder; in memory where the folder cannot be written)."""

    def __init__(self, folder: Path | None):
        self._db = sqlite_database(None if folder is None else folder / FILE)
        self._lock = threading.Lock()

    def add(self, collection: str, records: Iterable[tuple[str, RecordMeta]]) -> None:
        """Index (or index again) each record's words: ``records`` are (id, metadata)."""
        rows = [(image_id, *_columns(meta)) for image_id, meta in records]
        if not rows:
            return
        with self._write(collection) as (docs, text):
            self._delete(docs, text, [r[0] for r in rows])
            for image_id, exact, folded in rows:
                rowid = self._db.execute(f"INSERT INTO {docs}(id) VALUES (?)", (image_id,)).lastrowid
                self._db.execute(f"INSERT INTO {text}(rowid, exact, folded) VALUES (?, ?, ?)", (rowid, exact, folded))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Forget the words of ``ids``."""
        if ids:
            with self._write(collection) as (docs, text):
                self._delete(docs, text, ids)

    def drop(self, collection: str) -> None:
        """Forget a whole collection's words."""
        docs, text = _tables(collection)
        with self._lock:
            self._db.execute(f"DROP TABLE IF EXISTS {text}")
            self._db.execute(f"DROP TABLE IF EXISTS {docs}")

    def count(self, collection: str) -> int:
        """How many records' words the collection's table holds."""
        docs, _ = _tables(collection)
        with self._lock:
            try:
                return int(self._db.execute(f"SELECT count(*) FROM {docs}").fetchone()[0])
            except sqlite3.OperationalError:  # no table yet
                return 0

    def reconcile(self, collection: str, records: Sequence[tuple[str, RecordMeta]]) -> None:
        """Make the collection's table hold exactly ``records``' words (id, metadata): after a kill between a
        record and its words, or a switch that put another collection under this name."""
        self.drop(collection)
        with self._write(collection):
            pass  # an empty collection still gets its table, so its count is known
        self.add(collection, records)

    def search(self, collection: str, words: Sequence[str], limit: int) -> list[KeywordHit]:
        """The records holding any of ``words`` (query words, ``core.words.query_words``), best first by BM25.

        A word more than ``COMMON`` records hold is left out (all of them: no hits), as Elasticsearch's common
        terms query leaves out its high-frequency terms: BM25 scores every record a word is in before it can
        rank any (a word in 200,000 of 300,000 records: seconds), and a word that common tells little."""
        if not words or limit < 1:
            return []
        docs, text = _tables(collection)
        sql = (f"SELECT d.id, bm25({text}, {EXACT_WEIGHT}, {FOLDED_WEIGHT}) AS rank FROM {text} "
               f"JOIN {docs} AS d ON d.rowid = {text}.rowid WHERE {text} MATCH ? ORDER BY rank LIMIT ?")
        # Counted up to COMMON + 1 only: the count costs what reading that many rowids does, never a word's all
        held = f"SELECT count(*) FROM (SELECT 1 FROM {text} WHERE {text} MATCH ? LIMIT {COMMON + 1})"
        with self._lock:
            try:
                telling = [w for w in dict.fromkeys(words) if self._db.execute(held, (_match([w]),)).fetchone()[0] <= COMMON]
                found = self._db.execute(sql, (_match(telling), limit)).fetchall() if telling else []
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        return [KeywordHit(image_id, -float(rank)) for image_id, rank in found]  # FTS5's bm25 is lower for better

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _write(self, collection: str) -> _Transaction:
        return _Transaction(self, *_tables(collection))

    def _delete(self, docs: str, text: str, ids: Sequence[str]) -> None:
        for image_id in ids:
            row = self._db.execute(f"SELECT rowid FROM {docs} WHERE id = ?", (image_id,)).fetchone()
            if row:
                self._db.execute(f"DELETE FROM {text} WHERE rowid = ?", row)
                self._db.execute(f"DELETE FROM {docs} WHERE rowid = ?", row)


class _Transaction:
    """The lock and one transaction around a write, with the collection's tables made where missing."""

    def __init__(self, owner: Keywords, docs: str, text: str):
        self.owner, self.docs, self.text = owner, docs, text

    def __enter__(self) -> tuple[str, str]:
        self.owner._lock.acquire()
        db = self.owner._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"CREATE TABLE IF NOT EXISTS {self.docs}(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)")
            db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.text} USING fts5(exact, folded, "
                       "tokenize='unicode61 remove_diacritics 0')")
        except BaseException:
            self._end(commit=False)
            raise
        return self.docs, self.text

    def __exit__(self, kind: object, *_: object) -> None:
        self._end(commit=kind is None)

    def _end(self, *, commit: bool) -> None:
        try:
            if self.owner._db.in_transaction:
                self.owner._db.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            self.owner._lock.release()


def _match(words: Sequence[str]) -> str:
    """An FTS5 query for records holding any of ``words``: exact forms against the exact column, folded ones
    against the folded column; each an FTS5 string (quotes doubled), so no word is read as FTS5's own syntax
    (NEAR, OR, *)."""
    return " OR ".join(f'{column}:"{t.replace(chr(34), chr(34) * 2)}"' for column, forms in
                       (("exact", words), ("folded", [fold(w) for w in words])) for t in dict.fromkeys(forms))


def _tables(collection: str) -> tuple[str, str]:
    """The collection's two tables, by a key of its name (names may hold characters SQL names cannot)."""
    key = name_key(collection)
    return f"docs_{key}", f"words_{key}"


def _columns(meta: RecordMeta) -> tuple[str, str]:
    """A record's words in their exact and their folded form, each as one space-separated string."""
    words = [w for text in fields(meta).values() for w in tokens(text)]
    return " ".join(words), " ".join(fold(w) for w in words)
