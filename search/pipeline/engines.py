"""What runs a build, chosen by name (``--engine``): every engine runs the same stages (stages.py) over a source's
items into one collection, with the same ids, vectors and report; only where the work happens differs.

An engine is one object with ``run`` (clip-retrieval's distributors behind its ``Runner``): ``local`` runs the
stages in this process (build.py), ``ray`` on a Ray cluster (ray_engine.py). A new engine is a class with ``run``
and one line in ``ENGINES``; the command line lists and takes them from there.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from search.config import Settings
from search.embedders.registry import load_embedder
from search.pipeline.build import BuildOptions, ModelSpec, Progress, build_index, deferred_model
from search.pipeline.ray_engine import RayEngine
from search.pipeline.report import BuildReport
from search.sources.base import Item
from search.stores.store import Store


class Engine(Protocol):
    """Runs a build: ``items`` into ``collection`` of ``store``, with ``model`` loaded wherever it embeds."""

    def run(self, items: Iterable[Item], store: Store, collection: str, model: ModelSpec,
            options: BuildOptions = BuildOptions(), on_progress: Progress | None = None) -> BuildReport: ...


class LocalEngine:
    """This process: the model loaded here once an image needs embedding (a re-run with nothing new never loads
    it), decoding on ``options.workers`` threads."""

    def run(self, items: Iterable[Item], store: Store, collection: str, model: ModelSpec,
            options: BuildOptions = BuildOptions(), on_progress: Progress | None = None) -> BuildReport:
        """Index ``items`` into ``collection`` (see ``build.build_index``)."""
        load = partial(load_embedder, model.name, model.device, precision=options.precision,
                       batch_size=options.batch_size, decisions=model.decisions)
        return build_index(items, store, collection, deferred_model(store, collection, model.name, load), options,
                           on_progress)


@dataclass(frozen=True)
class Choice:
    """An engine as the command line offers it."""

    make: Callable[[Settings], Engine]
    about: str  # --engine's help
    spreads: bool = False  # spreads one build over many workers itself: a --shard of it means nothing


ENGINES = {
    "local": Choice(lambda settings: LocalEngine(), "this process"),
    "ray": Choice(RayEngine.configured, "Ray tasks and model actors, on a Ray started here or the cluster RAY_ADDRESS "
                  "names (pip install ray; see docs/configuration.md)", spreads=True),
}


def engine(name: str, settings: Settings) -> Engine:
    """The engine ``name`` (one of ``ENGINES``), configured by ``settings``."""
    if name not in ENGINES:
        raise ValueError(f"no engine is called {name!r}: {', '.join(ENGINES)}")
    return ENGINES[name].make(settings)
