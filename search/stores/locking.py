"""The embedded store's write lock: one writing process per store folder, and a second one told at once."""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from search.errors import StoreError

LOCK_FILE = ".write.lock"


@contextmanager
def write_lock(folder: str | Path) -> Iterator[None]:
    """Hold the store folder's write lock, or fail at once with a StoreError naming the holder.

    fcntl rather than a lock library: the lock file says which process holds it, for the message, and
    the kernel frees it when that process dies, kill -9 included.
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StoreError(
                "another process is writing to the store; try again once it has finished",
                internals=f"{holder} is writing to the store at {folder}; a Chroma server (CHROMA_HOST) takes "
                          "several writers at once",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
