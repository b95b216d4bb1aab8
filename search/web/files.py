"""The files the app's web server holds for visitors, under one byte budget, in Gradio's cache folder.

Gradio keeps every upload and every file it serves in its cache folder, reachable by URL while it is
there. ``VisitorFiles`` is the app's one account of that folder:

- one budget for everything in it (uploads, fetched images, query previews), checked before anything is
  written: uploads past it get HTTP 507, and a fetch or preview past it gets a message;
- uploads are counted as Gradio accepts them (equal files share one path there), and an upload a
  request has read is deleted once no other upload of the same file is still waiting to be read, nor
  may be: uploads Gradio was storing at that moment are waited for (one of them may be this file);
- what the app writes itself is named by a keyed hash, so no URL can be guessed from a file's content;
  what it makes from a stored image carries the image's id in its name and goes when the image does.

Stored thumbnails never come here: the page shows them at the app's own route (``pictures``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData, ListFiles
from PIL import Image

from search.core.atomic import write_atomically
from search.core.ids import is_image_id
from search.errors import QueryError, ServiceUnavailable
from search.images.decode import HEAD_BYTES, format_of, read_file
from search.stores import thumbnails
from search.stores.base import folder_bytes

log = logging.getLogger(__name__)
FULL_MESSAGE = "The server's space for visitors' images is full; try again in a few minutes."
FULL_RETRY_S = 300  # Gradio deletes what it cached this often (layout.DELETE_CACHE), and the sweep runs meanwhile
KEPT = "kept"  # the cache's sub-folder for what the app writes: fetched images, query previews
GONE = "That image is no longer stored; search again."
KEEP_S = 1800  # what the app keeps lives as long as what Gradio caches (layout.DELETE_CACHE)
SWEEP_S = 60  # how often at most the kept files are swept for ones past KEEP_S
RECHECK_S = 1.0  # how often at most the folder is measured for the budget
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
             "HEIF": ".heic", "AVIF": ".avif", "RAW": ".raw"}
MAX_UPLOAD_ANSWER = 1 << 20  # Gradio's answer to an upload lists paths; more than this is not one


def cache_folder() -> Path:
    """Gradio's upload and cache folder (GRADIO_TEMP_DIR, or the system's temp folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


