"""How well each collection of a store retrieves by label, for every metric (issue #15).

    python -m search.evaluate --store DIR [--collection NAME ...] [--metrics l1,l2,cosine,correlation,ip]
                              [--k 1,5,10] [--queries N] [--seed S] [--prompts FILE] [--out DIR]

Image to image, leave one out: each query is a stored, labelled image; it and its exact duplicates
(rows with an identical vector) are never counted; an image is relevant when it has the query's label.
Text to image (collections whose model reads text): one query per label and template ("a photo of a
{label}", "{label}"); with ``--prompts``, also a person's own descriptions of each label, language by
language, each language measured apart (a JSON file: ``{"vi": {"red circle": ["hình tròn màu đỏ", ...]},
"en": {...}}``). Text goes to the model the app would send it to (IMAGE_SEARCH_TEXT_MODEL's pairing). For
all: precision@k for each k, recall@k, mAP@max(k) (average precision over the first K results, divided by
min(relevant, K)) and milliseconds per query (scoring every row and taking the top K, exactly, with
``ExactSearch``). Queries with nothing relevant to find (a label on one image only) are left out. Writes
OUT/evaluation.json, OUT/evaluation.md and OUT/evaluation.png.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from search.config import AUTO, Settings
from search.core.metrics import METRICS, ExactSearch, best_of
from search.core.record import LABEL
from search.embedders.base import Embedder
from search.embedders.pixels import PIXELS
from search.embedders.registry import load_embedder
from search.errors import QueryError, SearchError
from search.stores.store import Store

DEFAULT_KS = (1, 5, 10)
TEXT_TEMPLATES = ("a photo of a {}", "{}")
TASKS = ("image_to_image", "text_to_image")
Progress = Callable[[int, int], None]  # (queries done, queries in all)
Prompts = Mapping[str, Mapping[str, tuple[str, ...]]]  # language -> label -> descriptions of it
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")  # a BCP 47 language with an optional region: vi, pt-BR
MAX_PROMPTS = 10_000
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True)
class Options:
    """What to evaluate: ``collections`` empty means all of them; ``queries`` None means every image."""

    collections: tuple[str, ...] = ()
    metrics: tuple[str, ...] = METRICS
    ks: tuple[int, ...] = DEFAULT_KS
    queries: int | None = None
    seed: int = 0
    prompts: Prompts = field(default_factory=dict)
    text_model: str | None = AUTO  # the pairing for non-English text, as IMAGE_SEARCH_TEXT_MODEL says

    def check(self) -> None:
        """Refuse unknown metrics and k or sample sizes below 1, with a message for a person."""
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise QueryError(f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}")
        if not self.ks or min(self.ks) < 1:
            raise QueryError("k must be whole numbers of 1 or more, e.g. --k 1,5,10")
        if self.queries is not None and self.queries < 1:
            raise QueryError("the number of queries must be 1 or more")


@dataclass
class Labelled:
    """One collection's vectors (rows sorted by id, so that sampling does not hang on the store's order)."""

    name: str
    model: str
    matrix: np.ndarray
    labels: np.ndarray  # index into ``names`` per row; -1 for an unlabelled row (never relevant)
    names: list[str]
    groups: np.ndarray  # rows with identical vectors share a group: a query's exact duplicates

    def relevant(self) -> np.ndarray:
        """Per row: how many other rows, its duplicates aside, share its label (0 for an unlabelled row)."""
        labelled = self.labels >= 0
        pair = self.groups * len(self.names) + self.labels
        keys, counts = np.unique(pair[labelled], return_counts=True)
        same_group = dict(zip(keys.tolist(), counts.tolist()))
        per_label = self.per_label()
        return np.array([per_label[label] - same_group[key] if label >= 0 else 0
                         for label, key in zip(self.labels.tolist(), pair.tolist())], dtype=np.int64)

    def per_label(self) -> np.ndarray:
        """How many rows carry each label."""
        return np.bincount(self.labels[self.labels >= 0], minlength=len(self.names))


def read_collection(store: Store, name: str) -> Labelled:
    """All of a collection's vectors and labels, read once; refuse one without two labels to tell apart."""
    collection = store.open(name)
    ids, matrix = collection.scan_vectors()
    label_of = {i: m.get(LABEL) for i, m in collection.scan_metadata()}
    order = sorted(range(len(ids)), key=ids.__getitem__)
    labels = [str(label_of[ids[i]]) if label_of.get(ids[i]) not in (None, "") else None for i in order]
    names = sorted({label for label in labels if label is not None})
    if not names:
        raise QueryError(f"collection {name!r} has no labels; build it from a labelled source (a folder per label, "
                         "or --label-column) to evaluate it")
    if len(names) < 2:
        raise QueryError(f"collection {name!r} has one label only ({names[0]!r}); evaluation needs two or more")
    index = {label: n for n, label in enumerate(names)}
    matrix = matrix[np.array(order, dtype=np.int64)]
    groups = np.unique(matrix, axis=0, return_inverse=True)[1].reshape(-1)
    return Labelled(name, collection.model or "", matrix,
                    np.array([index[label] if label is not None else -1 for label in labels], dtype=np.int64),
                    names, groups)


