"""OCR's rules without running the engine: refusals, failures, what a missing install says, Tesseract's threads
(the engine's readings: tests/e2e/test_ocr_engine.py)."""
from __future__ import annotations

import io
import os
import subprocess

import pytesseract
import pytest
from PIL import Image

from search.images import ocr

needs_tesseract = pytest.mark.skipif(ocr.missing() is not None, reason=f"no OCR here: {ocr.missing()}")


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


@needs_tesseract
@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + bytes(200)])
def test_bytes_that_are_no_image_give_nothing(data):
    assert ocr.read_text(data) == ""


@needs_tesseract
def test_a_tesseract_failure_gives_nothing(monkeypatch):
    def fail(*args, **kwargs):
        raise pytesseract.TesseractError(1, "Error in pixReadMem")

    monkeypatch.setattr(pytesseract, "image_to_data", fail)
    assert ocr.read_text(jpeg(Image.new("RGB", (64, 48), "white"))) == ""


@pytest.fixture
def fresh_missing():
    """missing() asked again, and its answer for this machine restored afterwards."""
    ocr.missing.cache_clear()
    yield ocr.missing
    ocr.missing.cache_clear()


def test_without_tesseract_missing_says_how_to_install_it_and_read_text_refuses(monkeypatch, fresh_missing):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    reason = fresh_missing()
    assert reason and "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-vie" in reason
    assert "packages.txt" in reason
    assert fresh_missing() is reason  # asked once
    with pytest.raises(ocr.OcrUnavailableError) as err:
        ocr.read_text(b"anything")
    assert str(err.value) == reason


def test_a_missing_language_pack_is_named(monkeypatch, fresh_missing):
    monkeypatch.setattr(pytesseract, "get_tesseract_version", lambda: "5.3.0")
    monkeypatch.setattr(pytesseract, "get_languages", lambda: ["eng", "osd"])
    reason = fresh_missing()
    assert reason and "tesseract-ocr-vie" in reason.split(".")[0] and "tesseract-ocr-eng" not in reason.split(".")[0]
    monkeypatch.setattr(pytesseract, "get_languages", lambda: ["eng", "vie"])
    fresh_missing.cache_clear()
    assert fresh_missing() is None


def test_tesseract_runs_on_one_thread_unless_the_operator_says_otherwise(monkeypatch):
    env = ocr._tesseract().pytesseract.environ
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    monkeypatch.setenv("SOME_SETTING", "kept")
    assert env["OMP_THREAD_LIMIT"] == "1" and dict(env)["SOME_SETTING"] == "kept" and len(dict(env)) == len(env)
    assert "OMP_THREAD_LIMIT" not in os.environ  # torch, in this process, keeps its threads
    child = subprocess.run(["/bin/sh", "-c", "echo $OMP_THREAD_LIMIT $SOME_SETTING"], env=env, capture_output=True, text=True)
    assert child.stdout == "1 kept\n"  # what pytesseract's Popen passes on
    monkeypatch.setenv("OMP_THREAD_LIMIT", "4")
    assert env["OMP_THREAD_LIMIT"] == "4" and list(env).count("OMP_THREAD_LIMIT") == 1