class VisitorFiles:
    """Gradio's cache folder as the app uses it: a byte budget, counted uploads, kept and staged files."""

    def __init__(self, max_bytes: int, folder: Path | None = None):
        self.max_bytes = max_bytes
        self._folder = folder
        self._swept = -float("inf")  # monotonic time of the last sweep of kept files
        self._measured = (-float("inf"), 0)  # (monotonic time, bytes)
        self._admitted = 0  # bytes let in since the last measurement
        self._uploads: Counter[str] = Counter()  # uploads Gradio accepted and no request has read yet, by path
        self._tickets = itertools.count()
        self._arriving: set[int] = set()  # uploads Gradio is storing now, not yet counted
        self._doomed: list[tuple[str, int | None, set[int]]] = []  # read uploads, waiting on those arrivals
        self._secret = secrets.token_bytes(32)  # names what the app writes: unguessable, equal for equal bytes
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The cache folder (read when first needed: Gradio decides it at launch)."""
        if self._folder is None:
            self._folder = cache_folder()
        return self._folder

    # --- The budget -----------------------------------------------------------------------------------

    def admit(self, size: int) -> bool:
        """Whether ``size`` more bytes fit the budget; if they do, they are counted as written.

        The folder is measured at most every RECHECK_S seconds; what was let in meanwhile is added
        to the last measurement, so a burst cannot slip under it.
        """
        with self._lock:
            now = time.monotonic()
            if now - self._measured[0] >= RECHECK_S:
                self._measured = (now, folder_bytes(self.folder))
                self._admitted = 0
            if self._measured[1] + self._admitted + size > self.max_bytes:
                return False
            self._admitted += size
            return True

    # --- What the app writes --------------------------------------------------------------------------

    def keep(self, data: bytes, suffix: str | None = None, of: str | None = None) -> str:
        """Keep bytes (a fetched image, a preview) as a file the page can show and search again; its path.

        What is made from a stored image (``of``, its validated id) carries the id in its name, so it is
        deleted with the image (``forget``). Refused with a message when the budget is spent; files older than KEEP_S
        are swept on the way.
        """
        folder = self.folder / KEPT
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep()
        suffix = suffix or _SUFFIXES.get(format_of(data[:HEAD_BYTES]) or "", ".bin")
        name = hashlib.blake2b(data, key=self._secret, digest_size=16).hexdigest()
        path = folder / (f"{name}-{of}{suffix}" if of else name + suffix)
        if path.exists():
            path.touch()
            return str(path)
        if not self.admit(len(data)):
            raise ServiceUnavailable(FULL_MESSAGE, retry_after=FULL_RETRY_S)
        try:
            write_atomically(path, data)
        except OSError as exc:
            raise ServiceUnavailable(FULL_MESSAGE, retry_after=FULL_RETRY_S,
                                     internals=f"{type(exc).__name__}: {exc}") from None
        return str(path)

    def keep_image(self, img: Image.Image, source: str | Path) -> str:
        """Keep a picture the page shows (a preview, a region drawn on one) made from ``source``, as a JPEG.

        Made from a stored image (its thumbnail's logical path, or the file ``readable`` made of it), it goes
        with that image (``forget``).
        """
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=88)
        return self.keep(out.getvalue(), ".jpg", of=self._stored(Path(source)))

    def readable(self, picture: str) -> str:
        """A file the library can read for ``picture``: a stored thumbnail (its logical path) written from its
        pack as a kept file that goes with the image; any other file as it is."""
        image_id = thumbnails.id_of(picture)
        return self.keep(picture_bytes(picture), ".jpg", of=image_id) if image_id else picture

    def forget(self, image_ids: Iterable[str]) -> int:
        """Delete what the app made from these images (``keep(of=...)``); how many files went. The ids must
        already be validated image ids: they make file names."""
        made = tuple(f"-{i}.jpg" for i in image_ids)
        return sum(_remove_inside(self.folder.resolve(), Path(entry.path))
                   for entry in _entries(self.folder / KEPT) if entry.name.endswith(made))

    def _stored(self, source: Path) -> str | None:
        """The id of the stored image ``source`` is (a thumbnail's logical path) or was made from (a kept file)."""
        image_id = thumbnails.id_of(source)
        if image_id or source.parent != self.folder / KEPT:
            return image_id
        _, dash, made = source.stem.rpartition("-")
        return made if dash and is_image_id(made) else None

    def _sweep(self) -> None:
        """Delete kept files older than KEEP_S (nobody else expires them), at most every SWEEP_S seconds."""
        with self._lock:
            if time.monotonic() - self._swept < SWEEP_S:
                return
            self._swept = time.monotonic()
        cutoff = time.time() - KEEP_S
        for kept in _entries(self.folder / KEPT):
            with contextlib.suppress(OSError):  # another request swept it first
                if kept.is_file(follow_symlinks=False) and kept.stat().st_mtime < cutoff:
                    os.unlink(kept.path)

    # --- Uploads --------------------------------------------------------------------------------------

    def arriving(self) -> int:
        """An upload request starts (Gradio may move its file over an equal one's path); its ticket."""
        with self._lock:
            ticket = next(self._tickets)
            self._arriving.add(ticket)
            return ticket

    def uploaded(self, paths: Iterable[str]) -> None:
        """Gradio accepted these uploads (one count per upload, so equal files from two visitors count twice)."""
        with self._lock:
            self._uploads.update(str(Path(p).resolve()) for p in paths)

    def arrived(self, ticket: int) -> None:
        """An upload request ended (counted or failed): deletions that waited only on it happen now."""
        with self._lock:
            self._arriving.discard(ticket)
            waiting = []
            for key, inode, on in self._doomed:
                on.discard(ticket)
                if on:
                    waiting.append((key, inode, on))
                else:
                    self._delete(key, inode)
            self._doomed = waiting

    @contextlib.contextmanager
    def consumed(self, paths: Iterable[str | Path | None]) -> Iterator[None]:
        """Read uploads within the block; then each is deleted, unless another upload of the same file waits.

        Gradio stores an upload by renaming it over the path of an equal one: the file read here is known
        by its inode, and only that file is deleted, never one another upload put in its place meanwhile.
        An upload Gradio was storing when the last read ended may have put this very file there and not be
        counted yet: the deletion waits until each of those is counted. An upload this process never
        counted (a path reused after it was read, or from before a restart) is left to Gradio's expiry: it
        may be someone else's.
        """
        read = {Path(p).resolve(): _inode(Path(p)) for p in paths if p}
        try:
            yield
        finally:
            for path, inode in read.items():
                self._release(str(path), inode)

    def _release(self, key: str, inode: int | None) -> None:
        with self._lock:
            if key not in self._uploads:
                return
            self._uploads[key] -= 1
            if self._uploads[key]:
                return
            del self._uploads[key]
            if self._arriving:
                self._doomed.append((key, inode, set(self._arriving)))
            else:
                self._delete(key, inode)

    def _delete(self, key: str, inode: int | None) -> None:
        """Delete a read upload (the lock held) unless it was counted again or another file took its path."""
        path = Path(key)
        if key not in self._uploads and inode is not None and _inode(path) == inode:
            _remove_inside(self.folder.resolve(), path)


def upload_box(**kwargs: Any) -> gr.File:
    """A file box whose handler gets the uploads' paths as Gradio stored them (a path, or a list for
    ``file_count="multiple"``): what ``VisitorFiles.consumed`` deletes.

    Gradio's own preprocessing makes an empty temporary file in its cache for every file and never deletes it
    (gradio/components/file.py, ``_process_single_file``); the paths are what the handlers read, and Gradio has
    checked that they lie in its upload folder before this runs. (Set on the instance, as ``page.query_image``.)
    """
    box = gr.File(type="filepath", **kwargs)
    single = box.file_count == "single"
    box.preprocess = functools.partial(_upload_paths, single=single)  # type: ignore[method-assign]
    return box


def _upload_paths(payload: FileData | ListFiles | None, single: bool) -> str | list[str] | None:
    if payload is None:
        return None
    paths = [str(f.path) for f in payload] if isinstance(payload, ListFiles) else [str(payload.path)]
    return paths[0] if single else paths


def picture_bytes(picture: str | Path) -> bytes:
    """The bytes of ``picture``: a stored thumbnail (its logical path) from the store's pack, else a file."""
    if thumbnails.id_of(picture):
        data = thumbnails.at(picture)
        if data is None:  # deleted since the page was given it
            raise QueryError(GONE)
        return data
    return read_file(Path(picture))


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError:  # not made yet, or swept meanwhile
        return []


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _remove_inside(folder: Path, path: Path) -> int:
    """Delete ``path`` where it is a file inside ``folder`` (resolved) once links are followed; 1 if it went."""
    try:
        resolved = path.resolve()
        if folder not in resolved.parents or not resolved.is_file():
            return 0
        # Its folder stays: Gradio makes it, then moves an upload in, and an upload of the same file may be
        # between the two right now (removing it made that upload fail with a 500).
        resolved.unlink()
    except OSError:
        return 0
    return 1


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class UploadBudget:
    """ASGI middleware over Gradio's upload route: refuse uploads past the budget, count those accepted.

    An upload must declare its length (browsers and gradio_client do), so it is refused before a byte
    is written. Gradio's answer (the paths it stored) tells ``files`` which uploads wait to be read: Gradio
    (6.31) stores equal files at one path (a folder named by their hash, route_utils.upload_fn) and offers no
    other sign that an upload arrived before a handler is given its path, minutes later perhaps, so an upload
    read by one visitor could not otherwise be deleted without losing another's. If a Gradio upgrade changes
    that answer, uploads stop being deleted once read: tests/e2e/test_hostile_api.py's dropped-collection
    test finds an upload still served.
    """

    def __init__(self, app: ASGIApp, files: VisitorFiles):
        self.app = app
        self.files = files

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload")):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is None or not declared.isdigit():
            await _answer(send, 411, b"An upload must declare its Content-Length.")
            return
        if not self.files.admit(int(declared)):
            log.info("upload refused: the visitors' space is full")
            await _answer(send, 507, FULL_MESSAGE.encode())
            return
        status, body = 0, bytearray()
        ticket = self.files.arriving()

        async def counting(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200 and len(body) <= MAX_UPLOAD_ANSWER:
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    self.files.uploaded(_paths(bytes(body)))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.files.arrived(ticket)


def _paths(answer: bytes) -> list[str]:
    try:
        paths = json.loads(answer)
    except ValueError:
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})
