"""The app's "Evaluate" tab: retrieval quality of the shared collections, per metric (``search.evaluate``).

The caller opens the tab (``with gr.Tab("Evaluate"): evaluation_tab(settings)``); this module lays out
its controls, runs the evaluation with a progress bar, and shows the table, two charts and the JSON.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from search.config import Settings
from search.core.metrics import METRICS
from search.core.query import finite
from search.core.record import model_name
from search.errors import QueryError, SearchError
from search.evaluate import TASKS, Options, evaluate, markdown
from search.service.albums import PREFIX as ALBUM_PREFIX
from search.stores.store import Store
from search.stores.swaps import is_shadow
from search.web import views
from search.web.messages import public_message
from search.web.side_by_side import SideBySide, side_by_side

log = logging.getLogger(__name__)
DEFAULT_SAMPLE = 200
MAX_SAMPLE = 2000  # a public page must not let one click occupy the CPUs for long
TOP = "top k"  # the precision chart's colours: "top 1", "top 5"... (in the report's order, as the legend lists them)
INTRO = ("How often the nearest images share the query image's label (leave one out), and how often a label's "
         "name finds its images, for each metric: exact search over every stored vector. Collections without labels "
         "cannot be evaluated.")


def evaluation_tab(settings: Settings) -> None:
    """Lay out the tab's components inside the caller's ``gr.Tab`` and wire their (private) events; a local
    app's operator also gets the side-by-side view of a model swap.

    The collections are listed when a visitor opens the page, not when it is laid out: the app serves its page
    before it opens the store (search/web/server.py)."""
    gr.Markdown(INTRO)
    with gr.Row():
        collections = gr.CheckboxGroup([], value=[], label="Collections", scale=4, elem_id="evaluate-collections")
        refresh = gr.Button("Refresh the list", scale=1, size="sm")
    metrics = gr.CheckboxGroup(list(METRICS), value=list(METRICS), label="Metrics", elem_id="evaluate-metrics")
    sample = gr.Slider(1, MAX_SAMPLE, value=DEFAULT_SAMPLE, step=1, label="Query images per collection (a random sample; "
                       "all of them when there are fewer)", elem_id="evaluate-sample")
    run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-run")
    table = gr.Markdown(elem_id="evaluate-table")
    with gr.Row(equal_height=False):  # min_width below: the charts stack on a phone rather than shrink
        # Lying down, a row per collection and metric: the names read across, one under another, at any width
        # (standing, their slanted labels piled up at 400 px); no height, so each row gets its own 20 px (a fixed
        # one squeezes the rows and cuts off the legend). A dot per k on each row: few colours, a whole legend.
        # The rows name themselves: no axis title beside them (" ": Gradio puts the column's name for "").
        # x up to 1.02: a dot at precision 1 is drawn whole, not cut in half by the chart's edge.
        precision = gr.ScatterPlot(x="precision", y="series", color=TOP, x_lim=[0, 1.02],
                                   x_title="share with the query's label", y_title=" ", color_title="Results looked at",
                                   label="Precision at k", elem_id="evaluate-precision", min_width=340)
        # Its numbers stand upright: level, three-digit ticks 17 px apart at 400 px ran into each other
        latency = gr.BarPlot(x="ms per query", y="series", title="ms per image query", x_lim=[0, None], y_title=" ",
                             x_label_angle=-90, label="Latency", elem_id="evaluate-latency", min_width=340)
    download = gr.File(label="evaluation.json", elem_id="evaluate-json")
    lists: list[Any] = [collections]
    if not settings.public:
        lists.append(side_by_side(settings, lambda: shared_collections(settings)))

    def listed(chosen: bool) -> list[Any]:
        names = shared_collections(settings)
        listing = [gr.update(choices=names, value=names) if chosen else gr.update(choices=names)]
        return listing + [gr.update(choices=SideBySide.pairs(names))] * (len(lists) - 1)

    gr.on(None, lambda: listed(True), None, lists, api_visibility="private")  # on each page load: every one chosen
    refresh.click(lambda: listed(False), None, lists, api_visibility="private")  # the visitor's choice kept

    def clicked(chosen: list[str], measures: list[str], size: float,
                progress: gr.Progress = gr.Progress()) -> tuple[str, pd.DataFrame | None, pd.DataFrame | None, str | None]:
        return run_evaluation(settings, chosen, measures, size, progress)

    # One evaluation at a time: it keeps a core busy for seconds to minutes.
    run.click(clicked, [collections, metrics, sample], [table, precision, latency, download],
              api_visibility="private", concurrency_limit=1)


def shared_collections(settings: Settings) -> list[str]:
    """The store's collections that every visitor may see (albums are private); none where there is no store."""
    try:
        names = Store.connect(settings.store, server=settings.chroma).names()
    except SearchError as exc:
        log.info("no collections to evaluate: %s", exc.for_operator())
        return []
    # A public page offers no swap's twin: each loads another model, which visitors must not make it do.
    return [name for name in names if not name.startswith(ALBUM_PREFIX) and not (settings.public and is_shadow(name))]


