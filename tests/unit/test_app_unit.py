"""The web layer in-process, in seconds: `build_app` without launching, its handlers called directly, the views.

No app process, no browser: the layout's endpoints and privacy read from the Blocks, the handlers over
`local_store` (a small store built once per session with the trained tiny model), and the formatting of
`search.web.views` over hand-made hits. The end-to-end tests (test_app.py, test_page.py, ...) drive the
same code through a real server.
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from search.config import Settings
from search.core.hits import Hit
from search.core.query import Part, Query
from search.images.decode import CUT_SHORT
from search.service.examples import Shipped
from search.service.service import IndexChoice, Overview, SearchService
from search.stores import thumbnails
from search.web import layout, pictures, regions, views
from search.web.albums_page import DROP, AlbumPage
from search.web.api import Api
from search.web.files import VisitorFiles
from search.web.page import OPEN, SEARCHED, SearchPage
from search.web.page_query import PageQuery, Shown
from tests.conftest import ROOT
from tests.fixtures import fake_embedder
from tests.fixtures.gradio_requests import JOIN, gradio_request
from tests.fixtures.shapes import caption, write_folder

PUBLIC = {"search", "search_by_image", "search_by_text", "collection_add", "collection_list", "collection_delete",
          "collection_drop", "collection_swap"}
KEY = "unit-test-key-0123456789"
LOGGER = "search.web.messages"
REQUEST = gradio_request()


@pytest.fixture(scope="module", autouse=True)
def gradio_cache(tmp_path_factory):
    """Gradio's cache (where the app keeps query previews) in a folder of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
        yield


@pytest.fixture(scope="module")
def service(local_store) -> SearchService:
    return SearchService.open(Settings(store=local_store))


@pytest.fixture(scope="module")
def demo(service) -> gr.Blocks:
    return layout.build_app(service)


def pages(service: SearchService) -> tuple[SearchPage, AlbumPage, Api]:
    """The page's two tabs' handlers and the API's, over one account of visitors' files."""
    files = VisitorFiles(service.settings.upload_budget_bytes)
    search = SearchPage(service, files, Shipped.read(ROOT / "examples"))
    return search, AlbumPage(service, files, search), Api(service, files)


def _hit(i: int, score: float, **fields) -> Hit:
    base = dict(id=f"{i:032x}", score=score, label=None, caption=None, image=f"/thumbs/{i}.jpg")
    return Hit(**{**base, **fields})


def _select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None})


def _picture(url: str, service: SearchService) -> bytes | None:
    """What the app's picture route serves at ``url`` (a gallery item's) from the service's store."""
    assert url.startswith(pictures.ROUTE + "/"), url  # the route's, never a file Gradio would serve
    mac, name = url.split("/")[-2:]
    return pictures.read(service.settings.store, mac, name)


def controls(index: str = "", metric: str = "cosine", k: int = 5, *, include=(), exclude=(), strong=False,
             sort: str = "relevance", taken_from: str = "", taken_to: str = "", key: str | None = None) -> tuple:
    """The page's search controls, in the order its handlers take them."""
    return (index, metric, k, False, list(include), list(exclude), strong, sort, taken_from, taken_to, key)


def searched(answer: dict) -> dict:
    """A search handler's outputs, checked to be every one a search returns."""
    assert set(SEARCHED) <= set(answer), set(SEARCHED) - set(answer)
    return dict(answer)


# --- The layout: what is public, what is private ---------------------------------------------------------


def test_exactly_the_eight_endpoints_are_public(demo):
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == PUBLIC
    documented = {name.lstrip("/") for name in demo.get_api_info()["named_endpoints"]}
    assert documented == PUBLIC
    for fn in demo.fns.values():  # each endpoint runs the Api method of its own name
        if fn.api_visibility == "public":
            assert isinstance(fn.fn.__self__, Api) and fn.fn.__name__ == fn.api_name


