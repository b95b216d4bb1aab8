"""What a build needs from the Hugging Face Hub, checked once: the probe, the local cache, and the one message
(the builder and the app, really offline: tests/e2e/test_build.py and tests/e2e/test_first_run.py)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants

from search.errors import OfflineError
from search.pipeline import hub
from search.service.first_run import failed
from search.sources.base import open_source
from tests.conftest import free_port
from tests.fixtures.shapes import write_folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty local Hub cache, in place of the machine's."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset (the tests set it), and the Hub's endpoint at ``online(url)``."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_found", [])
    return lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)


def _in_cache(cache: Path, repo: str, kind: str, files: dict[str, bytes]) -> Path:
    """A repo laid out as huggingface_hub caches it: refs/main naming a snapshot that holds ``files``."""
    folder = cache / f"{kind}s--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123abcd"
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_a_build_from_disk_never_asks_the_hub(tmp_path, monkeypatch, shapes_model):
    monkeypatch.setattr(hub, "unreachable", lambda: pytest.fail("the Hub was asked"))
    write_folder(tmp_path / "photos", per_class=1, seed=1)
    assert hub.check(str(tmp_path / "photos"), [str(shapes_model), "pixels"]) == hub.Plan(str(tmp_path / "photos"))
    assert hub.check(None, ["pixels"]).dataset is None
    assert hub.check("./no-such-folder", ["~/no/such/model"]).dataset == "./no-such-folder"  # paths: their own errors


def test_out_of_reach_every_missing_thing_is_said_at_once_with_the_offline_choices(hub_cache):
    with pytest.raises(OfflineError) as refused:  # HF_HUB_OFFLINE=1, as the tests run
        hub.check("ashraq/fashion-product-images-small", ["clip-ViT-B-32"])
    said = str(refused.value)
    assert "neither the model 'clip-ViT-B-32' nor the dataset 'ashraq/fashion-product-images-small'" in said
    for choice in ("--model /path/to/folder", "--model pixels", "keywords (file names, folders, captions)",
                   "--dataset FOLDER", "unset HF_HUB_OFFLINE"):
        assert choice in said, choice
    assert refused.value.internals == "HF_HUB_OFFLINE is set"

    with pytest.raises(OfflineError) as app:
        hub.check("ashraq/fashion-product-images-small", ["clip-ViT-B-32"], app=True)
    state = failed(app.value)  # what the page and callers show: the problem, then every step
    assert state.problem == app.value.problem and "model 'clip-ViT-B-32'" in state.problem
    for choice in ("IMAGE_SEARCH_MODEL to a local checkpoint folder", "set it to pixels",
                   "IMAGE_SEARCH_DEFAULT_DATASET to a folder", "or to none", "restart the app"):
        assert choice in state.hint, choice
    assert "--model" not in state.hint and str(hub_cache) not in state.problem + state.hint


def test_what_is_in_the_local_cache_is_used_and_only_the_rest_is_missing(hub_cache, tmp_path):
    _in_cache(hub_cache, "sentence-transformers/clip-ViT-B-32", "model", {"modules.json": b"[]"})
    with pytest.raises(OfflineError) as refused:
        hub.check("org/shapes", ["clip-ViT-B-32", "google/siglip-base-patch16-224"])
    assert "model 'clip-ViT-B-32'" not in str(refused.value)  # cached: loads from the cache
    assert "neither the model 'google/siglip-base-patch16-224' nor the dataset 'org/shapes' is" in str(refused.value)

    import datasets

    files = write_folder(tmp_path / "shapes", per_class=1, seed=2)
    rows = datasets.Dataset.from_dict({"image": [{"bytes": f.read_bytes(), "path": f.name} for f in files[:3]]})
    data = tmp_path / "train.parquet"
    rows.cast_column("image", datasets.Image()).to_parquet(str(data))
    snapshot = _in_cache(hub_cache, "org/shapes", "dataset", {"data/train-00000-of-00001.parquet": data.read_bytes()})
    plan = hub.check("org/shapes", ["clip-ViT-B-32"])
    assert plan == hub.Plan(str(snapshot), "org/shapes")  # datasets would not stream a Hub name from the cache
    source = open_source(plan.dataset or "", name=plan.name)
    assert source.description == "org/shapes [train]" and next(source.items).source == "org/shapes[train]#0"


def test_the_probe_is_one_short_request_and_any_answer_means_reachable(online, monkeypatch):
    online(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    why = hub.unreachable()
    assert why and "nothing answered at http://127.0.0.1:" in why
    hub.reach()  # an app's start: out of reach, this process reads the cache from now on, and says why
    assert constants.HF_HUB_OFFLINE and hub.unreachable() == why and hub._found == [why]
    monkeypatch.setattr(hub, "_found", [])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online(f"http://127.0.0.1:{server.server_address[1]}")
        assert hub.unreachable() is None
    finally:
        server.shutdown()


def test_a_hub_that_does_not_answer_is_given_up_on_after_the_timeout(online):
    import socket

    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        online(f"http://127.0.0.1:{silent.getsockname()[1]}")
        said: list[str | None] = []
        asking = threading.Thread(target=lambda: said.append(hub.unreachable(timeout=0.5)), daemon=True)
        asking.start()
        asking.join(60)  # only a hang guard: without its timeout the probe would wait on this socket for ever
        assert not asking.is_alive() and said and said[0] is not None
    finally:
        silent.close()
