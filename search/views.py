"""How the app shows the service's answers to a person: captions, dropdown choices, Markdown, status lines.

Pure functions from the service's typed data to what Gradio components take; no Gradio import, no I/O.
Only ``app.py`` uses this module.
"""
from __future__ import annotations

from pathlib import Path

from .first_run import FAILURE_HINT, BuildState
from .index import Hit
from .report import BuildReport
from .service import IndexChoice, Overview, Results

BUILD_HINT = (
    "python index_builder.py --dataset ashraq/fashion-product-images-small --store data/store --limit 5000"
)
INGEST_HEADERS = ["source", "outcome", "detail"]


def overview(o: Overview) -> str:
    """One line of Markdown on what is being searched, or what to do when nothing is.

    While the default index is built: its progress; where that failed: why, and what to do.
    """
    searched = f"Searching the **{o.images:,} images** indexed so far." if o.images else ""
    if o.building and o.building.stage == "failed":
        return (f"**The default index could not be built:** {o.building.problem}. {FAILURE_HINT} {searched}").strip()
    if o.building:
        return f"{build_progress(o.building)} {searched or 'Searches start once the first images are in.'}"
    if o.problem:
        return (f"**No index to search yet.** {o.problem}\n\nBuild the default one with "
                f"`{BUILD_HINT}`, or point `IMAGE_SEARCH_STORE` at a store, then restart the app.")
    return f"Searching **{o.images:,} images** in collection `{o.collection}` with `{o.model}`."


def build_progress(state: BuildState) -> str:
    """The default build's progress: images indexed of the total, rate, and time left."""
    what = "the pixel baseline" if state.stage == "pixels" else "the index"
    if state.stage == "starting":
        return f"**Building {what}:** loading the dataset and the model…"
    total = f"{state.total:,}" if state.total else "?"
    left = state.seconds_left
    eta = f", about {_duration(left)} left" if left is not None else ""
    return f"**Building {what}:** {state.done:,} of {total} images, {state.rate:.1f} images/s{eta}."


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def albums_intro(public: bool) -> str:
    """The "My collection" tab's first line."""
    return ("Index your own photos, then pick *my collection: …* under **Index** to search them."
            + (" Your collections are private to this browser." if public else ""))


def index_choices(choices: list[IndexChoice]) -> list[tuple[str, str]]:
    """(label, value) pairs for the Index dropdown."""
    return [(_index_label(c), c.index) for c in choices]


def _index_label(choice: IndexChoice) -> str:
    if choice.kind == "album":
        return f"my collection: {choice.name}"
    if choice.kind == "pixels":
        return f"{choice.name}: pixels (basic)"
    return f"{choice.name}: CLIP {choice.model}"


def caption(rank: int, hit: Hit) -> str:
    """A result's caption: rank, score, label (else caption, else file name), and folded near-duplicates."""
    text = f"#{rank} · {hit.score:.3f} · {hit.label or hit.caption or Path(hit.source or hit.id).name}"
    return text + (f" · +{len(hit.similar)} similar" if hit.similar else "")


def result_gallery(results: Results) -> tuple[list[tuple[str, str]], list[str]]:
    """(thumbnail, caption) pairs for the results gallery, and the id behind each item, in the same order.

    Hits without a thumbnail are not shown; ranks stay those of the results.
    """
    items: list[tuple[str, str]] = []
    ids: list[str] = []
    for rank, hit in enumerate(results.hits, 1):
        if hit.image:
            items.append((hit.image, caption(rank, hit)))
            ids.append(hit.id)
    return items, ids


def status(results: Results) -> str:
    """How many results, and how long the search took."""
    n = len(results.hits)
    return f"{n} result{'' if n == 1 else 's'} in {results.seconds * 1000:.0f} ms"


def album_gallery(hits: list[Hit]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(thumbnail, source) pairs for browsing an album, and the id behind each item, in the same order."""
    items: list[tuple[str, str | None]] = []
    ids: list[str] = []
    for hit in hits:
        if hit.image:
            items.append((hit.image, hit.source))
            ids.append(hit.id)
    return items, ids


def ingest_summary(report: BuildReport) -> str:
    """One paragraph on what an upload to an album did."""
    return report.summary()


def ingest_rows(report: BuildReport) -> list[list[str]]:
    """The ingestion report's rows (INGEST_HEADERS): each skipped file with its reason, each near-duplicate."""
    return ([[s["source"], s["reason"], s["detail"]] for s in report.skipped]
            + [[d["source"], "near-duplicate", f"of {d['similar_source']} ({d['similarity']})"]
               for d in report.near_duplicates])
