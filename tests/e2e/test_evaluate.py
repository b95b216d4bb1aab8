"""Evaluation as a person meets it: `python -m search.evaluate` on a built store, and the app's Evaluate tab."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from search.config import Settings
from tests.conftest import ROOT, free_port
from tests.fixtures.browser import CHROMIUM, FLAGS, needs_chromium


def evaluate_command(*args: str) -> subprocess.CompletedProcess:
    """Run the command as a user would."""
    return subprocess.run([sys.executable, "-m", "search.evaluate", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_the_command_compares_clip_and_pixels(shapes_store, tmp_path):
    done = evaluate_command("--store", str(shapes_store), "--out", str(tmp_path), "--k", "1,5", "--queries", "40",
                            "--seed", "1")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "evaluation.json").read_text())
    clip, pixels = report["collections"]["images"], report["collections"]["pixels"]
    assert clip["queries"] == pixels["queries"] == 40
    assert set(clip["image_to_image"]) == {"cosine", "ip", "l2", "l1", "correlation"}
    assert clip["image_to_image"]["cosine"]["p@5"] > pixels["image_to_image"]["cosine"]["p@5"]
    assert clip["text_to_image"]["cosine"]["p@1"] > 0.5
    assert "text_to_image" not in pixels
    assert "| images | text to image | cosine |" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "evaluation.png").stat().st_size > 10_000
    assert "query" in done.stderr  # the progress bar


def test_a_refusal_is_one_line_and_exit_code_2(shapes_store, tmp_path):
    done = evaluate_command("--store", str(shapes_store), "--out", str(tmp_path), "--metrics", "cosine,hamming")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown metric hamming; choose from cosine, ip, l2, l1, correlation"


@pytest.fixture
def tab_app(shapes_store):
    """A page holding only the Evaluate tab, served from this process on loopback."""
    import gradio as gr

    from search.web.evaluation_tab import evaluation_tab

    with gr.Blocks(analytics_enabled=False) as demo, gr.Tab("Evaluate"):
        evaluation_tab(Settings(store=shapes_store, default_dataset=None))
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@needs_chromium
def test_the_tab_runs_and_shows_the_table_and_charts(tab_app, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(tab_app, wait_until="domcontentloaded")
            chosen = page.locator("#evaluate-collections")
            for name in ("images", "pixels"):
                chosen.get_by_text(name, exact=True).click(timeout=60_000)
            page.locator("#evaluate-run").click()
            page.get_by_text("Choose at least one collection.").first.wait_for(timeout=30_000)  # a message, no trace
            for name in ("images", "pixels"):
                chosen.get_by_text(name, exact=True).click()
            page.locator("#evaluate-run").click()
            page.locator("#evaluate-table table").wait_for(timeout=90_000)
            page.locator("#evaluate-precision canvas, #evaluate-precision svg").first.wait_for(timeout=30_000)
            page.locator("#evaluate-latency canvas, #evaluate-latency svg").first.wait_for(timeout=30_000)
            page.locator("#evaluate-json").get_by_text("evaluation.json").wait_for(timeout=30_000)
            page.wait_for_timeout(500)  # the charts' drawing settles
            page.screenshot(path=str(tmp_path / "evaluate-tab.png"), full_page=True)
            table = page.locator("#evaluate-table").inner_text()
            assert "image to image" in table and "text to image" in table
            assert "pixels" in table and "correlation" in table
        finally:
            browser.close()
