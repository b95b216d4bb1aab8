"""Fixtures of the end-to-end tier.

Starting an app (its model, its store, Gradio) is this tier's dearest step, so the two configurations most modules
need are started once for the session: ``app`` (the defaults) and ``public_app`` (IMAGE_SEARCH_PUBLIC=1). Each runs
on a copy of ``shapes_store`` of its own, so the original stays closed for the modules that copy it or start apps
with other settings on it. The modules that share them only search, read pages and files, load the app, or make
and drop collections of their own (under keys of their own in public mode), so their checks mean what they meant on
a fresh app; a module that needs other settings or a fresh start starts its own ``RunningApp``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import RunningApp


def _copy(shapes_store: Path, folder: Path) -> Path:
    store = folder / "store"
    shutil.copytree(shapes_store, store)
    return store


@pytest.fixture(scope="session")
def app_store(shapes_store, tmp_path_factory) -> Path:
    """The store the session's ``app`` serves: a copy of the shapes store."""
    return _copy(shapes_store, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def app(app_store):
    """The real app with the default settings, one process for the session."""
    with RunningApp(app_store) as running:
        yield running


@pytest.fixture(scope="session")
def public_app(shapes_store, tmp_path_factory):
    """The real app in public mode (albums per visitor key, capped), one process for the session; its store is
    ``Path(public_app.env["IMAGE_SEARCH_STORE"])``."""
    root = tmp_path_factory.mktemp("public")
    with RunningApp(_copy(shapes_store, root), IMAGE_SEARCH_PUBLIC="1", GRADIO_TEMP_DIR=str(root / "gradio")) as running:
        yield running
