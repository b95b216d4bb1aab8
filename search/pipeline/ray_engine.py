"""The Ray engine: ``build_index_ray`` runs the local runner's stages (stages.py) over a Ray cluster, a local
Ray started here unless ``RAY_ADDRESS`` (or ``RayOptions.address``) names one.

- identify (reading and hashing) and prepare (decoding, the model's input, the thumbnail) run as CPU tasks,
  one of each per batch; the images' bytes stay in Ray's object store between the two.
- The model runs in a pool of actors: one per GPU (``num_gpus`` each) where the cluster has GPUs, else the
  cores of each node in actors of up to ``threads_per_actor`` threads.
- This process, the driver, is the one writer: batches are written in the source's order with
  ``stages.write`` (upserts with their thumbnails, to the embedded store or a Chroma server), and the run's
  state (exact duplicates, what the store holds, manifest, report) is a ``build.RunState`` as the local
  runner's. So both give the same ids, labels, vectors and report for the same source.

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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

import search
from search.embedders.base import Embedder
from search.embedders.precision import FP32, Decision
from search.embedders.registry import load_embedder
from search.errors import BuildInterrupted, ModelError, SearchError, StoreUnavailableError
from search.pipeline import stages
from search.pipeline.build import BuildOptions, Progress, RunState, yield_to_the_model
from search.pipeline.report import BuildReport
from search.sources.base import Item
from search.stores import manifests
from search.stores.store import Store

ERROR = "error"  # the skip reason of an image a worker failed on (raised, or died) when given it alone
RETRIES = 3  # of a task or actor call whose worker died, before the batch is tried image by image


@dataclass(frozen=True)
class ModelSpec:
    """The model as every process of the cluster loads it (``load_embedder``'s arguments): it travels, the
    weights do not."""

    name: str
    device: str | None = None  # None: CUDA where the cluster has GPUs, else the CPU
    decisions: str | None = None  # the store's file of precision decisions (``Store.precision_file``)


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


def build_index_ray(
    items: Iterable[Item],
    store: Store,
    collection: str,
    model: ModelSpec,
    options: BuildOptions = BuildOptions(),
    on_progress: Progress | None = None,
    ray_options: RayOptions = RayOptions(),
) -> BuildReport:
    """Index ``items`` into ``collection`` on Ray, with the same results and report as ``build.build_index``.

    ``options.workers`` does not apply: Ray runs as many tasks as the cluster has CPUs. A Ray already
    started in this process is used as it is, and left running.
    """
    try:
        import ray
    except ImportError:
        raise SearchError("the Ray engine needs Ray, which the app does not: pip install ray==2.60.0") from None

    started = not ray.is_initialized()
    if started:
        _start_ray(ray_options)
    actors: list[Any] = []
    run = None
    try:
        actors = _actors(plan_actors(ray.nodes(), model.device, ray_options), model, options)
        described = _describe(actors)
        run = _RayRun(store, collection, described, options, on_progress, model, actors)
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
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get([actor.describe.remote() for actor in actors])[0]
    except RayTaskError as exc:
        if isinstance(exc.cause, SearchError):
            raise exc.cause from None
        raise ModelError("the model could not be loaded on the Ray cluster", internals=_first_line(exc)) from exc
    except RayError as exc:  # an actor's __init__ raised: its message ends with what
        raise ModelError("the model could not be loaded on the Ray cluster", internals=_last_line(exc)) from exc


@dataclass(frozen=True)
class _Described:
    """What the run records of the model (``build.Model``), as an actor loaded it."""

    name: str
    dimension: int
    normalized: bool
    precision: str
    decision: Decision | None


class _ModelActor:
    """The model, loaded once, embedding batches a prepare task made."""

    def __init__(self, model: ModelSpec, device: str, threads: int | None, precision: str, batch_size: int):
        if threads:
            import torch

            torch.set_num_threads(threads)  # Ray sets one thread for a process that asks for no CPU
        self.embedder: Embedder = load_embedder(model.name, device, precision=precision, batch_size=batch_size,
                                                decisions=model.decisions)

    def describe(self) -> _Described:
        e = self.embedder
        return _Described(e.name, e.dimension, e.normalized, getattr(e, "precision", FP32), getattr(e, "decision", None))

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


def _prepare_task(found: list[stages.Identified], indices: list[int], model: ModelSpec,
                  ocr: bool) -> tuple[list[stages.Ready], stages.Outcome, float]:
    """The batch decoded and prepared (and with ``ocr`` the text in its images read, in the same task: the
    bytes are here), with the seconds taken."""
    embedder = _preparer(model)  # loaded before the clock starts: decoding's seconds are decoding's
    start = time.perf_counter()
    ready, outcome = stages.prepare([found[i] for i in indices], embedder, _decoding().map, keep_data=ocr)
    if ocr:
        ready = stages.read_texts(ready, _decoding().map)
    return ready, outcome, time.perf_counter() - start


def _preparer(model: ModelSpec) -> Embedder:
    """The model's own ``prepare`` (and ``min_edges``), loaded once per worker process: on the CPU, at fp32,
    so that nothing is measured and no GPU is touched."""
    return load_embedder(model.name, "cpu", precision=FP32)


_POOL: ThreadPoolExecutor | None = None


def _decoding() -> ThreadPoolExecutor:
    """This worker's decoding thread, at a lower priority (as the local runner's): a thread, not the process,
    because Ray may make the process a model actor later."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode", initializer=yield_to_the_model)
    return _POOL


