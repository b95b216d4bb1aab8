"""The store failing under the real app: a hung Chroma server, kill -9 mid-upload, a disk that fills, a
read-only disk. Each ends with an oracle over every file of the store and every URL the app gave out."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from search.stores import thumbnails
from search.stores.store import Store
from tests.conftest import ROOT, RunningApp, free_port
from tests.fixtures.chroma_server import ChromaServer
from tests.fixtures.hostile import jpeg

KEY = "store-faults-visitor-0123"


def _zip(path: Path, count: int, seed: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(f"photos/{i:04d}.jpg", jpeg(seed + i))
    return path


def _held(store: Path) -> dict[str, set[str]]:
    """Every collection's ids (read with the app stopped: one process writes an embedded store)."""
    opened = Store.connect(store)
    return {name: set(opened.open(name).all_ids()) for name in opened.names()}


def _orphans(store: Path) -> list[str]:
    """Thumbnails no record accounts for, and bytes past a pack's committed end (a kill's half-written batch)."""
    held = set().union(*_held(store).values())
    return sorted(thumbnails.ids(store) - held) + _dead_tails(store)


def _dead_tails(store: Path) -> list[str]:
    index = sqlite3.connect(store / thumbnails.FOLDER / thumbnails.INDEX)
    try:
        ends = dict(index.execute("SELECT pack, end FROM packs").fetchall())
    finally:
        index.close()
    return [pack.name for pack in (store / thumbnails.FOLDER).glob("pack-*.bin")
            if pack.stat().st_size != ends.get(int(pack.stem.removeprefix("pack-")))]


def _albums(held: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: ids for name, ids in held.items() if name.startswith("mine-")}


# --- kill -9 during an upload -----------------------------------------------------------------------------


def test_kill_9_mid_upload_leaves_no_thumbnail_without_its_record(shapes_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(shapes_store, store)
    before = thumbnails.ids(store)
    archive = _zip(tmp_path / "photos.zip", 240, seed=50_000)
    kills = 0
    for threshold in (8, 72, 150):  # new thumbnails on disk when the app dies (batches of 32 go in one write)
        with RunningApp(store, IMAGE_SEARCH_PUBLIC="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio")) as app:
            upload = threading.Thread(target=_quietly, args=(app, archive), daemon=True)
            upload.start()
            deadline = time.monotonic() + 120
            while (len(thumbnails.ids(store) - before) < threshold
                   and upload.is_alive() and time.monotonic() < deadline):
                time.sleep(0.002)
            if upload.is_alive():
                os.kill(app.proc.pid, signal.SIGKILL)
                kills += 1
            app.proc.wait(timeout=30)
    assert kills == 3, "the upload finished before the app could be killed; the test proves nothing"
    query = {"positive": [{"text": "a photo"}], "k": 50, "index": "mine/photos"}
    with RunningApp(store, IMAGE_SEARCH_PUBLIC="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio")) as app:
        _wait_for(lambda: not _orphans(store), 30)  # the start's sweep
        assert not _orphans(store), _orphans(store)[:5]  # what the kills left between thumbnail and record is gone
        client, http = app.client(), httpx.Client(base_url=app.url, timeout=30)
        if client.predict(KEY, api_name="/collection_list"):  # what landed before the kills
            urls = [h["image"] for h in client.predict(query, [], KEY, api_name="/search")["hits"]]
            assert urls and all(http.get(u).status_code == 200 for u in urls)
            client.predict("photos", KEY, api_name="/collection_drop")
            assert all(http.get(u).status_code == 404 for u in urls)  # every URL it gave out is gone with it
        for image_id in {f"{i:032x}" for i in range(3)} | thumbnails.ids(store) - before:
            assert http.get(f"/api/thumbnails/{image_id}.jpg").status_code == 404
    assert not _orphans(store), _orphans(store)[:5]
    assert thumbnails.ids(store) == before  # the shipped index's thumbnails only
    assert not _albums(_held(store))


def _quietly(app: RunningApp, archive: Path) -> None:
    try:
        app.client().predict([handle_file(str(archive))], "photos", KEY, api_name="/collection_add")
    except Exception:  # the app is killed under it
        pass


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


# --- A disk that fills, a disk that is read-only ----------------------------------------------------------


def _mount(kind: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *kind, str(target)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"this machine cannot mount a file system for the test: {done.stderr.strip()[:200]}")


