"""The package as a user installs it: a wheel built from the tree, installed outside the repository, builds an
index and searches it with nothing of the repository on the path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.fixtures.shapes import caption, write_folder


def test_the_installed_wheel_builds_and_searches_from_outside_the_repository(tmp_path, shapes_model):
    wheel = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(ROOT), "-w", str(wheel)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                *map(str, wheel.glob("*.whl"))], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    away = tmp_path / "elsewhere"
    write_folder(away / "photos", per_class=2, seed=8)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=away, env=env)

    build = run("-m", "search.cli", "--dataset", "photos", "--store", "store", "--model", str(shapes_model), "--quiet")
    assert build.returncode == 0, build.stderr[-2000:]
    assert (away / "store" / "thumbnails").is_dir()
    searched = run("-c", "import search; from search import ImageIndex; "
                         "from search.embedders.precision import probe_images; "
                         "print(search.__file__); print(len(probe_images())); "
                         f"print(ImageIndex.open('store').search_by_text({caption('red circle')!r}, k=1)[0].label)")
    assert searched.returncode == 0, searched.stderr[-2000:]
    where, probes, label = searched.stdout.split("\n")[:3]
    assert Path(where).is_relative_to(site) and not Path(where).is_relative_to(ROOT)
    assert probes == "36" and label == "red circle"
