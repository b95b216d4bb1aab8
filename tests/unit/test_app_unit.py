"""The app in-process, in seconds: `build_app` without launching, its handlers called directly, the views.

No app process, no browser: the layout's endpoints and privacy read from the Blocks, the handlers over
`local_store` (a small store built once per session with the trained tiny model), and the formatting of
`search.views` over hand-made hits. The end-to-end tests (test_app.py, test_browser.py, ...) drive the
same code through a real server.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import gradio as gr
import pytest

import app
from search import views
from search.index import Hit
from search.service import IndexChoice, Overview, Results, SearchService
from search.settings import Settings
from tests.conftest import ROOT
from tests.fixtures.shapes import caption, write_folder

PUBLIC = {"search_by_image", "search_by_text", "collection_add", "collection_list", "collection_delete",
          "collection_drop"}
KEY = "unit-test-key-0123456789"


@pytest.fixture(scope="module", autouse=True)
def gradio_cache(tmp_path_factory):
    """Gradio's cache (where API answers' thumbnail copies go) in a folder of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
        yield


@pytest.fixture(scope="module")
def service(local_store) -> SearchService:
    return SearchService(Settings(store=local_store))


@pytest.fixture(scope="module")
def demo(service) -> gr.Blocks:
    return app.build_app(service)


def _hit(i: int, score: float, **fields) -> Hit:
    base = dict(id=f"{i:032x}", score=score, label=None, caption=None, image=f"/thumbs/{i}.jpg")
    return Hit(**{**base, **fields})


def _select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None})


# --- The layout: what is public, what is private ---------------------------------------------------------


def test_exactly_the_six_endpoints_are_public(demo):
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == PUBLIC
    documented = {name.lstrip("/") for name in demo.get_api_info()["named_endpoints"]}
    assert documented == PUBLIC
    for fn in demo.fns.values():  # each endpoint runs the Api method of its own name
        if fn.api_visibility == "public":
            assert isinstance(fn.fn.__self__, app.Api) and fn.fn.__name__ == fn.api_name


def test_every_page_event_is_private(demo):
    page_events = [fn for fn in demo.fns.values() if isinstance(getattr(fn.fn, "__self__", None), app.Page)]
    assert {fn.fn.__name__ for fn in page_events} == {
        "first_visit", "search_image", "search_url", "search_text", "search_result", "add_to_album",
        "show_album", "pick_image", "delete_picked", "drop_album", "refresh", "pick_example", "search_prompt"}
    assert all(fn.api_visibility == "private" for fn in page_events)
    # Nothing else is callable except the six endpoints (Gradio's own example loaders stay undocumented).
    assert all(fn.api_visibility != "public" or fn.api_name in PUBLIC for fn in demo.fns.values())


def test_gradio_sees_the_handlers_event_data_and_progress(demo):
    by_name = {fn.fn.__name__: fn for fn in demo.fns.values() if fn.fn is not None}
    assert by_name["search_result"].collects_event_data and by_name["pick_image"].collects_event_data
    assert by_name["add_to_album"].tracks_progress
    assert not by_name["search_text"].collects_event_data


def test_app_and_service_read_no_environment_variable():
    for path in (ROOT / "app.py", ROOT / "search" / "service.py", ROOT / "search" / "views.py"):
        source = path.read_text(encoding="utf-8")
        assert "environ" not in source and "getenv" not in source, path


# --- The views: pure formatting --------------------------------------------------------------------------


def test_captions_show_rank_score_and_the_best_name_there_is():
    assert views.caption(1, _hit(1, 0.98765, label="red circle", caption="a red circle")) == "#1 · 0.988 · red circle"
    assert views.caption(2, _hit(2, 0.5, caption="a blue triangle")) == "#2 · 0.500 · a blue triangle"
    assert views.caption(3, _hit(3, -12.25, source="/photos/trip/cat.jpg")) == "#3 · -12.250 · cat.jpg"
    assert views.caption(4, _hit(4, 0.9, label="x", similar=("a", "b"))) == "#4 · 0.900 · x · +2 similar"


def test_the_results_gallery_keeps_ranks_and_ids_in_step():
    hits = [_hit(1, 0.9, label="a"), _hit(2, 0.8, label="b", image=None), _hit(3, 0.7, label="c")]
    items, ids = views.result_gallery(Results(hits, 0.01))
    assert items == [("/thumbs/1.jpg", "#1 · 0.900 · a"), ("/thumbs/3.jpg", "#3 · 0.700 · c")]
    assert ids == [hits[0].id, hits[2].id]  # a click on item i searches by ids[i]