@contextmanager
def _tmpfs(path: Path, megabytes: int):
    _mount(["-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs"], path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the file system."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "wb") as out:
        out.truncate(0)
        room = stats.f_bavail * stats.f_frsize - leave
        chunk = b"\0" * (1 << 20)
        while room > 0:
            out.write(chunk[: min(room, len(chunk))])
            room -= len(chunk)
    return filler


def test_a_disk_that_fills_mid_upload_is_named_and_leaves_no_empty_album_or_orphans(shapes_store, tmp_path):
    with _tmpfs(tmp_path / "disk", 64) as disk:
        store = disk / "store"
        shutil.copytree(shapes_store, store)
        before = thumbnails.ids(store)
        archive = _zip(tmp_path / "many.zip", 600, seed=70_000)
        with RunningApp(store, IMAGE_SEARCH_PUBLIC="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio")) as app:
            client = app.client()
            filler = _fill(disk, leave=600_000)
            for attempt in ("first", "second"):
                with pytest.raises(AppError) as refused:
                    client.predict([handle_file(str(archive))], attempt, KEY, api_name="/collection_add")
                message = str(refused.value)
                assert message.startswith("The server's disk is full"), message
                assert "mine-" not in message and str(disk) not in message  # no internal name, no path
            names = client.predict(KEY, api_name="/collection_list")
            filler.unlink()  # space again: the same store answers, and takes uploads
            hits = client.predict("a red circle", 3, api_name="/search_by_text")
            assert len(hits) == 3
            small = _zip(tmp_path / "few.zip", 4, seed=80_000)
            assert client.predict([handle_file(str(small))], "after", KEY, api_name="/collection_add")["indexed"] == 4
        held = _albums(_held(store))
        for name in names:  # an album left by the full disk holds what it reported, never nothing
            assert any(full.endswith(f"-{name}") and ids for full, ids in held.items())
        assert not _orphans(store), _orphans(store)[:5]
        assert before <= thumbnails.ids(store)


def test_a_read_only_store_still_serves_searches(shapes_store, tmp_path):
    store, mounted = tmp_path / "store", tmp_path / "read-only"
    shutil.copytree(shapes_store, store)
    _mount(["--bind", str(store)], mounted)
    try:
        _mount(["-o", "remount,bind,ro"], mounted)
        with RunningApp(mounted, GRADIO_TEMP_DIR=str(tmp_path / "gradio")) as app:
            client = app.client()
            hits = client.predict("a red circle", 3, api_name="/search_by_text")
            assert len(hits) == 3 and all(h["image"] for h in hits)
            shown = client.predict({"positive": [{"text": "a red circle"}], "k": 2}, api_name="/search")["hits"]
            assert httpx.get(app.url.rstrip("/") + shown[0]["image"], timeout=30).status_code == 200
            with pytest.raises(AppError, match="read-only"):
                client.predict([handle_file(str(_zip(tmp_path / "a.zip", 2, seed=1)))], "trip", KEY,
                               api_name="/collection_add")
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


# --- A Chroma server that hangs ---------------------------------------------------------------------------


@pytest.fixture
def server_store(tmp_path, shapes_model):
    server = ChromaServer(tmp_path / "chroma-data", free_port()).start()
    folder = tmp_path / "photos"
    from tests.fixtures.shapes import write_folder

    write_folder(folder, per_class=2, seed=4)
    env = {**os.environ, **server.env}
    built = subprocess.run([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder),
                            "--store", str(tmp_path / "thumbs"), "--model", str(shapes_model)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert built.returncode == 0, built.stderr
    yield server, tmp_path / "thumbs", folder
    os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def test_a_hung_chroma_server_gets_an_answer_within_the_deadline_and_the_app_recovers(server_store, shapes_model):
    server, thumbs, folder = server_store
    with RunningApp(thumbs, **server.env, CHROMA_TIMEOUT_S="1") as app:
        http = httpx.Client(base_url=app.url, timeout=60)
        assert http.post("/api/search", json={"text": "a red circle", "k": 3}).status_code == 200
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            # The server is frozen: an answer at all (before the client's own timeout) that says it is not answering
            # can only come from the app's deadline, however long the machine took to give it.
            with ThreadPoolExecutor(6) as pool:  # more than the app's four search slots
                answers = list(pool.map(lambda _: http.post("/api/search", json={"text": "a red circle", "k": 3}),
                                        range(6)))
            assert {a.status_code for a in answers} == {503}
            assert all("not answering" in a.json()["error"].lower() for a in answers), [a.text for a in answers]
            with pytest.raises(AppError, match="not answering"):
                app.client().predict("a red circle", 3, api_name="/search_by_text")
            assert httpx.get(app.url, timeout=20).status_code == 200  # the page itself still loads
            builder = subprocess.run([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset",
                                      str(folder), "--store", str(thumbs), "--model", str(shapes_model)],
                                     capture_output=True, text=True, timeout=120, cwd=ROOT,
                                     env={**os.environ, **server.env, "CHROMA_TIMEOUT_S": "2"})
            assert builder.returncode == 2 and "Chroma server" in builder.stderr  # its deadline, not the server, ended it
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        _wait_for(lambda: http.post("/api/search", json={"text": "a red circle", "k": 3}).status_code == 200, 30)
        assert len(http.post("/api/search", json={"text": "a red circle", "k": 3}).json()["hits"]) == 3

