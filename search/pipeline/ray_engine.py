"""The Ray engine: the local runner's stages (stages.py) over a Ray cluster, a local Ray started here unless
``RAY_ADDRESS`` (``RayOptions.address``) names one.

- identify (reading and hashing) and prepare (decoding, the model's input, the thumbnail) run as CPU tasks,
  one of each per batch; the images' bytes stay in Ray's object store between the two. The model's input steps
  are read from its configuration (``registry.model_inputs``) and travel with the tasks: no CPU task loads it.
- The model runs in a pool of actors: one per GPU (``num_gpus`` each) where the cluster has GPUs, else the
  cores of each node in actors of up to ``threads_per_actor`` threads. A batch goes to the least busy.
- This process, the driver, is the one writer: batches are written in the source's order with
  ``stages.write`` (upserts with their thumbnails, to the embedded store or a Chroma server), and the run's
  state (exact duplicates, what the store holds, manifest, report) is a ``build.RunState`` as the local
  runner's. So both give the same ids, labels, vectors and report for the same source.
- Back-pressure is the source's order itself: identify tasks run a CPU's worth of batches ahead of the driver's
  choice of what it still needs (which must go in order: of two copies, the first is kept), prepare tasks and
  model calls far enough ahead to keep every CPU and actor busy (``_ahead``); Ray passes each result on by
  reference. ray.data does not serve here: that choice sits between two stages, on the driver, in order.

A killed worker is Ray's to replace: tasks are retried and the model's actors restarted. A batch whose task
still fails is tried again image by image; an image that fails alone is skipped and reported (reason
``error``), as a damaged file is, and the build goes on. A killed driver leaves what it wrote, and the same
command again embeds only what the store does not hold. ``import ray`` happens here alone, when a build
starts: the app never imports it.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import search
from search.config import Settings
from search.embedders.base import Embedder, Inputs
from search.embedders.precision import FP32, Decision
from search.embedders.registry import load_embedder, model_inputs
from search.errors import BuildInterrupted, ModelError, SearchError, StoreUnavailableError
from search.pipeline import stages
from search.pipeline.build import BuildOptions, ModelSpec, Progress, RunState, yield_to_the_model
from search.pipeline.report import BuildReport
from search.sources.base import Item
from search.stores import manifests
from search.stores.store import Store

ERROR = "error"  # the skip reason of an image a worker failed on (raised, or died) when given it alone
RETRIES = 3  # of a task or actor call whose worker died, before the batch is tried image by image
T = TypeVar("T")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # a cluster's ("auto", "ray://head:10001", the settings' RAY_ADDRESS); None: a Ray started here
    gpus_per_actor: float = 1.0  # below 1, that share of a GPU: several model actors on one
    threads_per_actor: int = 16  # on CPUs: each node's cores go to actors of at most this many torch threads


@dataclass(frozen=True)
class ActorPlan:
    """One model actor: its device, what it asks of Ray, its torch threads and, on CPUs, its node."""

    device: str
    num_gpus: float
    num_cpus: float
    threads: int | None
    node: str | None


def plan_actors(nodes: list[dict[str, Any]], device: str | None, options: RayOptions) -> list[ActorPlan]:
    """The model's actors for a cluster of ``nodes`` (as ``ray.nodes()`` lists them): one per GPU, or per
    ``gpus_per_actor`` of one, where the cluster has GPUs and ``device`` is not "cpu"; else each node's cores
    split among actors of at most ``threads_per_actor`` threads."""
    alive = [n for n in nodes if n.get("Alive")]
    gpus = sum(float(n["Resources"].get("GPU", 0)) for n in alive)
    if device == "cuda" and not gpus:
        raise ModelError("--device cuda, but the Ray cluster has no GPU", internals=f"{len(alive)} nodes")
    if gpus and device != "cpu":
        return [ActorPlan("cuda", options.gpus_per_actor, 1, None, None)] * max(1, int(gpus / options.gpus_per_actor))
    plans: list[ActorPlan] = []
    for node in alive:
        cores = int(node["Resources"].get("CPU", 0))
        if cores:
            count = -(-cores // max(1, options.threads_per_actor))
            # No logical CPU: the tasks keep every core, at a lower priority, as the local runner's decoding
            # threads do; the model's threads take the cores whenever they want them.
            plans += [ActorPlan("cpu", 0, 0, cores // count, node["NodeID"])] * count
    if not plans:
        raise ModelError("the Ray cluster has neither CPUs nor GPUs to run the model on")
    return plans


class RayEngine:
    """Runs a build on Ray (see the module's description); ``options``: where and how wide."""

    def __init__(self, options: RayOptions = RayOptions()):
        self.options = options

    @classmethod
    def configured(cls, settings: Settings) -> RayEngine:
        """The engine on the cluster the settings' ``RAY_ADDRESS`` names, else on a Ray of its own."""
        return cls(RayOptions(address=settings.ray_address or None))

    def run(self, items: Iterable[Item], store: Store, collection: str, model: ModelSpec,
            options: BuildOptions = BuildOptions(), on_progress: Progress | None = None) -> BuildReport:
        """Index ``items`` into ``collection`` on Ray, with the same results and report as the local engine.

        ``options.workers`` does not apply: Ray runs as many tasks as the cluster has CPUs. A Ray already
        started in this process is used as it is, and left running.
        """
        try:
            import ray
        except ImportError:
            raise SearchError("the Ray engine needs Ray, which the app does not: pip install ray==2.60.0") from None

        started = not ray.is_initialized()
        if started:
            _start_ray(self.options)
        actors: list[Any] = []
        run = None
        try:
            actors = _actors(plan_actors(ray.nodes(), model.device, self.options), model, options)
            run = _RayRun(store, collection, _describe(actors), options, on_progress, actors)
            return run.run(items)
        except StoreUnavailableError as exc:
            raise BuildInterrupted(exc, run.report.indexed if run else 0) from exc
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()


def _start_ray(options: RayOptions) -> None:
    import ray

    address = options.address or "local"
    # A cluster's workers may not have this package: it travels with the job (a local Ray's workers import it).
    runtime_env = None if address == "local" else {"py_modules": [str(Path(search.__file__).parent)],
                                                   "excludes": ["__pycache__"]}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env=runtime_env)


