"""The library's seams with fakes behind them: a model family registered by name, with no checkpoint and no
torch, carries a build, the index and the service end to end (in a second)."""
from __future__ import annotations

import pytest
from PIL import Image

from search.config import Settings
from search.core.query import Part, Query
from search.embedders.registry import family_of, load_embedder
from search.pipeline.build import build_index
from search.service.service import SearchService
from search.sources.base import open_source
from search.stores.store import Store
from tests.fixtures import fake_embedder


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """A store of flat colour swatches, built through the real pipeline with the fake family."""
    fake_embedder.install()
    root = tmp_path_factory.mktemp("colours")
    for colour, rgb in (("red", (230, 20, 20)), ("green", (20, 200, 30)), ("blue", (20, 30, 220))):
        (root / "photos" / colour).mkdir(parents=True)
        for shade in range(4):
            Image.new("RGB", (40 + shade, 30), tuple(min(255, v + 8 * shade) for v in rgb)).save(
                root / "photos" / colour / f"{shade}.png")
    source = open_source(str(root / "photos"))
    report = build_index(source.items, Store.connect(root / "store", create=True), "images",
                         load_embedder(fake_embedder.NAME))
    assert report.indexed == 12 and report.total_in_collection == 12
    return root / "store"


def test_a_family_is_found_by_the_models_name():
    fake_embedder.install()
    assert family_of(fake_embedder.NAME).name == fake_embedder.NAME
    assert family_of("pixels").name == "pixels" and family_of("some/checkpoint").name == "clip"


def test_the_service_searches_an_index_of_the_fake_family_by_text_and_by_image(colours):
    service = SearchService.open(Settings(store=colours, default_dataset=None))
    by_text = service.search(Query((Part("text", "something blue"),), k=4))
    assert [h.label for h in by_text.hits] == ["blue"] * 4 and by_text.total == 12
    red = next(iter(sorted((colours.parent / "photos" / "red").glob("*.png"))))
    by_image = service.search({"positive": [{"image": 0}], "negative": [{"text": "green"}], "k": 4}, [str(red)])
    assert [h.label for h in by_image.hits] == ["red"] * 4 and by_image.hits[0].relevant
    assert service.labels() == ["blue", "green", "red"]
