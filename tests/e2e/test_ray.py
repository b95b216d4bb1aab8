"""The Ray engine (search/pipeline/ray_engine.py) against the local one: the same ids, labels, vectors and
report; kill -9 of the driver and of workers; a Chroma server as the sink; a worker that fails on one image.

One Ray (2 CPUs) serves this module's in-process tests; the driver-kill test runs the command line, killed on a
Ray it started itself, then again on this module's (RAY_ADDRESS), as on a cluster.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from search.config import ChromaServer as ServerSettings
from search.errors import ModelError, SearchError
from search.pipeline.build import BuildOptions, ModelSpec
from search.pipeline.engines import LocalEngine
from search.pipeline.ray_engine import ERROR, RayEngine, RayOptions
from search.sources.base import IMAGE_SUFFIXES, Item, folder_items
from search.stores import thumbnails
from search.stores.store import Store
from tests.conftest import ROOT, free_port
from tests.fixtures.chroma_server import ChromaServer
from tests.fixtures.shapes import write_folder

ray = pytest.importorskip("ray")
TIMING = ("store", "seconds", "images_per_second", "stage_seconds")  # what two builds of one source may differ in


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _local(folder: Path, store: Path, model: Path, **options):
    progress: list[tuple[int, int | None]] = []
    report = LocalEngine().run(folder_items(folder), Store.connect(store, create=True), "images", ModelSpec(str(model)),
                               BuildOptions(source=str(folder), **options), lambda done, total: progress.append((done, total)))
    return report, progress


def _ray(folder: Path, store: Path, model: Path, items=None, server: ServerSettings | None = None,
         ray_options: RayOptions = RayOptions(), **options):
    progress: list[tuple[int, int | None]] = []
    report = RayEngine(ray_options).run(folder_items(folder) if items is None else items,
                                        Store.connect(store, server=server, create=True), "images",
                                        ModelSpec(str(model)), BuildOptions(source=str(folder), **options),
                                        lambda done, total: progress.append((done, total)))
    return report, progress


def _stored(store: Path, server: ServerSettings | None = None) -> dict[str, tuple[dict, np.ndarray]]:
    """Every record: id -> (metadata without its time, vector)."""
    collection = Store.connect(store, server=server).open("images")
    ids, vectors = collection.scan_vectors()
    metadata = dict(collection.scan_metadata())
    assert len(set(ids)) == len(ids)
    return {i: ({k: v for k, v in metadata[i].items() if k != "added_at"}, v) for i, v in zip(ids, vectors)}


def _assert_same_records(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for image_id, (metadata, vector) in ours.items():
        assert metadata == theirs[image_id][0]
        other = theirs[image_id][1]
        assert float(vector @ other / np.linalg.norm(vector) / np.linalg.norm(other)) > 0.9999, image_id


def _same_report(ours, theirs) -> dict:
    return {k: v for k, v in ours.to_dict().items() if k not in TIMING} == \
           {k: v for k, v in theirs.to_dict().items() if k not in TIMING}


def test_ray_gives_the_local_runners_ids_vectors_report_and_manifest(tmp_path, shapes_folder, shapes_model):
    junk = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in (shapes_folder / "junk").iterdir())  # listed, then skipped
    total = 37 + junk  # 36 shapes and a copy of one
    local, local_progress = _local(shapes_folder, tmp_path / "local", shapes_model, batch_size=5, total=total)
    # Two model actors (one thread each on the 2 CPUs): batches go to both and are still written in order.
    ours, progress = _ray(shapes_folder, tmp_path / "ray", shapes_model, batch_size=5, total=total,
                          ray_options=RayOptions(threads_per_actor=1))
    assert ours.indexed == 36 and ours.duplicates == 1 and len(ours.skipped) == junk  # the junk folder's images
    assert ours.near_duplicates and _same_report(ours, local), (ours.to_dict(), local.to_dict())
    assert progress == local_progress and progress[-1] == (total, total)
    assert all(ours.stage_seconds[s] > 0 for s in ("identify", "decode", "embed", "write"))
    _assert_same_records(_stored(tmp_path / "ray"), _stored(tmp_path / "local"))
    assert (json.loads((tmp_path / "ray" / "manifests" / "images.json").read_text())
            == json.loads((tmp_path / "local" / "manifests" / "images.json").read_text()))


def _raise(message: str) -> bytes:
    raise RuntimeError(message)


def test_a_worker_that_raises_on_one_image_is_reported_and_the_build_goes_on(tmp_path, shapes_model):
    folder = tmp_path / "photos"
    files = write_folder(folder, per_class=2, seed=8)  # 24 images
    items = list(folder_items(folder))
    bad = Item(str(folder / "bad.jpg"), partial(_raise, "the decoder fell over"))
    items.insert(10, bad)  # in the middle of the second batch of 8
    report, progress = _ray(folder, tmp_path / "store", shapes_model, items=items, batch_size=8)
    assert report.skipped == [{"source": bad.source, "reason": ERROR, "detail": "RuntimeError: the decoder fell over"}]
    assert report.indexed == len(files) and progress[-1][0] == len(items)
    assert sorted(m["source"] for m, _ in _stored(tmp_path / "store").values()) == sorted(map(str, files))
    # Where every image of a batch fails alone too, the workers are at fault, not the images: the build stops.
    broken = [Item(str(folder / f"{i}.jpg"), partial(_raise, "no such module")) for i in range(3)]
    with pytest.raises(SearchError, match="fail on every image"):
        _ray(folder, tmp_path / "other", shapes_model, items=broken)


def test_a_model_no_worker_can_load_is_a_model_error(tmp_path, shapes_folder):
    with pytest.raises(ModelError, match="could not be loaded on the Ray cluster") as caught:
        _ray(shapes_folder, tmp_path / "store", tmp_path / "no-such-model")
    assert "cannot load the model 'no-such-model'" in str(caught.value.internals)


def _ray_workers(prefix: str) -> list[tuple[int, str]]:
    """This process's Ray workers (pid, title) whose title starts with ``prefix`` (Ray titles them ray::WHAT)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            if entry.name.isdigit() and title.startswith(prefix) and _descends(int(entry.name)):
                found.append((int(entry.name), title))
        except OSError:
            pass
    return found


