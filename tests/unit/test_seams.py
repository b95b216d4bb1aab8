"""The library's seams with fakes behind them: a model family registered by name, with no checkpoint and no
torch, carries a build, the index and the service end to end (in a second)."""
from __future__ import annotations

import json
import threading
import time
from itertools import islice
from pathlib import Path

import pytest
from PIL import Image

from search.config import Settings
from search.core.query import Part, Query
from search.embedders.registry import family_of, load_embedder
from search.errors import QueryError, ServiceUnavailable
from search.pipeline.build import BuildOptions, build_index
from search.pipeline.swap import reembed
from search.service import service as service_module
from search.service.service import SearchService
from search.sources.base import open_source
from search.stores.store import Store
from search.web.http_api import status_of
from tests.fixtures import fake_embedder


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return _colours(tmp_path_factory.mktemp("colours"))


def _colours(root: Path) -> Path:
    """A store of flat colour swatches, built through the real pipeline with the fake family."""
    fake_embedder.install()
    for colour, rgb in (("red", (230, 20, 20)), ("green", (20, 200, 30)), ("blue", (20, 30, 220))):
        (root / "photos" / colour).mkdir(parents=True)
        for shade in range(4):
            Image.new("RGB", (40 + shade, 30), tuple(min(255, v + 8 * shade) for v in rgb)).save(
                root / "photos" / colour / f"{shade}.png")
    source = open_source(str(root / "photos"))
    report = build_index(source.items, Store.connect(root / "store", create=True), "images",
                         load_embedder(fake_embedder.NAME))
    assert report.indexed == 12 and report.total_in_collection == 12
    return root / "store"


def test_a_family_is_found_by_the_models_name():
    fake_embedder.install()
    assert family_of(fake_embedder.NAME).name == fake_embedder.NAME
    assert family_of("pixels").name == "pixels" and family_of("some/checkpoint").name == "clip"


def test_the_service_searches_an_index_of_the_fake_family_by_text_and_by_image(colours):
    service = SearchService.open(Settings(store=colours, default_dataset=None))
    by_text = service.search(Query(positive=(Part(kind="text", value="something blue"),), k=4))
    assert [h.label for h in by_text.hits] == ["blue"] * 4 and by_text.total == 12
    red = next(iter(sorted((colours.parent / "photos" / "red").glob("*.png"))))
    by_image = service.search({"positive": [{"image": 0}], "negative": [{"text": "green"}], "k": 4}, [str(red)])
    assert [h.label for h in by_image.hits] == ["red"] * 4 and by_image.hits[0].relevant
    assert service.labels() == ["blue", "green", "red"]


def test_the_service_follows_a_switch_and_a_rollback_of_its_main_collection_without_a_restart(tmp_path):
    store = _colours(tmp_path)
    service = SearchService.open(Settings(store=store, default_dataset=None))
    first = service.main_index()
    assert first is not None and service.follow_switch() == []  # nothing changed: the same index stays
    for started in [t for t in threading.enumerate() if t.name == "repair"]:
        started.join(30)  # the start's repair holds the write lock a moment; a builder then would be told to wait
    writer = Store.connect(store)
    with writer.write_lock():
        assert reembed(writer, "images", load_embedder(fake_embedder.NAME)).embedded == 12
    writer.switch("images")
    assert service.follow_switch() == ["images"]
    switched = service.main_index()
    assert switched is not first and switched.collection.key == writer.open("images").key != first.collection.key
    assert [h.label for h in service.search(Query(positive=(Part(kind="text", value="red"),), k=4)).hits] == ["red"] * 4
    assert service.follow_switch() == [] and service.main_index() is switched
    writer.rollback("images")
    assert service.follow_switch() == ["images"] and service.main_index().collection.key == first.collection.key


