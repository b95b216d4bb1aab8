"""Switching a collection to the one re-embedded beside it, and back, in steps a kill cannot leave half done.

A collection NAME being swapped has a shadow NAME.next (the new model's vectors, same ids and metadata);
after a switch the old one is kept as NAME.previous until it is dropped. Each change is a journal entry
written first (``swaps/NAME.json``), then renames that each check whether they are still to do, then the
entry deleted: whoever opens the store for writing next finishes a change a kill interrupted
(``finish``), so NAME ends as the old collection or the new one, never lost (it is missing only between
the two renames).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from search.core.atomic import write_atomically
from search.errors import StoreError
from search.stores.base import MAX_COLLECTION_NAME, Backend

log = logging.getLogger(__name__)
FOLDER = "swaps"
NEXT, PREVIOUS = ".next", ".previous"
Change = Literal["switch", "rollback"]


def next_name(name: str) -> str:
    """The shadow collection a re-embedding of ``name`` fills."""
    return name + NEXT


def previous_name(name: str) -> str:
    """Where a switch keeps the collection it replaced."""
    return name + PREVIOUS


def is_shadow(name: str) -> bool:
    """Whether ``name`` is a swap's shadow or kept collection (never searched by visitors)."""
    return name.endswith((NEXT, PREVIOUS))


def check(name: str) -> None:
    """Refuse a swap of ``name`` whose twins' names the store could not hold (before any work is done)."""
    if len(previous_name(name)) > MAX_COLLECTION_NAME:
        raise StoreError(f"the collection name {name!r} is too long to swap: {previous_name(name)!r} would be over "
                         f"{MAX_COLLECTION_NAME} characters")


def switch(backend: Backend, folder: Path, name: str) -> None:
    """Make NAME.next the collection NAME, keeping the one it replaces as NAME.previous; refused unless NAME.next
    holds exactly NAME's images (a re-embedding that did not finish, or a NAME that changed since, must not go live)."""
    check(name)
    names = set(backend.names())
    if next_name(name) not in names:
        raise StoreError(f"there is no re-embedded {name!r} to switch to; run --reembed MODEL first")
    if previous_name(name) in names:
        raise StoreError(f"{previous_name(name)!r} is still kept from an earlier switch; --drop-previous it first")
    live, shadow = set(backend.open(name).all_ids()), set(backend.open(next_name(name)).all_ids())
    if live != shadow:
        raise StoreError(f"{next_name(name)!r} holds {len(live & shadow):,} of the {len(live):,} images of {name!r} "
                         f"(and {len(shadow - live):,} it no longer has): run --reembed MODEL again to finish it")
    _change(backend, folder, name, "switch")


def rollback(backend: Backend, folder: Path, name: str) -> None:
    """Make NAME.previous the collection NAME again, keeping the one it replaces as NAME.next."""
    check(name)
    names = set(backend.names())
    if previous_name(name) not in names:
        raise StoreError(f"there is no earlier {name!r} kept to roll back to")
    if next_name(name) in names:
        raise StoreError(f"{next_name(name)!r} exists (a re-embedding not switched to yet): --switch to it first")
    _change(backend, folder, name, "rollback")


def finish(backend: Backend, folder: Path) -> list[str]:
    """Finish every change a kill interrupted (the write lock held); the names it finished. One that cannot be
    finished now is logged and kept for the next writer, never in the way of other collections' writes."""
    finished = []
    for entry in sorted((Path(folder) / FOLDER).glob("*.json")):
        try:
            change = json.loads(entry.read_text())
            name, kind = str(change["name"]), change["change"]
            if kind not in ("switch", "rollback"):
                raise ValueError(kind)
        except (OSError, ValueError, KeyError, TypeError):  # never written whole: the renames had not begun
            entry.unlink(missing_ok=True)
            continue
        try:
            _steps(backend, name, kind)
        except StoreError as exc:
            log.warning("could not finish switching %r now: %s", name, exc.for_operator())
            continue
        entry.unlink(missing_ok=True)
        finished.append(name)
    return finished


def _change(backend: Backend, folder: Path, name: str, change: Change) -> None:
    entry = Path(folder) / FOLDER / f"{name}.json"
    entry.parent.mkdir(parents=True, exist_ok=True)
    # on disk before the first rename: a power cut must not lose the intent
    write_atomically(entry, json.dumps({"name": name, "change": change}), durable=True)
    _steps(backend, name, change)
    entry.unlink(missing_ok=True)


def _steps(backend: Backend, name: str, change: Change) -> None:
    """The renames of ``change``, each done only if it is still to do (so running them again is harmless)."""
    moving_out, moving_in = (previous_name(name), next_name(name)) if change == "switch" else \
        (next_name(name), previous_name(name))
    names = set(backend.names())
    if name in names and moving_in in names and moving_out not in names:
        backend.rename(name, moving_out)
        names = {*names - {name}, moving_out}
    if moving_in in names and name not in names:
        backend.rename(moving_in, name)
