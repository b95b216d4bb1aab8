"""A model swap on a real store (the tiny shapes CLIP -> a tiny SigLIP 2): the app answers throughout the
re-embedding, the comparison is made, a kill -9 mid-way resumes without embedding anything twice, and the
switch and the rollback each leave the collection whole, also when a kill -9 lands between their steps."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.app_process import RunningApp
from search.stores import thumbnails
from search.stores.chroma import ChromaBackend
from search.stores.store import Store
from tests.conftest import ROOT, run_builder
from tests.fixtures.shapes import CLASSES, caption, write_folder
from tests.fixtures.tiny_multilingual import vietnamese
from tests.fixtures.tiny_siglip import save_fixres

PROGRESS = re.compile(r"(\d+)/(\d+)")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, shapes_model):
    """One build for the module: each test swaps a copy of its store (the photos are only read)."""
    root = tmp_path_factory.mktemp("swap")
    folder, store = root / "shapes", root / "store"
    files = write_folder(folder, per_class=30, seed=4)  # 360 images
    done = run_builder("--dataset", folder, "--store", store, "--model", shapes_model)
    assert done.returncode == 0, done.stderr
    return store, files, save_fixres(root / "siglip")


@pytest.fixture()
def built(pristine, tmp_path):
    store, files, siglip = pristine
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", files, siglip


def _models(store: Path) -> dict[str, str | None]:
    opened = Store.connect(store)
    return {name: opened.open(name).model for name in opened.names()}


def _shared(store: Path) -> dict[str, str | None]:
    """The models of the shared collections (albums aside)."""
    return {name: model for name, model in _models(store).items() if name.startswith("images")}


def _album_brought_along(client, store: Path, model: Path, earlier: Path) -> None:
    """The album "trip", made with ``earlier``, is still searched with it after the switch to ``model``; its
    owner's /collection_swap embeds it again with ``model``: the same images found, nothing left beside it."""
    from gradio_client.exceptions import AppError

    def album_hits() -> list[str]:
        return [h["id"] for h in client.predict(caption("red circle"), 6, "cosine", "mine/trip", "",
                                                api_name="/search_by_text")]

    before = album_hits()
    album = next(n for n in _models(store) if n.endswith("trip"))
    assert _models(store)[album] == str(earlier)
    swapped = client.predict("trip", "", api_name="/collection_swap")
    assert swapped["images"] == swapped["reembedded"] == 6 and swapped["model"] == model.name
    assert _models(store)[album] == str(model)
    assert not any(n.startswith(album + ".") for n in _models(store))  # no shadow or kept copy left
    assert sorted(album_hits()) == sorted(before)  # the same six images, found by the new model's text tower
    with pytest.raises(AppError, match="already searched with the app's model"):
        client.predict("trip", "", api_name="/collection_swap")


def _answers(app: RunningApp, text: str) -> list[tuple[str, float]]:
    hits = httpx.post(app.url + "api/search", json={"text": text, "k": 5}, timeout=30).json()["hits"]
    return [(h["id"], h["score"]) for h in hits]


def _served_as_opened(app: RunningApp, store: Path, text: str, model: Path) -> None:
    """Wait until the running app answers ``text`` as the store's collection opened afresh does, with ``model``."""
    from search.index import ImageIndex

    fresh = ImageIndex.open(store)
    assert fresh.collection.model == str(model)
    expected = [(h.id, h.score) for h in fresh.search_by_text(text, k=5)]
    deadline = time.monotonic() + 60
    while not _same(got := _answers(app, text), expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)


def _same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(abs(x - y) <= 1e-4 for (_, x), (_, y) in zip(a, b, strict=True))