def _handler(fn) -> object:
    """The page's handler behind an event: the bound method ``layout.named`` wraps."""
    return getattr(fn.fn, "__wrapped__", fn.fn)


def test_every_page_event_is_private(demo):
    page_events = [fn for fn in demo.fns.values()
                   if isinstance(getattr(_handler(fn), "__self__", None), (SearchPage, AlbumPage))]
    assert {_handler(fn).__name__ for fn in page_events} == {
        "first_visit", "refresh", "search_text", "search_prompt", "search_image", "search_example", "search_url",
        "search_selected", "rerun", "change_index", "more", "click_result", "add_part", "remove_part",
        "more_like_selected", "less_like_selected", "undo", "pick_corner", "add", "show",
        "newer", "older", "pick", "delete_picked", "drop", "swap"}
    assert all(fn.api_visibility == "private" for fn in page_events)
    # Nothing else is callable except the eight endpoints (Gradio's own example loaders stay undocumented).
    assert all(fn.api_visibility != "public" or fn.api_name in PUBLIC for fn in demo.fns.values())


def test_gradio_sees_the_handlers_event_data_and_progress(demo):
    by_name = {_handler(fn).__name__: fn for fn in demo.fns.values() if fn.fn is not None}
    for name in ("click_result", "pick", "search_example", "pick_corner"):
        assert by_name[name].collects_event_data, name
    assert by_name["add"].tracks_progress
    assert not by_name["search_text"].collects_event_data


def test_only_the_settings_read_the_environment():
    for path in [ROOT / "app.py", ROOT / "index_builder.py", *(ROOT / "search").rglob("*.py")]:
        if path.name != "config.py":
            # Handing pytesseract the child environment config.py makes is not reading it
            source = path.read_text(encoding="utf-8").replace("pytesseract.pytesseract.environ = for_child_processes(", "")
            assert "environ" not in source and "getenv" not in source and "from_env" not in source, path


# --- The views: pure formatting --------------------------------------------------------------------------


def test_captions_show_rank_the_best_name_there_is_and_a_readable_score():
    assert views.caption(1, _hit(1, 0.98765, label="red circle", caption="a red circle"), "cosine") == \
        "#1 red circle · 0.988"
    assert views.caption(2, _hit(2, 0.5, caption="a blue triangle"), "correlation") == "#2 a blue triangle · 0.500"
    assert views.caption(3, _hit(3, -12.25, source="/photos/trip/cat.jpg"), "l1") == "#3 cat.jpg · distance 12.2"
    assert views.caption(4, _hit(4, 961.4, label="x", similar=("a", "b")), "ip") == "#4 x · 961 · +2 similar"


def test_the_results_gallery_keeps_ranks_and_hits_in_step():
    hits = [_hit(1, 0.9, label="a"), _hit(2, 0.8, label="b", image=None), _hit(3, 0.7, label="c")]
    items, shown = views.result_gallery(hits, "cosine")
    assert items == [("/thumbs/1.jpg", "#1 a · 0.900"), ("/thumbs/3.jpg", "#3 c · 0.700")]
    assert shown == [hits[0], hits[2]]  # a click on item i opens shown[i]


def test_status_counts_results_of_the_total_and_milliseconds():
    assert views.status(1, 1, 0.0123) == "Top **1** of 1 image · 12 ms"
    assert views.status(12, 2000, 0.5, relevant=3) == "Top **12** of 2,000 images · 3 strong matches · 500 ms"
    assert "No images to search" in views.status(0, 0, 0.001)


def test_the_detail_view_gives_the_raw_score_and_a_link_only_to_a_web_source():
    web = views.detail(2, _hit(2, -0.4567891, label="cat", source="https://example.com/a/cat.jpg"), "l2")
    assert "**#2 cat**" in web and "distance 0.457 (raw -0.456789)" in web
    assert "[cat\\.jpg](https://example.com/a/cat.jpg)" in web
    local = views.detail(1, _hit(1, 0.5, label="[x](javascript:alert(1))", source="/srv/data/photos/dog.jpg"), "cosine")
    assert "/srv" not in local and "dog\\.jpg" in local and "](javascript" not in local