@dataclass
class _Chain:
    """Some of a batch's images on their way: a prepare task and the actor call that embeds what it made."""

    found: Any  # the identify task's ObjectRef of what it identified (bytes kept)
    indices: list[int]  # which of those
    summary: list[stages.Identified]  # the same, as the driver knows them
    prepared: Any  # ObjectRef: (ready, outcome, seconds)
    embedded: Any  # ObjectRef: (vectors, seconds)
    actor: int


@dataclass
class _Batch:
    """A batch of the source, from its identify task until it is written."""

    items: list[Item]
    summary: Any  # ObjectRef: (identified without bytes, outcome, seconds)
    found: Any  # ObjectRef: identified, bytes kept
    chains: list[_Chain] | None = None  # None until the run has chosen what it still needs
    outcomes: list[tuple[stages.Outcome, float]] = field(default_factory=list)  # identify's, merged when written


class _RayRun(RunState):
    """One run over a source on Ray: batches in flight through tasks and actors, chosen and written in order."""

    def __init__(self, store: Store, collection: str, model: _Described, options: BuildOptions,
                 on_progress: Progress | None, spec: ModelSpec, actors: list[Any]):
        import ray

        super().__init__(store, collection, model, options, on_progress)
        self.spec = spec
        self.actors = actors
        self.busy = [0] * len(actors)  # calls given to each actor and not yet written
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.depth = max(4, cpus + 2 * len(actors))  # batches in flight: every CPU and actor busy, one more queued
        self._identify: Any = ray.remote(num_cpus=1, num_returns=2, max_retries=RETRIES)(_identify_task)  # two refs
        self._prepare = ray.remote(num_cpus=1, max_retries=RETRIES)(_prepare_task)

    def run(self, items: Iterable[Item]) -> BuildReport:
        import ray

        start = time.perf_counter()
        source, exhausted = iter(items), False
        window: deque[_Batch] = deque()
        while True:
            while not exhausted and len(window) < self.depth:
                if chunk := list(islice(source, self.options.batch_size)):
                    window.append(self._identify_batch(chunk))
                else:
                    exhausted = True
            if not window:
                break
            for batch in window:  # in the source's order: of two copies, the first is kept
                if batch.chains is None:
                    if not _done(batch.summary):
                        break
                    self._choose(batch)
            head = window[0]
            if head.chains is not None and all(_done(c.embedded) for c in head.chains):
                self._write(window.popleft())
                continue
            waiting = [c.embedded for c in head.chains or [] if not _done(c.embedded)]
            waiting += next(([b.summary] for b in window if b.chains is None), [])
            ray.wait(waiting, num_returns=1)
        return self.complete(start)

    def _identify_batch(self, items: list[Item]) -> _Batch:
        known = {item.source: self.known[item.source] for item in items if item.source in self.known}
        summary, found = self._identify.remote(items, known)
        return _Batch(items, summary, found)

    def _choose(self, batch: _Batch) -> None:
        """Take the batch's identify results (item by item where the task failed), keep what the run still
        needs, and send it on to be prepared and embedded."""
        entries: list[tuple[stages.Identified, Any, int]] = []  # (as the driver knows it, found's ObjectRef, index)
        for found_ref, items, result in self._identified(batch.summary, batch.found, batch.items):
            if isinstance(result, _ImageFailure):
                batch.outcomes.append((_failed(items[0].source, result.detail), 0.0))
                continue
            summary, outcome, seconds = result
            batch.outcomes.append((outcome, seconds))
            entries += [(one, found_ref, i) for i, one in enumerate(summary)]
        # still_needed hands back some of the very objects it was given: identity says which entries they are
        needed = {id(one) for one in self.still_needed([one for one, _, _ in entries])}
        groups: dict[int, tuple[Any, list[int], list[stages.Identified]]] = {}
        for one, found_ref, i in entries:
            if id(one) in needed:
                group = groups.setdefault(id(found_ref), (found_ref, [], []))
                group[1].append(i)
                group[2].append(one)
        batch.chains = [self._chain(found_ref, indices, summary) for found_ref, indices, summary in groups.values()]

    def _identified(self, summary: Any, found: Any, items: list[Item]) -> list[tuple[Any, list[Item], Any]]:
        """(found's ObjectRef, its items, the summary's result or the _ImageFailure) of the identify task, or
        where it failed on several items, of one task per item."""
        try:
            return [(found, items, _get(summary))]
        except _ImageFailure as failure:
            if len(items) == 1:
                return [(found, items, failure)]
            singles = [self._identify_batch([item]) for item in items]
            results = [result for single in singles for result in self._identified(single.summary, single.found, single.items)]
            _not_all_failed([result for _, _, result in results], failure)
            return results

    def _chain(self, found: Any, indices: list[int], summary: list[stages.Identified]) -> _Chain:
        actor = min(range(len(self.actors)), key=self.busy.__getitem__)
        self.busy[actor] += 1
        prepared = self._prepare.remote(found, indices, self.spec, self.options.ocr == "now")
        embedded = self.actors[actor].embed.remote(prepared, self.options.batch_size, self.precision)
        return _Chain(found, indices, summary, prepared, embedded, actor)

    def _write(self, batch: _Batch) -> None:
        """Merge the batch's outcomes and write what it embedded, in the order the local runner does."""
        for outcome, seconds in batch.outcomes:
            self.report.timed("identify", seconds)
            self.merge(outcome)
        for chain in batch.chains or []:
            for done in self._results(chain):
                if isinstance(done, stages.Outcome):
                    self.merge(done)
                    continue
                (ready, outcome, prepare_seconds), (vectors, embed_seconds) = done
                self.report.timed("decode", prepare_seconds)
                self.report.timed("embed", embed_seconds)
                self.merge(outcome)
                if ready:
                    with self.stage("write"):
                        self.merge(stages.write(self.store, self.collection, ready, vectors, self.near))
        self.advance(len(batch.items))

    def _results(self, chain: _Chain) -> list[Any]:
        """The chain's (prepared, embedded), or where it failed, each image's alone: its results, or the
        Outcome that skips it."""
        self.busy[chain.actor] -= 1
        try:
            return [_get([chain.prepared, chain.embedded])]
        except _ImageFailure as failure:
            if len(chain.indices) == 1:
                one = chain.summary[0]
                return [_failed(one.item.source, failure.detail, one.image_id)]
            singles = [self._chain(chain.found, [i], [one]) for i, one in zip(chain.indices, chain.summary)]
            results = [result for single in singles for result in self._results(single)]
            _not_all_failed(results, failure)
            return results


