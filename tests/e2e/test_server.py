"""Scale-out: the same code against a real Chroma server (`chroma run`) on loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from search import ImageIndex
from tests.conftest import ROOT, RunningApp, free_port
from tests.fixtures.chroma_server import ChromaServer
from tests.fixtures.shapes import caption, write_folder


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = ChromaServer(tmp_path / "chroma-data", free_port()).start()
    for name, value in srv.env.items():
        monkeypatch.setenv(name, value)
    yield srv
    srv.stop()


def _builder(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "index_builder.py"), "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **env})


def _ranked(index: ImageIndex) -> list[list[str]]:
    return [[h.id for h in index.search_by_text(caption(c), k=5)] for c in ("red circle", "blue square")]


def test_build_query_restart_same_results(tmp_path, server, shapes_model):
    folder, store = tmp_path / "photos", tmp_path / "thumbs"
    write_folder(folder, per_class=4, seed=4)
    done = _builder("--dataset", folder, "--store", store, "--model", shapes_model, env=server.env)
    assert done.returncode == 0, done.stderr
    assert not (store / "chroma.sqlite3").exists()  # the vectors went to the server
    index = ImageIndex.open(store)
    count, ranked = len(index), _ranked(index)
    assert count == 48
    server.stop()
    server.start()
    again = ImageIndex.open(store)
    assert len(again) == count and _ranked(again) == ranked


def test_sharded_builders_fill_one_collection(tmp_path, server, random_clip):
    folder, store = tmp_path / "photos", tmp_path / "thumbs"
    files = write_folder(folder, per_class=4, seed=6)
    shards = [subprocess.Popen([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder),
                                "--store", str(store), "--model", str(random_clip), "--shard", f"{i}/3"],
                               cwd=ROOT, env={**os.environ, **server.env}, stderr=subprocess.PIPE, text=True)
              for i in range(3)]
    for proc in shards:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    index = ImageIndex.open(store)
    sources = [m["source"] for _, m in index.collection.scan_metadata()]
    assert sorted(sources) == sorted(str(f) for f in files)


def test_app_serves_while_a_builder_writes(tmp_path, server, shapes_model):
    first, second, store = tmp_path / "first", tmp_path / "second", tmp_path / "thumbs"
    write_folder(first, per_class=2, seed=1)
    write_folder(second, per_class=6, seed=2)
    assert _builder("--dataset", first, "--store", store, "--model", shapes_model, env=server.env).returncode == 0
    with RunningApp(store, **server.env) as app:
        client = app.client()
        builder = subprocess.Popen([sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(second),
                                    "--store", str(store), "--model", str(shapes_model), "--batch-size", "8"],
                                   cwd=ROOT, env={**os.environ, **server.env}, stderr=subprocess.PIPE, text=True)
        answered = 0
        deadline = time.monotonic() + 240
        while builder.poll() is None and time.monotonic() < deadline:
            assert len(client.predict("a red circle", 5, api_name="/search_by_text")) == 5
            answered += 1
        assert builder.wait(timeout=60) == 0, builder.stderr.read()
        assert answered >= 1
        hits = client.predict("a red circle", 50, api_name="/search_by_text")
        assert len(hits) == 50  # the 24 first images plus the builder's 72 are all searchable now


def _count(port: int, collection: str = "images") -> int:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
    try:
        return client.get_collection(collection).count()
    except Exception:  # not created yet
        return 0


def test_a_server_killed_mid_build_exits_2_and_a_rerun_resumes(tmp_path, server, random_clip):
    folder, store, report = tmp_path / "photos", tmp_path / "thumbs", tmp_path / "report.json"
    files = write_folder(folder, per_class=20, seed=8)
    assert len({f.read_bytes() for f in files}) == len(files)  # every image distinct
    command = [sys.executable, str(ROOT / "index_builder.py"), "--quiet", "--dataset", str(folder), "--store", str(store),
               "--model", str(random_clip), "--batch-size", "8", "--report", str(report)]
    builder = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **server.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _count(server.port) == 0 and builder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builder.poll() is None, "the build ended before the server could be killed: use a larger folder"
        assert _count(server.port) > 0, "nothing was written within 120 s"
        server.proc.kill()  # SIGKILL: no goodbye to the builder
        server.proc.wait(timeout=30)
        _, stderr = builder.communicate(timeout=120)
    finally:
        if builder.poll() is None:
            builder.kill()
    assert builder.returncode == 2, stderr
    assert "error: the Chroma server stopped answering during the build" in stderr
    assert "run the same command again" in stderr and f"127.0.0.1:{server.port}" in stderr
    assert "Traceback" not in stderr and not report.exists()

    server.start()  # same data path and port
    written = _count(server.port)
    assert 0 < written < len(files)
    manifest = store / "manifests" / "images.json"
    if manifest.exists():  # the manifest never claims an image the store does not hold
        recorded = {entry[2] for entry in json.loads(manifest.read_text()).values()}
        assert recorded <= set(ImageIndex.open(store).collection.all_ids())
    again = subprocess.run(command, cwd=ROOT, env={**os.environ, **server.env}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    done = json.loads(report.read_text())
    assert done["already_indexed"] == written and done["indexed"] == len(files) - written
    index = ImageIndex.open(store)
    sources = [m["source"] for _, m in index.collection.scan_metadata()]
    assert len(index) == len(files) and sorted(sources) == sorted(str(f) for f in files)
