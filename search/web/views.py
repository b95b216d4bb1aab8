"""How the app shows the service's answers to a person: captions, dropdown choices, Markdown, status lines.

Pure functions from the service's typed data to what Gradio components take; no Gradio import, no I/O.
The web layer's page modules (layout, page, albums_page, messages, ...) use it.
"""
from __future__ import annotations

from pathlib import Path

from search.core.hits import Hit
from search.core.record import model_name
from search.errors import REASONS
from search.pipeline.report import BuildReport
from search.pipeline.swap import ReembedReport
from search.service.first_run import BuildState
from search.service.service import IndexChoice, Overview

BUILD_HINT = (
    "python index_builder.py --dataset ashraq/fashion-product-images-small --store data/store --limit 5000"
)


def overview(o: Overview) -> str:
    """One line of Markdown on what is being searched, or what to do when nothing is.

    While the model loads: that; while the default index is built: its progress; where that failed: why, and
    what to do.
    """
    if o.loading:
        return "**Loading the model…** Searches made now are answered as soon as it is ready."
    searched = f"Searching the **{o.images:,} images** indexed so far." if o.images else ""
    if o.building and o.building.stage == "failed":
        return (f"**The default index could not be built:** {o.building.problem}. {o.building.hint} {searched}").strip()
    if o.building:
        return f"{build_progress(o.building)} {searched or 'Searches start once the first images are in.'}"
    if o.problem:
        return (f"**No index to search yet.** {o.problem}\n\nBuild the default one with "
                f"`{BUILD_HINT}`, or point `IMAGE_SEARCH_STORE` at a store, then restart the app.")
    # Says what the main index is, not what is being searched: the Index dropdown may choose another.
    return f"Main index: **{o.images:,} images** (collection `{o.collection}`, model `{o.model}`)."


def build_progress(state: BuildState) -> str:
    """The default build's progress: images indexed of the total, rate, and time left."""
    what = "the pixel baseline" if state.stage == "pixels" else "the index"
    if state.stage == "starting":
        return f"**Building {what}:** loading the dataset and the model…"
    total = f"{state.total:,}" if state.total else "?"
    left = state.seconds_left
    eta = f", about {_duration(left)} left" if left is not None else ""
    return f"**Building {what}:** {state.done:,} of {total} images, {state.rate:.1f} images/s{eta}."


def upload_progress(done: int, total: int | None, seconds: float) -> str:
    """An upload's progress: images done of the total, and the time left at the rate so far."""
    if not total:
        return f"Reading the files: {done:,} images so far…"
    left = (total - done) * seconds / done if done else None
    eta = f", about {_duration(left)} left" if left is not None and done < total else ""
    return f"{done:,} of {total:,} images{eta}"


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


METRIC_CHOICES = [("Cosine similarity", "cosine"), ("Correlation", "correlation"), ("Euclidean distance (L2)", "l2"),
                  ("Manhattan distance (L1)", "l1"), ("Inner product", "ip")]
METRIC_INFO = ("Cosine and correlation score similarity: 1 is the same direction, higher is closer. "
               "L1 and L2 are distances: 0 is identical, lower is closer. "
               "Inner product equals cosine on CLIP; on raw pixels it grows with brightness.")
DISTANCES = ("l1", "l2")
SORT_CHOICES = [("Best match first", "relevance"), ("Newest first (strong matches)", "newest"),
                ("Oldest first (strong matches)", "oldest")]


def score_text(score: float, metric: str) -> str:
    """A score as people compare it: a similarity (higher is closer) or a distance (lower is closer)."""
    if metric in DISTANCES:
        return f"distance {-score:.3g}"
    return f"{score:.3f}" if abs(score) < 10 else f"{score:,.0f}"


def caption(rank: int, hit: Hit, metric: str, mark: bool | None = None, dated: bool = False) -> str:
    """A result's caption: a mark the person gave it (👍 more like, 👎 less like), rank, label (else caption,
    else file name), score, with ``dated`` the capture date, folded near-duplicates, the words the query
    found in it, and "weak" below the query's relevance cut-off."""
    text = f"{'' if mark is None else '👍 ' if mark else '👎 '}#{rank} {name(hit)} · {score_text(hit.score, metric)}"
    when = f" · {hit.taken[:10] if hit.taken else 'no date'}" if dated else ""
    return (text + when + (f" · +{len(hit.similar)} similar" if hit.similar else "") + _words_caption(hit)
            + (" · weak" if hit.relevant is False else ""))