def test_status_counts_results_and_milliseconds():
    assert views.status(Results([_hit(1, 0.9)], 0.0123)) == "1 result in 12 ms"
    assert views.status(Results([_hit(1, 0.9), _hit(2, 0.8)], 0.5)) == "2 results in 500 ms"
    assert views.status(Results([], 0.001)) == "0 results in 1 ms"


def test_index_choices_label_each_kind():
    choices = [IndexChoice("images", "clip", "clip-ViT-B-32"), IndexChoice("pixels", "pixels", "pixels"),
               IndexChoice("trip", "album", "clip-ViT-B-32")]
    assert views.index_choices(choices) == [("images: CLIP clip-ViT-B-32", "images"),
                                            ("pixels: pixels (basic)", "pixels"),
                                            ("my collection: trip", "mine/trip")]


def test_overview_says_what_is_searched_or_what_to_run():
    assert views.overview(Overview(12345, "images", "tiny-clip")) == \
        "Searching **12,345 images** in collection `images` with `tiny-clip`."
    problem = views.overview(Overview(problem="there is no index yet"))
    assert problem.startswith("**No index to search yet.** there is no index yet")
    assert "index_builder.py" in problem and "IMAGE_SEARCH_STORE" in problem


def test_album_views():
    hits = [_hit(1, 0.0, source="a.jpg"), _hit(2, 0.0, image=None), _hit(3, 0.0)]
    assert views.album_gallery(hits) == ([("/thumbs/1.jpg", "a.jpg"), ("/thumbs/3.jpg", None)], [hits[0].id, hits[2].id])
    assert "private to this browser" in views.albums_intro(public=True)
    assert "private" not in views.albums_intro(public=False)


# --- The handlers, called directly -----------------------------------------------------------------------


def test_the_page_searches_by_text_best_first(service):
    page = app.Page(service)
    items, ids, status = page.search_text(caption("blue triangle"), 5, "cosine", "", None, False)
    assert len(items) == len(ids) == 5 and status.startswith("5 results in ")
    assert [c.split(" · ")[0] for _, c in items] == ["#1", "#2", "#3", "#4", "#5"]
    scores = [float(c.split(" · ")[1]) for _, c in items]
    assert scores == sorted(scores, reverse=True)
    assert sum(c.endswith("blue triangle") for _, c in items) >= 4
    assert all(Path(image).is_file() for image, _ in items)


def test_clicking_a_result_searches_by_it(service):
    page = app.Page(service)
    _, ids, _ = page.search_text(caption("green square"), 4, "cosine", "", None, False)
    items, again, _ = page.search_result(ids, 3, "cosine", "", None, False, _select(2))
    assert again[0] == ids[2] and items[0][1].startswith("#1 · 1.000 · ")  # the clicked image finds itself
    for stale in (4, -1, 10_000):  # a click on what the gallery no longer holds: a message, not a traceback
        with pytest.raises(gr.Error, match="no longer shown"):
            page.search_result(ids, 3, "cosine", "", None, False, _select(stale))


def test_removing_the_query_image_clears_the_results(service):
    assert app.Page(service).search_image(None, 5, "cosine", "", None, False) == ([], [], "")


