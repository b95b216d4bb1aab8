"""Fixtures of the end-to-end tier."""
from __future__ import annotations

import pytest

from tests.conftest import RunningApp


@pytest.fixture(scope="module")
def app(shapes_store):
    """The real app over the shapes store, one process per test module."""
    with RunningApp(shapes_store) as running:
        yield running