def test_the_app_answers_while_a_collection_is_re_embedded_then_serves_the_switch_and_the_rollback(built, shapes_model):
    """... and an album made before the switch is brought to the new model by its owner, through the API."""
    from gradio_client import handle_file

    store, files, siglip = built
    text = "ảnh hình tròn màu đỏ"
    with RunningApp(store) as app:
        client = app.client()
        trip = write_folder(store.parent / "trip", per_class=1, seed=12)[:6]
        assert client.predict([handle_file(str(p)) for p in trip], "trip", "", api_name="/collection_add")["indexed"] == 6
        answers: list[int] = []
        stop = threading.Event()

        def query() -> None:
            with httpx.Client(base_url=app.url, timeout=30) as http:
                while not stop.is_set():
                    answers.append(http.post("/api/search", json={"text": caption("red circle"), "k": 5}).status_code)

        asker = threading.Thread(target=query)
        asker.start()
        try:
            prompts = store.parent / "prompts.json"
            prompts.write_text(json.dumps({"en": {c: [caption(c)] for c in CLASSES},
                                           "vi": {c: [vietnamese(c)] for c in CLASSES}}), encoding="utf-8")
            done = run_builder("--store", store, "--reembed", siglip, "--batch-size", "8",
                               "--report", store.parent / "swap.json", "--prompts", prompts)
            assert done.returncode == 0, done.stderr
            before = _answers(app, text)
            # The running app follows the switch (no restart): it answers with the new model's vectors, and
            # goes on answering while it loads that model.
            assert run_builder("--store", store, "--switch").returncode == 0
            assert _shared(store) == {"images": str(siglip), "images.previous": str(shapes_model)}
            _served_as_opened(app, store, text, siglip)
            assert not _same(_answers(app, text), before)
            _album_brought_along(client, store, siglip, shapes_model)
            assert run_builder("--store", store, "--rollback").returncode == 0
            _served_as_opened(app, store, text, shapes_model)
            assert _same(_answers(app, text), before)
        finally:
            stop.set()
            asker.join(timeout=60)
        assert len(answers) >= 5 and set(answers) == {200}  # answered all along
        assert "serving 'images' with" in app.log.read_text()
    report = json.loads((store.parent / "swap.json").read_text())
    assert report["embedded"] == len(files) and report["from_original"] == len(files) and report["already"] == 0
    assert 0.99 < report["thumbnail_agreement"] <= 1.0001
    assert set(report["comparison"]["collections"]) == {"images", "images.next"}
    assert all("p@1" in e["image_to_image"]["cosine"] for e in report["comparison"]["collections"].values())
    assert "| images.next | image to image | cosine |" in done.stdout
    for name in ("images", "images.next"):  # text to image language by language, for the old and the new model
        assert f"| {name} | text to image (vi) | cosine |" in done.stdout
        assert report["comparison"]["collections"][name]["by_language"]["vi"]["text_queries"] == len(CLASSES)
    assert _shared(store) == {"images": str(shapes_model), "images.next": str(siglip)}
    refused = run_builder("--store", store, "--rollback")
    assert refused.returncode == 2 and "no earlier 'images' kept" in refused.stderr


