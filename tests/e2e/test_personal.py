"""Personal collections: sync, URL lists, crawling, near-duplicates (index_builder.py), and public caps."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from search import ImageIndex, QueryError, ServiceUnavailable
from search.config import AlbumLimits
from search.embedders.registry import load_embedder
from search.pipeline.build import BuildOptions, build_index
from search.service.albums import Albums
from search.sources.base import folder_items
from search.stores import thumbnails
from search.stores.store import Store
from tests.conftest import hostile_files, run_builder
from tests.fixtures.shapes import sample, write_folder
from tests.fixtures.site import body, lying_length, redirect, serve, slow


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def _sources(store: Path, collection: str = "images") -> set[str]:
    return {m["source"] for _, m in ImageIndex.open(store, collection).collection.scan_metadata()}


def test_sync_removes_deleted_and_reembeds_changed_files(tmp_path, random_clip):
    folder, store = tmp_path / "Pictures", tmp_path / "store"
    files = write_folder(folder, per_class=2, seed=1)
    assert run_builder("--dataset", folder, "--store", store, "--model", random_clip).returncode == 0
    files[0].unlink()  # deleted
    sample(1, seed=500)[0][0].save(files[1], "JPEG")  # changed in place: new content, same name
    shutil.copy(files[2], folder / "added-copy.jpg")  # an exact duplicate of a stored image
    sample(1, seed=501)[0][0].save(folder / "new.jpg")  # new
    done = run_builder("--dataset", folder, "--store", store, "--model", random_clip, "--sync", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = _report(tmp_path / "r.json")
    assert report["removed"] == 2 and report["indexed"] == 2 and report["duplicates"] == 1
    remaining = {str(f) for f in files[1:]} | {str(folder / "new.jpg")}
    assert _sources(store) == remaining
    assert len(ImageIndex.open(store)) == len(remaining)


def test_sync_is_refused_where_it_would_delete_by_mistake(tmp_path, random_clip):
    folder = tmp_path / "p"
    write_folder(folder, per_class=1, seed=1)
    limited = run_builder("--dataset", folder, "--store", tmp_path / "s", "--model", random_clip, "--sync", "--limit", "3")
    assert limited.returncode == 2 and "--sync needs" in limited.stderr


def test_unchanged_files_are_not_read_again(tmp_path, random_clip):
    folder, store = tmp_path / "Pictures", tmp_path / "store"
    write_folder(folder, per_class=2, seed=2)
    embedder = load_embedder(str(random_clip))
    first = build_index(folder_items(folder), Store.connect(store, create=True), "mine", embedder)
    assert first.indexed == 24

    def refuse():
        raise AssertionError("an unchanged file was read again")

    unread = [item.__class__(item.source, refuse, item.label, item.caption, item.fingerprint) for item in folder_items(folder)]
    again = build_index(unread, Store.connect(store), "mine", embedder, BuildOptions())
    assert again.indexed == 0 and again.already_indexed == 24 and not again.skipped


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    sample(1, seed=seed)[0][0].save(out, "JPEG")
    return out.getvalue()


def _site_routes() -> dict:
    page2 = '<html><body><img src="/img/3.jpg" alt="a blue square"><a href="/">home</a></body></html>'
    page1 = ('<html><body><img src="/img/1.jpg" alt="a red circle"><img srcset="/img/2.jpg 2x" alt="">'
             '<img src="/broken.jpg"><img src="/to-metadata"><img src="/huge"><img src="/slow">'
             '<img src="data:image/png;base64,AAAA"><a href="/page2.html#x">more</a>'
             '<a href="http://example.invalid/elsewhere.html">other site</a></body></html>')
    return {
        "/": body(page1.encode(), "text/html"),
        "/page2.html": body(page2.encode(), "text/html"),
        "/img/1.jpg": body(_jpeg(1)),
        "/img/2.jpg": body(_jpeg(2), "application/octet-stream"),
        "/img/3.jpg": body(_jpeg(3)),
        "/broken.jpg": body(hostile_files()["truncated.jpg"]),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/iam"),
        "/huge": lying_length,
        "/slow": slow,
    }


def test_url_list_downloads_cleans_and_reports_each_failure(tmp_path, random_clip):
    with serve(_site_routes()) as base:
        urls = tmp_path / "urls.txt"
        paths = ["/img/1.jpg", "/img/2.jpg", "/broken.jpg", "/to-metadata", "/huge", "/missing.jpg"]
        urls.write_text("# my list\n" + "\n".join(base + p for p in paths) + "\nftp://example.com/x.jpg\n\n")
        done = run_builder("--urls", urls, "--store", tmp_path / "s", "--model", random_clip,
                           "--allow-private-network", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = _report(tmp_path / "r.json")
    assert report["indexed"] == 2
    reasons = {s["source"].replace(base, ""): s["reason"] for s in report["skipped"]}
    assert reasons == {"/broken.jpg": "corrupt", "/to-metadata": "refused_url", "/huge": "too_large",
                       "/missing.jpg": "download_error", "ftp://example.com/x.jpg": "refused_url"}
    assert _sources(tmp_path / "s") == {base + "/img/1.jpg", base + "/img/2.jpg"}


def test_urls_to_private_addresses_are_refused_without_the_flag(tmp_path, random_clip):
    with serve(_site_routes()) as base:
        urls = tmp_path / "urls.txt"
        urls.write_text(f"{base}/img/1.jpg\nhttp://[::1]:9/a.jpg\nhttp://2130706433/a.jpg\n")
        done = run_builder("--urls", urls, "--store", tmp_path / "s", "--model", random_clip, "--report", tmp_path / "r.json")
    report = _report(tmp_path / "r.json")
    assert done.returncode == 0 and report["indexed"] == 0
    assert [s["reason"] for s in report["skipped"]] == ["refused_url"] * 3


def test_crawl_collects_same_site_images_with_alt_text(tmp_path, random_clip):
    with serve(_site_routes()) as base:
        done = run_builder("--crawl", base + "/", "--max-pages", 5, "--store", tmp_path / "s", "--model", random_clip,
                           "--allow-private-network", "--report", tmp_path / "r.json", timeout=120)
    assert done.returncode == 0, done.stderr
    report = _report(tmp_path / "r.json")
    assert report["indexed"] == 3
    # /slow ends within the 10 s cap here, so its 40 bytes reach the decoder (test_urls times one out).
    reasons = {s["source"].replace(base, ""): s["reason"] for s in report["skipped"]}
    assert reasons == {"/broken.jpg": "corrupt", "/to-metadata": "refused_url", "/huge": "too_large", "/slow": "unsupported"}
    index = ImageIndex.open(tmp_path / "s")
    captions = {m["source"].replace(base, ""): m.get("caption") for _, m in index.collection.scan_metadata()}
    assert captions == {"/img/1.jpg": "a red circle", "/img/2.jpg": None, "/img/3.jpg": "a blue square"}


def test_crawl_obeys_its_page_and_image_bounds(tmp_path, random_clip):
    with serve(_site_routes()) as base:
        done = run_builder("--crawl", base + "/", "--max-pages", 1, "--max-images", 1, "--store", tmp_path / "s",
                           "--model", random_clip, "--allow-private-network", "--report", tmp_path / "r.json")
    assert done.returncode == 0
    assert _report(tmp_path / "r.json")["indexed"] == 1


def test_near_duplicates_are_reported_and_collapse_in_results(tmp_path, shapes_model):
    folder, store = tmp_path / "photos", tmp_path / "store"
    write_folder(folder, per_class=3, seed=9)
    original = next((folder / "red circle").glob("*.jpg"))
    img = Image.open(original)
    img.resize((img.width // 2, img.height // 2)).save(folder / "red circle" / "smaller.jpg", quality=70)
    done = run_builder("--dataset", folder, "--store", store, "--model", shapes_model, "--report", tmp_path / "r.json")
    assert done.returncode == 0
    pairs = {frozenset((p["source"], p["similar_source"])) for p in _report(tmp_path / "r.json")["near_duplicates"]}
    assert frozenset((str(original), str(folder / "red circle" / "smaller.jpg"))) in pairs
    index = ImageIndex.open(store)
    plain = index.search_by_image(original, k=5)
    folded = index.search_by_image(original, k=5, fold=0.95)
    assert len(folded) == 5 and folded[0].similar
    assert len({h.id for h in folded} | {i for h in folded for i in h.similar}) > len({h.id for h in plain})


def test_public_caps_refuse_an_upload_before_writing_anything(tmp_path, random_clip):
    files = write_folder(tmp_path / "photos", per_class=1, seed=5)  # 12 images
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files[6:]:
            z.write(f, f"more/{f.name}")
    mine = Albums(Store.connect(tmp_path / "store", create=True), load_embedder(str(random_clip)), public=True,
                       limits=AlbumLimits(albums=2, images=8, files=7))
    key = "k" * 16
    assert mine.add(key, "first", files[:5]).total_in_collection == 5
    # 5 held + 6 in the zip > 8: refused whole, nothing indexed, no thumbnail written.
    thumbs = thumbnails.ids(tmp_path / "store")
    with pytest.raises(QueryError, match="holds 6 files and the collection 5 images"):
        mine.add(key, "first", [archive])
    assert len(mine.index(key, "first")) == 5
    assert thumbnails.ids(tmp_path / "store") == thumbs
    with pytest.raises(QueryError, match="over the limit of 7"):
        mine.add(key, "second", files[:8])
    assert mine.add(key, "second", [archive]).indexed == 6
    with pytest.raises(QueryError, match="2 collections"):
        mine.add(key, "third", files[:1])
    assert mine.names(key) == ["first", "second"]
    # A local app has no caps.
    local = Albums(Store.connect(tmp_path / "store", create=True), load_embedder(str(random_clip)), public=False,
                   limits=AlbumLimits(images=1))
    assert local.add(None, "all", files).indexed == 12


def test_global_caps_hold_however_many_keys_are_invented(tmp_path, random_clip):
    files = write_folder(tmp_path / "photos", per_class=1, seed=6)  # 12 images
    store, embedder = tmp_path / "store", load_embedder(str(random_clip))
    keys = [f"visitor-{i:02d}-0123456789" for i in range(5)]
    few = Albums(Store.connect(store, create=True), embedder, public=True, limits=AlbumLimits(albums_total=3, images_total=9))
    for key, chunk in zip(keys, (files[:3], files[3:6], files[6:8])):
        assert few.add(key, "album", chunk).indexed == len(chunk)
    with pytest.raises(ServiceUnavailable, match="public demo is full .no room for more collections"):
        few.add(keys[3], "album", files[8:9])
    with pytest.raises(ServiceUnavailable, match="public demo is full .no room for more images"):
        few.add(keys[0], "album", files[8:10])  # 8 held + 2 > 9, in a collection that exists
    assert few.add(keys[0], "album", files[8:9]).indexed == 1  # exactly at the cap is fine
    tiny_disk = Albums(Store.connect(store, create=True), embedder, public=True, limits=AlbumLimits(store_bytes=1024))
    with pytest.raises(ServiceUnavailable, match="public demo is full .no room left on its disk"):
        tiny_disk.add(keys[4], "album", files[9:])
    assert sorted(len(few.names(k)) for k in keys) == [0, 0, 1, 1, 1]  # nothing refused was created


def test_an_upload_with_no_usable_image_creates_no_collection(tmp_path, random_clip):
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    mine = Albums(Store.connect(tmp_path / "store", create=True), load_embedder(str(random_clip)), public=True)
    report = mine.add("k" * 16, "empty", [junk])
    assert report.indexed == 0 and [s["reason"] for s in report.skipped] == ["unsupported"]
    assert mine.names("k" * 16) == []


@pytest.mark.parametrize("ids", [["../victim"], ["./../thumbnails/ab/" + "a" * 32], ["A" * 32], ["a" * 31],
                                 ["a" * 32 + "\x00"], ["%2e%2e%2fvictim"], ["/etc/passwd"], [5], "a" * 32,
                                 ["a" * 5000]])
def test_malformed_ids_remove_nothing(tmp_path, random_clip, ids):
    files = write_folder(tmp_path / "photos", per_class=1, seed=8)[:3]
    (tmp_path / "victim.jpg").write_bytes(files[0].read_bytes())
    mine = Albums(Store.connect(tmp_path / "store", create=True), load_embedder(str(random_clip)), public=True)
    key = "k" * 16
    mine.add(key, "album", files)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "chroma" not in p.name)
    with pytest.raises(QueryError, match="image id|as a list"):
        mine.remove(key, "album", ids)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "chroma" not in p.name) == before
    assert len(mine.index(key, "album")) == 3


def test_remove_counts_what_went_and_names_what_was_not_there(tmp_path, random_clip):
    files = write_folder(tmp_path / "photos", per_class=1, seed=9)[:3]
    mine = Albums(Store.connect(tmp_path / "store", create=True), load_embedder(str(random_clip)), public=True)
    key = "k" * 16
    mine.add(key, "album", files)
    held = [h.id for h in mine.browse(key, "album")[0]]
    stranger = "0" * 32
    assert mine.remove(key, "album", [held[0], stranger, held[0]]).to_dict() == {"removed": 1, "not_found": [stranger]}
    assert mine.remove(key, "album", [held[0]]).to_dict() == {"removed": 0, "not_found": [held[0]]}
    assert len(mine.index(key, "album")) == 2
