"""The store's metadata schema (search/core/record.py): what is written reads back the same through every read
of the store, older shapes read as they were, unknown keys survive and ill-typed fields do not."""
from __future__ import annotations

import numpy as np
import pytest

from search.core import ids, record
from search.core.record import STORE_FORMAT, CollectionMeta, RecordMeta, model_name, read, read_collection
from search.errors import StoreError
from search.stores import thumbnails
from search.stores.base import Filter, ModelInfo, Record
from search.stores.chroma import _where

MODEL = ModelInfo("tiny-test-model", 8, True)
IMAGE = ids.content_id(b"one image")
EVERY_FIELD = RecordMeta(source="/photos/2024/tet.jpg", thumbnail=thumbnails.relative(IMAGE), added_at=1_700_000_000,
                         label="flowers", caption="hoa đào", photo_text="Tết 2024", taken=1_706_745_600, ocr="CHÚC MỪNG")
# What builds wrote before photo text, capture dates and OCR (November 2026): no field has changed since
BEFORE_WORDS = {"source": "/photos/cat.jpg", "thumbnail": thumbnails.relative(IMAGE), "added_at": 1_700_000_000,
                "label": "cats", "caption": "a cat"}


def _every_read(col, image_id: str, vector: np.ndarray) -> list[dict]:
    """The record's metadata as each of a collection's reads gives it back."""
    return [col.metadatas([image_id])[image_id], col.records([image_id])[image_id].metadata,
            dict(col.scan_metadata())[image_id], next(r.metadata for r in col.scan() if r.id == image_id),
            col.nearest(vector[None, :], 1)[0][0].metadata]


def test_a_record_with_every_field_reads_back_as_written_through_every_read(store, vectors):
    col = store.open_or_create("images", MODEL)
    col.upsert([Record(IMAGE, vectors[0], EVERY_FIELD)])
    assert _every_read(col, IMAGE, vectors[0]) == [EVERY_FIELD] * 5
    assert read(EVERY_FIELD) == EVERY_FIELD


def test_a_record_in_an_older_shape_reads_as_it_was_and_is_searched_by_its_fields(store, vectors):
    col = store.open_or_create("images", MODEL)
    col._chroma.upsert(ids=[IMAGE], embeddings=vectors[:1], metadatas=[BEFORE_WORDS])  # as an older build wrote it
    assert _every_read(col, IMAGE, vectors[0]) == [BEFORE_WORDS] * 5
    meta = col.metadatas([IMAGE])[IMAGE]
    assert Filter(include=("cats",)).admits(meta) and not Filter(taken_from=0).admits(meta)  # no capture time
    found = col.nearest(vectors[:1], 1, Filter(include=("cats",)))[0]
    assert [n.id for n in found] == [IMAGE]


def test_unknown_keys_are_kept_and_fields_of_the_wrong_type_left_out(store, vectors):
    written = {"source": "/photos/a.jpg", "label": 7, "taken": "2024-01-31", "added_at": True, "caption": "kept",
               "camera": "X100", "rating": 4}
    col = store.open_or_create("images", MODEL)
    col._chroma.upsert(ids=[IMAGE], embeddings=vectors[:1], metadatas=[written])  # another tool's record
    expected = {"source": "/photos/a.jpg", "caption": "kept", "camera": "X100", "rating": 4}
    assert _every_read(col, IMAGE, vectors[0]) == [expected] * 5
    # Written again (a re-embed copies records, OCR adds its text), what this version does not know survives
    col.upsert([Record(IMAGE, vectors[0], col.metadatas([IMAGE])[IMAGE] | RecordMeta(ocr="words"))])
    assert col.metadatas([IMAGE])[IMAGE] == expected | {"ocr": "words"}


def test_read_copies_and_reads_nothing_as_empty():
    given = {"label": "cats", "future": [1]}
    got = read(given)
    got["label"] = "dogs"
    assert given["label"] == "cats"
    assert read(None) == read({}) == {}
    assert read({"taken": 0, "label": ""}) == {"taken": 0, "label": ""}  # falsy values are values


def test_a_collection_records_what_made_it_in_the_current_format(store):
    col = store.open_or_create("images", MODEL, "a folder")
    assert {k: v for k, v in col.metadata.items() if k not in ("built_at", "chromadb_version")} == CollectionMeta(
        model="tiny-test-model", dimension=8, normalized=True, source="a folder", format=STORE_FORMAT)
    assert read_collection(col.metadata) == col.metadata


def test_a_collection_without_a_format_is_read_as_the_first_and_one_from_a_newer_format_is_refused(store):
    client = store.backend._client
    client.create_collection("older", metadata={"model": "tiny-test-model", "dimension": 8, "normalized": True,
                                                "source": "unknown"}, embedding_function=None)
    older = store.open("older")
    older.check_health()
    assert (older.model, older.dimension, older.normalized) == ("tiny-test-model", 8, True)
    client.create_collection("newer", metadata={"model": "tiny-test-model", "format": STORE_FORMAT + 1},
                             embedding_function=None)
    with pytest.raises(StoreError, match="newer version"):
        store.open("newer").check_health()


def test_a_collection_field_of_the_wrong_type_is_read_as_missing():
    meta = read_collection({"model": "m", "dimension": "512", "normalized": 1, "hnsw:space": "cosine"})
    assert meta == {"model": "m", "hnsw:space": "cosine"}


def test_the_filter_keys_are_the_records_fields():
    where = _where(Filter(include=("a",), taken_from=5))
    assert where == {"$and": [{record.LABEL: {"$in": ["a"]}}, {record.TAKEN: {"$gte": 5}}]}
    keys = set(RecordMeta.__annotations__) | set(CollectionMeta.__annotations__)
    constants = {value for name, value in vars(record).items() if name.isupper() and isinstance(value, str)}
    assert constants <= keys


@pytest.mark.parametrize(("model", "short"), [("clip-ViT-B-32", "clip-ViT-B-32"),
                                              ("google/siglip2-base-patch16-224", "siglip2-base-patch16-224"),
                                              ("/srv/models/tiny-clip", "tiny-clip")])
def test_a_model_is_shown_by_its_short_name(model, short):
    assert model_name(model) == short
