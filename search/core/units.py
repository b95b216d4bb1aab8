"""Sizes in the units people read them in: data_size and megapixels, not raw byte and pixel counts.

A megabyte is 1,048,576 bytes, as the settings count them (``IMAGE_SEARCH_UPLOAD_BUDGET_MB``, Gradio's
upload limit); a megapixel is a million pixels, as cameras count them.
"""
from __future__ import annotations

from search.config import MB


def data_size(size: int) -> str:
    """``size`` bytes as a person reads it: "64 KB", "50 MB", "54.4 MB", "1 GB" (from 1,024 MB)."""
    if size < 1024:
        return f"{size:,} bytes"
    if size < MB:
        return f"{_one_place(size / 1024)} KB"
    if size >= 1024 * MB:
        return f"{_one_place(size / (1024 * MB))} GB"
    return f"{_one_place(size / MB)} MB"


def megapixels(pixels: int) -> str:
    """``pixels`` as a person reads it: "24 MP", "56.3 MP"."""
    return f"{_one_place(pixels / 1_000_000)} MP"


def _one_place(value: float) -> str:
    """At most one decimal place, none for a whole number, thousands separated ("1,024", "54.4")."""
    return f"{round(value, 1):,.1f}".removesuffix(".0")
