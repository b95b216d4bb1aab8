"""Shared fixtures: offline models, generated folders with hostile files, and built stores."""
from __future__ import annotations

import functools
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("CHROMA_HOST", None)
# Apps and services under test read no text in album images: Tesseract at ~1 s an image in the background of
# every upload would take the two cores from the tests (tests/e2e/test_words.py turns it on where it is tested).
os.environ["IMAGE_SEARCH_OCR"] = "0"

import numpy as np
import pytest
from PIL import Image

from bench.app_process import RunningApp, free_port  # noqa: F401 - shared with bench/
from bench.camera import claim_size, dng, encode
from tests.fixtures.shapes import write_folder
from tests.fixtures.tiny_clip import build_random_tiny_clip

pytest_plugins = ["tests.fixtures.stores"]  # store, vectors: the store tests' own, in both tiers

ROOT = Path(__file__).resolve().parents[1]
SHAPES_MODEL = ROOT / "tests" / "fixtures" / "tiny-clip-shapes"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e are end to end (they start processes, a browser, servers): `-m "not e2e"` runs the rest,
    which stays in-process."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def environment(monkeypatch):
    """``environment(NAME=value, ...)``: the Settings a process started with just these variables reads."""
    from search.config import Settings

    def settings(**variables: str) -> Settings:
        for name in list(os.environ):
            if name.startswith(("IMAGE_SEARCH_", "CHROMA_")) or name == "SPACE_ID":
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return Settings()
    return settings


@pytest.fixture(scope="session")
def random_clip(tmp_path_factory) -> Path:
    """An untrained tiny CLIP checkpoint, for plumbing."""
    return build_random_tiny_clip(tmp_path_factory.mktemp("models") / "random-clip")


@pytest.fixture(scope="session")
def multilingual(tmp_path_factory, shapes_model) -> Path:
    """A tiny DistilBERT + 1_Pooling + 2_Dense checkpoint in the Hub's layout, distilled into the shapes
    CLIP's text space from English captions and their Vietnamese translations (a few seconds)."""
    from tests.fixtures.tiny_multilingual import distill_tiny_multilingual

    return distill_tiny_multilingual(tmp_path_factory.mktemp("models") / "tiny-multilingual", shapes_model)


@pytest.fixture(scope="session")
def shapes_model() -> Path:
    """The tiny CLIP trained on shapes, committed with the repo."""
    assert (SHAPES_MODEL / "modules.json").exists(), "run tests/fixtures/train_tiny_clip.py"
    return SHAPES_MODEL


def run_builder(*args: str | Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run index_builder.py as a user would, returning its output (``env``: variables to set for it)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "index_builder.py"), "--quiet", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def without_the_hub(tmp_path: Path, how: str) -> dict[str, str]:
    """The variables of a machine with no route to the Hub (``how``: "unreachable", its endpoint a loopback port
    nothing listens on) or that says so (``how``: "HF_HUB_OFFLINE=1"), with an empty local Hub cache."""
    return {"HF_HOME": str(tmp_path / "empty-hf-home"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "HF_HUB_OFFLINE": "1" if how == "HF_HUB_OFFLINE=1" else "", "HF_DATASETS_OFFLINE": ""}


def hostile_files() -> dict[str, bytes]:
    """Files that must be skipped, by the reason the report must give."""
    good = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(good, "JPEG")
    return {
        "empty.jpg": b"",
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 2],
        "notes.jpg": b"this is not an image at all\n" * 20,
        "readme.txt": b"hello",
        "bomb.png": png_header_only(60_000, 60_000),
        "icon.ico": _ico_bytes(),
        **camera_hostile_files(),
    }


@functools.cache
def camera_hostile_files() -> dict[str, bytes]:
    """Phone and camera formats cut short, claiming a size their pixels are not, or without the preview a RAW is
    read by (encoded once: HEVC is slow)."""
    square = Image.new("RGB", (64, 64), "red")  # HEVC pads nothing at 64x64, so a claimed size stands
    heic, avif = encode(square, "HEIF"), encode(square, "AVIF", speed=10)
    return {
        "truncated.heic": heic[: len(heic) // 2],
        "truncated.avif": avif[: len(avif) // 2],
        "bomb.heic": claim_size(heic, 9_000, 9_000),  # over the build's 64 MP, under Pillow's own bomb limit
        "bomb.avif": claim_size(avif, 9_000, 9_000),
        "huge.heic": claim_size(heic, 60_000, 60_000),  # over Pillow's bomb limit
        "bomb.dng": dng(square, preview_jpeg=jpeg_claiming(encode(square, "JPEG"), 60_000, 60_000)),
        "no-preview.dng": dng(square, preview_jpeg=b""),
    }


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    at = data.index(b"\xff\xc0") + 5  # marker, length, precision
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


SKIP_REASONS = {
    "empty.jpg": "empty",
    "truncated.jpg": "corrupt",
    "notes.jpg": "unsupported",
    "readme.txt": "unsupported",
    "bomb.png": "too_large",
    "icon.ico": "unsupported",
    "truncated.heic": "corrupt",
    "truncated.avif": "corrupt",
    "bomb.heic": "too_large",
    "bomb.avif": "too_large",
    "huge.heic": "too_large",
    "bomb.dng": "too_large",
    "no-preview.dng": "unsupported",
}


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims a huge size: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _ico_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(out, "ICO")
    return out.getvalue()


@pytest.fixture
def shapes_folder(tmp_path) -> Path:
    """Three images per class in folders named for the class, plus hostile files and an exact duplicate."""
    root = tmp_path / "photos"
    paths = write_folder(root, per_class=3, seed=7)
    for name, data in hostile_files().items():
        (root / "junk").mkdir(exist_ok=True)
        (root / "junk" / name).write_bytes(data)
    (root / "red circle" / "copy.jpg").write_bytes(paths[0].read_bytes())
    return root


def random_rgb(seed: int, size=(80, 60)) -> Image.Image:
    """A noise image, different for every seed."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def shapes_store(tmp_path_factory, shapes_model) -> Path:
    """A store with the shapes model over generated shapes and the example photos, plus a pixel baseline."""
    root = tmp_path_factory.mktemp("app-store")
    write_folder(root / "shapes", per_class=4, seed=5)
    for args in (("--dataset", root / "shapes", "--model", shapes_model),
                 ("--dataset", ROOT / "examples", "--model", shapes_model),
                 ("--dataset", root / "shapes", "--model", "pixels", "--collection", "pixels")):
        done = run_builder(*args, "--store", root / "store")
        assert done.returncode == 0, done.stderr
    return root / "store"


@pytest.fixture(scope="session")
def local_store(tmp_path_factory, shapes_model) -> Path:
    """The same content as ``shapes_store``, built in this process in seconds: for the fast tier, which
    reads it in-process only (``shapes_store`` is built by the command line, for app processes)."""
    from search.embedders.registry import load_embedder
    from search.pipeline.build import BuildOptions, build_index
    from search.sources.base import open_source
    from search.stores.store import Store

    root = tmp_path_factory.mktemp("local-store")
    write_folder(root / "shapes", per_class=4, seed=5)
    store = Store.connect(root / "store", create=True)
    clip = load_embedder(str(shapes_model))
    for folder, embedder, collection in ((root / "shapes", clip, "images"), (ROOT / "examples", clip, "images"),
                                         (root / "shapes", load_embedder("pixels"), "pixels")):
        source = open_source(str(folder))
        build_index(source.items, store, collection, embedder, BuildOptions(source=source.description, total=source.total))
    return root / "store"
