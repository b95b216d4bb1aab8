"""The files the app's web server holds for visitors: uploads, and cached copies of thumbnails.

Gradio keeps every upload and every file it serves in its cache folder, one sub-folder per file
hash, reachable by URL until deleted. A visitor's images must not outlive their collection there,
and uploads must not fill the disk: this module deletes uploads once they have been read, purges the
cached copies of deleted images, and refuses new uploads while the folder is over its byte budget.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from .ids import content_id
from .store import folder_bytes

log = logging.getLogger(__name__)
COPIES = "thumbnails"  # the cache's sub-folder for served_copy
FULL_MESSAGE = b"The server's upload space is full; try again in a few minutes."


def cache_folder() -> Path:
    """Gradio's upload and cache folder (GRADIO_TEMP_DIR, or the system's temp folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def discard_uploads(paths: Iterable[str | Path | None]) -> None:
    """Delete uploaded files once read; only files inside the cache folder are touched."""
    folder = cache_folder()
    for path in paths:
        if path:
            _remove_inside(folder, Path(path))


def purge_cached_copies(image_ids: Iterable[str]) -> int:
    """Delete every cached copy of these images' thumbnails (named ``<id>.jpg``); return how many went.

    The ids must already be validated image ids: they are used in a file name.
    """
    folder = cache_folder()
    names = {f"{i}.jpg" for i in image_ids}
    if not names or not folder.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            for name in names:
                removed += _remove_inside(folder, Path(entry.path) / name)
    return removed


def served_copy(path: str | Path) -> str:
    """A copy of a thumbnail in Gradio's cache (a hard link where it can be) for an API answer.

    Answers then name a file of the cache, never one of the store; the copy is named ``<id>.jpg``
    like its source, so :func:`purge_cached_copies` finds it when its image is deleted.
    """
    source = Path(path)
    copy = cache_folder() / COPIES / source.name
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        temporary = copy.with_suffix(f".{threading.get_native_id()}.tmp")
        try:
            os.link(source, temporary)
        except OSError:  # another file system, or no links there
            shutil.copyfile(source, temporary)
        os.replace(temporary, copy)
    return str(copy)


FETCHED = "fetched"  # the cache's sub-folder for images fetched from URLs, kept while a page searches by them
FETCHED_KEEP_S = 1800  # as long as Gradio keeps what it cached
_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"RIFF": ".webp", b"BM": ".bmp"}


def keep_fetched(data: bytes) -> str:
    """Keep a fetched image's bytes as a file the page can show and search again; its path.

    Named by content hash (so nothing from outside names a file); older ones are swept on the way.
    """
    folder = cache_folder() / FETCHED
    cutoff = time.time() - FETCHED_KEEP_S
    folder.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(OSError):  # another request swept it first
                os.unlink(entry.path)
    suffix = next((ext for magic, ext in _MAGIC.items() if data.startswith(magic)), ".bin")
    path = folder / (content_id(data) + suffix)
    if not path.exists():
        tmp = path.with_suffix(f".{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    path.touch()
    return str(path)


def _remove_inside(folder: Path, path: Path) -> int:
    try:
        resolved = path.resolve()
        if folder not in resolved.parents or not resolved.is_file():
            return 0
        resolved.unlink()
    except OSError:
        return 0
    try:
        resolved.parent.rmdir()  # the per-file hash folder, when it is now empty
    except OSError:
        pass
    return 1


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class UploadBudget:
    """ASGI middleware: refuse uploads while Gradio's cache folder holds ``max_bytes`` or more.

    An upload must declare its length (browsers and gradio_client do), so it is refused before a
    byte is written. The folder is measured at most once every ``recheck_s`` seconds; uploads let in
    meanwhile are added to the last measurement, so a burst cannot slip under it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, recheck_s: float = 1.0, folder: Path | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.recheck_s = recheck_s
        self.folder = folder
        self._measured = (0.0, 0)  # (monotonic time, bytes)
        self._admitted = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload"):
            refusal = self._refusal(dict(scope.get("headers") or []).get(b"content-length"))
            if refusal:
                status, body = refusal
                log.info("upload refused (%s)", status)
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _refusal(self, declared: bytes | None) -> tuple[int, bytes] | None:
        if declared is None or not declared.isdigit():
            return 411, b"An upload must declare its Content-Length."
        size = int(declared)
        with self._lock:
            now = time.monotonic()
            if now - self._measured[0] >= self.recheck_s:
                folder = self.folder or cache_folder()
                # Thumbnail copies are bounded by the store itself; the budget is for what visitors send.
                self._measured = (now, folder_bytes(folder) - folder_bytes(folder / COPIES))
                self._admitted = 0
            if self._measured[1] + self._admitted + size > self.max_bytes:
                return 507, FULL_MESSAGE
            self._admitted += size
        return None