def test_a_query_made_while_the_service_loads_waits_for_it_and_is_answered(colours):
    service = SearchService(Settings(store=colours, default_dataset=None))
    assert service.loading and status_of(service.overview())["state"] == "loading"
    answers, listed = [], []
    blue = Query(positive=(Part(kind="text", value="blue"),), k=4)
    waiting = threading.Thread(target=lambda: answers.append(service.search(blue)))
    listing = threading.Thread(target=lambda: listed.append(service.album_indexes(None)))  # a page's first visit
    waiting.start()
    listing.start()
    time.sleep(0.3)
    assert waiting.is_alive() and listing.is_alive() and not answers  # neither refused nor answered from nothing
    service.load()
    waiting.join(10)
    listing.join(10)
    assert [h.label for h in answers[0].hits] == ["blue"] * 4 and listed == [[]]
    assert not service.loading and status_of(service.overview()) == {
        "state": "ready", "images": 12, "collection": "images", "model": fake_embedder.NAME, "problem": None}


def test_a_query_waits_for_the_load_only_so_long(colours, monkeypatch):
    monkeypatch.setattr(service_module, "LOAD_WAIT_S", 0.2)
    service = SearchService(Settings(store=colours, default_dataset=None))
    with pytest.raises(ServiceUnavailable, match="still loading its model") as refused:
        service.search(Query(positive=(Part(kind="text", value="blue"),), k=4))
    assert refused.value.retry_after == 30


def test_a_load_that_fails_releases_the_queries_waiting_for_it(colours, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug while loading")

    monkeypatch.setattr(service_module.ImageIndex, "open", broken)
    service = SearchService(Settings(store=colours, default_dataset=None))
    with pytest.raises(RuntimeError):
        service.load()
    assert not service.loading
    with pytest.raises(ServiceUnavailable, match="No index to search"):
        service.search(Query(positive=(Part(kind="text", value="blue"),), k=4))


def test_an_album_made_before_a_switch_is_brought_to_the_new_model_by_its_owner(tmp_path):
    store = _colours(tmp_path)
    service = SearchService.open(Settings(store=store, default_dataset=None, ocr=False))
    photos = sorted((tmp_path / "photos").rglob("*.png"))
    red = {p for p in photos if p.parent.name == "red"}
    assert service.add_images(None, "holiday", [str(p) for p in photos]).indexed == 12
    writer = Store.connect(store)
    with writer.write_lock():
        reembed(writer, "images", load_embedder(fake_embedder.V2))
    writer.switch("images")
    assert service.follow_switch() == ["images"]

    def reds() -> set[str]:
        answer = service.search(Query(positive=(Part(kind="text", value="red"),), k=4, index="mine/holiday"))
        return {h.id for h in answer.hits}

    album = next(c for c in service.album_indexes(None) if c.name == "holiday")
    assert service.album_behind(None, "holiday") and album.model == fake_embedder.NAME
    before = reds()  # still searched with the model it was made with
    assert len(before) == 4 and {Path(h.source or "").name for h in service.browse_album(None, "holiday")[0]
                                 if h.id in before} <= {p.name for p in red}
    report = service.swap_album(None, "holiday")
    assert report.embedded == 12 and report.from_original + report.from_thumbnail == 12 and not report.failed
    assert not service.album_behind(None, "holiday") and service.album_names(None) == ["holiday"]
    assert next(c for c in service.album_indexes(None) if c.name == "holiday").model == fake_embedder.V2
    assert reds() == before  # the same red swatches, found with the new model's text tower
    token = service.search(Query(positive=(Part(kind="text", value="red"),), k=1, index="mine/holiday")).album
    assert all(service.thumbnail(i, token) is not None for i in before)  # the thumbnails stayed with the album
    assert not [n for n in Store.connect(store).names() if n.endswith((".next", ".previous")) and "holiday" in n]
    with pytest.raises(QueryError, match="already searched"):
        service.swap_album(None, "holiday")
    with pytest.raises(QueryError, match="no collection named"):
        service.swap_album(None, "elsewhere")


def _racing_store(root: Path, model: fake_embedder.Racing) -> Path:
    """A store of colour swatches built with the racing model (the race not run: it embeds at fp32)."""
    for colour, rgb in (("red", (230, 20, 20)), ("blue", (20, 30, 220))):
        (root / "photos" / colour).mkdir(parents=True)
        for shade in range(3):
            Image.new("RGB", (40, 30), tuple(min(255, v + 9 * shade) for v in rgb)).save(
                root / "photos" / colour / f"{shade}.png")
    source = open_source(str(root / "photos"))
    build_index(source.items, Store.connect(root / "store", create=True), "images", model)
    return root / "store"


def test_a_first_start_serves_at_once_at_fp32_and_switches_when_the_race_in_the_background_decides(tmp_path):
    from search.embedders.precision import FP32, INT8, Chooser

    hold = threading.Event()
    model = fake_embedder.racing(hold=hold)  # int8 the fastest, by its script
    store = _racing_store(tmp_path, model)
    here = {"cpu": "test", "flags": ["avx2"]}
    service = SearchService(Settings(store=store, default_dataset=None),
                            Chooser(str(store / "precision.json"), clock=model.clock, machine=lambda device: here))
    service.load()  # returns while the race is held: nothing waits for it
    assert not service.loading and service.tuning is not None and service.tuning.is_alive()
    answer = service.search(Query(positive=(Part(kind="text", value="blue"),), k=3))
    assert [h.label for h in answer.hits] == ["blue"] * 3 and model.precision == FP32 and not model.raced
    hold.set()
    service.tuning.join(30)
    assert model.precision == INT8 and model.decisions["text"].precision == INT8
    assert set(model.raced) == {FP32, "bf16", INT8}
    # The next start recalls both decisions at once: no race, int8 from its first query.
    model.raced.clear()
    hold.clear()
    again = SearchService(Settings(store=store, default_dataset=None),
                          Chooser(str(store / "precision.json"), clock=model.clock, machine=lambda device: here))
    model.precision = FP32
    again.load()
    assert again.tuning is None and model.precision == INT8 and model.raced == []


def test_the_builder_reports_the_precision_it_used_and_the_rate_the_race_predicted(tmp_path):
    from search.embedders.precision import INT8, Chooser, settle

    model = fake_embedder.racing()
    settle(model, "auto", 4, Chooser(None, clock=model.clock))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 20, 200 - 30 * i)).save(folder / f"{i}.png")
    report = build_index(open_source(str(folder)).items, Store.connect(tmp_path / "store", create=True), "images", model,
                         BuildOptions(batch_size=4))
    assert report.precision == INT8 and report.predicted_rate == 400.0  # 4 images in the script's 10 ms
    assert "int8; the precision race timed the bare model at 400.0" in report.summary()
    forced = build_index(open_source(str(folder)).items, Store.connect(tmp_path / "other", create=True), "images", model,
                         BuildOptions(batch_size=4, precision="fp32"))
    assert forced.precision == "fp32" and forced.predicted_rate is None  # the race timed another precision


