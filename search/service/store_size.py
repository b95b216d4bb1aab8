"""A store folder's size for the albums' disk cap, kept as writes change it instead of walked on every upload.

Walking the folder takes longer the more the store holds (every thumbnail is a file), so a check on each
upload of a public deployment would grow with its collections. The folder is walked once when first asked,
then again at most every ``RECHECK_S`` on a background thread (sooner after a delete, whose freed bytes no
one counts); meanwhile what writes report is added to the last walk.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from search.stores.base import folder_bytes

log = logging.getLogger(__name__)
RECHECK_S = 180.0


class StoreSize:
    """Bytes in ``folder``: the last walk plus what was added since."""

    def __init__(self, folder: Path, recheck_s: float = RECHECK_S):
        self.folder = folder
        self.recheck_s = recheck_s
        self._walked: int | None = None
        self._at = -float("inf")  # monotonic time of the last walk's start
        self._added = 0  # bytes reported since that walk began
        self._walker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._first = threading.Lock()  # callers that find no walk yet wait for one, not each for their own

    def bytes(self) -> int:
        """The folder's size as last walked, with what was added since (walked now, the first time only)."""
        if self._walked is None:
            with self._first:
                if self._walked is None:
                    self._walk()
        with self._lock:
            if time.monotonic() - self._at >= self.recheck_s and not (self._walker and self._walker.is_alive()):
                self._walker = threading.Thread(target=self._walk, name="store-size", daemon=True)
                self._walker.start()
            assert self._walked is not None
            return self._walked + self._added

    def add(self, size: int) -> None:
        """``size`` more bytes were written."""
        with self._lock:
            self._added += size

    def stale(self) -> None:
        """Something was deleted: walk again at the next ask."""
        with self._lock:
            self._at = -float("inf")

    def _walk(self) -> None:
        with self._lock:
            self._at = time.monotonic()
            before = self._added
        size = folder_bytes(self.folder)
        with self._lock:  # what was added during the walk may be in it too: counted again, never lost
            self._walked = size
            self._added -= before
        log.debug("the store at %s holds %d bytes", self.folder, size)