def _actors(plans: list[ActorPlan], model: ModelSpec, options: BuildOptions) -> list[Any]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(_ModelActor)
    started = []
    for plan in plans:
        strategy = NodeAffinitySchedulingStrategy(plan.node, soft=False) if plan.node else "DEFAULT"
        # Embedding is pure: a restarted actor may run a call again.
        started.append(actor.options(num_gpus=plan.num_gpus, num_cpus=plan.num_cpus, max_restarts=-1,
                                     max_task_retries=RETRIES, scheduling_strategy=strategy)
                       .remote(model, plan.device, plan.threads, options.precision, options.batch_size))
    return started


def _describe(actors: list[Any]) -> _Described:
    """What the actors say of the model once each has loaded it; a model none can load is a ModelError."""
    try:
        return _get([actor.describe.remote() for actor in actors])[0]
    except _Failure as failure:
        raise ModelError("the model could not be loaded on the Ray cluster", internals=failure.detail) from failure


@dataclass(frozen=True)
class _Described:
    """What the run records of the model (``build.Model``), as an actor loaded it, and its input steps for the
    prepare tasks."""

    name: str
    dimension: int
    normalized: bool
    precision: str
    decision: Decision | None
    inputs: Inputs


class _ModelActor:
    """The model, loaded once, embedding batches a prepare task made."""

    def __init__(self, model: ModelSpec, device: str, threads: int | None, precision: str, batch_size: int):
        if threads:
            import torch

            torch.set_num_threads(threads)  # Ray sets one thread for a process that asks for no CPU
        self.embedder: Embedder = load_embedder(model.name, device, precision=precision, batch_size=batch_size,
                                                decisions=model.decisions)

    def describe(self) -> _Described:
        # The input steps are read here, where the model's files are (the driver may not have them).
        e = self.embedder
        return _Described(e.name, e.dimension, e.normalized, getattr(e, "precision", FP32), getattr(e, "decision", None),
                          model_inputs(e.name))

    def embed(self, prepared: tuple[list[stages.Ready], stages.Outcome, float], batch_size: int,
              precision: str) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        vectors = stages.embed(prepared[0], self.embedder, batch_size, precision)
        return vectors, time.perf_counter() - start


def _identify_task(items: list[Item], known: manifests.Manifest) -> tuple[Any, list[stages.Identified]]:
    """The batch's ids and outcome with the seconds taken, for the driver; and what it identified, with the
    bytes kept, for the prepare task."""
    start = time.perf_counter()
    found, outcome = stages.identify(items, known, _decoding().map)
    summary = [replace(one, data=None) for one in found]  # the driver needs the ids and sources, not the bytes
    return (summary, outcome, time.perf_counter() - start), found


