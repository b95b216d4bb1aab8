"""The build pipeline in-process: its named stages, progress, options, and a store lost mid-build."""
from __future__ import annotations

import errno

import numpy as np
import pytest

from search.pipeline.build import BuildOptions, build_index, deferred_model
from search.pipeline.report import STAGES
from search.sources.base import folder_items
from search.stores.store import Store
from tests.fixtures.shapes import write_folder


def test_stages_are_timed_and_progress_is_reported(tmp_path, clip_embedder):
    folder = tmp_path / "photos"
    files = write_folder(folder, per_class=2, seed=3)  # 24 images
    seen: list[tuple[int, int | None]] = []
    report = build_index(folder_items(folder), Store.connect(tmp_path / "store", create=True), "images", clip_embedder,
                         BuildOptions(batch_size=5, precision="fp32", total=len(files)),
                         on_progress=lambda done, total: seen.append((done, total)))
    assert report.indexed == len(files) and report.total_in_collection == len(files)
    assert [done for done, _ in seen] == [5, 10, 15, 20, 24] and {total for _, total in seen} == {len(files)}
    assert set(report.stage_seconds) == set(STAGES)
    assert all(report.stage_seconds[s] > 0 for s in ("identify", "decode", "embed", "write"))
    assert report.stage_seconds["sync"] == 0  # no sync asked for
    assert report.to_dict()["stage_seconds"] == report.stage_seconds


def test_a_build_never_changes_the_shared_embedder(tmp_path, clip_embedder):
    """Issue 11: a build may override the precision for itself; the embedder a query shares keeps its own."""
    own = clip_embedder.precision
    probe = clip_embedder.embed_texts(["a red circle"])
    folder = tmp_path / "photos"
    write_folder(folder, per_class=1, seed=4)
    store = Store.connect(tmp_path / "store", create=True)
    assert build_index(folder_items(folder), store, "images", clip_embedder).precision == own
    report = build_index(folder_items(folder), store, "again", clip_embedder, BuildOptions(precision="bf16"))
    assert report.precision == "bf16" and clip_embedder.precision == own
    assert np.array_equal(clip_embedder.embed_texts(["a red circle"]), probe)


def test_a_rerun_over_what_did_not_change_never_loads_the_model(tmp_path, clip_embedder):
    """Issue 33: loading PyTorch and the model took 45 of the 47 s of a re-run that had nothing to embed."""
    folder = tmp_path / "photos"
    files = write_folder(folder, per_class=1, seed=5)
    store = Store.connect(tmp_path / "store", create=True)
    loads: list[str] = []

    def load():
        loads.append("loaded")
        return clip_embedder

    def build():
        return build_index(folder_items(folder), store, "images", deferred_model(store, "images", clip_embedder.name, load))

    assert build().indexed == len(files) and loads == ["loaded"]  # a new collection: its model is needed at once
    again = build()
    assert (again.indexed, again.already_indexed, loads) == (0, len(files), ["loaded"])  # never loaded
    assert again.precision == "fp32" and again.total_in_collection == len(files)
    write_folder(folder / "more", per_class=1, seed=6)
    assert build().indexed == len(files) and loads == ["loaded", "loaded"]  # new images: loaded when first needed
    deferred_model(store, "images", "pixels", load)
    assert len(loads) == 3  # another model than the collection's: loaded now, for the store to refuse


@pytest.fixture(scope="module")
def clip_embedder(random_clip):
    from search.embedders.registry import load_embedder

    return load_embedder(str(random_clip))


class _Failing:
    """A collection whose ``method`` raises ``error`` once it has answered ``after`` calls."""

    def __init__(self, col, method: str, error: BaseException, after: int):
        self._col, self._method, self._error, self._left = col, method, error, after

    def __getattr__(self, name):
        attr = getattr(self._col, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            if self._left <= 0:
                raise self._error
            self._left -= 1
            return attr(*args, **kwargs)
        return call


def _connect_error():
    import httpx

    return httpx.ConnectError("[Errno 111] Connection refused")


def _disk_full():
    from chromadb.errors import InternalError

    return InternalError("Query error: Database error: error returned from database: (code: 13) database or disk is full")


@pytest.mark.parametrize("method, error, after, message", [
    ("get", _connect_error, 2, "the Chroma server stopped answering during the build."),  # on the producer thread
    ("query", _connect_error, 0, "the Chroma server stopped answering during the build."),  # the near-duplicate query
    ("upsert", _connect_error, 1, "the Chroma server stopped answering during the build."),
    ("upsert", _disk_full, 1, "the server's disk is full"),  # embedded store, disk full
    ("thumbnail", lambda: OSError(errno.ENOSPC, "No space left on device"), 2, "the server's disk is full"),
])
def test_a_store_lost_mid_build_is_a_store_error_and_a_rerun_resumes(tmp_path, monkeypatch, clip_embedder,
                                                                     method, error, after, message):
    from search.errors import StoreError
    from search.stores import thumbnails
    from search.stores.chroma import ChromaCollection

    folder, store = tmp_path / "photos", tmp_path / "store"
    files = write_folder(folder, per_class=2, seed=9)
    options = BuildOptions(batch_size=4, precision="fp32")
    if method == "thumbnail":  # the store's folder fills up
        left, real_write = iter(range(after)), thumbnails.write_many

        def write_many(*args):  # a batch's thumbnails go in one write
            if next(left, None) is None:
                raise error()
            return real_write(*args)
        monkeypatch.setattr(thumbnails, "write_many", write_many)
    else:  # Chroma's own collection object starts failing
        real_init = ChromaCollection.__init__

        def failing(self, name, metadata, chroma, store):
            real_init(self, name, metadata, _Failing(chroma, method, error(), after), store)
        monkeypatch.setattr(ChromaCollection, "__init__", failing)
    with pytest.raises(StoreError) as raised:
        build_index(folder_items(folder), Store.connect(store, create=True), "images", clip_embedder, options)
    text = raised.value.for_operator()
    assert str(raised.value).startswith(message) and "run the same command again" in text
    assert ("(Chroma server at " if "Chroma" in message else "(store at ") in text  # the operator's details
    assert "Traceback" not in text and str(tmp_path) not in str(raised.value)  # internals stay out of str()
    assert not (store / "manifests" / "images.json").exists()  # nothing recorded for a build that did not finish

    monkeypatch.undo()
    written = Store.connect(store).open("images").count()
    again = build_index(folder_items(folder), Store.connect(store), "images", clip_embedder, options)
    assert again.already_indexed == written and again.indexed == len(files) - written
    assert again.total_in_collection == len(files)


def test_a_programming_error_mid_build_is_not_a_lost_store(tmp_path, monkeypatch, clip_embedder):
    from search.stores.chroma import ChromaCollection

    folder, store = tmp_path / "photos", tmp_path / "store"
    write_folder(folder, per_class=1, seed=9)
    real_init = ChromaCollection.__init__

    def failing(self, name, metadata, chroma, store):
        real_init(self, name, metadata, _Failing(chroma, "upsert", TypeError("bug"), 0), store)
    monkeypatch.setattr(ChromaCollection, "__init__", failing)
    with pytest.raises(TypeError, match="bug"):
        build_index(folder_items(folder), Store.connect(store, create=True), "images", clip_embedder,
                    BuildOptions(precision="fp32"))
