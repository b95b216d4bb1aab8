"""Search by words on the page, as a person sees it at desktop and phone widths: why a hit matched, the date
order, and "nothing here looks like ..." (artifacts/page-words-*.png)."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import RunningApp, run_builder
from tests.e2e.test_page import WAIT, after, captions, choose, open_page, search_text, status
from tests.e2e.test_words import write_named_photos
from tests.fixtures.browser import CHROMIUM, DESKTOP, FLAGS, PHONE, needs_chromium, shot

pytestmark = needs_chromium
ABSENT = ("yellow circle", "yellow square", "yellow triangle")  # classes the store lacks


@pytest.fixture(scope="module")
def browser(tmp_path_factory, shapes_model):
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("page-words")
    write_named_photos(root / "photos")
    for cls in ABSENT:
        shutil.rmtree(root / "photos" / cls)
    done = run_builder("--dataset", root / "photos", "--store", root / "store", "--model", shapes_model)
    assert done.returncode == 0, done.stderr
    with RunningApp(root / "store") as app, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        chromium.app_url = app.url
        try:
            yield chromium
        finally:
            chromium.close()


def width_of(viewport) -> str:
    return "phone" if viewport is PHONE else "desktop"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_hit_found_by_its_file_name_says_so_and_the_detail_shows_the_words(browser, viewport):
    page = open_page(browser, viewport)
    search_text(page, "pho bo")
    first = captions(page)[:6]
    assert all("in file name" in c and ("phở bò" in c or "pho bo" in c) for c in first), first
    page.locator("#results img").first.click()
    detail = page.locator("#detail")
    detail.wait_for(timeout=WAIT)
    page.wait_for_function("() => /Found/.test(document.querySelector('#detail')?.innerText || '')", timeout=WAIT)
    text = detail.inner_text()
    assert "in the file name" in text and "Taken 2020" in text
    assert page.locator("#detail strong", has_text="pho").count() + page.locator("#detail strong", has_text="phở").count()
    shot(page, f"page-words-reason-{width_of(viewport)}")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= viewport["width"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_newest_first_orders_the_strong_matches_by_date(browser, viewport):
    page = open_page(browser, viewport)
    search_text(page, "bánh mì")
    after(page, lambda: choose(page, "Order", "Newest first (strong matches)"))
    shown = [c for c in captions(page) if "weak" not in c]
    dates = [part for c in shown for part in c.split(" · ") if part[:2] == "20" and len(part) == 10]
    assert len(dates) >= 4 and dates == sorted(dates, reverse=True), shown
    shot(page, f"page-words-newest-{width_of(viewport)}")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_class_the_store_lacks_gets_nothing_here_looks_like(browser, viewport):
    page = open_page(browser, viewport)
    said = search_text(page, "a photo of a yellow triangle")
    assert said.startswith("Nothing here looks like “a photo of a yellow triangle”"), said
    assert "strong match" not in said and page.locator("#results img").count() > 0  # the nearest are still shown
    shot(page, f"page-words-no-match-{width_of(viewport)}")
    held = search_text(page, "a photo of a red circle")
    assert "Nothing here" not in held and "strong match" in held
    assert "Nothing here" not in status(page)
