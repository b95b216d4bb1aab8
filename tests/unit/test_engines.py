"""The engine seam (search/pipeline/engines.py) and what lets a Ray worker prepare images without the model: the
input steps read from a checkpoint's configuration (``registry.model_inputs``), the same as the loaded embedder's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.cli import parse_args
from search.config import Settings
from search.embedders.pixels import PixelEmbedder
from search.embedders.registry import load_embedder, model_inputs
from search.errors import ModelError
from search.pipeline.engines import ENGINES, LocalEngine, engine
from search.pipeline.ray_engine import RayEngine
from tests.conftest import ROOT


def _photos() -> list[Image.Image]:
    photo = Image.open(sorted((ROOT / "examples").glob("*.jpg"))[0]).convert("RGB")
    return [photo, photo.resize((37, 91)), photo.resize((1000, 240)), photo.resize((64, 64))]


def _without_weights(checkpoint: Path, to: Path) -> Path:
    shutil.copytree(checkpoint, to, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return to


def test_clip_input_steps_are_read_from_the_configuration_alone(tmp_path, shapes_model):
    inputs = model_inputs(str(_without_weights(shapes_model, tmp_path / "no-weights")))
    embedder = load_embedder(str(shapes_model))
    assert inputs.min_edges == embedder.min_edges == (64, 256)
    for photo in _photos():
        assert np.array_equal(np.asarray(inputs.prepare(photo)), np.asarray(embedder.prepare(photo)))


def test_the_hubs_older_clip_layout_is_read_from_its_module_folder(tmp_path, shapes_model):
    """sentence-transformers/clip-ViT-B-32 keeps its processor in 0_CLIPModel/, with sizes as plain numbers."""
    folder = tmp_path / "old-layout"
    (folder / "0_CLIPModel").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_CLIPModel",
                                                      "type": "sentence_transformers.models.CLIPModel"}]))
    processor = json.loads((shapes_model / "processor_config.json").read_text())["image_processor"]
    (folder / "0_CLIPModel" / "preprocessor_config.json").write_text(json.dumps(
        {**processor, "size": 96, "crop_size": 80, "image_processor_type": "CLIPImageProcessor"}))
    inputs = model_inputs(str(folder))
    assert (inputs.shortest, inputs.side, inputs.min_edges) == (96, 80, (80, 256))
    assert inputs.prepare(_photos()[0]).size == (80, 80)


def test_a_checkpoint_without_its_configuration_is_a_model_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot read the image settings of the model 'empty'"):
        model_inputs(str(tmp_path / "empty"))
    assert isinstance(model_inputs("pixels"), PixelEmbedder)


def test_engines_are_chosen_by_name_and_configured_by_the_settings():
    assert isinstance(engine("local", Settings()), LocalEngine)
    ray = engine("ray", Settings(ray_address="ray://head:10001"))
    assert isinstance(ray, RayEngine) and ray.options.address == "ray://head:10001"
    assert engine("ray", Settings(ray_address="")).options.address is None
    for name in ENGINES:
        assert parse_args(["--dataset", "x", "--store", "s", "--engine", name]).engine == name
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "x", "--store", "s", "--engine", "spark"])