FIELD_NAMES = {"caption": "caption", "label": "label", "name": "file name", "photo": "photo's description",
               "ocr": "text in the image"}


def _words_caption(hit: Hit) -> str:
    """Why the keyword channel found a hit, as short as a caption allows: the words, and the first place."""
    if not hit.matched:
        return ""
    first, *rest = hit.matched.items()
    words = list(dict.fromkeys(w for found in hit.matched.values() for w in found))
    return f" · “{' '.join(words)}” in {FIELD_NAMES[first[0]]}{' +' if rest else ''}"


def matched(hit: Hit) -> str:
    """Where the query's words were found, in Markdown, the words in bold ("**Nike** **Air** in the caption")."""
    return "; ".join(f"{' '.join(f'**{_md(w)}**' for w in found)} in the {FIELD_NAMES[field]}"
                     for field, found in hit.matched.items())


def name(hit: Hit) -> str:
    """What a result is called: its label, else its caption, else its file's name."""
    return hit.label or hit.caption or Path(hit.source or hit.id).name


def mark_name(hit: Hit) -> str:
    """A marked result as its chip names it: what it is called, and its file's name where that says more
    ("cartoon · cat-03.png": many results may share a label)."""
    called = name(hit)
    file = Path(hit.source).name if hit.source else ""
    return f"{called} · {file}" if file and file != called else called


def result_gallery(hits: list[Hit], metric: str, marks: dict[str, bool] | None = None,
                   dated: bool = False) -> tuple[list[tuple[str, str]], list[Hit]]:
    """(thumbnail, caption) pairs for the results gallery, and the hit behind each item, in the same order.

    Hits without a thumbnail are not shown; ranks stay those of the results. ``marks``: the person's
    feedback by image id (True: more like it); ``dated``: captions show capture dates (a sort by date).
    """
    items: list[tuple[str, str]] = []
    kept: list[Hit] = []
    for rank, hit in enumerate(hits, 1):
        if hit.image:
            items.append((hit.image, caption(rank, hit, metric, (marks or {}).get(hit.id), dated)))
            kept.append(hit)
    return items, kept


def status(count: int, total: int, seconds: float, relevant: int | None = None, no_match: str | None = None) -> str:
    """How many results of how many images, how many pass the cut-off, and how long the search took; with
    ``no_match`` (the query's text), that nothing stands out for it, before the counts."""
    if not total:
        return "No images to search here: the index is empty, or no image has these labels or dates."
    if no_match is not None:
        return (f"**Nothing here looks like “{_md(no_match)}”**; the nearest images are shown below. "
                f"{count:,} of {total:,} image{'' if total == 1 else 's'} · {seconds * 1000:.0f} ms")
    cut = f" · {relevant} strong match{'' if relevant == 1 else 'es'}" if relevant is not None else ""
    return f"Top **{count:,}** of {total:,} image{'' if total == 1 else 's'}{cut} · {seconds * 1000:.0f} ms"


def filters_cleared(labels: list[str]) -> str:
    """The status line's note that label filters the index just chosen does not hold were cleared."""
    quoted = ", ".join(f"“{_md(label)}”" for label in labels)
    if len(labels) == 1:
        return f"The label filter {quoted} does not apply to this index and was cleared."
    return f"The label filters {quoted} do not apply to this index and were cleared."


def problem(message: str) -> str:
    """The status line when a search could not run: the library's own message for the person."""
    return f"⚠️ {message}"


def detail(rank: int, hit: Hit, metric: str) -> str:
    """The selected result, in full: what its one-line caption shortens (label, caption, score, raw too, the
    words found, the date, near-duplicates, "weak"), where it came from, its id."""
    lines = [f"**#{rank} {_md(name(hit))}**"]
    if hit.caption and hit.caption != hit.label:
        lines.append(_md(hit.caption))
    lines.append(f"Score ({metric}): {score_text(hit.score, metric)} (raw {hit.score:.6g})")
    if hit.matched:
        lines.append(f"Found {matched(hit)}")
    if hit.taken:
        lines.append(f"Taken {hit.taken.replace('T', ' ')}")
    if hit.source:
        source = hit.source
        link = source.startswith(("http://", "https://")) and " " not in source and ")" not in source
        lines.append(f"Source: [{_md(Path(source).name or source)}]({source})" if link else f"Source: {_md(Path(source).name)}")
    if hit.similar:
        lines.append(f"{len(hit.similar)} near-duplicate{'' if len(hit.similar) == 1 else 's'} folded into it")
    if hit.relevant is False:
        lines.append("A weak match: below this search's cut-off for strong matches")
    lines.append(f"<small>id {hit.id}</small>")
    return "\n\n".join(lines)