def run_evaluation(settings: Settings, collections: list[str] | None, metrics: list[str] | None, sample: float | None,
                   progress: gr.Progress) -> tuple[str, pd.DataFrame | None, pd.DataFrame | None, str | None]:
    """Evaluate, returning the table, the two charts' data and the JSON file; a refusal is a message in the
    table's place (and no charts), not a traceback."""
    try:
        allowed = shared_collections(settings)
        chosen = [c for c in collections or [] if c in allowed]
        if not chosen:
            raise QueryError("Choose at least one collection.")
        if not metrics:
            raise QueryError("Choose at least one metric.")
        options = Options(tuple(chosen), tuple(metrics), queries=_sample(sample), text_model=settings.text_model)
        report = evaluate(Store.connect(settings.store, server=settings.chroma), options,
                          lambda done, total: progress((done, total), unit="queries"))
    except Exception as exc:  # in the table's place, with nothing of an earlier run beside it
        return views.problem(public_message("the evaluation", exc)), None, None, None
    return markdown(report), precision_frame(report), latency_frame(report), str(save(for_visitor(report)))


def for_visitor(report: dict[str, Any]) -> dict[str, Any]:
    """The report as a visitor may download it: no store folder, each model by its name only."""
    public = {key: value for key, value in report.items() if key != "store"}
    public["collections"] = {name: {**entry, "model": model_name(str(entry.get("model", "")))}
                             for name, entry in report["collections"].items()}
    return public


def _sample(value: object) -> int:
    """The sample size, held to the slider's bounds on the server too (a caller may send anything)."""
    if value is None:
        return DEFAULT_SAMPLE
    if not finite(value):
        raise QueryError(f"The number of query images must be a whole number from 1 to {MAX_SAMPLE:,}.")
    return min(max(int(value), 1), MAX_SAMPLE)


def precision_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per collection, task, metric and k: the precision chart's data."""
    several = len(report["collections"]) > 1
    rows = [{"series": _series(name, task, metric, several), TOP: f"top {k}", "precision": values[f"p@{k}"]}
            for name, entry in report["collections"].items() for task in TASKS
            for metric, values in entry.get(task, {}).items() for k in report["k"]]
    return pd.DataFrame(rows, columns=["series", TOP, "precision"])


def latency_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Milliseconds per image query, one row per collection and metric: the bar chart's data."""
    several = len(report["collections"]) > 1
    rows = [{"series": _series(name, "image_to_image", metric, several), "ms per query": values["ms_per_query"]}
            for name, entry in report["collections"].items() for metric, values in entry["image_to_image"].items()]
    return pd.DataFrame(rows, columns=["series", "ms per query"])


def save(report: dict[str, Any]) -> Path:
    """The report as evaluation.json in this process's temporary folder (Gradio serves a copy of it).

    One file, rewritten by each run (they take turns), so that runs leave nothing behind to pile up.
    """
    path = Path(tempfile.gettempdir()) / f"image-search-evaluation-{os.getpid()}" / "evaluation.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def _series(name: str, task: str, metric: str, several: bool) -> str:
    """A chart's row: the metric, "(text)" for text queries, after the collection's name where there are several."""
    return (f"{name} · " if several else "") + metric + (" (text)" if task == "text_to_image" else "")