def _prepare_task(found: list[stages.Identified], ids: list[str], inputs: Inputs,
                  ocr: bool) -> tuple[list[stages.Ready], stages.Outcome, float]:
    """The images ``ids`` of an identify task's batch decoded and prepared (and with ``ocr`` the text in them read,
    in the same task: the bytes are here), with the seconds taken."""
    start = time.perf_counter()
    first = {one.image_id: one for one in reversed(found)}  # of two copies in the batch, the one the driver kept
    ready, outcome = stages.prepare([first[i] for i in ids], inputs, _decoding().map, keep_data=ocr)
    if ocr:
        ready = stages.read_texts(ready, _decoding().map)
    return ready, outcome, time.perf_counter() - start


_POOL: ThreadPoolExecutor | None = None


def _decoding() -> ThreadPoolExecutor:
    """This worker's decoding thread, at a lower priority (as the local runner's): a thread, not the process,
    because Ray may make the process a model actor later."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode", initializer=yield_to_the_model)
    return _POOL


@dataclass
class _Part:
    """Images of a batch on their way to the model: a prepare task and the actor call that embeds what it made."""

    found: Any  # the identify task's ObjectRef of what it identified (bytes kept)
    todo: list[stages.Identified]  # which of those, as the driver knows them
    prepared: Any  # ObjectRef: (ready, outcome, seconds)
    embedded: Any  # ObjectRef: (vectors, seconds)
    actor: int


@dataclass
class _Batch:
    """A batch of the source, from its identify task until it is written."""

    items: list[Item]
    summary: Any  # ObjectRef: (identified without bytes, outcome, seconds)
    found: Any  # ObjectRef: identified, bytes kept
    outcomes: list[tuple[stages.Outcome, float]] = field(default_factory=list)  # identify's, merged when written
    parts: list[_Part] = field(default_factory=list)


class _RayRun(RunState):
    """One run over a source on Ray: batches through tasks and actors, chosen and written in the source's order."""

    def __init__(self, store: Store, collection: str, model: _Described, options: BuildOptions,
                 on_progress: Progress | None, actors: list[Any]):
        import ray

        super().__init__(store, collection, model, options, on_progress)
        self.actors = actors
        self.busy = [0] * len(actors)  # calls given to each actor and not yet written
        self.inputs = ray.put(model.inputs)
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._identify: Any = ray.remote(num_cpus=1, num_returns=2, max_retries=RETRIES)(_identify_task)  # two refs
        self._prepare = ray.remote(num_cpus=1, max_retries=RETRIES)(_prepare_task)

    def run(self, items: Iterable[Item]) -> BuildReport:
        start = time.perf_counter()
        source = iter(items)
        batches = iter(lambda: list(islice(source, self.options.batch_size)), [])
        identified = _ahead(map(self._identify_batch, batches), self.cpus)
        for batch in _ahead(map(self._choose, identified), self.cpus + 2 * len(self.actors)):
            self._write(batch)
        return self.complete(start)

    def _identify_batch(self, items: list[Item]) -> _Batch:
        known = {item.source: self.known[item.source] for item in items if item.source in self.known}
        summary, found = self._identify.remote(items, known)
        return _Batch(items, summary, found)

    def _choose(self, batch: _Batch) -> _Batch:
        """Take the batch's identify results, keep what the run still needs, and send it on to be prepared and
        embedded."""
        found: list[tuple[Any, stages.Identified]] = []  # (the ObjectRef of its bytes, as the driver knows it)
        for ref, summary, outcome, seconds in self._identified(batch):
            batch.outcomes.append((outcome, seconds))
            found += [(ref, one) for one in summary]
        needed = {one.image_id for one in self.still_needed([one for _, one in found])}
        parts: dict[Any, list[stages.Identified]] = {}
        for ref, one in found:
            if one.image_id in needed:  # the first with its id: a later copy in the batch is not needed
                needed.discard(one.image_id)
                parts.setdefault(ref, []).append(one)
        batch.parts = [self._part(ref, todo) for ref, todo in parts.items()]
        return batch

    def _identified(self, batch: _Batch) -> list[tuple[Any, list[stages.Identified], stages.Outcome, float]]:
        """(the ObjectRef of the bytes, what was identified, its outcome, seconds) of the batch's identify task, or
        where it failed on several items, of one task per item (one that fails alone is skipped)."""
        try:
            summary, outcome, seconds = _get(batch.summary)
            return [(batch.found, summary, outcome, seconds)]
        except _Failure as failure:
            if len(batch.items) == 1:
                return [(None, [], _failed(batch.items[0].source, failure.detail), 0.0)]
            results = [result for item in batch.items for result in self._identified(self._identify_batch([item]))]
            if all(ref is None for ref, *_ in results):
                raise _workers_at_fault(failure) from None
            return results

    def _part(self, found: Any, todo: list[stages.Identified]) -> _Part:
        actor = min(range(len(self.actors)), key=self.busy.__getitem__)
        self.busy[actor] += 1
        prepared = self._prepare.remote(found, [one.image_id for one in todo], self.inputs, self.options.ocr == "now")
        embedded = self.actors[actor].embed.remote(prepared, self.options.batch_size, self.precision)
        return _Part(found, todo, prepared, embedded, actor)

    def _write(self, batch: _Batch) -> None:
        """Merge the batch's outcomes and write what it embedded, in the order the local runner does."""
        for outcome, seconds in batch.outcomes:
            self.report.timed("identify", seconds)
            self.merge(outcome)
        for part in batch.parts:
            for outcome, ready, vectors in self._embedded(part):
                self.merge(outcome)
                if ready:
                    with self.stage("write"):
                        self.merge(stages.write(self.store, self.collection, ready, vectors, self.near))
        self.advance(len(batch.items))

    def _embedded(self, part: _Part) -> list[tuple[stages.Outcome, list[stages.Ready], Any]]:
        """(outcome, ready, vectors) of the part, or where it failed on several images, of each image alone (one
        that fails alone is skipped: no vectors)."""
        self.busy[part.actor] -= 1
        try:
            (ready, outcome, prepare_seconds), (vectors, embed_seconds) = _get([part.prepared, part.embedded])
        except _Failure as failure:
            if len(part.todo) == 1:
                one = part.todo[0]
                return [(_failed(one.item.source, failure.detail, one.image_id), [], None)]
            results = [result for one in part.todo for result in self._embedded(self._part(part.found, [one]))]
            if all(vectors is None for *_, vectors in results):
                raise _workers_at_fault(failure) from None
            return results
        self.report.timed("decode", prepare_seconds)
        self.report.timed("embed", embed_seconds)
        return [(outcome, ready, vectors)]


