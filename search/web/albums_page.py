"""What the "My collection" tab's events do: upload with progress, browse, select, delete, drop.

Handlers return their outputs by name (``AlbumView``'s fields and a few more); a refusal shows in the tab's
status line (``refusals_in("where")``) rather than as a pop-up that blanks the tab's components.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from search.errors import QueryError
from search.service.albums import Removal
from search.service.service import SearchService
from search.web import views
from search.web.files import VisitorFiles
from search.web.messages import refusals_in, user_errors
from search.web.page import Fields, Outputs, SearchPage

ALBUM_PAGE = 60
DROP = "Delete this collection"
SWAP = "Search it with the app's current model"
FIRST_ALBUM = "photos"  # the name the Collection box suggests
CLEARED_REPORT: Outputs = {"summary": "", "notes": gr.update(value="", visible=False)}  # the last upload's, once stale


@dataclass(frozen=True)
class AlbumView(Fields):
    """What every album event shows: a page of the album, what is selected, where the page is, the buttons."""

    gallery: Any
    ids: list[str]  # the id behind each gallery item
    picked: str  # the selected image's file name
    picked_id: str | None
    offset: int
    where: str
    newer: Any
    older: Any
    drop: Any
    armed: str | None  # the album a first click on DROP asked about
    swap: Any  # offered where the album was made with an earlier model than the app's



ALBUM_VIEW = tuple(f.name for f in fields(AlbumView))


class AlbumPage:
    """The My collection tab's events."""

    def __init__(self, service: SearchService, files: VisitorFiles, search: SearchPage):
        self.service = service
        self.files = files
        self.search = search  # for the Index dropdown and its label filters, which albums change

    @refusals_in("where")
    def show(self, key: str | None, name: str | None, offset: int = 0, note: str = "") -> Outputs:
        """A page of the album chosen under Collection (nothing when there is no such album yet).

        ``note`` goes first in the status line (what the last action did)."""
        name = name or ""
        offset = max(0, int(offset or 0))
        hits, total = self.service.browse_album(key, name, offset, ALBUM_PAGE)
        if hits == [] and offset and total:  # the page emptied (deletions): show the last one
            offset = max(0, (total - 1) // ALBUM_PAGE * ALBUM_PAGE)
            hits, total = self.service.browse_album(key, name, offset, ALBUM_PAGE)
        items, ids = views.album_gallery(hits)
        where = views.album_page(len(items), offset, total) if name else ""
        behind = bool(total) and self.service.album_behind(key, name)
        if behind:
            where += " " + views.album_behind()
        return AlbumView(self.search.gallery(items), ids, "", None, offset,
                         " ".join(filter(None, (note, where))), gr.update(interactive=offset > 0),
                         gr.update(interactive=offset + ALBUM_PAGE < total), gr.update(value=DROP, variant="stop"),
                         None, gr.update(visible=behind)).outputs()

    def newer(self, key: str | None, name: str, offset: int) -> Outputs:
        """The previous page of the album (newer images)."""
        return self.show(key, name, max(0, int(offset or 0) - ALBUM_PAGE))

    def older(self, key: str | None, name: str, offset: int) -> Outputs:
        """The next page of the album (older images)."""
        return self.show(key, name, int(offset or 0) + ALBUM_PAGE)

    @refusals_in("where")
    def add(self, key: str | None, name: str, files: list[str] | None, progress: gr.Progress = gr.Progress()) -> Outputs:
        """Index the uploaded files into the album, showing progress with the total and the time left: the
        report (summary, notes on files), the upload cleared, the Collection and Index dropdowns, the album."""
        started = time.monotonic()

        def report(done: int, total: int | None) -> None:
            progress((done, total) if total else None, desc=views.upload_progress(done, total, time.monotonic() - started),
                     unit="images")

        with self.files.consumed(files or []):
            added = self.service.add_images(key, name, files, on_progress=report)
        names = self.service.album_names(key)
        chosen = added.collection if added.collection in names else None
        notes = views.ingest_notes(added)
        return {**self.show(key, chosen or ""), "summary": views.ingest_summary(added),
                "notes": gr.update(value=notes, visible=bool(notes)), "uploads": None,
                "album": gr.update(choices=names, value=chosen), "index": gr.update(choices=self.search.index_choices(key))}

    @refusals_in("where")
    def swap(self, key: str | None, name: str, progress: gr.Progress = gr.Progress()) -> Outputs:
        """Embed the album again with the app's model and switch to it, showing progress; then the album, what
        was done, and the Index dropdown."""
        started = time.monotonic()

        def report(done: int, total: int) -> None:
            progress((done, total), desc=views.upload_progress(done, total, time.monotonic() - started), unit="images")

        swapped = self.service.swap_album(key, name, on_progress=report)
        return {**self.show(key, name), **CLEARED_REPORT, "summary": views.swapped(name, swapped),
                "index": gr.update(choices=self.search.index_choices(key))}

    @user_errors
    def pick(self, evt: gr.SelectData, ids: list[str]) -> Outputs:
        """Select the album image that was clicked: its file's name to show, and its id to delete it by."""
        if not (isinstance(evt.index, int) and 0 <= evt.index < len(ids or [])):
            return {"picked": "", "picked_id": None}
        caption = evt.value.get("caption") if isinstance(evt.value, dict) else None
        return {"picked": str(caption or ids[evt.index]), "picked_id": ids[evt.index]}

    @refusals_in("where")
    def delete_picked(self, key: str | None, name: str, image_id: str | None, offset: int) -> Outputs:
        """Delete the selected image from the album, then show the album again (the last upload's report,
        which counted it, goes)."""
        if not image_id:
            raise QueryError("Click an image in the collection first.")
        forget(self.service, self.files, self.service.delete_images(key, name, [image_id]))
        return {**self.show(key, name, offset, note="Deleted the selected image."), **CLEARED_REPORT}

    @refusals_in("where")
    def drop(self, key: str | None, name: str, index: str, armed: str | None) -> Outputs:
        """Delete the whole album, on a second click (the first asks): the Collection and Index dropdowns
        (searching the main index again where the album was chosen there), an empty album view, and the
        label filters of the index chosen now."""
        if name not in self.service.album_names(key):
            raise QueryError("There is no such collection to delete: choose one under Collection.")
        if armed != name:
            held = self.service.browse_album(key, name, 0, 1)[1]
            return {"drop": gr.update(value=f"Click again to delete “{name}” and its {held:,} "
                                            f"image{'' if held == 1 else 's'}", variant="stop"), "armed": name}
        removed = len(forget(self.service, self.files, self.service.drop_album(key, name)).removed)
        choices, chosen = self.search.index_choice(key, index)
        filters = self.search.label_filters(chosen, key) if chosen != index else {}
        names = self.service.album_names(key)
        return {**self.show(key, "", note=views.dropped(name, removed)), **filters, **CLEARED_REPORT,
                "album": gr.update(choices=names, value=names[0] if names else FIRST_ALBUM),
                "index": gr.update(choices=choices, value=chosen)}


def forget(service: SearchService, files: VisitorFiles, removal: Removal) -> Removal:
    """After a delete: delete what the app made from the images whose thumbnails went from the store (their
    pictures' URLs answer 404 from then on by themselves)."""
    files.forget(service.without_thumbnail(removal.removed))
    return removal

