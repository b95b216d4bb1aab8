"""Text and images meet in one space through the whole pipeline: index_builder.py, Chroma, ImageIndex.

The tiny CLIP trained on shapes must find, among unseen generated images, the right class in its top 5.
"""
from __future__ import annotations

import pytest

from search import ImageIndex
from tests.conftest import run_builder
from tests.fixtures.shapes import CLASSES, caption, sample, write_folder

PER_CLASS = 10


@pytest.fixture(scope="module")
def shapes_index(tmp_path_factory, shapes_model):
    root = tmp_path_factory.mktemp("quality")
    write_folder(root / "unseen", per_class=PER_CLASS, seed=2024)
    done = run_builder("--dataset", root / "unseen", "--store", root / "store", "--model", shapes_model)
    assert done.returncode == 0, done.stderr
    return ImageIndex.open(root / "store")


def test_text_to_image_precision_at_5(shapes_index):
    hits = [h.label == cls for cls in CLASSES for h in shapes_index.search_by_text(caption(cls), k=5)]
    precision = sum(hits) / len(hits)
    print(f"text->image precision@5 = {precision:.3f}")
    assert precision >= 0.9


def test_image_to_image_precision_at_5(shapes_index):
    queries = sample(4 * len(CLASSES), seed=777)  # images the index has never seen
    hits = [h.label == cls for img, cls in queries for h in shapes_index.search_by_image(img, k=5)]
    precision = sum(hits) / len(hits)
    print(f"image->image precision@5 = {precision:.3f}")
    assert precision >= 0.9


def test_a_random_model_does_not_pass(tmp_path, random_clip):
    """The quality bar means something: an untrained model of the same shape falls well short of it."""
    write_folder(tmp_path / "unseen", per_class=4, seed=2024)
    assert run_builder("--dataset", tmp_path / "unseen", "--store", tmp_path / "s", "--model", random_clip).returncode == 0
    index = ImageIndex.open(tmp_path / "s")
    hits = [h.label == cls for cls in CLASSES for h in index.search_by_text(caption(cls), k=5)]
    assert sum(hits) / len(hits) < 0.6