def _descends(pid: int) -> bool:
    """Whether ``pid`` is a descendant of this process (other sessions may run a Ray of their own)."""
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if pid == os.getpid():
            return True
    return False


def _thumbnails(store: Path) -> int:
    return len(thumbnails.ids(store))


def test_kill_9_of_the_model_actor_and_of_a_task_worker_mid_build(tmp_path, random_clip):
    folder = tmp_path / "photos"
    files = write_folder(folder, per_class=14, seed=12)  # 168 images
    killed: list[str] = []

    def kill_when(written: int, prefix: str) -> None:
        deadline = time.monotonic() + 120
        while _thumbnails(tmp_path / "ray") < written and time.monotonic() < deadline:
            time.sleep(0.01)
        while time.monotonic() < deadline and not (workers := _ray_workers(prefix)):
            time.sleep(0.01)
        for pid, title in workers[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(title)

    def killer() -> None:
        kill_when(24, "ray::_ModelActor")
        kill_when(72, "ray::_prepare_task")

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report, _ = _ray(folder, tmp_path / "ray", random_clip, batch_size=8)
    thread.join(timeout=5)
    assert len(killed) == 2, f"killed only {killed}: the build finished first; the test proves nothing"
    assert report.indexed == len(files) and not report.skipped
    _local(folder, tmp_path / "local", random_clip, batch_size=8)
    _assert_same_records(_stored(tmp_path / "ray"), _stored(tmp_path / "local"))


def test_a_chroma_server_is_the_sink(tmp_path, shapes_model):
    folder = tmp_path / "photos"
    files = write_folder(folder, per_class=2, seed=9)
    server = ChromaServer(tmp_path / "chroma-data", free_port()).start()
    try:
        settings = ServerSettings(host="127.0.0.1", port=server.port)
        report, _ = _ray(folder, tmp_path / "thumbs", shapes_model, server=settings, batch_size=8)
        assert report.indexed == len(files)
        assert not (tmp_path / "thumbs" / "chroma.sqlite3").exists()  # the vectors went to the server
        assert _thumbnails(tmp_path / "thumbs") == len(files)  # the thumbnails to the store folder
        again, _ = _ray(folder, tmp_path / "thumbs", shapes_model, server=settings)
        assert again.indexed == 0 and again.already_indexed == len(files)
        _local(folder, tmp_path / "local", shapes_model, batch_size=8)
        _assert_same_records(_stored(tmp_path / "thumbs", settings), _stored(tmp_path / "local"))
    finally:
        server.stop()


def _builder(folder: Path, store: Path, model: Path, report: Path) -> list[str]:
    return [sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--engine", "ray", "--dataset", str(folder),
            "--store", str(store), "--model", str(model), "--batch-size", "8", "--report", str(report)]


def test_kill_9_of_the_driver_then_the_same_command_stores_every_image_once(tmp_path, random_clip):
    """The killed driver runs on a Ray it started itself; the command again, on a running cluster (this module's,
    by RAY_ADDRESS), which the package travels to."""
    folder, store = tmp_path / "photos", tmp_path / "store"
    files = write_folder(folder, per_class=20, seed=13)  # 240 images
    command = _builder(folder, store, random_clip, tmp_path / "report.json")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A session of its own: what the killed driver's Ray leaves behind (its agents) goes with it below.
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while _thumbnails(store) < 40 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert driver.poll() is None, "the build finished (or failed) before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster = {**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run(command, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    # What the killed driver wrote is kept and not embedded again; the rest is.
    assert 0 < report["already_indexed"] < len(files) and report["already_indexed"] + report["indexed"] == len(files)
    _local(folder, tmp_path / "local", random_clip, batch_size=8)
    _assert_same_records(_stored(store), _stored(tmp_path / "local"))