def test_the_detail_view_holds_what_a_one_line_caption_cuts_short():
    hit = _hit(3, 0.21, label="a long label that no thumbnail is wide enough to show", caption="on a beach at dusk",
               similar=("a",), relevant=False)
    caption, shown = views.caption(3, hit, "cosine"), views.detail(3, hit, "cosine")
    assert caption.endswith("+1 similar · weak")
    assert all(part in shown for part in ("no thumbnail is wide enough", "on a beach at dusk", "0.210",
                                          "1 near-duplicate", "weak match"))
    assert "weak" not in views.detail(3, _hit(3, 0.9, label="x", relevant=True), "cosine")


def test_index_choices_label_each_kind():
    choices = [IndexChoice("images", "model", "clip-ViT-B-32"), IndexChoice("pixels", "pixels", "pixels"),
               IndexChoice("trip", "album", "clip-ViT-B-32")]
    assert views.index_choices(choices) == [("images: CLIP clip-ViT-B-32", "images"),
                                            ("pixels: pixels (basic)", "pixels"),
                                            ("my collection: trip", "mine/trip")]


def test_overview_says_what_is_searched_or_what_to_run():
    assert views.overview(Overview(12345, "images", "tiny-clip")) == \
        "Main index: **12,345 images** (collection `images`, model `tiny-clip`)."
    problem = views.overview(Overview(problem="there is no index yet"))
    assert problem.startswith("**No index to search yet.** there is no index yet")
    assert "index_builder.py" in problem and "IMAGE_SEARCH_STORE" in problem


def test_album_views():
    hits = [_hit(1, 0.0, source="a.jpg"), _hit(2, 0.0, image=None), _hit(3, 0.0)]
    assert views.album_gallery(hits) == ([("/thumbs/1.jpg", "a.jpg"), ("/thumbs/3.jpg", None)], [hits[0].id, hits[2].id])
    assert views.album_page(60, 60, 600) == "Images 61–120 of 600, newest first."
    assert "empty" in views.album_page(0, 0, 0)
    assert views.upload_progress(480, 600, 3.0) == "480 of 600 images, about 1 s left"
    assert "private to this browser" in views.albums_intro(public=True)
    assert "private" not in views.albums_intro(public=False)


# --- The handlers, called directly -----------------------------------------------------------------------


def test_the_page_searches_by_text_best_first(service):
    out = searched(pages(service)[0].search_text(caption("blue triangle"), *controls()))
    assert len(out["results"]) == len(out["on_screen"]) == 5 and out["status"].startswith("Top **5** of ")
    assert [c.split()[0] for _, c in out["results"]] == ["#1", "#2", "#3", "#4", "#5"]
    query = Query(positive=(Part(kind="text", value=caption("blue triangle")),), k=5)
    ranked = service.search(query).hits  # vectors and words fused
    assert [h.id for h in out["on_screen"]] == [h.id for h in ranked]
    assert sum(h.label == "blue triangle" for h in out["on_screen"]) >= 4
    assert [_picture(image, service) for image, _ in out["results"]] == [thumbnails.at(h.image) for h in out["on_screen"]]
    assert out["text"] == caption("blue triangle") and out["image"] is None  # the query panel shows the query
    assert out["query"].main.value == caption("blue triangle") and out["next_offset"] == 5


