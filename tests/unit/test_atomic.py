"""write_atomically: a reader finds the old file or the new one, and a failed write leaves nothing behind."""
from __future__ import annotations

import os

import pytest

from search.core import atomic
from search.core.atomic import write_atomically


def test_text_and_bytes_replace_the_file_whole(tmp_path):
    target = tmp_path / "marker.json"
    write_atomically(target, "{\"a\": \"phở\"}")
    assert target.read_text(encoding="utf-8") == "{\"a\": \"phở\"}"
    write_atomically(target, b"\x00\x01", durable=True)
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["marker.json"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def full_disk(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError):
        write_atomically(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["manifest.json"]
