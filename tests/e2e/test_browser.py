"""A person's view: headless Chromium loads the page, runs a text search, sees result images."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunningApp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
# CI installs Chromium (.ci/run); elsewhere the test says why it did not run instead of failing.
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium chromium-driver)",
)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@needs_chromium
def test_text_search_in_the_browser_shows_result_images(shapes_store):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with RunningApp(shapes_store) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app.url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Search by text").click(timeout=60_000)
            page.get_by_label("Description").fill("a blue triangle")
            page.get_by_role("button", name="Search", exact=True).click()
            page.get_by_text("results in").wait_for(timeout=30_000)
            gallery = page.locator("#results img")
            gallery.first.wait_for(timeout=30_000)
            captions = page.locator("#results").get_by_text("blue triangle", exact=False)
            page.screenshot(path=str(ARTIFACTS / "text-search.png"), full_page=True)
            assert gallery.count() >= 10
            assert captions.count() >= 4  # captions name the label of each hit
            loaded = page.evaluate(
                "() => Array.from(document.querySelectorAll('#results img')).filter(i => i.complete && i.naturalWidth > 0).length"
            )
            assert loaded >= 10  # the thumbnails really arrived
        finally:
            browser.close()