def test_a_control_change_reruns_the_query_and_more_continues_it(service):
    page = pages(service)[0]
    first = searched(page.search_text(caption("red square"), *controls()))
    again = searched(page.rerun(first["query"], *controls(metric="l2")))
    assert [h.id for h in again["on_screen"]] == [h.id for h in first["on_screen"]]  # l2 ranks unit vectors as cosine
    assert all("distance" in c for _, c in again["results"])
    more = searched(page.more(first["query"], first["on_screen"], first["next_offset"], *controls()))
    assert [h.id for h in more["on_screen"][:5]] == [h.id for h in first["on_screen"]] and len(more["on_screen"]) == 10
    assert [c.split()[0] for _, c in more["results"]][5:] == ["#6", "#7", "#8", "#9", "#10"]
    assert page.rerun(PageQuery(), *controls()) == {}  # nothing searched yet: nothing changes


def test_a_result_opens_in_detail_and_searching_by_it_shows_it_as_the_query(service):
    page = pages(service)[0]
    first = searched(page.search_text(caption("green square"), *controls(k=4)))
    opened = page.click_result(_select(2), OPEN, first["query"], first["on_screen"], *controls())
    hit, picture = opened["selected"], opened["detail_image"]
    assert opened["detail"]["visible"] and "Score (cosine)" in opened["detail_text"]
    assert "results" not in opened  # opening a result changes nothing else
    assert [_picture(url, service) for url, _ in picture] == [thumbnails.at(hit.image)]  # at the app's route, never a file
    out = searched(page.search_selected(hit, *controls(k=3)))
    assert out["on_screen"][0].id == hit.id and out["on_screen"][0].score == pytest.approx(1.0, abs=1e-5)
    assert max(Image.open(out["image"]).size) == regions.SHOWN_MIN and out["text"] == ""  # a 256 px thumbnail, shown larger
    assert out["query"].main.thumbnail == hit.image
    for stale in (4, -1, 10_000):  # a click on what the gallery no longer holds changes nothing
        assert page.click_result(_select(stale), OPEN, first["query"], first["on_screen"], *controls()) == {}


def test_a_stored_image_s_thumbnail_searched_by_example_or_by_a_region_is_a_copy_that_goes_with_it(service):
    page = pages(service)[0]
    paths = [image for image, _ in page.examples().images]
    last = paths[-1]  # after the shipped photos, the thumbnails of the index's most frequent labels
    assert thumbnails.id_of(last) and not Path(last).exists()  # a hit's thumbnail: its bytes are in the store's pack
    by_example = searched(page.search_example(_select(len(paths) - 1), paths, *controls(k=3)))
    assert Path(by_example["query"].main.value).read_bytes() == thumbnails.at(last)  # searched by a copy of it
    assert by_example["query"].main.label == Path(last).name  # named as the image, not as the copy
    assert by_example["on_screen"][0].id == thumbnails.id_of(last)
    hit = searched(page.search_text(caption("green square"), *controls(k=1)))["on_screen"][0]
    query = searched(page.search_selected(hit, *controls(k=3)))["query"]
    tap = gr.SelectData(None, {"index": [5, 5], "value": None})
    marked = page.pick_corner(tap, query, None, *controls())
    region = searched(page.pick_corner(gr.SelectData(None, {"index": [200, 150], "value": None}), marked["query"],
                                       marked["corner"], *controls(k=3)))
    part = region["query"].main.part
    assert part.box and Path(part.value).read_bytes() == thumbnails.at(hit.image) and region["on_screen"]
    assert page.files.forget([hit.id]) >= 3  # the copy searched and the copies drawn on it go with the image
    assert not Path(part.value).exists()


def test_errors_show_the_librarys_message_and_leave_nothing_stale(service, tmp_path):
    page = pages(service)[0]
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    out = searched(page.search_image(str(fake), *controls()))
    assert "not an image" in out["status"] and out["results"] == [] and out["on_screen"] == []
    assert out["image"] is None and out["query"] == PageQuery()  # the unreadable image leaves the query box
    out = searched(page.search_text("a red circle", *controls(index="pixels")))
    assert "pixel" in out["status"] and out["results"] == []
    out = searched(page.search_text("a red circle", *controls(index="mine/gone")))
    assert out["status"].startswith("⚠️") and out["results"] == []
    assert searched(page.search_image(None, *controls()))["results"] == []  # removing the image clears


