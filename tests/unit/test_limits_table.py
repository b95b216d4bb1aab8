"""The limits table (docs/configuration.md) says the code's limits: each row's values are read from the constants
behind it.

A row whose limit changes in the code, a limit added to the table without a check here, or a row that goes,
fails this test, so the table cannot drift from what a person meets (a 57 MB PNG skipped for a byte limit the
table did not list). Sizes are written as the app's messages write them (``search.core.units``).
"""
from __future__ import annotations

from search.config import AlbumLimits, Settings
from search.core.query import MAX_K, MAX_LABELS, MAX_PAGE, MAX_PARTS, MAX_TEXT_CHARS
from search.core.units import data_size, megapixels
from search.images.decode import COST_HEADROOM, DECODE_BUDGET_PIXELS, MAX_BYTES, MAX_PIXELS, QUERY_MAX_PIXELS
from search.sources.uploads import ARCHIVE_MAX_PIXELS, MAX_MEMBERS, MAX_NAME_CHARS, MAX_TOTAL_BYTES, UPLOAD_MAX_PIXELS
from search.web.files import KEEP_S
from search.web.http_api import MAX_BODY_BYTES
from search.web.server import MAX_FILE_SIZE
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "configuration.md"
HEADER = "| limit | value |"


def _default(name: str) -> int:
    """A setting's default (the environment of the test run is not read)."""
    return Settings.model_fields[name].default


def expected() -> dict[str, list[str]]:
    """Each row of the table, by its first cell, and what its value must say."""
    limits = AlbumLimits()
    return {
        "a file uploaded to the app (the page, or a Gradio API endpoint)": [data_size(MAX_FILE_SIZE)],
        "an image file the app reads: a build's (folder or dataset), one inside a zip, one fetched from an image URL":
            [data_size(MAX_BYTES), f"({MAX_BYTES:,} bytes)"],
        "a query image, or an image uploaded to a collection on a public deployment":
            [f"{megapixels(QUERY_MAX_PIXELS)} decoded", "twice" if COST_HEADROOM == 2 else f"{COST_HEADROOM} times",
             megapixels(QUERY_MAX_PIXELS * COST_HEADROOM)],
        "an image in a build from the command line, or uploaded to a collection on a local app": [megapixels(MAX_PIXELS)],
        "one upload to a collection on a public deployment (every file and zip member together)":
            [f"{megapixels(ARCHIVE_MAX_PIXELS)} decoded"],
        "one upload to a collection": [f"{limits.files:,} files"],
        "a zip archive uploaded to a collection":
            [f"{MAX_MEMBERS:,} files", f"{data_size(MAX_TOTAL_BYTES)} unpacked", f"at most {MAX_NAME_CHARS} characters"],
        "decoding in flight, the whole process": [f"{DECODE_BUDGET_PIXELS // 1_000_000} M pixel units"],
        "what the app keeps for visitors (Gradio's cache folder: uploads, fetched images, query previews)":
            [f"{_default('upload_budget_mb')} MB", f"after {KEEP_S // 60} minutes"],
        "a visitor (public)": [f"{limits.albums} collections", f"{limits.images:,} images each"],
        "all visitors (public)": [f"{_default('max_collections_total'):,} collections",
                                  f"{_default('max_images_total'):,} images",
                                  f"a {data_size(_default('max_store_mb') * 1024**2)} store folder"],
        "a query": [f"{MAX_PARTS} parts", f"a description of {MAX_TEXT_CHARS:,} characters", f"{MAX_PAGE} results a page",
                    f"{MAX_K:,} deep", f"{MAX_LABELS} labels a filter"],
        "a `POST /api/search` body": [data_size(MAX_BODY_BYTES)],
        "requests": [f"{_default('queue_size')} waiting", f"{_default('concurrency')} served at once"],
    }


def documented_limits() -> dict[str, str]:
    """The limits table: each row's first cell and its value."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # past the header and its |---| line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, value = (cell.strip() for cell in line.strip().strip("|").split(" | ", 1))
        rows[name] = value
    return rows


def test_the_limits_table_lists_every_limit_with_the_codes_values():
    table, wanted = documented_limits(), expected()
    assert sorted(table) == sorted(wanted), f"rows in the limits table of {PAGE.name} and in this test differ"
    wrong = {name: [w for w in says if w not in table[name]] for name, says in wanted.items()}
    assert not any(wrong.values()), {name: missing for name, missing in wrong.items() if missing}


def test_the_upload_limits_are_the_query_limits():
    """The table has one row for both: that stays true only while they are one constant."""
    assert UPLOAD_MAX_PIXELS == QUERY_MAX_PIXELS
