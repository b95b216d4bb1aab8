"""The search page as a person uses it: headless Chromium at desktop and phone widths.

One app serves the module; each test opens its own page and saves a screenshot of the state it checks
(artifacts/page-*.png).
"""
from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from tests.conftest import RunningApp
from tests.fixtures.browser import CHROMIUM, DESKTOP, FLAGS, PHONE, needs_chromium, shot
from tests.fixtures.shapes import write_folder

pytestmark = needs_chromium
WAIT = 60_000


@pytest.fixture(scope="module")
def browser(app):
    """Chromium on the session's app (tests/e2e/conftest.py)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        chromium.app_url = app.url
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, viewport=DESKTOP):
    page = browser.new_page(viewport=viewport)
    page.goto(browser.app_url, wait_until="domcontentloaded")
    page.locator("#text-query textarea").wait_for(timeout=WAIT)
    return page


def status(page) -> str:
    return page.locator("#status").inner_text()


def after(page, action) -> str:
    """Run ``action``, then wait for the status line or the results' captions to change; the new status."""
    # A new search may end with the status line of the last (same count, same milliseconds), and Gradio then
    # leaves that element untouched: the captions (scores, distances, order) tell that it ran.
    seen = "() => document.querySelector('#status')?.innerText.trim() + '\\n' + " \
           "[...document.querySelectorAll('#results .caption-label')].map(c => c.innerText).join('|')"
    before = page.evaluate(seen)
    action()
    page.wait_for_function(f"s => {{ const now = ({seen})(); const t = now.split('\\n')[0]; "
                           "return t && now !== s && !/^[0-9.]+ ?s$|queue|processing/i.test(t) }", arg=before, timeout=WAIT)
    page.wait_for_timeout(300)  # the gallery renders with the status
    return status(page)


def search_text(page, text: str) -> str:
    page.locator("#text-query textarea").fill(text)
    return after(page, lambda: page.get_by_role("button", name="Search", exact=True).click())


def captions(page) -> list[str]:
    return page.locator("#results .caption-label").all_inner_texts()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the dropdown labelled ``label``."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_desktop_text_search_shows_results_above_the_fold(browser):
    page = open_page(browser)
    assert "Top" in search_text(page, "a red circle")
    first = page.locator("#results img").first.bounding_box()
    shot(page, "page-desktop-results")
    assert first is not None and first["y"] + first["height"] <= DESKTOP["height"]
    assert any("red circle" in c for c in captions(page)[:4])


def test_phone_has_one_column_no_sideways_scrolling_and_every_tab(browser):
    page = open_page(browser, PHONE)
    search_text(page, "a blue square")
    shot(page, "page-phone-results")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{width} px of content in a {PHONE['width']} px screen"
    boxes = [page.locator("#results img").nth(i).bounding_box() for i in range(3)]
    assert all(b and b["x"] + b["width"] <= PHONE["width"] for b in boxes)
    # Both boxes in one call: the page may still be scrolling to the results between two calls.
    query_bottom, results_top = page.evaluate(
        "() => [document.querySelector('#query-panel').getBoundingClientRect().bottom,"
        " document.querySelector('#results-panel').getBoundingClientRect().top]")
    assert results_top >= query_bottom - 1  # one column: results below the query
    for tab in ("Search", "My collection"):
        assert page.get_by_role("tab", name=tab).is_visible()


def test_changing_the_metric_runs_the_search_again(browser):
    page = open_page(browser)
    search_text(page, "a green triangle")
    assert not any("distance" in c for c in captions(page))
    after(page, lambda: choose(page, "Similarity", "Euclidean distance (L2)"))
    shot(page, "page-metric-l2")
    assert captions(page) and all("distance" in c for c in captions(page))


def test_a_file_that_is_not_an_image_gets_the_librarys_message(browser, tmp_path):
    page = open_page(browser)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a picture")
    message = after(page, lambda: page.locator("#query-image input[type=file]").set_input_files(str(fake)))
    shot(page, "page-not-an-image")
    assert "not an image" in message
    assert "preprocess" not in page.content()
    assert page.locator("#results img").count() == 0
    assert "Top" in search_text(page, "a red square")  # the error clears on the next action


