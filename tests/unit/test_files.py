"""What the web server keeps for visitors: uploads deleted once the last upload of them is read, and never a
file another upload put in their place; what the app makes from a stored image goes with the image."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from gradio.data_classes import FileData, ListFiles

from search.errors import QueryError
from search.stores import thumbnails
from search.web.files import KEEP_S, KEPT, VisitorFiles, upload_box


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


def test_a_thumbnail_is_read_from_the_pack_into_a_file_that_goes_with_the_image(tmp_path):
    store = tmp_path / "store"
    thumbnails.write(store, "a" * 32, b"\xff\xd8jpeg")
    thumb = str(thumbnails.path(store, "a" * 32))  # what a hit carries: no file, the bytes are in a pack
    files = VisitorFiles(10**9, folder=tmp_path / "cache")
    readable = files.readable(thumb)
    assert Path(readable).read_bytes() == b"\xff\xd8jpeg" and "a" * 32 in Path(readable).name
    assert Path(readable).name != "a" * 32 + ".jpg" and files.readable(thumb) == readable  # keyed: nobody guesses it
    theirs = files.keep(b"\xff\xd8a visitor's own")
    shipped = tmp_path / "cat.jpg"  # any other file is read as it is
    assert files.readable(str(shipped)) == str(shipped)
    assert files.forget(["b" * 32]) == 0 and files.forget(["a" * 32]) == 1
    assert not Path(readable).exists() and Path(theirs).exists()
    thumbnails.delete(store, "a" * 32)
    with pytest.raises(QueryError, match="no longer stored"):  # the image went meanwhile
        files.readable(thumb)


def test_kept_files_are_swept_after_half_an_hour_and_uploads_left_to_gradio(tmp_path):
    cache = tmp_path / "cache"
    files = VisitorFiles(10**9, folder=cache)
    old, new = Path(files.keep(b"\xff\xd8old")), Path(files.keep(b"\xff\xd8new"))
    upload = _upload(cache, "photo.jpg", b"mine")
    long_ago = time.time() - KEEP_S - 60
    for path in (old, upload.parent, upload):
        os.utime(path, (long_ago, long_ago))
    files._swept = -float("inf")  # the next minute's sweep
    files.keep(b"\xff\xd8newer")
    assert not old.exists() and new.exists() and old.parent.name == KEPT
    assert upload.exists()  # an upload is Gradio's to expire


def test_a_file_box_hands_over_the_uploads_paths_and_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    uploads = [str(_upload(tmp_path / "cache", f"{n}.jpg", n.encode())) for n in ("one", "two")]
    before = sorted((tmp_path / "cache").rglob("*"))
    many, one = upload_box(file_count="multiple"), upload_box()
    sent = ListFiles([FileData(path=p) for p in uploads])
    assert many.preprocess(sent) == uploads and one.preprocess(FileData(path=uploads[1])) == uploads[1]
    assert one.preprocess(sent) == uploads[0] and many.preprocess(None) is None and one.preprocess(None) is None
    assert sorted((tmp_path / "cache").rglob("*")) == before  # Gradio's own made an empty file per file