def _md(text: str) -> str:
    """Text from a dataset or an upload, shown literally (no Markdown or HTML of its own)."""
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~" else c for c in text)


def album_gallery(hits: list[Hit]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(thumbnail, source) pairs for browsing an album, and the id behind each item, in the same order."""
    items: list[tuple[str, str | None]] = []
    ids: list[str] = []
    for hit in hits:
        if hit.image:
            items.append((hit.image, Path(hit.source).name if hit.source else None))
            ids.append(hit.id)
    return items, ids


def album_page(count: int, offset: int, total: int) -> str:
    """Where the album view is: which images of how many."""
    if not total:
        return "This collection is empty: add images or a .zip above."
    return f"Images {offset + 1:,}–{offset + count:,} of {total:,}, newest first."


def album_behind() -> str:
    """Why the swap button shows: the album's model is not the app's any more."""
    return ("This collection was made with the model the app used before; it is still searched with that one, "
            "until you bring it to the current model.")


def swapped(name: str, report: ReembedReport) -> str:
    """What bringing a collection to the app's model did."""
    n = report.embedded
    return (f"*{_md(name)}*: embedded {n:,} image{'' if n == 1 else 's'} again with `{model_name(report.model)}` in "
            f"{report.seconds:.1f} s; it is searched with that model now.")


def dropped(name: str, removed: int) -> str:
    """What deleting a whole collection did."""
    return f"Deleted collection *{_md(name)}* and its {removed:,} image{'' if removed == 1 else 's'}."


def ingest_summary(report: BuildReport) -> str:
    """One paragraph on what an upload to a collection did, in a person's words (no paths, no codes)."""
    n = report.indexed
    parts = [f"Added **{n} image{'' if n == 1 else 's'}** to *{_md(report.collection)}*"]
    if report.seconds >= 0.5 and n:
        parts[0] += f" in {report.seconds:.1f} s"
    if report.already_indexed:
        parts.append(f"{report.already_indexed} {'was' if report.already_indexed == 1 else 'were'} already in it")
    if report.duplicates:
        parts.append(f"{report.duplicates} exact duplicate{'' if report.duplicates == 1 else 's'} skipped")
    if report.near_duplicates:
        parts.append(f"{len(report.near_duplicates)} near-duplicate{'' if len(report.near_duplicates) == 1 else 's'}")
    if report.skipped:
        parts.append(f"{len(report.skipped)} file{'' if len(report.skipped) == 1 else 's'} could not be used (below)")
    if report.texts_queued:
        parts.append(f"the text inside {'it' if report.texts_queued == 1 else 'them'} is being read in the background "
                     "(searchable by its words in a minute or so)")
    total = report.total_in_collection
    return "; ".join(parts) + f". It now holds {total:,} image{'' if total == 1 else 's'}."


def ingest_notes(report: BuildReport) -> str:
    """The notes on an upload's files, in Markdown: a heading, then a line per file that wraps ("**name** —
    outcome: detail"); "" when there are none."""
    rows = ingest_rows(report)
    if not rows:
        return ""
    lines = [f"- **{_md(source)}** — {_md(outcome)}" + (f": {_md(detail)}" if detail else "")
             for source, outcome, detail in rows]
    return f"**Notes on your files** ({len(rows):,})\n\n" + "\n".join(lines)


def ingest_rows(report: BuildReport) -> list[list[str]]:
    """The ingestion report's notes as (source, outcome, detail) rows: each skipped file with its reason, each
    exact duplicate skipped (and which file it copies), each near-duplicate."""
    return ([[Path(s["source"]).name or s["source"], REASONS.get(s["reason"], s["reason"]), s["detail"]]
             for s in report.skipped]
            + [[Path(d["source"]).name, "exact duplicate, skipped", f"the same image as {Path(d['same_as']).name}"]
               for d in report.exact_duplicates]
            + [[Path(d["source"]).name, "near-duplicate", f"of {Path(d['similar_source']).name} ({d['similarity']})"]
               for d in report.near_duplicates])