def test_a_re_embedding_killed_mid_way_resumes_and_embeds_nothing_twice(built):
    store, files, siglip = built
    proc = subprocess.Popen([sys.executable, str(ROOT / "index_builder.py"), "--store", str(store), "--reembed", str(siglip),
                             "--batch-size", "4"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = 0, time.monotonic() + 120
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    buffer = ""
    while seen < len(files) // 3 and proc.poll() is None and time.monotonic() < deadline:
        buffer += (proc.stderr.read() or b"").decode(errors="replace")  # tqdm's progress, as the operator sees it
        counts = [int(done) for done, total in PROGRESS.findall(buffer) if int(total) == len(files)]
        seen = max(counts, default=0)
        time.sleep(0.01)
    assert proc.poll() is None, "it finished before it could be killed; the test proves nothing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    refused = run_builder("--store", store, "--switch")  # half a re-embedding must not go live
    assert refused.returncode == 2 and "run --reembed MODEL again" in refused.stderr
    again = run_builder("--store", store, "--reembed", siglip, "--report", store.parent / "again.json")
    assert again.returncode == 0, again.stderr
    report = json.loads((store.parent / "again.json").read_text())
    assert report["already"] >= seen and report["already"] + report["embedded"] == len(files)  # nothing twice
    shadow = Store.connect(store).open("images.next")
    assert shadow.count() == len(files) and sorted(shadow.all_ids()) == sorted(Store.connect(store).open("images").all_ids())


SWITCH_KILLED_AFTER_ONE_RENAME = """
import os, sys
from search.stores.chroma import ChromaBackend
from search.stores.chroma import ChromaBackend
from search.stores.store import Store
rename = ChromaBackend.rename
def once(self, name, new):
    rename(self, name, new)
    os.kill(os.getpid(), 9)  # kill -9 between the two renames
ChromaBackend.rename = once
Store.connect(sys.argv[1]).{change}(sys.argv[2])
"""


@pytest.mark.parametrize("change", ["switch", "rollback"])
def test_a_kill_between_the_steps_of_a_switch_is_finished_by_the_next_opener(built, shapes_model, change):
    store, _, siglip = built
    assert run_builder("--store", store, "--reembed", siglip).returncode == 0
    if change == "rollback":
        assert run_builder("--store", store, "--switch").returncode == 0
    killed = subprocess.run([sys.executable, "-c", SWITCH_KILLED_AFTER_ONE_RENAME.format(change=change), str(store), "images"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    half = set(ChromaBackend.connect(store, None, create=False).names())  # the backend alone: nothing finished
    assert (store / "swaps" / "images.json").exists() and "images" not in half  # the kill left it half done
    models = _models(store)  # opening the store (as the app and the builder do) finishes the change
    expected = {"images": str(siglip), "images.previous": str(shapes_model)} if change == "switch" else \
        {"images": str(shapes_model), "images.next": str(siglip)}
    assert models == expected and not (store / "swaps" / "images.json").exists()


def test_an_album_made_before_a_switch_is_searched_and_added_to_with_its_own_model(tmp_path, shapes_model):
    from search.embedders.registry import load_embedder
    from search.service.albums import Albums

    files = write_folder(tmp_path / "photos", per_class=1, seed=8)
    store = Store.connect(tmp_path / "store", create=True)
    before = Albums(store, load_embedder(str(shapes_model)), public=False)
    assert before.add(None, "trip", files[:6]).total_in_collection == 6
    after = Albums(store, load_embedder(str(save_fixres(tmp_path / "siglip"))), public=False)  # the main index moved
    hits = after.index(None, "trip").search_by_text(caption("red circle"), k=3)
    assert len(hits) == 3
    assert after.add(None, "trip", files[6:]).total_in_collection == 12  # its own model, not the main one
    assert store.open(next(n for n in store.names() if n.endswith("trip"))).model == str(shapes_model)


def test_the_operators_side_by_side_searches_both_collections_with_their_own_models(built):
    from search.config import Settings
    from search.web import pictures
    from search.web.side_by_side import SideBySide

    store, _, siglip = built
    assert run_builder("--store", store, "--reembed", siglip).returncode == 0
    names = Store.connect(store).names()
    assert SideBySide.pairs(names) == ["images"]
    compare = SideBySide(Settings(IMAGE_SEARCH_STORE=str(store)))
    left, right, status = compare.search("images", caption("red circle"), names)
    assert len(left["value"]) == len(right["value"]) == 8 and "Top 8 of each" in status
    assert left["label"].startswith("images · ") and right["label"] == f"images.next · {siglip.name}"
    for picture, _ in left["value"]:  # at the app's picture route, never a file of the store
        mac, name = picture.removeprefix(pictures.ROUTE + "/").split("/")
        assert pictures.read(store, mac, name) == thumbnails.read(store, name.removesuffix(".jpg"))
    _, _, refused = compare.search("images.next", "x", names)
    assert refused.startswith("⚠️") and "re-embedded twin" in refused


def test_images_deleted_since_a_re_embedding_are_dropped_from_it_before_a_switch(built):
    store, files, siglip = built
    assert run_builder("--store", store, "--reembed", siglip).returncode == 0
    from search import ImageIndex

    live = ImageIndex.open(store)
    gone = live.remove(live.collection.all_ids()[:3])
    assert len(gone) == 3
    refused = run_builder("--store", store, "--switch")
    assert refused.returncode == 2 and "3 it no longer has" in refused.stderr
    again = run_builder("--store", store, "--reembed", siglip, "--report", store.parent / "again.json")
    assert again.returncode == 0 and json.loads((store.parent / "again.json").read_text())["dropped"] == 3
    assert run_builder("--store", store, "--switch").returncode == 0
    assert Store.connect(store).open("images").count() == len(files) - 3


def test_a_name_too_long_to_swap_and_a_damaged_journal_are_refused_without_blocking_the_store(tmp_path):
    from search.errors import StoreError
    from search.stores import swaps

    with pytest.raises(StoreError, match="too long to swap"):
        swaps.check("x" * 56)
    swaps.check("x" * 54)
    store = Store.connect(tmp_path / "store", create=True)
    (tmp_path / "store" / "swaps").mkdir()
    (tmp_path / "store" / "swaps" / "images.json").write_text('{"name": "images"}')  # no change named
    with store.write_lock():  # a writer goes on, and the entry that was never whole goes
        pass
    assert not (tmp_path / "store" / "swaps" / "images.json").exists()