class _ImageFailure(Exception):
    """A task or actor call failed in a way one image may have caused (it raised, or its worker died)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _get(refs: Any) -> Any:
    """``ray.get``, with the failures one image may cause as ``_ImageFailure``; a SearchError a task raised
    (a model that cannot load there) is raised as it is, and the cluster's own failures pass."""
    import ray
    from ray.exceptions import ObjectLostError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, SearchError):
            raise exc.cause from None
        raise _ImageFailure(f"{type(exc.cause).__name__}: {_first_line(exc.cause)}") from exc
    except RayActorError as exc:
        if exc.actor_init_failed:
            raise ModelError("the model could not be loaded on the Ray cluster", internals=_last_line(exc)) from exc
        raise _ImageFailure(f"the model's worker died: {_first_line(exc)}") from exc
    except (WorkerCrashedError, OutOfMemoryError, ObjectLostError) as exc:
        raise _ImageFailure(f"the worker died: {type(exc).__name__}: {_first_line(exc)}") from exc


def _not_all_failed(results: list[Any], failure: _ImageFailure) -> None:
    """Where every image of a failed batch fails alone too, the workers are at fault (a package missing on
    the cluster, an actor that cannot start again), not the images: a SearchError, not a report of skips."""
    if all(isinstance(r, (_ImageFailure, stages.Outcome)) for r in results):
        raise SearchError("the Ray workers fail on every image of a batch, so the build stops; what was written is "
                          "kept, and the same command again resumes", internals=failure.detail)


def _done(ref: Any) -> bool:
    import ray

    return bool(ray.wait([ref], timeout=0)[0])


def _failed(source: str, detail: str, image_id: str | None = None) -> stages.Outcome:
    return stages.Outcome(skipped=[{"source": source, "reason": ERROR, "detail": detail}],
                          failed=[image_id] if image_id else [])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _last_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[-1][:200]
