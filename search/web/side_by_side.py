"""Side by side: the same query against a collection and the one re-embedded beside it (``--reembed``), before
``--switch`` (NAME | NAME.next), or after it against the one kept for ``--rollback`` (NAME | NAME.previous).

For the operator of a local app only: each side loads its own model, which a public page must not let a
visitor make it do.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from search.config import Settings
from search.core.record import model_name
from search.errors import QueryError
from search.index import ImageIndex
from search.stores.swaps import next_name, previous_name
from search.web import pictures, views
from search.web.messages import public_message

K = 8
INTRO = ("The same description searched in a collection and in the one `index_builder.py --reembed MODEL` filled "
         "beside it (or, after `--switch`, the one kept for `--rollback`): which model finds what you meant?")


class SideBySide:
    """Swapped collections, each searched with its own model, together."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @staticmethod
    def pairs(names: list[str]) -> list[str]:
        """The collections that have a re-embedded or kept twin to compare with."""
        held = set(names)
        return [n for n in names if next_name(n) in held or previous_name(n) in held]

    def search(self, name: str | None, text: str, names: list[str]) -> tuple[Any, Any, str]:
        """Both sides' results for ``text`` (galleries with captions), and a status line."""
        try:
            if name not in self.pairs(names):
                raise QueryError("Choose a collection that has a re-embedded twin.")
            twin = next_name(name) if next_name(name) in names else previous_name(name)
            # Opened for each search (their models stay loaded): after a --switch the names hold other collections.
            sides = [ImageIndex.open(self.settings.store, n, text_model=self.settings.text_model, server=self.settings.chroma)
                     for n in (name, twin)]
            results = [index.search_by_text(text, k=K) for index in sides]
        except Exception as exc:
            return gr.update(value=[]), gr.update(value=[]), views.problem(public_message("the comparison", exc))
        galleries = [gr.update(value=[(pictures.url(picture), caption)
                                      for picture, caption in views.result_gallery(hits, "cosine")[0]],
                               label=f"{index.collection.name} · {model_name(index.collection.model or '')}")
                     for index, hits in zip(sides, results, strict=True)]
        return galleries[0], galleries[1], f"Top {K} of each for “{text}”."


def side_by_side(settings: Settings, names: Any) -> gr.Dropdown:
    """Lay out the comparison inside the caller's block (``names()`` lists the shared collections); its
    collection chooser, for the caller to fill and refresh."""
    compare = SideBySide(settings)
    with gr.Accordion("Side by side: a re-embedded collection against the one it would replace", open=False):
        gr.Markdown(INTRO)
        with gr.Row():
            pair = gr.Dropdown([], label="Collection", scale=1, elem_id="compare-collection")  # the caller fills it
            text = gr.Textbox(label="Description", placeholder="a red dress", scale=3, elem_id="compare-text")
            go = gr.Button("Search both", variant="primary", scale=1, elem_id="compare-run")
        status = gr.Markdown(elem_id="compare-status")
        with gr.Row(equal_height=False):
            left = gr.Gallery(label="now", columns=4, height="auto", min_width=320, elem_id="compare-left")
            right = gr.Gallery(label="re-embedded", columns=4, height="auto", min_width=320, elem_id="compare-right")

    def compare_sides(name: str | None, text: str, request: gr.Request) -> tuple[Any, Any, str]:
        # Named apart from the public endpoints: Gradio names even a private event after its function.
        with pictures.answering(request):
            return compare.search(name, text, names())

    for event in (go.click, text.submit):
        event(compare_sides, [pair, text], [left, right, status], api_visibility="private", concurrency_limit=1)
    return pair