def _ahead(steps: Iterator[T], depth: int) -> Iterator[T]:
    """``steps`` in order, each started ``depth`` steps before it is yielded (Ray runs what a step submitted)."""
    window = deque(islice(steps, depth))
    while window:
        yield window.popleft()
        window.extend(islice(steps, 1))


class _Failure(Exception):
    """A task or actor call failed in a way one image may have caused (it raised, or its worker died)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _get(refs: Any) -> Any:
    """``ray.get``, with the failures one image may cause as ``_Failure``; a SearchError a task raised
    (a model that cannot load there) is raised as it is, and the cluster's own failures pass."""
    import ray
    from ray.exceptions import ObjectLostError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, SearchError):
            raise exc.cause from None
        raise _Failure(f"{type(exc.cause).__name__}: {_first_line(exc.cause)}") from exc
    except RayActorError as exc:
        if exc.actor_init_failed:
            raise ModelError("the model could not be loaded on the Ray cluster", internals=_last_line(exc)) from exc
        raise _Failure(f"the model's worker died: {_first_line(exc)}") from exc
    except (WorkerCrashedError, OutOfMemoryError, ObjectLostError) as exc:
        raise _Failure(f"the worker died: {type(exc).__name__}: {_first_line(exc)}") from exc


def _workers_at_fault(failure: _Failure) -> SearchError:
    """Where every image of a failed batch fails alone too, the workers are at fault (a package missing on the
    cluster, an actor that cannot start again), not the images: a SearchError, not a report of skips."""
    return SearchError("the Ray workers fail on every image of a batch, so the build stops; what was written is "
                       "kept, and the same command again resumes", internals=failure.detail)


def _failed(source: str, detail: str, image_id: str | None = None) -> stages.Outcome:
    return stages.Outcome(skipped=[{"source": source, "reason": ERROR, "detail": detail}],
                          failed=[image_id] if image_id else [])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _last_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[-1][:200]
