"""The first-run build's rules, messages and examples, in-process (the real build: tests/e2e/test_first_run.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from search.config import DEFAULT_DATASET, DEFAULT_LIMIT, Settings
from search.errors import ModelError, ServiceUnavailable, SourceError
from search.service.examples import Shipped, photo_of
from search.service.first_run import DATASET_HINT, MODEL_HINT, BuildState, failed, read_marker, wanted, write_marker
from search.service.service import SearchService
from search.sources.base import folder_items
from search.stores import thumbnails
from search.stores.store import Store
from search.web import views
from search.web.files import VisitorFiles
from search.web.page import SearchPage

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Shipped.read(ROOT / "examples")


def test_the_default_dataset_and_limit_come_from_the_environment(environment):
    assert environment().default_dataset == DEFAULT_DATASET == "ashraq/fashion-product-images-small"
    assert environment().default_limit == DEFAULT_LIMIT
    assert environment(IMAGE_SEARCH_DEFAULT_DATASET="None").default_dataset is None
    assert environment(IMAGE_SEARCH_DEFAULT_DATASET="/data/fashion").default_dataset == "/data/fashion"
    assert environment(IMAGE_SEARCH_DEFAULT_LIMIT="300").default_limit == 300
    with pytest.raises(ValueError, match="IMAGE_SEARCH_DEFAULT_LIMIT"):
        environment(IMAGE_SEARCH_DEFAULT_LIMIT="lots")


def test_a_start_builds_on_an_empty_store_resumes_an_unfinished_build_and_leaves_other_stores_alone(tmp_path,
                                                                                                  local_store):
    empty = Settings(store=tmp_path / "store")
    assert wanted(empty) and not (tmp_path / "store").exists()  # deciding creates nothing
    assert not wanted(Settings(store=tmp_path / "store", default_dataset=None))
    assert not wanted(Settings(store=local_store))  # an operator's store, with no marker: never touched
    write_marker(tmp_path, state="building", dataset="x")
    assert wanted(Settings(store=tmp_path)) and read_marker(tmp_path)["dataset"] == "x"  # interrupted: resume
    write_marker(tmp_path, state="complete")
    assert not wanted(Settings(store=tmp_path))
    Store.connect(tmp_path / "other", create=True)
    assert wanted(Settings(store=tmp_path / "other"))  # a store with no collection is empty


class _Running:
    def __init__(self, state: BuildState):
        self._state = state

    def state(self) -> BuildState:
        return self._state


def test_before_the_first_images_land_callers_are_told_the_build_is_under_way(tmp_path):
    service = SearchService.open(Settings(store=tmp_path / "store"))
    service._build = _Running(BuildState("images", 0, 2000, seconds=12.0))  # type: ignore[assignment]
    with pytest.raises(ServiceUnavailable, match="Building the index: 0 of 2,000 images") as refused:
        service.search({"positive": [{"text": "a red dress"}], "k": 5})
    assert refused.value.retry_after == 10  # the first images are searched as soon as they are in
    with pytest.raises(ServiceUnavailable, match="Building the index"):
        service.album_names("some-key-0123456789")
    shown = views.overview(service.overview())
    assert shown.startswith("**Building the index:** 0 of 2,000 images") and "No index" not in shown


def test_while_it_builds_searches_answer_on_what_is_in_and_collections_wait(local_store):
    service = SearchService.open(Settings(store=local_store, default_dataset=None))
    service._build = _Running(BuildState("pixels", 10, 48, seconds=1.0))  # type: ignore[assignment]
    assert len(service.search({"positive": [{"text": "a red circle"}], "k": 3}).hits) == 3
    with pytest.raises(ServiceUnavailable, match="being built") as refused:
        service.add_images("some-key-0123456789", "trip", [str(ROOT / "examples" / "cat.jpg")])
    assert refused.value.retry_after == 10  # the build's time left (38 images at 10 a second), 10 s at least
    assert "Searching the **" in views.overview(service.overview())


def test_a_failed_build_says_what_to_do_without_internals(tmp_path):
    service = SearchService.open(Settings(store=tmp_path / "store"))
    service._build = _Running(failed(SourceError("no such dataset", internals=str(tmp_path))))  # type: ignore[assignment]
    with pytest.raises(ServiceUnavailable, match="could not be built") as refused:
        service.search({"positive": [{"text": "a red dress"}], "k": 5})
    assert refused.value.retry_after is None  # the operator's to fix: asking again does not help
    assert DATASET_HINT in str(refused.value) and str(tmp_path) not in str(refused.value)
    shown = views.overview(service.overview())
    assert "could not be built" in shown and "IMAGE_SEARCH_DEFAULT_DATASET" in shown and "index_builder.py" in shown
    service._build = _Running(failed(ModelError("cannot load", internals=str(tmp_path))))  # type: ignore[assignment]
    shown = views.overview(service.overview())  # the model's failure gets the model's fix, not the dataset's
    assert "model could not be loaded" in shown and MODEL_HINT in shown and "IMAGE_SEARCH_DEFAULT_DATASET" not in shown


def test_before_the_dataset_and_model_are_loaded_callers_are_told_so_not_a_count(tmp_path):
    service = SearchService.open(Settings(store=tmp_path / "store"))
    service._build = _Running(BuildState("starting", 0, 2000, seconds=20.0))  # type: ignore[assignment]
    with pytest.raises(ServiceUnavailable, match="loading the dataset and the model") as refused:
        service.search({"positive": [{"text": "a red dress"}], "k": 5})
    assert "0 of" not in str(refused.value)


def test_progress_shows_images_of_the_total_rate_and_time_left():
    state = BuildState("images", 400, 2000, seconds=20.0)
    assert views.build_progress(state) == "**Building the index:** 400 of 2,000 images, 20.0 images/s, about 1 min 20 s left."
    assert "pixel baseline" in views.build_progress(BuildState("pixels", 10, 2000, seconds=1.0))
    assert BuildState("images", 10, 2000, seconds=1.0).message().startswith("Building the index: 10 of 2,000 images")


def test_examples_come_from_the_index_across_labels_and_fit_it(local_store):
    service = SearchService.open(Settings(store=local_store, default_dataset=None))
    examples = service.examples(SHIPPED)
    assert examples == service.examples(SHIPPED)  # deterministic
    shipped = {str(p) for p in SHIPPED.photos}
    assert shipped <= {image for image, _ in examples.images}  # this index holds the shipped photos
    assert len(examples.images) == 8 and all(Path(image).is_file() if image in shipped else thumbnails.at(image)
                                             for image, _ in examples.images)  # drawn ones are read from the packs
    drawn = [label for image, label in examples.images if image not in shipped]
    assert len(drawn) == len(set(drawn)) == 2  # one image of each of the most frequent labels
    # Not the default dataset: descriptions from its labels, not the fashion prompts.
    assert examples.prompts and all(p.startswith("a photo of a ") for p in examples.prompts)
    assert "a red circle" not in SHIPPED.prompts  # the test prompt is no public example
    assert {"áo sơ mi trắng", "đồng hồ nam"} <= set(SHIPPED.prompts)
    assert SHIPPED.prompts_for == DEFAULT_DATASET and not any(p.startswith("#") for p in SHIPPED.prompts)


def test_with_no_build_the_page_stops_refreshing_and_lists_the_indexes(local_store):
    service = SearchService.open(Settings(store=local_store, default_dataset=None))
    page = SearchPage(service, VisitorFiles(service.settings.upload_budget_bytes), SHIPPED)
    assert not page.building()
    out = page.refresh(None, None)
    overview, timer, index, include, exclude, gallery, paths = (out[n] for n in (
        "overview", "timer", "index", "include", "exclude", "example_gallery", "example_paths"))
    assert overview.startswith("Main index: ") and timer.active is False
    assert index["value"] == "images" and len(paths) == 8 and gallery["visible"]
    assert "red circle" in include["choices"] and include["choices"] == exclude["choices"]  # the index's labels


def test_the_default_dataset_gets_the_shipped_descriptions_and_its_product_types(tmp_path, shapes_model):
    from search.embedders.registry import load_embedder
    from search.pipeline.build import BuildOptions, build_index
    from search.sources.base import open_source
    from tests.fixtures.shapes import write_folder

    write_folder(tmp_path / "shapes", per_class=1, seed=3)
    store = Store.connect(tmp_path / "store", create=True)
    source = open_source(str(tmp_path / "shapes"))
    build_index(source.items, store, "images", load_embedder(str(shapes_model)),
                BuildOptions(source=f"{DEFAULT_DATASET} [train]", total=source.total))
    examples = SearchService.open(Settings(store=tmp_path / "store", default_dataset=None)).examples(SHIPPED)
    assert examples.prompts[: len(SHIPPED.prompts)] == SHIPPED.prompts
    assert examples.prompts[len(SHIPPED.prompts):] == ["blue circle", "blue square", "blue triangle",
                                                           "green circle", "green square", "green triangle"]
    assert len(examples.images) == 8 and not {str(p) for p in SHIPPED.photos} & {i for i, _ in examples.images}


@pytest.mark.parametrize(("label", "prompt"), [
    ("cat", "a photo of a cat"), ("apple", "a photo of an apple"), ("Owl", "a photo of an owl"),
    ("birds", "a photo of birds"), ("vegetables", "a photo of vegetables"), ("glass", "a photo of a glass"),
    ("cactus", "a photo of a cactus"), ("animals/cats", "a photo of cats"), ("wild/red fox", "a photo of a red fox"),
    # folder names: separators read as words, lists of plurals get "and", styles "art", mass nouns no article
    ("red_circle", "a photo of a red circle"), ("flowers-plants", "a photo of flowers and plants"),
    ("pets/cats-dogs_birds", "a photo of cats, dogs and birds"), ("coffee_and_tea", "a photo of coffee and tea"),
    ("abstract", "a photo of abstract art"), ("Street-Art", "a photo of street art"), ("space_photos", "a photo of space"),
    ("images-of-horses", "a photo of horses"), ("nature", "a photo of nature"), ("sea", "a photo of the sea"),
    ("people", "a photo of people"), ("unicorn", "a photo of a unicorn"), ("hour glass", "a photo of an hour glass"),
    ("2019", "a photo from 2019"), ("café", "a photo of a café"), ("crème brûlée", "a photo of a crème brûlée"),
])
def test_example_prompts_read_as_english(label, prompt):
    assert photo_of(label) == prompt


@pytest.mark.parametrize(("label", "prompt"), [
    ("Phở Bò", "ảnh phở bò"), ("tet/hoa_đào", "ảnh hoa đào"), ("bánh-mì", "ảnh bánh mì"), ("cà phê", "ảnh cà phê"),
    ("du lịch\\Hạ-Long", "ảnh hạ long"), ("pho\u031b\u0309 bo\u0300", "ảnh phở bò"),  # decomposed (NFD) too
])
def test_example_prompts_for_vietnamese_labels_read_as_vietnamese(label, prompt):
    """Vietnamese has no articles nor plural endings: "ảnh" (a photo of) and the words, separators as spaces."""
    assert photo_of(label) == prompt


def test_a_nested_folders_label_is_its_path_so_two_folders_of_one_name_stay_apart(tmp_path):
    for folder in ("animals/cats", "toys/cats", ""):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    labels = sorted(str(item.label) for item in folder_items(tmp_path))
    assert labels == ["None", "animals/cats", "toys/cats"]
