"""The files the app's web server holds for visitors, under one byte budget, and how they reach Gradio.

Gradio keeps every upload and every file it serves in its cache folder, reachable by URL while it is
there. ``VisitorFiles`` is the app's one account of that folder:

- one budget for everything in it (uploads, fetched images, query previews, Gradio's copies of what it
  served), checked before anything is written: uploads past it get HTTP 507, and a fetch or preview
  past it gets a message;
- uploads are counted as Gradio accepts them (equal files share one path there), and an upload a
  request has read is deleted once no other upload of the same file is still waiting to be read, nor
  may be: uploads Gradio was storing at that moment are waited for (one of them may be this file);
- what the app writes itself is named by a keyed hash, so no URL can be guessed from a file's content;
- store files (thumbnails, written from their pack) reach Gradio as copies in its cache under names made
  with a secret, never by serving the store;
- the copies of a deleted image are purged everywhere.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from search.core.atomic import write_atomically
from search.core.ids import is_image_id
from search.errors import ServiceUnavailable
from search.images.decode import HEAD_BYTES, format_of
from search.stores import thumbnails
from search.stores.base import folder_bytes

log = logging.getLogger(__name__)
FULL_MESSAGE = "The server's space for visitors' images is full; try again in a few minutes."
FULL_RETRY_S = 300  # Gradio deletes what it cached this often (layout.DELETE_CACHE), and the sweep runs meanwhile
KEPT = "kept"  # the cache's sub-folder for what the app writes: fetched images, query previews
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
        self._copying = threading.Lock()  # ``shown`` and the sweep of its copies, one folder at a time

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
        purged with the image. Refused with a message when the budget is spent; files older than KEEP_S
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

        A thumbnail as the source (its logical path, or the copy ``shown`` made of it) makes a copy purged with it.
        """
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=88)
        source = Path(source)
        stored = is_image_id(source.stem) and (self.folder not in source.resolve().parents
                                               or source == self._copy_of(source.name))
        return self.keep(out.getvalue(), ".jpg", of=source.stem if stored else None)

    def _sweep(self) -> None:
        """Delete what is older than KEEP_S and nobody else expires: kept files; copies of store files in
        folders nobody asked for since (a copy shown again renews its folder), this process's or an earlier
        one's; and the empty file Gradio's File component leaves for every file an API call sends. At most
        every SWEEP_S seconds."""
        with self._lock:
            if time.monotonic() - self._swept < SWEEP_S:
                return
            self._swept = time.monotonic()
        cutoff = time.time() - KEEP_S
        for entry in _entries(self.folder):
            with contextlib.suppress(OSError):  # another request swept it first
                if entry.name == KEPT:
                    for kept in _entries(Path(entry.path)):
                        if kept.is_file(follow_symlinks=False) and kept.stat().st_mtime < cutoff:
                            os.unlink(kept.path)
                elif _gradios_empty_file(entry, cutoff):
                    os.unlink(entry.path)
                elif entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    with self._copying:  # not while ``shown`` renews this folder
                        if os.stat(entry.path).st_mtime < cutoff:
                            for copy in _entries(Path(entry.path)):
                                if _is_store_file(copy.name):
                                    os.unlink(copy.path)

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

    # --- Store files shown through Gradio ----------------------------------------------------------------

    def shown(self, path: str | Path) -> str:
        """A copy of a store file that Gradio may serve, for a component, an API answer or a search: a
        thumbnail (by the logical path a hit carries, written from the store's pack) or a shipped picture
        (a hard link where it can be).

        It lies in a folder of the cache named by a keyed hash of the file's name: the URL cannot be guessed
        from an image id, and the store itself is never served. Files already in the cache pass as they are.
        """
        source = Path(path)
        if self.folder in source.parents:
            return str(source)
        self._sweep()
        copy = self._copy_of(source.name)
        with self._copying:
            if copy.exists():
                os.utime(copy.parent)  # shown again: the sweep leaves it another KEEP_S
                return str(copy)
            copy.parent.mkdir(parents=True, exist_ok=True)
            temporary = copy.with_name(f".{copy.name}.{threading.get_native_id()}.tmp")
            data = thumbnails.at(source)
            if data is not None:
                temporary.write_bytes(data)
            else:
                try:
                    os.link(source, temporary)
                except OSError:  # another file system, or no links there
                    shutil.copyfile(source, temporary)
            os.replace(temporary, copy)
        return str(copy)

    def _copy_of(self, name: str) -> Path:
        """Where ``shown`` puts its copy of a file so named."""
        return self.folder / hashlib.blake2b(name.encode(), key=self._secret, digest_size=16).hexdigest() / name

    def purge(self, image_ids: Iterable[str]) -> int:
        """Delete every copy of these images' thumbnails (named ``<id>.jpg``) in the cache, ours and Gradio's;
        return how many went. The ids must already be validated image ids: they make file names."""
        names = {f"{i}.jpg" for i in image_ids}
        if not names or not self.folder.is_dir():
            return 0
        folder = self.folder.resolve()  # once: a cache of thousands of folders made a delete take seconds
        removed = 0
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                for name in names:
                    if os.path.lexists(candidate := Path(entry.path) / name):  # most folders hold none of them
                        removed += _remove_inside(folder, candidate)
        made = tuple(f"-{name}" for name in names)  # previews and regions drawn on them (``keep(of=...)``)
        if (folder / KEPT).is_dir():
            for entry in os.scandir(folder / KEPT):
                if entry.name.endswith(made):
                    removed += _remove_inside(folder, Path(entry.path))
        return removed


def _is_store_file(name: str) -> bool:
    """Whether ``name`` is a thumbnail's (``<image id>.jpg``), as ``shown`` copies them."""
    return name.endswith(".jpg") and is_image_id(name.removesuffix(".jpg"))


def _gradios_empty_file(entry: os.DirEntry, cutoff: float) -> bool:
    """One of the empty temporary files ``gr.File(type="filepath")`` makes per file and never deletes (an upload
    in progress writes to one like it, so only those empty since ``cutoff`` qualify)."""
    if not (entry.name.startswith("tmp") and entry.is_file(follow_symlinks=False)):
        return False
    stat = entry.stat(follow_symlinks=False)
    return stat.st_size == 0 and stat.st_mtime < cutoff


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
    is written. Gradio's answer (the paths it stored) tells ``files`` which uploads wait to be read.
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