def loaded(page, where: str) -> list[str]:
    """The pictures shown in ``where`` (a CSS selector) that the browser could not load, by their address."""
    return page.evaluate(f"() => [...document.querySelectorAll('{where} img')]"
                         ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")


def test_a_result_opens_in_full_and_searching_by_it_fills_the_query_panel(browser):
    page = open_page(browser)
    search_text(page, "a yellow circle")
    sources = page.evaluate("() => [...document.querySelectorAll('#results img')].map(i => i.src)")
    assert sources and all("/api/pictures/" in s for s in sources), sources  # the app's route, never Gradio's cache
    assert not loaded(page, "#results")
    page.locator("#results img").nth(1).click()
    page.locator("#detail").get_by_text("Score (cosine)").wait_for(timeout=WAIT)
    page.locator("#detail-image img").first.wait_for(timeout=WAIT)
    assert not loaded(page, "#detail-image")
    shot(page, "page-detail")
    after(page, lambda: page.get_by_role("button", name="Search by this image").click())
    shot(page, "page-searched-by-result")
    assert page.locator("#query-image img").count() == 1
    assert page.locator("#text-query textarea").input_value() == ""
    assert "yellow circle" in captions(page)[0]


def test_more_results_adds_the_next_page(browser):
    page = open_page(browser)
    search_text(page, "a shape")
    assert page.locator("#results img").count() == 12
    after(page, lambda: page.get_by_role("button", name="More results").click())
    shot(page, "page-more-results")
    assert page.locator("#results img").count() == 24
    ranks = [c.split()[0] for c in captions(page)]
    assert ranks == [f"#{i}" for i in range(1, 25)]


def test_an_exclude_filter_removes_that_label(browser):
    page = open_page(browser)
    search_text(page, "a red circle")
    assert any("red circle" in c for c in captions(page))
    after(page, lambda: choose(page, "Not these labels", "red circle"))
    shot(page, "page-exclude-filter")
    assert len(captions(page)) == 12
    assert not any("red circle" in c for c in captions(page))


def test_deleting_the_selected_collection_leaves_the_page_working(browser, tmp_path):
    page = open_page(browser)
    photos = write_folder(tmp_path / "mine", per_class=1, seed=11)[:4]
    page.get_by_role("tab", name="My collection").click()
    page.locator("#album-files input[type=file]").set_input_files([str(p) for p in photos])
    page.get_by_role("button", name="Add to collection").click()
    page.get_by_text("Added 4 images").wait_for(timeout=WAIT)
    page.get_by_role("tab", name="Search").click()
    search_text(page, "a red circle")
    assert "of 4 images" in after(page, lambda: choose(page, "Index", "my collection: photos"))
    assert len(captions(page)) == 4
    page.get_by_role("tab", name="My collection").click()
    page.get_by_role("button", name="Delete this collection").click()
    page.get_by_role("button", name="Click again to delete “photos” and its 4 images").click()  # it asks first
    page.get_by_text("Deleted collection").wait_for(timeout=WAIT)
    page.get_by_role("tab", name="Search").click()
    message = search_text(page, "a red circle")
    shot(page, "page-after-dropping-the-collection")
    assert "Top" in message and len(captions(page)) == 12
    after(page, lambda: choose(page, "Not these labels", "red circle"))  # the main index's filters are back
    assert not any("red circle" in c for c in captions(page))


def test_the_composer_adds_a_negative_part_shown_as_a_removable_chip(browser):
    page = open_page(browser)
    search_text(page, "a red circle")
    assert captions(page)[0].split()[1:3] == ["red", "circle"]
    page.locator("#composer").get_by_text("Refine: more like, less like").click()
    page.locator("#add-text textarea").fill("a circle")
    page.get_by_text("less like this", exact=True).first.click()
    after(page, lambda: page.get_by_role("button", name="Add to the query").click())
    shot(page, "page-composer")
    labels = [" ".join(c.split()[1:3]) for c in captions(page)[:6]]
    assert "1. − “a circle”" in page.locator("#parts").inner_text()
    assert all(label.startswith("red") for label in labels[:3]) and any("circle" not in label for label in labels)
    after(page, lambda: page.locator("#parts").get_by_role("button", name="Remove").first.click())
    assert page.locator("#parts").is_hidden() and captions(page)[0].split()[1:3] == ["red", "circle"]


def test_a_feedback_round_marks_results_and_can_be_undone(browser):
    page = open_page(browser)
    search_text(page, "a shape")
    before = captions(page)
    page.get_by_text("more like this", exact=True).last.click()  # the results' click mode
    square = next(i for i, c in enumerate(before) if "red square" in c)
    after(page, lambda: page.locator("#results img").nth(square).click())
    shot(page, "page-feedback")
    marked = captions(page)
    assert marked[0].startswith("👍 #1 red square")  # the marked result now leads, and pulls its kind up

    def ranks(shown: list[str]) -> list[int]:  # the store holds 4 red squares: where they stand
        return [i for i, c in enumerate(shown) if "red square" in c]

    assert len(ranks(marked)) == 4 and sum(ranks(marked)) < sum(ranks(before) + [12] * (4 - len(ranks(before))))
    after(page, lambda: page.get_by_role("button", name="Undo the last mark").click())
    assert not any(c.startswith("👍") for c in captions(page))


def test_a_region_drawn_on_the_query_image_is_searched_alone(browser, tmp_path):
    from PIL import Image, ImageDraw

    page = open_page(browser)
    scene = Image.new("RGB", (300, 150), (128, 128, 128))  # a blue square on the left, a red circle on the right
    draw = ImageDraw.Draw(scene)
    draw.rectangle([30, 30, 120, 120], fill=(35, 65, 220))
    draw.ellipse([180, 30, 270, 120], fill=(220, 35, 35))
    scene.save(tmp_path / "scene.png")
    after(page, lambda: page.locator("#query-image input[type=file]").set_input_files(str(tmp_path / "scene.png")))
    picture = page.locator("#query-image img").first
    box = picture.bounding_box()

    def tap(x: float, y: float) -> None:  # a point of the 300x150 scene, on the picture as shown
        picture.click(position={"x": x * box["width"] / 300, "y": y * box["height"] / 150})

    assert "Now tap the opposite corner" in after(page, lambda: tap(160, 10))
    after(page, lambda: tap(290, 140))
    shot(page, "page-region")
    assert "red circle" in captions(page)[0]
    assert page.locator("#query-image img").count() == 1  # the panel shows the image with the box


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_small_image_is_shown_large_and_the_first_tap_leaves_a_marker(browser, tmp_path, viewport):
    from PIL import Image, ImageDraw

    page = open_page(browser, viewport)
    icon = Image.new("RGB", (50, 50), (128, 128, 128))
    ImageDraw.Draw(icon).ellipse([10, 10, 40, 40], fill=(220, 35, 35))
    icon.save(tmp_path / "icon.png")
    after(page, lambda: page.locator("#query-image input[type=file]").set_input_files(str(tmp_path / "icon.png")))
    picture = page.locator("#query-image img").first
    box = picture.bounding_box()
    assert min(box["width"], box["height"]) >= 250, box  # not a thin strip under a label
    shown = picture.get_attribute("src")
    assert "Now tap the opposite corner" in after(page, lambda: picture.click(position={"x": 20, "y": 4}))
    page.wait_for_function("s => document.querySelector('#query-image img')?.getAttribute('src') !== s", arg=shown,
                           timeout=WAIT)
    marked = page.locator("#query-image img").first.bounding_box()
    label = page.locator("#query-image label, #query-image .label-wrap").first
    if label.count() and label.is_visible():  # nothing lies over the top of the picture, where the tap was
        assert label.bounding_box()["y"] + label.bounding_box()["height"] <= marked["y"] + 2
    shot(page, f"page-first-tap-{'phone' if viewport is PHONE else 'desktop'}")


def test_marked_results_leave_no_frame_on_the_slot_that_was_clicked(browser):
    page = open_page(browser)
    search_text(page, "a red circle")
    page.get_by_label("more like this", exact=True).click()
    after(page, lambda: page.locator("#results img").nth(5).click())
    page.mouse.move(1, 1)
    framed = page.evaluate("() => [...document.querySelectorAll('#results .thumbnail-item.selected')]"
                           ".map(e => getComputedStyle(e).borderColor)")
    plain = page.evaluate("() => getComputedStyle(document.querySelector('#results .thumbnail-item:not(.selected)'))"
                          ".borderColor")
    assert all(color == plain for color in framed), (framed, plain)
    shot(page, "page-marked")


def test_a_collection_shows_on_arrival_and_its_deletion_says_so(browser, tmp_path):
    write_folder(tmp_path / "mine", per_class=1, seed=41)
    files = sorted(str(p) for p in (tmp_path / "mine").rglob("*.jpg"))[:3]
    page = open_page(browser)
    page.get_by_role("tab", name="My collection").click()  # the collection box offers "photos" to add to
    page.locator("#album-files input[type=file]").set_input_files(files)
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Add to collection").click()
    page.get_by_text("It now holds 3 images").wait_for(timeout=WAIT)
    page.reload(wait_until="domcontentloaded")
    page.get_by_role("tab", name="My collection").click()
    page.get_by_text("Images 1–3 of 3").wait_for(timeout=WAIT)  # shown on arrival, nothing chosen first
    page.locator("#mine img").nth(2).wait_for(timeout=WAIT)
    pictures = page.evaluate("() => [...document.querySelectorAll('#mine img')].map(i => i.src)")
    assert len(pictures) == 3 and all("/api/pictures/" in p for p in pictures) and not loaded(page, "#mine")
    assert [_get(p) for p in pictures] == [200] * 3  # at the app's own route, signed: nothing in Gradio's cache
    page.get_by_role("button", name="Delete this collection").click()
    page.get_by_role("button", name="Click again to delete “photos” and its 3 images").click()
    page.get_by_text("Deleted collection photos and its 3 images.").wait_for(timeout=WAIT)
    page.wait_for_timeout(1500)  # nothing overwrites the confirmation, and the box offers a name to add to again
    assert page.get_by_text("Deleted collection photos and its 3 images.").is_visible()
    assert page.get_by_label("Collection", exact=True).input_value() == "photos"
    assert [_get(p) for p in pictures] == [404] * 3  # the album's pictures went with it
    shot(page, "page-dropped")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_page_serves_while_the_model_loads_then_an_older_collection_is_brought_to_the_apps_model(
        browser, shapes_store, random_clip, tmp_path):
    """The page comes before the model: a visitor then sees that it loads, a search sent meanwhile waits and is
    answered, and the page fills in (index, examples) without a reload. Then a collection made with another model
    (as before an operator's switch) says so in its tab, and its button embeds it again with the app's."""
    from search.embedders.registry import load_embedder
    from search.service.albums import Albums
    from search.stores.store import Store
    from search.web.albums_page import SWAP

    store = tmp_path / "store"
    shutil.copytree(shapes_store, store)
    photos = write_folder(tmp_path / "old", per_class=1, seed=13)[:5]
    earlier = Albums(Store.connect(store), load_embedder(str(random_clip)), public=False, read_texts=False)
    assert earlier.add(None, "old", photos).indexed == 5
    with RunningApp(store, loaded=False) as app:
        assert app.status()["state"] == "loading"  # the page is served; importing the model takes seconds more
        answer: dict = {}

        def search() -> None:
            body = json.dumps({"text": "a red circle", "k": 5}).encode()
            request = urllib.request.Request(app.url + "api/search", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=180) as r:
                answer.update(json.load(r), status=r.status)

        waiting = threading.Thread(target=search)
        waiting.start()
        page = browser.new_page(viewport=DESKTOP)
        try:
            page.goto(app.url, wait_until="domcontentloaded")
            overview = page.locator("#overview")
            overview.wait_for(timeout=WAIT)
            shot(page, "page-loading")
            page.wait_for_function("() => /Main index/.test(document.querySelector('#overview')?.innerText)",
                                   timeout=WAIT)
            waiting.join(120)
            assert answer["status"] == 200 and len(answer["hits"]) == 5 and app.status()["state"] == "ready"
            assert "circle" in answer["hits"][0]["label"]
            page.locator("#example-prompts").wait_for(timeout=WAIT)  # the examples came with the refresh
            assert "images" in overview.inner_text()
            shot(page, "page-loaded")

            page.get_by_role("tab", name="My collection").click()
            choose(page, "Collection", "old")
            page.get_by_text("made with the model the app used before").wait_for(timeout=WAIT)
            shot(page, "page-collection-behind")
            page.get_by_role("button", name=SWAP).click()
            page.get_by_text("embedded 5 images again with").wait_for(timeout=WAIT)
            assert "tiny-clip-shapes" in page.locator("body").inner_text()
            assert not page.get_by_role("button", name=SWAP).is_visible()
            assert not page.get_by_text("made with the model the app used before").is_visible()
            shot(page, "page-collection-swapped")
        finally:
            page.close()


# --- Readable at 1400x1000 and 400x800 (issue 33): captions, upload notes, examples, the Evaluate charts ---------

SMALL_PHONE = {"width": 400, "height": 800}
WIDTHS = pytest.mark.parametrize("viewport", [DESKTOP, SMALL_PHONE], ids=["1400", "400"])


def named(viewport) -> str:
    return str(viewport["width"])


@WIDTHS
def test_a_caption_takes_one_line_over_its_thumbnail_and_the_detail_view_says_it_all(browser, viewport):
    page = open_page(browser, viewport)
    search_text(page, "a shape")
    after(page, lambda: choose(page, "Order", "Newest first (strong matches)"))  # "· no date": longer than a line
    shot(page, f"page-search-{named(viewport)}")
    boxes = page.evaluate("""() => [...document.querySelectorAll('#results .thumbnail-item')].map(item => {
        const c = item.querySelector('.caption-label'), s = getComputedStyle(c), box = c.getBoundingClientRect();
        return {text: c.innerText, lines: (box.height - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom)
                                           - parseFloat(s.borderTopWidth)) / parseFloat(s.lineHeight),
                cut: c.scrollWidth > c.clientWidth, left: box.left, itemLeft: item.getBoundingClientRect().left,
                share: box.height / item.getBoundingClientRect().height}; })""")
    assert len(boxes) == 12 and any(b["cut"] for b in boxes), boxes  # some are longer than a line
    for b in boxes:
        assert b["lines"] < 1.5 and b["share"] < 0.25, b  # one line, over a quarter of the picture at most
        assert b["left"] >= b["itemLeft"], b  # cut at its end, not at its start (the rank)
    page.locator("#results img").first.click()
    page.locator("#detail").get_by_text("Score (cosine)").wait_for(timeout=WAIT)
    detail, first = page.locator("#detail").inner_text(), boxes[0]["text"]
    label = first.split(" · ")[0].split(" ", 1)[1]  # "#1 red circle · 0.3 · weak": red circle
    assert label in detail and ("weak match" in detail) == first.endswith("weak"), (first, detail)


def upload(page, files: list, said: str) -> None:
    page.locator("#album-files input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Add to collection").click()
    page.get_by_text(said).wait_for(timeout=WAIT)
    page.wait_for_timeout(500)


def notes_box(page) -> dict:
    return page.evaluate("""() => { const n = document.querySelector('#ingest-notes'), s = getComputedStyle(n),
        items = [...n.querySelectorAll('li')].map(li => li.getBoundingClientRect()), box = n.getBoundingClientRect();
        return {scroll: n.scrollHeight, client: n.clientHeight, wide: n.scrollWidth, width: n.clientWidth,
                overflow: s.overflowY, text: n.innerText, notes: items.length,
                inside: items.every(r => r.left >= box.left - 1 && r.right <= box.right + 1)}; }""")


@WIDTHS
def test_upload_notes_wrap_and_scroll_where_long(browser, tmp_path, viewport):
    photos = write_folder(tmp_path / "mine", per_class=1, seed=17)
    name = "holiday-in-the-mountains-with-the-whole-family-and-our-friends-from-Da-Lat-2024-07-15-evening-{}.jpg"
    junk = [tmp_path / name.format(i) for i in range(14)]
    for path in junk:
        path.write_text("a note, not a picture")
    page = open_page(browser, viewport)
    page.get_by_role("tab", name="My collection").click()
    album = f"notes-{named(viewport)}"  # its own, deleted at the end: other tests count what "photos" holds
    page.get_by_label("Collection", exact=True).fill(album)
    page.get_by_label("Collection", exact=True).press("Enter")
    upload(page, [photos[0], junk[0]], "1 file could not be used")
    short = notes_box(page)
    assert short["notes"] == 1 and short["scroll"] <= short["client"] + 1, short  # all of it in sight
    assert "not an image, or not one of JPEG" in short["text"] and "camera RAW with a preview" in short["text"]
    assert short["wide"] <= short["width"] and short["inside"], short  # wrapped, nothing cut at the right
    upload(page, [photos[1], *junk[1:]], "13 files could not be used")
    shot(page, f"page-notes-{named(viewport)}")
    long = notes_box(page)
    assert long["notes"] == 13 and long["wide"] <= long["width"] and long["inside"], long
    assert long["scroll"] > long["client"] and long["overflow"] in ("auto", "scroll"), long  # it scrolls, not clips
    assert long["client"] <= 0.4 * viewport["height"]  # and leaves the collection in sight
    page.locator("#ingest-notes li").last.scroll_into_view_if_needed()
    last = page.locator("#ingest-notes li").last.bounding_box()
    box = page.locator("#ingest-notes").bounding_box()
    assert box["y"] - 1 <= last["y"] and last["y"] + last["height"] <= box["y"] + box["height"] + 1
    page.get_by_role("button", name="Delete this collection").click()
    page.get_by_role("button", name=f"Click again to delete “{album}” and its 2 images").click()
    page.get_by_text(f"Deleted collection {album}").wait_for(timeout=WAIT)


def test_the_examples_are_in_sight_on_arrival(browser):
    page = open_page(browser)
    examples = [page.locator(f"#example-{kind}") for kind in ("prompts", "images")]
    for example in examples:
        example.wait_for(timeout=WAIT)  # they come with the page's first refresh
    page.wait_for_timeout(500)
    shot(page, "page-arrival-1400")
    assert page.evaluate("() => window.scrollY") == 0
    for example in examples:
        box = example.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= DESKTOP["height"], box
    assert page.locator("#example-prompts").get_by_text("a photo of a blue circle").is_visible()


@WIDTHS
def test_the_evaluate_charts_read_at_each_width(browser, viewport):
    page = open_page(browser, viewport)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#evaluate-collections input:checked").first.wait_for(timeout=WAIT)  # listed on arrival
    page.locator("#evaluate-run").click()
    for chart in ("precision", "latency"):
        page.locator(f"#evaluate-{chart} svg.marks").wait_for(timeout=WAIT)
    page.wait_for_timeout(1000)  # the charts' drawing settles
    shot(page, f"page-evaluate-{named(viewport)}")
    assert page.locator("#evaluate-precision .role-legend-title text").text_content() == "Results looked at"
    assert page.locator("#evaluate-precision .role-legend-label text").all_text_contents()[:2] == ["top 1", "top 5"]
    for chart in ("precision", "latency"):
        axes = page.evaluate(f"""() => {{ const svg = document.querySelector('#evaluate-{chart} svg.marks');
            return [svg.getBoundingClientRect().toJSON(), [...svg.querySelectorAll('.role-axis')].map(axis =>
                [...axis.querySelectorAll('.role-axis-label text')].map(t => t.getBoundingClientRect().toJSON()))]; }}""")
        frame, labels = axes
        assert sum(map(len, labels)) > 5, labels
        for boxes in labels:
            for a in boxes:  # each label in the chart, and apart from the others on its axis
                assert frame["left"] - 1 <= a["left"] and a["right"] <= frame["right"] + 1, (chart, a, frame)
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    overlap = (min(a["right"], b["right"]) - max(a["left"], b["left"]),
                               min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]))
                    assert min(overlap) <= 0.5, (chart, a, b)
