"""A SigLIP 2 checkpoint by its Hub name (from a Hub cache, offline, as a download leaves it): the builder indexes
with it, and the app answers through the page's endpoints and the JSON API, Vietnamese queries included."""
from __future__ import annotations

import httpx
import pytest
from gradio_client import handle_file

from bench.app_process import RunningApp
from tests.conftest import run_builder
from tests.fixtures.shapes import write_folder
from tests.fixtures.tiny_siglip import into_hub_cache, save_fixres

NAME = "local-test/siglip2-tiny-patch8-32"


@pytest.fixture(scope="module")
def siglip_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip")
    cache = root / "hub"
    into_hub_cache(save_fixres(root / "checkpoint"), NAME, cache)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_CACHE", str(cache))  # the builder and the app find the model by its name there
        images = write_folder(root / "shapes", per_class=2, seed=11)
        done = run_builder("--dataset", root / "shapes", "--model", NAME, "--store", root / "store")
        assert done.returncode == 0, done.stderr
        yield root / "store", images


def test_the_builder_and_the_app_search_with_siglip_by_its_hub_name(siglip_store):
    store, images = siglip_store
    with RunningApp(store, HF_HUB_CACHE=str(store.parent / "hub")) as app:
        client = app.client()
        for query in ("a photo of a red circle", "ảnh hình tròn màu đỏ", "anh hinh tron mau do"):
            hits = client.predict(query, 5, api_name="/search_by_text")  # fused with the words of the labels
            assert len(hits) == 5 and all(isinstance(h["score"], float) for h in hits)
            unmatched = [h["score"] for h in hits if not h["matched"]]  # by the vector alone: best first
            assert unmatched == sorted(unmatched, reverse=True)
        for image in images[:3]:  # an indexed image finds itself first
            hits = client.predict(handle_file(str(image)), 3, api_name="/search_by_image")
            assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        answer = httpx.post(app.url + "api/search", json={"text": "hình tròn màu đỏ", "k": 4}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["hits"]) == 4
        assert answer.json()["total"] == len(images)