def query_rows(data: Labelled, queries: int | None, seed: int) -> np.ndarray:
    """The rows to query by: labelled ones with something to find, ``queries`` of them sampled with ``seed``."""
    eligible = np.flatnonzero(data.relevant() > 0)
    if queries is None or queries >= len(eligible):
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, size=queries, replace=False))


def measures(hits: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """p@k and recall@k for each k, and map@K (K = max k), from ``hits`` (queries x K, relevant or not)."""
    depth = max(ks)
    found = np.cumsum(hits, axis=1)
    out = {f"p@{k}": float(np.mean(found[:, k - 1] / k)) for k in ks}
    out.update({f"recall@{k}": float(np.mean(found[:, k - 1] / relevant)) for k in ks})
    precision_at = found / np.arange(1, depth + 1)
    out[f"map@{depth}"] = float(np.mean((precision_at * hits).sum(axis=1) / np.minimum(relevant, depth)))
    return out


def run_queries(search: ExactSearch, data: Labelled, queries: np.ndarray, wanted: np.ndarray, own_rows: np.ndarray | None,
                metric: str, ks: Sequence[int], tick: Callable[[], None]) -> dict[str, float]:
    """Rank for every query (query ``i`` looks for label ``wanted[i]``), then measure.

    ``own_rows``: each query's own row (image to image), excluded with its duplicates; None for text.
    The time per query covers scoring every row and taking the top K: what a search costs.
    """
    depth = max(ks)
    hits = np.zeros((len(queries), depth), dtype=bool)
    relevant = data.per_label()[wanted] if own_rows is None else data.relevant()[own_rows]
    seconds = 0.0
    for n, query in enumerate(queries):
        excluded = None if own_rows is None else np.flatnonzero(data.groups == data.groups[own_rows[n]])
        start = time.perf_counter()
        s = search.scores(query, metric)
        if excluded is not None:
            s[excluded] = -np.inf
        top = [i for i, score in best_of(s, depth) if score > -np.inf]
        seconds += time.perf_counter() - start
        hits[n, : len(top)] = data.labels[top] == wanted[n]
        tick()
    return {**measures(hits, relevant, ks), "ms_per_query": 1000 * seconds / max(len(queries), 1)}


def text_embedder(data: Labelled, text_model: str | None) -> Embedder | None:
    """The collection's model with the app's text pairing; None where it reads no text (pixels) or is not recorded."""
    if not data.model or data.model == PIXELS:
        return None
    embedder = load_embedder(data.model, text_model=text_model)
    return embedder if embedder.supports_text else None


def text_queries(data: Labelled, embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """Text-to-image queries (each label in each template) and their labels."""
    texts = [template.format(label) for label in data.names for template in TEXT_TEMPLATES]
    wanted = np.repeat(np.arange(len(data.names)), len(TEXT_TEMPLATES))
    return np.asarray(embedder.embed_texts(texts), dtype=np.float32), wanted


def prompt_queries(data: Labelled, embedder: Embedder, prompts: Prompts) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per language, the prompts of the labels this collection has, embedded, and their labels."""
    index = {label: n for n, label in enumerate(data.names)}
    queries = {}
    for language, by_label in prompts.items():
        pairs = [(text, index[label]) for label, texts in by_label.items() if label in index for text in texts]
        if pairs:
            vectors = np.asarray(embedder.embed_texts([text for text, _ in pairs]), dtype=np.float32)
            queries[language] = (vectors, np.array([n for _, n in pairs], dtype=np.int64))
    return queries


def read_prompts(path: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """Labelled descriptions by language from a JSON file (see the module's docstring), checked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QueryError(f"the prompts file {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise QueryError(f"the prompts file {path} is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise QueryError('the prompts file holds no languages; write {"vi": {"LABEL": ["a description", ...]}, ...}')
    prompts: dict[str, dict[str, tuple[str, ...]]] = {}
    for language, by_label in data.items():
        if not LANGUAGE.fullmatch(language):
            raise QueryError(f"{language[:40]!r} in the prompts file is not a language code such as vi, en or pt-BR")
        if not isinstance(by_label, dict) or not all(isinstance(label, str) and isinstance(texts, list)
                                                     and all(isinstance(t, str) for t in texts)
                                                     for label, texts in by_label.items()):
            raise QueryError(f"prompts for {language!r} must map each label to a list of descriptions")
        prompts[language] = {label: tuple(t.strip() for t in texts if t.strip()) for label, texts in by_label.items()}
        if any(len(t) > MAX_PROMPT_CHARS for texts in prompts[language].values() for t in texts):
            raise QueryError(f"a description for {language!r} is longer than {MAX_PROMPT_CHARS} characters")
    if sum(len(texts) for by_label in prompts.values() for texts in by_label.values()) > MAX_PROMPTS:
        raise QueryError(f"the prompts file holds more than {MAX_PROMPTS:,} descriptions")
    return prompts


def evaluate(store: str | Path | Store, options: Options = Options(), on_progress: Progress | None = None) -> dict[str, Any]:
    """The report (see the module's docstring) for ``options`` on the store at ``store``."""
    options.check()
    opened = store if isinstance(store, Store) else Store.connect(store, server=Settings().chroma)
    names = list(options.collections) or opened.names()
    if not names:
        raise QueryError("the store holds no collections to evaluate")
    data = [read_collection(opened, name) for name in names]  # every refusal before any work
    plan = []
    for d in data:
        rows = query_rows(d, options.queries, options.seed)
        embedder = text_embedder(d, options.text_model)
        texts = text_queries(d, embedder) if embedder else None
        languages = prompt_queries(d, embedder, options.prompts) if embedder else {}
        plan.append((d, rows, texts, languages))
    total = len(options.metrics) * sum(len(rows) + (len(t[0]) if t else 0) + sum(len(q) for q, _ in ls.values())
                                       for _, rows, t, ls in plan)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(done, total)

    report: dict[str, Any] = {"store": str(opened.folder), "metrics": list(options.metrics), "k": list(options.ks),
                              "seed": options.seed, "collections": {}}
    for d, rows, texts, languages in plan:
        search = ExactSearch(d.matrix)
        entry: dict[str, Any] = {"model": d.model, "images": len(d.matrix), "labels": len(d.names), "queries": len(rows)}
        entry["image_to_image"] = {m: run_queries(search, d, d.matrix[rows], d.labels[rows], rows, m, options.ks, tick)
                                   for m in options.metrics}
        if texts is not None:
            entry["text_queries"] = len(texts[0])
            entry["text_to_image"] = {m: run_queries(search, d, texts[0], texts[1], None, m, options.ks, tick)
                                      for m in options.metrics}
        if languages:
            entry["by_language"] = {
                language: {"text_queries": len(vectors),
                           "text_to_image": {m: run_queries(search, d, vectors, wanted, None, m, options.ks, tick)
                                             for m in options.metrics}}
                for language, (vectors, wanted) in languages.items()}
        report["collections"][d.name] = entry
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per collection, task and metric."""
    ks, depth = report["k"], max(report["k"])
    columns = [*(f"p@{k}" for k in ks), f"map@{depth}", f"recall@{depth}"]
    lines = ["| collection | task | metric | " + " | ".join(columns) + " | ms/query |",
             "|---|---|---|" + "---:|" * (len(columns) + 1)]
    for name, entry in report["collections"].items():
        rows = [(task.replace("_", " "), entry.get(task, {})) for task in TASKS]
        rows += [(f"text to image ({language})", measured["text_to_image"])
                 for language, measured in entry.get("by_language", {}).items()]
        for task, by_metric in rows:
            for metric, values in by_metric.items():
                cells = " | ".join(f"{values[c]:.3f}" for c in columns)
                lines.append(f"| {name} | {task} | {metric} | {cells} | {values['ms_per_query']:.2f} |")
    queries = ", ".join(f"{name}: {e['images']} images, {e['queries']} image queries"
                        + (f", {e['text_queries']} text queries" if "text_queries" in e else "")
                        + "".join(f", {m['text_queries']} {language} prompts" for language, m in e.get("by_language", {}).items())
                        for name, e in report["collections"].items())
    return "\n".join(lines) + f"\n\n{queries}; exact search, leave one out (duplicates excluded).\n"


def chart(report: dict[str, Any], path: Path) -> None:
    """Precision@k per metric and collection (a panel per task), and milliseconds per query beside it."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    entries = report["collections"]
    tasks = [t for t in TASKS if any(t in e for e in entries.values())]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(5.2 * (len(tasks) + 1), 5.0))
    styles = ["-", "--", ":", "-."]
    colours = {m: f"C{i}" for i, m in enumerate(report["metrics"])}
    for ax, task in zip(axes, tasks):
        for n, (name, entry) in enumerate(entries.items()):
            for metric, values in entry.get(task, {}).items():
                ax.plot(report["k"], [values[f"p@{k}"] for k in report["k"]], styles[n % len(styles)], marker="o",
                        color=colours[metric], label=f"{name} · {metric}")
        ax.set(title=f"{task.replace('_', ' ')}: precision@k", xlabel="k", ylabel="precision", ylim=(0, 1.02),
               xticks=report["k"])
        ax.grid(alpha=0.3)
    # A legend row per collection, a column per metric (matplotlib fills a legend column by column).
    lines = dict(zip(*reversed(axes[0].get_legend_handles_labels())))
    order = [f"{name} · {metric}" for metric in report["metrics"] for name in entries]
    fig.legend([lines[label] for label in order], order, loc="lower center", ncol=len(report["metrics"]),
               fontsize=8, frameon=False)
    series = [(f"{name} · {metric}", values["ms_per_query"], colours[metric])
              for name, entry in entries.items() for metric, values in entry["image_to_image"].items()]
    axes[-1].barh([s[0] for s in series], [s[1] for s in series], color=[s[2] for s in series])
    axes[-1].invert_yaxis()
    axes[-1].set(title="image to image: ms per query", xlabel="milliseconds")
    axes[-1].tick_params(axis="y", labelsize=7)
    fig.tight_layout(rect=(0, 0.06 * len(entries), 1, 1))  # room below for the legend, a row per collection
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """Write evaluation.json, evaluation.md and evaluation.png into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evaluation.json", out / "evaluation.md", out / "evaluation.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(report), encoding="utf-8")
    chart(report, paths[2])
    return paths


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line and exit code 2, like every other refusal of this command.
        self.exit(2, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    p = _Parser(prog="python -m search.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, help="the store folder")
    p.add_argument("--collection", action="append", default=[], help="a collection to evaluate (repeat for several; "
                   "default: all)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated, from " + ", ".join(METRICS))
    p.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="comma-separated cut-offs, e.g. 1,5,10")
    p.add_argument("--queries", type=int, help="sample this many query images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    p.add_argument("--prompts", type=Path, help="a JSON file of descriptions of each label by language, each "
                   'language measured apart: {"vi": {"LABEL": ["...", ...]}, ...}')
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="where to write the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    """Options from the parsed command line; a malformed --k is a QueryError."""
    try:
        ks = tuple(sorted({int(k) for k in args.k.split(",") if k.strip()}))
    except ValueError:
        raise QueryError(f"--k takes whole numbers separated by commas, e.g. 1,5,10 (not {args.k!r})") from None
    metrics = tuple(dict.fromkeys(m.strip() for m in args.metrics.split(",") if m.strip()))
    prompts = read_prompts(args.prompts) if args.prompts else {}
    return Options(tuple(args.collection), metrics, ks, args.queries, args.seed, prompts, Settings().text_model)


def main(argv: list[str] | None = None) -> int:
    """Evaluate, write the results, print the table; a refusal is one line on stderr and exit code 2."""
    from tqdm import tqdm

    args = parse_args(argv)
    bars: list[Any] = []  # made at the first query, once the vectors are read and the models loaded

    def show(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="query", disable=args.quiet, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        report = evaluate(args.store, options_from(args), show)
    except SearchError as exc:
        print("error: " + " ".join(exc.for_operator().split()), file=sys.stderr)
        return 2
    finally:
        for bar in bars:
            bar.close()
    write(report, args.out)
    print(markdown(report))
    print(f"wrote {args.out / 'evaluation.json'}, evaluation.md and evaluation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
