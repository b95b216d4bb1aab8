"""What the web server keeps for visitors: uploads deleted once the last upload of them is read, and never a
file another upload put in their place; copies of store files under names nobody can guess."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from search.stores import thumbnails
from search.web.files import KEEP_S, VisitorFiles


def _upload(folder, name: str, data: bytes):
    """A file as Gradio stores an upload: renamed over the path of an equal one."""
    path = folder / "0123abcd" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{name}.part"
    temporary.write_bytes(data)
    os.rename(temporary, path)
    return path


def test_an_upload_waits_for_every_upload_of_it_to_be_read(tmp_path):
    files = VisitorFiles(10**9, folder=tmp_path)
    path = _upload(tmp_path, "cat.jpg", b"cat")
    files.uploaded([str(path), str(path)])  # two visitors sent the same file
    with files.consumed([str(path)]):
        assert path.read_bytes() == b"cat"
    assert path.exists()  # the second visitor's upload still waits to be read
    with files.consumed([str(path)]):
        assert path.read_bytes() == b"cat"
    assert not path.exists()
    assert path.parent.is_dir()  # a third upload of it may be between Gradio's mkdir and its move in


def test_a_file_put_in_its_place_by_another_upload_is_not_deleted(tmp_path):
    files = VisitorFiles(10**9, folder=tmp_path)
    path = _upload(tmp_path, "cat.jpg", b"cat")
    files.uploaded([str(path)])
    with files.consumed([str(path)]):
        _upload(tmp_path, "cat.jpg", b"cat")  # another visitor's upload lands before it is counted
    assert path.read_bytes() == b"cat"


def test_an_upload_still_arriving_when_the_last_read_ends_keeps_the_file(tmp_path):
    files = VisitorFiles(10**9, folder=tmp_path)
    path = _upload(tmp_path, "cat.jpg", b"cat")
    files.uploaded([str(path)])
    ticket = files.arriving()  # a second visitor's upload of the same file: Gradio moves it in ...
    _upload(tmp_path, "cat.jpg", b"cat")
    with files.consumed([str(path)]):  # ... and the first visitor's request reads that very file
        pass
    assert path.exists()  # the second upload is not counted yet, so the deletion waits for it
    files.uploaded([str(path)])
    files.arrived(ticket)
    assert path.exists()  # counted: it waits for the second visitor's read
    with files.consumed([str(path)]):
        assert path.read_bytes() == b"cat"
    assert not path.exists()


def test_a_deletion_that_waited_on_a_failed_upload_happens_when_it_ends(tmp_path):
    files = VisitorFiles(10**9, folder=tmp_path)
    path = _upload(tmp_path, "cat.jpg", b"cat")
    files.uploaded([str(path)])
    ticket = files.arriving()
    with files.consumed([str(path)]):
        pass
    assert path.exists()
    files.arrived(ticket)  # it stored nothing (refused, or the visitor went away)
    assert not path.exists()


def test_an_upload_nobody_counted_is_left_alone(tmp_path):
    files = VisitorFiles(10**9, folder=tmp_path)
    path = _upload(tmp_path, "cat.jpg", b"cat")
    with files.consumed([str(path)]):
        pass
    assert path.exists()  # perhaps someone else's: Gradio's expiry takes it


def test_store_files_are_shown_as_copies_under_names_nobody_can_guess(tmp_path):
    store = tmp_path / "store"
    thumbnails.write(store, "a" * 32, b"jpeg")
    thumb = thumbnails.path(store, "a" * 32)  # what a hit carries: no file, the bytes are in a pack
    one, other = VisitorFiles(10**9, folder=tmp_path / "cache"), VisitorFiles(10**9, folder=tmp_path / "cache2")
    shown = one.shown(thumb)
    assert Path(shown).read_bytes() == b"jpeg" and (tmp_path / "cache") in Path(shown).parents
    assert Path(shown).name == thumb.name and not thumb.exists()
    assert one.shown(thumb) == shown and other.shown(thumb).split("/")[-2] != shown.split("/")[-2]
    assert one.shown(shown) == shown  # a copy passes as it is
    assert one.purge(["a" * 32]) == 1 and not os.path.exists(shown)
    thumbnails.delete(store, "a" * 32)
    with pytest.raises(FileNotFoundError):  # the image went meanwhile
        one.shown(thumb)
    shipped = tmp_path / "photos" / "cat.jpg"  # an example photo the app ships: linked as before
    shipped.parent.mkdir()
    shipped.write_bytes(b"a cat")
    assert Path(one.shown(shipped)).read_bytes() == b"a cat"


def test_copies_nobody_was_shown_for_half_an_hour_and_gradios_empty_leftovers_are_swept(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    old, renewed, new = (store / (c * 32 + ".jpg") for c in "abc")
    for thumb in (old, renewed, new):
        thumb.write_bytes(b"jpeg")
    cache = tmp_path / "cache"
    earlier = VisitorFiles(10**9, folder=cache)  # a process before a restart: another secret
    stale = Path(earlier.shown(old))
    upload = _upload(cache, "photo.jpg", b"mine")
    left, arriving = cache / "tmpab12cd34", cache / "tmpef56gh78"  # Gradio's empty leftover; an upload's start
    left.touch()
    arriving.touch()
    now = VisitorFiles(10**9, folder=cache)
    kept = Path(now.shown(renewed))
    long_ago = time.time() - KEEP_S - 60
    for path in (stale.parent, kept.parent, upload.parent, left):
        os.utime(path, (long_ago, long_ago))
    assert Path(now.shown(renewed)) == kept  # shown again: renewed before any sweep
    now._swept = -float("inf")  # the next minute's sweep
    now.shown(new)
    assert not stale.exists() and kept.exists() and upload.exists()  # an upload is Gradio's to expire
    assert not left.exists() and arriving.exists()
