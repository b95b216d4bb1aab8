"""Files written whole or not at all."""
from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomically(path: str | Path, data: str | bytes, *, durable: bool = False) -> None:
    """Write ``path`` so that a reader, or a kill, finds the old file or the new one, never half of one: into a
    temporary file beside it (named for this process and thread, so writers side by side never share one), then
    renamed over it. ``durable``: on the disk before the rename, so that a power cut keeps it too."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
