"""Errors raised by the search library; each carries a message fit to show a user."""
from __future__ import annotations


class SearchError(Exception):
    """Base class for every error this library raises on purpose."""


class InvalidImageError(SearchError, ValueError):
    """An image could not be used; ``reason`` is a short code for reports."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class QueryError(SearchError, ValueError):
    """A query that cannot be answered as asked (empty text, unknown metric, ...)."""


class StoreError(SearchError):
    """The store is missing, damaged, locked, or does not match the model."""


class ModelError(SearchError):
    """A model could not be loaded, or cannot do what was asked of it."""


class SourceError(SearchError):
    """A source of images (folder, dataset, URL list) cannot be read at all."""
