"""Fixtures of the end-to-end tier."""
from __future__ import annotations

import pytest

from tests.conftest import RunningApp


@pytest.fixture(scope="session")
def app(shapes_store):
    """The real app over the shapes store with the default settings, one process for the session: starting an app
    (its model, its store, Gradio) is the dearest step of this tier, and the modules that use this one only search
    it, read its pages and files, load it, or make and delete collections of their own. A module that needs other
    settings, another store or a fresh start starts its own ``RunningApp``."""
    with RunningApp(shapes_store) as running:
        yield running