def test_the_api_answers_hits_best_first_with_served_copies(service, local_store):
    hits = app.Api(service).search_by_text(caption("red circle"), 5, "cosine", "", "")
    assert len(hits) == 5 and set(hits[0]) == {"id", "score", "label", "caption", "image"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert sum(h["label"] == "red circle" for h in hits) >= 4
    for h in hits:  # a file of Gradio's cache, never a path into the store
        assert h["image"]["meta"] == {"_type": "gradio.FileData"}
        assert Path(h["image"]["path"]).is_file() and local_store not in Path(h["image"]["path"]).parents
    example = ROOT / "examples" / "cat.jpg"
    by_image = app.Api(service).search_by_image(str(example), 3, "cosine", "", "")
    assert len(by_image) == 3 and by_image[0]["score"] == pytest.approx(1.0, abs=1e-3)  # it finds itself


def test_the_index_dropdown_offers_the_shared_indexes(service):
    page = app.Page(service)
    offered = page.index_dropdown(None)["choices"]
    assert offered[0][1] == "images" and offered[0][0].startswith("images: CLIP ")
    assert ("pixels: pixels (basic)", "pixels") in offered


def test_refusals_become_public_messages_and_one_log_line(service, caplog):
    api, page = app.Api(service), app.Page(service)
    refusals = [
        (lambda: api.search_by_text("", 5, "cosine", "", ""), "Type a description"),
        (lambda: api.search_by_text("a red circle", 0, "cosine", "", ""), "from 1 to 50"),
        (lambda: api.search_by_text("a red circle", 5, "nope", "", ""), "unknown metric"),
        (lambda: api.search_by_text("a red circle", 5, "cosine", "no-such-index", ""), "Unknown index"),
        (lambda: api.search_by_text("a red circle", 5, "cosine", "pixels", ""), "pixel method cannot read text"),
        (lambda: api.search_by_image(None, 5, "cosine", "", ""), "Upload, paste or photograph"),
        (lambda: page.search_url("", 5, "cosine", "", None, False), "Give an image URL"),
        (lambda: page.delete_picked(None, "photos", ""), "Click an image in the collection first"),
    ]
    for call, message in refusals:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="app"), pytest.raises(gr.Error, match=message) as raised:
            call()
        assert raised.value.print_exception is False
        records = [r for r in caplog.records if r.name == "app"]
        assert len(records) == 1 and records[0].message.startswith("refused in ") and records[0].exc_info is None


def test_a_bug_is_logged_with_its_traceback_and_hidden_from_the_caller(service, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(service, "search_text", broken)
    with caplog.at_level(logging.INFO, logger="app"), pytest.raises(gr.Error) as raised:
        app.Api(service).search_by_text("a red circle", 5, "cosine", "", "")
    assert "secret" not in str(raised.value) and "server log" in str(raised.value)
    assert [r.exc_info is not None for r in caplog.records if r.name == "app"] == [True]


def test_without_a_store_the_page_says_what_to_run_and_searches_refuse(tmp_path):
    missing = tmp_path / "no-store"
    service = SearchService(Settings(store=missing))
    demo = app.build_app(service)  # builds anyway: the page explains
    assert {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"} == PUBLIC
    assert "No index to search yet" in views.overview(service.overview())
    with pytest.raises(gr.Error, match="index_builder.py"):
        app.Api(service).search_by_text("a red circle", 5, "cosine", "", "")
    key, index_update, album_update = app.Page(service).first_visit(None)
    assert len(key) >= 16 and index_update["choices"] == [] and album_update["choices"] == []
    assert not missing.exists()


def test_albums_through_the_api_and_the_page(local_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(local_store, store)
    service = SearchService(Settings(store=store, public=True))
    api, page = app.Api(service), app.Page(service)
    uploads = [str(p) for p in write_folder(tmp_path / "uploads", per_class=1, seed=91)[:3]]

    report = api.collection_add(uploads, "trip", KEY)
    assert report["indexed"] == 3 and report["total_in_collection"] == 3 and "store" not in report
    assert api.collection_list(KEY) == ["trip"]
    assert ("my collection: trip", "mine/trip") in page.index_dropdown(KEY)["choices"]
    assert api.collection_list("another-key-0123456789") == []

    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    more = write_folder(tmp_path / "more", per_class=1, seed=92)[5]
    summary, rows, cleared, album_update, index_update, items, ids, selected = \
        page.add_to_album(KEY, "trip", [str(junk), str(more)])
    assert summary.startswith("Indexed 1 new images") and cleared is None and selected == ""
    assert rows == [["notes.txt", "unsupported", rows[0][2]]] and "not an image" in rows[0][2]
    assert album_update["value"] == "trip" and album_update["choices"] == ["trip"]
    assert "mine/trip" in {v for _, v in index_update["choices"]} and len(items) == len(ids) == 4

    hits = api.search_by_text("a red circle", 5, "cosine", "mine/trip", KEY)
    assert len(hits) == 4  # only the album's images
    assert sorted(ids) == sorted(h["id"] for h in hits)
    assert page.pick_image(ids, _select(1)) == ids[1]

    assert api.collection_delete([ids[0]], "trip", KEY) == {"removed": 1, "not_found": []}
    assert len(page.show_album(KEY, "trip")[1]) == 3
    album_update, index_update, *emptied = page.drop_album(KEY, "trip")
    assert album_update["choices"] == [] and "mine/trip" not in {v for _, v in index_update["choices"]}
    assert emptied == [[], [], ""]
    with pytest.raises(gr.Error, match="no collection named 'trip'"):
        api.collection_drop("trip", KEY)