def test_a_build_whose_model_ran_far_from_the_predicted_rate_reopens_the_decision(tmp_path):
    """A decision made in a busy moment (or a quiet one) says a rate; a build three batches long that embeds at a
    rate 1.5x away from it forgets the decision, so the next load races again."""
    from dataclasses import replace

    from search.embedders.precision import Chooser, decision_key, settle

    store = Store.connect(tmp_path / "store", create=True)
    model = fake_embedder.racing()
    settle(model, "auto", 4, Chooser(store.precision_file, clock=model.clock))
    key = decision_key(model.name, "cpu", 4, "image")
    assert key in json.loads(Path(store.precision_file).read_text())
    model.decision = replace(model.decision, rate=1e12)  # no machine embeds that fast: the build is far from it
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (32, 32), (20 * i, 20, 240 - 20 * i)).save(folder / f"{i}.png")
    short = build_index(islice(open_source(str(folder)).items, 8), store, "short", model, BuildOptions(batch_size=4))
    assert short.indexed == 8 and not short.precision_reopened  # two batches: one moment, nothing concluded
    assert key in json.loads(Path(store.precision_file).read_text())
    report = build_index(open_source(str(folder)).items, store, "images", model, BuildOptions(batch_size=4))
    assert report.precision_reopened and "measured again next time" in report.summary()
    assert key not in json.loads(Path(store.precision_file).read_text())
