"""Personal collections in the app, as a public deployment runs them: upload, search, delete, isolation."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from bench.load import run_mixed
from search import ImageIndex
from search.stores import thumbnails
from tests.conftest import hostile_files
from tests.fixtures.shapes import write_folder

ALICE, BOB = "alice-secret-key-0123456789", "bob-secret-key-9876543210"


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("uploads")
    files = write_folder(root / "loose", per_class=1, seed=77)  # 12 images no store has seen
    archive = root / "trip.zip"
    extra = write_folder(root / "zipped", per_class=1, seed=78)
    with zipfile.ZipFile(archive, "w") as z:
        for f in extra[:4]:
            z.write(f, f"trip/{f.parent.name}/{f.name}")
        z.writestr("trip/broken.jpg", hostile_files()["truncated.jpg"])
        z.writestr("__MACOSX/._junk", b"resource fork")
    return files, archive


def test_upload_search_delete_and_isolation(public_app, uploads):
    app, store = public_app, Path(public_app.env["IMAGE_SEARCH_STORE"])
    files, archive = uploads
    alice, bob = app.client(), app.client()
    main_before = len(ImageIndex.open(store, "images"))

    report = alice.predict([handle_file(str(f)) for f in files] + [handle_file(str(archive))], "trip", ALICE,
                           api_name="/collection_add")
    assert report["indexed"] == 16 and report["total_in_collection"] == 16
    assert [(Path(s["source"]).name, s["reason"]) for s in report["skipped"]] == [("broken.jpg", "corrupt")]
    assert alice.predict(ALICE, api_name="/collection_list") == ["trip"]

    hits = alice.predict("a red circle", 16, "cosine", "mine/trip", ALICE, api_name="/search_by_text")
    assert len(hits) == 16  # only Alice's uploads: the shared index has 50+ images
    red = [h for h in hits if h["score"] > 0.5]
    assert red, "the trained model finds the red circles among the uploads"

    # Bob sees nothing of Alice's, and cannot touch it.
    assert bob.predict(BOB, api_name="/collection_list") == []
    with pytest.raises(AppError, match="no collection named 'trip'"):
        bob.predict("a red circle", 5, "cosine", "mine/trip", BOB, api_name="/search_by_text")
    with pytest.raises(AppError, match="no collection named 'trip'"):
        bob.predict([hits[0]["id"]], "trip", BOB, api_name="/collection_delete")
    with pytest.raises(AppError, match="key"):
        bob.predict("short", api_name="/collection_list")

    # Deleting removes the record and its thumbnail (no other collection holds that image).
    gone = hits[0]["id"]
    assert thumbnails.exists(store, gone)
    assert alice.predict([gone], "trip", ALICE, api_name="/collection_delete") == {"removed": 1, "not_found": []}
    after = alice.predict("a red circle", 16, "cosine", "mine/trip", ALICE, api_name="/search_by_text")
    assert len(after) == 15 and gone not in {h["id"] for h in after}
    assert not thumbnails.exists(store, gone)

    # The shipped index is untouched, whatever the collection is called.
    for name in ("images", "../images", "IMAGES", "a" * 40, ""):
        try:
            alice.predict([handle_file(str(files[0]))], name, ALICE, api_name="/collection_add")
        except AppError as err:
            assert "collection name" in str(err)
    assert len(ImageIndex.open(store, "images")) == main_before

    assert alice.predict("trip", ALICE, api_name="/collection_drop") == {"removed": 15}
    assert "trip" not in alice.predict(ALICE, api_name="/collection_list")


def test_bad_uploads_are_reported_not_fatal(public_app, tmp_path):
    app = public_app
    client = app.client()
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 but not really a zip")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    report = client.predict([handle_file(str(not_zip)), handle_file(str(junk))], "junk", ALICE, api_name="/collection_add")
    assert report["indexed"] == 0
    assert {s["reason"] for s in report["skipped"]} == {"unsupported"}
    with pytest.raises(AppError, match="Choose some images"):
        client.predict([], "junk", ALICE, api_name="/collection_add")


def test_visitors_uploading_searching_and_deleting_at_once_each_see_only_their_own_images(public_app):
    """A few seconds of bench/load.py's mixed mode (which runs 32 visitors for 60 s and reports the waits); no
    timing is asserted. Each visitor's album goes at the end, so the other tests on the session's public app find it
    as it was."""
    app = public_app
    report = run_mixed(app, users=4, seconds=4, rounds=1, baseline=False)
    print(report)
    assert report["errors"] == {} and report["http_5xx"] == 0, report["error_samples"]
    assert report["visitors_still_waiting_at_join"] == 0
    assert report["requests"].get("upload", 0) >= 4 and report["album_hits_checked"] > 0  # the checks saw hits
    assert report["isolation_violations"] == 0, report["violation_samples"]
    assert report["stale_hits"] == 0 and report["count_mismatches"] == 0
    assert report["album_tokens_per_visitor_max"] == 1