def test_label_filters_list_the_index_labels_and_filter_inside_the_search(service):
    page = pages(service)[0]
    filters = page.label_filters("", None)
    include, exclude = filters["include"], filters["exclude"]
    assert "red circle" in include["choices"] and include["choices"] == exclude["choices"]
    out = searched(page.search_text(caption("red circle"), *controls(k=8, exclude=["red circle"])))
    assert len(out["on_screen"]) == 8 and all(h.label != "red circle" for h in out["on_screen"])
    out = searched(page.search_text(caption("red circle"), *controls(k=8, include=["blue square"])))
    assert {h.label for h in out["on_screen"]} == {"blue square"}


def test_the_label_filters_take_a_value_the_browser_still_shows_without_gradio_refusing_it(demo):
    """A filter chosen on one index reaches the next event's inputs while the server already lists another
    index's labels (none for an album): Gradio's own check said "Value: ... is not in the list of choices: []"."""
    filters = [b for b in demo.blocks.values() if getattr(b, "label", None) in ("Only these labels", "Not these labels")]
    assert len(filters) == 2 and all(f.choices == [] for f in filters)  # as the page starts: no labels listed yet
    assert all(f.preprocess(["nature/landscapes"]) == ["nature/landscapes"] for f in filters)


def test_switching_the_index_keeps_the_filters_it_holds_and_clears_the_others_saying_so(local_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(local_store, store)
    service = SearchService.open(Settings(store=store, public=True))
    page, _, api = pages(service)
    api.collection_add([str(p) for p in write_folder(tmp_path / "up", per_class=1, seed=93)[:3]], "trip", KEY)
    query = PageQuery().adding(Shown(Part(kind="text", value=caption("red circle"))))

    out = searched(page.change_index(query, *controls("mine/trip", include=["red circle"], exclude=["blue square"], key=KEY)))
    assert out["status"].startswith("The label filters “red circle”, “blue square” do not apply to this index and "
                                    "were cleared.\n\nTop **3** of 3 images")  # searched without them
    assert out["include"]["value"] == [] and out["include"]["choices"] == [] and not out["include"]["interactive"]
    back = searched(page.change_index(query, *controls("images", include=["red circle"], key=KEY)))
    assert back["include"]["value"] == ["red circle"] and "red circle" in back["include"]["choices"]  # it holds it
    assert back["status"].startswith("Top") and {h.label for h in back["on_screen"]} == {"red circle"}
    idle = page.change_index(PageQuery(), *controls("mine/trip", include=["red circle"], key=KEY))  # nothing searched yet
    assert idle["status"] == "The label filter “red circle” does not apply to this index and was cleared."
    assert idle["include"]["value"] == [] and "on_screen" not in idle


def test_the_api_answers_hits_best_first_with_their_thumbnails_urls(service, local_store):
    hits = pages(service)[2].search_by_text(caption("red circle"), 5, "cosine", "", "", REQUEST)
    assert len(hits) == 5 and set(hits[0]) == {"id", "score", "label", "caption", "image", "similar", "taken", "matched"}
    query = Query(positive=(Part(kind="text", value=caption("red circle")),), k=5)
    assert [h["id"] for h in hits] == [h.id for h in service.search(query).hits]
    assert hits[0]["matched"] == {"label": ["red", "circle"]}
    assert sum(h["label"] == "red circle" for h in hits) >= 4
    root = JOIN.removesuffix("/gradio_api/queue/join")
    assert [h["image"] for h in hits] == [f"{root}/api/thumbnails/{h['id']}.jpg" for h in hits]  # a URL, never a file
    example = ROOT / "examples" / "cat.jpg"
    by_image = pages(service)[2].search_by_image(str(example), 3.0, "cosine", "", "", REQUEST)  # k as Gradio gives it
    assert len(by_image) == 3 and by_image[0]["score"] == pytest.approx(1.0, abs=1e-3)  # it finds itself


def test_the_index_dropdown_offers_the_shared_indexes(service):
    page = pages(service)[0]
    offered = page.index_choices(None)
    assert offered[0][1] == "images" and offered[0][0].startswith("images: CLIP ")
    assert ("pixels: pixels (basic)", "pixels") in offered


def test_refusals_become_public_messages_and_one_log_line(service, caplog):
    api = pages(service)[2]
    refusals = [
        (lambda: api.search_by_text("", 5, "cosine", "", "", REQUEST), "Type a description"),
        (lambda: api.search_by_text("a red circle", 0, "cosine", "", "", REQUEST), "from 1 to 50"),
        (lambda: api.search_by_text("a red circle", float("nan"), "cosine", "", "", REQUEST), "k must be a whole number"),
        (lambda: api.search_by_text("a red circle", 10**4000, "cosine", "", "", REQUEST), "from 1 to 50, not '1000"),
        (lambda: api.search_by_text("a red circle", 5, "nope", "", "", REQUEST), "metric: .nope. is not one of cosine"),
        (lambda: api.search_by_text("a red circle", 5, "cosine", "no-such-index", "", REQUEST), "Unknown index"),
        (lambda: api.search_by_text("a red circle", 5, "cosine", "pixels", "", REQUEST), "pixel method cannot read text"),
        (lambda: api.search_by_image(None, 5, "cosine", "", "", REQUEST), "Upload, paste or photograph"),
    ]
    for call, message in refusals:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(gr.Error, match=message) as raised:
            call()
        assert raised.value.print_exception is False and len(str(raised.value)) < 300
        records = [r for r in caplog.records if r.name == LOGGER]
        assert len(records) == 1 and records[0].message.startswith("refused in ") and records[0].exc_info is None


def test_a_bug_is_logged_with_its_traceback_and_hidden_from_the_caller(service, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(service, "search", broken)
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(gr.Error) as raised:
        pages(service)[2].search_by_text("a red circle", 5, "cosine", "", "", REQUEST)
    assert "secret" not in str(raised.value) and "server log" in str(raised.value)
    assert [r.exc_info is not None for r in caplog.records if r.name == LOGGER] == [True]


def test_without_a_store_the_page_says_what_to_run_and_searches_refuse(tmp_path):
    missing = tmp_path / "no-store"
    service = SearchService.open(Settings(store=missing))
    demo = layout.build_app(service)  # builds anyway: the page explains
    assert {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"} == PUBLIC
    assert "No index to search yet" in views.overview(service.overview())
    search, _, api = pages(service)
    with pytest.raises(gr.Error, match="index_builder.py"):
        api.search_by_text("a red circle", 5, "cosine", "", "", REQUEST)
    visit = search.first_visit(None)
    key, index_update, album_update = visit["key"], visit["index"], visit["album"]
    assert len(key) >= 16 and index_update["choices"] == [] and album_update["choices"] == []
    assert not missing.exists()


def test_albums_through_the_api_and_the_page(local_store, tmp_path, caplog):
    store = tmp_path / "store"
    shutil.copytree(local_store, store)
    service = SearchService.open(Settings(store=store, public=True))
    page, albums, api = pages(service)
    uploads = [str(p) for p in write_folder(tmp_path / "uploads", per_class=1, seed=91)[:3]]

    report = api.collection_add(uploads, "trip", KEY)
    assert report["indexed"] == 3 and report["total_in_collection"] == 3 and "store" not in report
    assert api.collection_list(KEY) == ["trip"]
    assert ("my collection: trip", "mine/trip") in page.index_choices(KEY)
    assert api.collection_list("another-key-0123456789") == []

    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    more = write_folder(tmp_path / "more", per_class=1, seed=92)[5]
    cut = tmp_path / "cut.png"  # a PNG whose last half never arrived: Pillow says "image file is truncated"
    out = io.BytesIO()
    Image.effect_noise((300, 300), 50).convert("RGB").save(out, "PNG")
    cut.write_bytes(out.getvalue()[:len(out.getvalue()) // 2])
    with caplog.at_level(logging.INFO, logger="search.pipeline.stages"):
        added = albums.add(KEY, "trip", [str(junk), str(cut), str(more)])
    summary, notes, cleared, album_update, index_update = (added[n] for n in ("summary", "notes", "uploads", "album", "index"))
    items, ids, selected, selected_id, where = (added[n] for n in ("gallery", "ids", "picked", "picked_id", "where"))
    assert summary.startswith("Added **1 image** to *trip*") and cleared is None and selected == "" and selected_id is None
    assert "holds 4 images" in summary and "/" not in summary and where == "Images 1–4 of 4, newest first."
    lines = notes["value"].splitlines()
    assert lines[0] == "**Notes on your files** (2)" and len(lines) == 4
    assert "- **notes\\.txt** — This kind of file cannot be used: not an image" in notes["value"]
    assert f"- **cut\\.png** — The file is damaged or is not an image: {views._md(CUT_SHORT)}" in lines
    assert "Error" not in notes["value"] and "truncated" not in notes["value"]  # the app's words; Pillow's go to the log
    assert any("cut.png" in r.message and "OSError: image file is truncated" in r.message for r in caplog.records)
    assert notes["visible"]
    assert album_update["value"] == "trip" and album_update["choices"] == ["trip"]
    assert "mine/trip" in {v for _, v in index_update["choices"]} and len(items) == len(ids) == 4

    hits = api.search_by_text("a red circle", 5, "cosine", "mine/trip", KEY, REQUEST)
    assert len(hits) == 4  # only the album's images
    assert sorted(ids) == sorted(h["id"] for h in hits)
    assert albums.pick(_select(1), ids) == {"picked": ids[1], "picked_id": ids[1]}  # no caption: named by its id
    named = gr.SelectData(None, {"index": 1, "value": {"image": {}, "caption": "beach.jpg"}})
    assert albums.pick(named, ids) == {"picked": "beach.jpg", "picked_id": ids[1]}  # the name shown, the id kept

    assert api.collection_delete([ids[0]], "trip", KEY) == {"removed": 1, "not_found": []}
    assert len(albums.show(KEY, "trip")["ids"]) == 3
    # nothing picked: a message in the tab, no pop-up, and nothing else changed
    assert albums.delete_picked(KEY, "trip", None, 0) == {"where": "⚠️ Click an image in the collection first."}
    asked = albums.drop(KEY, "trip", "mine/trip", None)  # the first click asks
    assert "Click again to delete “trip” and its 3 images" in asked["drop"]["value"] and asked["armed"] == "trip"
    assert api.collection_list(KEY) == ["trip"]  # nothing deleted yet
    view = albums.drop(KEY, "trip", "mine/trip", "trip")
    assert view["album"]["choices"] == [] and view["album"]["value"] == "photos"  # a name to add to again
    assert "mine/trip" not in {v for _, v in view["index"]["choices"]}
    assert view["index"]["value"] == "images"  # the dropped album was chosen under Index: the main index now
    assert view["gallery"] == [] and view["where"] == "Deleted collection *trip* and its 3 images."
    assert view["summary"] == "" and view["notes"]["visible"] is False  # the last upload's report went with it
    assert "red circle" in view["include"]["choices"] and view["include"]["interactive"]  # the main index's labels
    assert view["armed"] is None and view["drop"]["value"] == DROP
    with pytest.raises(gr.Error, match="no collection named 'trip'"):
        api.collection_drop("trip", KEY)


def test_an_album_made_with_an_earlier_model_is_offered_the_apps_model_and_swapped_to_it(local_store, tmp_path):
    from search.embedders.registry import load_embedder
    from search.service.albums import Albums
    from search.stores.store import Store

    store = tmp_path / "store"
    shutil.copytree(local_store, store)
    fake_embedder.install()  # the album's model: another family than the main index's CLIP
    uploads = [str(p) for p in write_folder(tmp_path / "uploads", per_class=1, seed=93)[:3]]
    earlier = Albums(Store.connect(store), load_embedder(fake_embedder.NAME), public=True, read_texts=False)
    assert earlier.add(KEY, "old", uploads).indexed == 3
    service = SearchService.open(Settings(store=store, public=True, ocr=False))
    _, albums, api = pages(service)

    view = albums.show(KEY, "old")
    assert view["swap"]["visible"] and "made with the model the app used before" in view["where"]
    swapped = albums.swap(KEY, "old")
    assert swapped["summary"].startswith("*old*: embedded 3 images again with `tiny-clip-shapes` in ")
    assert swapped["swap"]["visible"] is False and sorted(swapped["ids"]) == sorted(view["ids"])
    assert "before" not in swapped["where"] and "mine/old" in {v for _, v in swapped["index"]["choices"]}
    hits = api.search_by_text(caption("red circle"), 5, "cosine", "mine/old", KEY, REQUEST)
    assert sorted(h["id"] for h in hits) == sorted(view["ids"])  # the album's own images, by the app's text tower
    with pytest.raises(gr.Error, match="already searched with the app's model"):
        api.collection_swap("old", KEY)
    with pytest.raises(gr.Error, match="no collection named"):
        api.collection_swap("never-made", KEY)
    # checked at the boundary, as every endpoint's are: the name's format, then the key's
    with pytest.raises(gr.Error, match="not a valid collection name"):
        api.collection_swap("../old", KEY)
    with pytest.raises(gr.Error, match="key"):
        api.collection_swap("old", "short")


def test_a_url_search_shows_the_fetched_image_and_a_local_address_gets_the_hint(service, monkeypatch):
    page = pages(service)[0]
    photo = (ROOT / "examples" / "cat.jpg").read_bytes()
    monkeypatch.setattr(service, "fetch_url", lambda url: photo)
    out = searched(page.search_url("https://example.com/pets/cat.jpg", *controls(k=3)))
    shown, fetched = Image.open(out["image"]), Image.open(out["query"].main.value)
    assert Path(out["query"].main.value).read_bytes() == photo  # what was fetched is what is searched
    assert max(shown.size) == min(regions.SHOWN_MAX, max(fetched.size))  # and the query panel shows a copy of it
    assert shown.size[0] / shown.size[1] == pytest.approx(fetched.size[0] / fetched.size[1], rel=0.01)
    assert out["on_screen"][0].score == pytest.approx(1.0, abs=1e-3) and out["query"].main.label == "cat.jpg"
    assert out["url"] is gr.skip() or out["url"] == gr.skip()  # the URL stays in its box
    monkeypatch.undo()
    refused = searched(page.search_url("http://127.0.0.1:9/cat.jpg", *controls()))
    assert "loopback" in refused["status"] and "IMAGE_SEARCH_ALLOW_PRIVATE_URLS=1" in refused["status"]
    assert "refused_url" not in refused["status"] and refused["results"] == []


def test_the_notes_name_each_exact_duplicate_and_the_file_it_copies():
    from search.pipeline.report import BuildReport

    report = BuildReport("", "trip", "m", duplicates=1,
                         exact_duplicates=[{"source": "up.zip/copy of photo0.jpg", "same_as": "up.zip/photo0.jpg"}])
    assert views.ingest_rows(report) == [["copy of photo0.jpg", "exact duplicate, skipped",
                                          "the same image as photo0.jpg"]]
    assert views.ingest_notes(report).endswith("\n- **copy of photo0\\.jpg** — exact duplicate, skipped: "
                                               "the same image as photo0\\.jpg")
    assert views.ingest_notes(BuildReport("", "trip", "m")) == ""
