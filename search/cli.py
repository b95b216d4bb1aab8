"""The builder's command line (`index_builder.py`, or `image-search-build` once installed): build or update a
searchable image index from a dataset, a folder, a list of URLs or a web page."""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from search.config import configure_logging, load_settings
from search.core.duplicates import NEAR_DUPLICATE_SIMILARITY
from search.embedders.base import DEFAULT_MODEL
from search.embedders.precision import AUTO, PRECISIONS
from search.embedders.registry import load_embedder
from search.errors import SearchError, SourceError
from search.images import ocr
from search.pipeline import hub
from search.pipeline.build import BuildOptions, ModelSpec
from search.pipeline.engines import ENGINES, engine
from search.pipeline.report import BuildReport
from search.sources.base import IMAGE_SUFFIXES, Item, Source, open_source
from search.stores.base import DEFAULT_COLLECTION
from search.stores.store import Store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see docs/building.md."""
    p = argparse.ArgumentParser(description=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="a Hub dataset name, a folder of images, or a saved/parquet dataset")
    what.add_argument("--urls", type=Path, help="a text file of image URLs, one a line")
    what.add_argument("--crawl", metavar="URL", help="collect the images of a web page and its same-site links")
    what.add_argument("--reembed", metavar="MODEL",
                      help="embed every image of --collection again with MODEL into COLLECTION.next while the "
                           "collection goes on answering, then compare the two (resumable)")
    what.add_argument("--switch", action="store_true",
                      help="make COLLECTION.next the collection (journaled: a kill cannot lose it); the old one is kept "
                           "as COLLECTION.previous")
    what.add_argument("--rollback", action="store_true", help="make COLLECTION.previous the collection again")
    what.add_argument("--drop-previous", action="store_true", help="delete COLLECTION.previous")
    p.add_argument("--store", required=True, type=Path, help="the store folder (Chroma + thumbnails)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a model by Hub name or path: a SigLIP or SigLIP 2 checkpoint (transformers), "
                        "a sentence-transformers CLIP, or 'pixels'")
    p.add_argument("--collection", default=DEFAULT_COLLECTION)
    p.add_argument("--split", default="train")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--caption-column")
    p.add_argument("--limit", type=_positive, help="take at most N images from the source")
    p.add_argument("--sync", action="store_true",
                   help="with a folder: also remove what was deleted from it and re-embed what changed")
    p.add_argument("--max-pages", type=_positive, default=10, help="--crawl: pages to read at most")
    p.add_argument("--max-images", type=_positive, default=200, help="--crawl: images to collect at most")
    p.add_argument("--max-depth", type=int, default=2, help="--crawl: links to follow from the start page")
    p.add_argument("--allow-private-network", action="store_true",
                   help="let --urls/--crawl reach loopback and private addresses (for local testing); "
                        "metadata endpoints stay refused")
    p.add_argument("--near-duplicate-similarity", type=float, default=NEAR_DUPLICATE_SIMILARITY,
                   help="cosine above which two images are reported as near-duplicates (0 turns it off)")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="deprecated (--engine ray spreads one build over a cluster): index only shard I of N (0-based) "
                        "of the source, for several builders into one collection")
    p.add_argument("--engine", choices=sorted(ENGINES), default="local",
                   help="; ".join(f"{name}: {choice.about}" for name, choice in ENGINES.items()))
    p.add_argument("--ocr", action="store_true",
                   help="also read the text inside each image (Tesseract, English and Vietnamese) so that keyword "
                        "search finds it; about a second an image here (see docs/search.md)")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--precision", choices=(AUTO, *PRECISIONS), default=AUTO,
                   help="auto: bf16 (native bf16 only), int8 (x86 CPUs) or, for CLIP on a CPU, ONNX Runtime at fp32 "
                        "or int8, where it agrees with fp32 on real photos and is measured clearly faster at "
                        "--batch-size, else fp32")
    p.add_argument("--workers", type=_positive, default=2, help="reading and decoding threads")
    p.add_argument("--report", type=Path, help="write the build report as JSON here")
    p.add_argument("--prompts", type=Path, help="--reembed: descriptions of each label by language (JSON, see "
                   "search/evaluate.py), so that the comparison measures text to image language by language")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.sync and (args.limit or not args.dataset or not Path(args.dataset).expanduser().is_dir()):
        p.error("--sync needs --dataset FOLDER and no --limit (it removes what the folder no longer holds)")
    if args.sync and args.shard:
        p.error("--sync and --shard do not go together: one shard cannot tell what another removed")
    if args.shard and ENGINES[args.engine].spreads:
        p.error(f"--shard and --engine {args.engine} do not go together: that engine spreads the whole build itself")
    return args


def open_input(args: argparse.Namespace, plan: hub.Plan) -> tuple[Source, list[dict[str, str]]]:
    """The source the arguments name (a dataset from where ``plan`` says), and any pages a crawl could not read."""
    if plan.dataset:
        source = open_source(plan.dataset, split=args.split, image_column=args.image_column, name=plan.name,
                             label_column=args.label_column, caption_column=args.caption_column, limit=args.limit)
        return source, []
    from search.sources.web import crawl, read_url_list, url_items  # HTML parsing: for these two sources only

    if args.urls:
        urls = [(u, None) for u in read_url_list(args.urls)][: args.limit]
        items = url_items(urls, allow_private=args.allow_private_network)
        return Source(str(args.urls.resolve()), items, len(urls)), []
    images, failed = crawl(args.crawl, max_pages=args.max_pages, max_images=min(args.max_images, args.limit or 10**9),
                           max_depth=args.max_depth, allow_private=args.allow_private_network)
    return Source(args.crawl, url_items(images, allow_private=args.allow_private_network), len(images)), failed


def main(argv: list[str] | None = None) -> int:
    """Run a build; exit 0 unless the build could not run at all."""
    args = parse_args(argv)
    configure_logging(quiet=args.quiet)
    if args.reembed or args.switch or args.rollback or args.drop_previous:
        return _swap(args)
    made = not args.store.exists()  # a store this run makes goes again if it indexes nothing
    report: BuildReport | None = None
    removed = False
    try:
        # Before anything is downloaded or made: what the Hub cannot give now is said at once, all of it.
        plan = hub.check(args.dataset, [args.model])
        source, failed_pages = open_input(args, plan)
        if source.total == 0:  # a folder without a single image: nothing to build, no empty collection
            raise SourceError(f"there are no images in {args.dataset or 'the source'}"
                              + (f" ({len(source.skipped)} other files, e.g. {_examples(source.skipped)})"
                                 if source.skipped else "")
                              + f"; it reads {', '.join(sorted(IMAGE_SUFFIXES))} files")
        items, manifest = source.items, args.collection
        if args.shard:
            print("note: --shard is deprecated and will go; --engine ray spreads one build over a cluster "
                  "(RAY_ADDRESS)", file=sys.stderr)
            index, count = args.shard
            items = (item for item in items if shard_of(item.source, count) == index)
            manifest = f"{args.collection}.shard-{index}-of-{count}"
        store = Store.connect(args.store, server=load_settings().chroma, create=True)
        with store.write_lock():
            try:
                report = _build(args, store, source, items, manifest)
            finally:  # under the lock: no other builder can have begun on the store this run made
                removed = made and not (report and report.total_in_collection) and _remove_empty(args.store, store)
    except SearchError as exc:
        print(f"error: {exc.for_operator()}", file=sys.stderr)
        return 2
    if removed:
        print(f"note: nothing was indexed, so no store is left at {args.store}.", file=sys.stderr)
    report.skipped = failed_pages + source.skipped + report.skipped
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    print(report.summary(report_file=args.report))
    return 0


def _swap(args: argparse.Namespace) -> int:
    """--reembed, --switch, --rollback, --drop-previous: a model swap of --collection (see pipeline/swap.py)."""
    from tqdm import tqdm

    from search.evaluate import Options, evaluate, markdown, read_prompts
    from search.pipeline.swap import reembed
    from search.stores.swaps import next_name, previous_name

    name = args.collection
    try:
        settings = load_settings()
        prompts = read_prompts(args.prompts) if args.prompts else {}  # refused before any work
        store = Store.connect(args.store, server=settings.chroma)
        if args.switch:
            store.switch(name)
            print(f"{name!r} now holds what {next_name(name)!r} held; the old one is kept as {previous_name(name)!r} "
                  "(--rollback to go back, --drop-previous to delete it).")
        elif args.rollback:
            store.rollback(name)
            print(f"{name!r} holds what it held before the switch; the newer one is kept as {next_name(name)!r}.")
        elif args.drop_previous:
            with store.write_lock():
                store.open(previous_name(name))  # a StoreError if there is none
                store.drop(previous_name(name))
            print(f"deleted {previous_name(name)!r}.")
        else:
            hub.check(None, [args.reembed])  # a model the Hub cannot give now: said at once, with the choices
            embedder = load_embedder(args.reembed, args.device, precision=args.precision, batch_size=args.batch_size,
                                     decisions=store.precision_file)
            with store.write_lock(), tqdm(unit="img", desc="re-embedding", disable=args.quiet) as bar:
                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                report = reembed(store, name, embedder, args.batch_size, progress)
            print(report.summary())
            comparison = None
            try:  # the work is done and kept whatever the comparison says
                comparison = evaluate(store, Options(collections=(name, next_name(name)), metrics=("cosine",), queries=200,
                                                     prompts=prompts, text_model=settings.text_model))
                print(markdown(comparison))
            except SearchError as exc:
                print(f"no comparison: {exc.for_operator()}")
            if args.report:
                args.report.parent.mkdir(parents=True, exist_ok=True)
                args.report.write_text(json.dumps({**report.to_dict(), "comparison": comparison}, indent=2))
            if report.failed:
                print(f"{len(report.failed)} images could not be read: --switch is refused until {next_name(name)!r} "
                      f"holds every image of {name!r}.")
            else:
                print(f"--switch makes {next_name(name)!r} the collection {name!r}.")
    except SearchError as exc:
        print(f"error: {exc.for_operator()}", file=sys.stderr)
        return 2
    return 0


def _remove_empty(folder: Path, store: Store) -> bool:
    """Remove the store folder this run made, where it holds no image, so that a failed first build leaves nothing
    that looks like an index (an existing store is never touched; nor a Chroma server's collections). Whether
    it went."""
    if store.server or any(store.open(name).count() for name in store.names()):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _examples(skipped: list[dict[str, str]], count: int = 3) -> str:
    return ", ".join(Path(s["source"]).name for s in skipped[:count])


def _build(args: argparse.Namespace, store: Store, source: Source, items: Iterable[Item], manifest: str) -> BuildReport:
    from tqdm import tqdm

    options = BuildOptions(
        source=source.description,
        batch_size=args.batch_size,
        precision=args.precision,
        workers=args.workers,
        total=source.total,
        sync_root=source.description if args.sync else None,
        near_duplicate_similarity=args.near_duplicate_similarity or None,
        manifest=manifest,
        ocr=_ocr(args.ocr),
    )
    model = ModelSpec(args.model, args.device, store.precision_file)
    # The bar shows at once, the model's wait on it until the first batch is written.
    with tqdm(total=source.total, unit="img", desc=f"loading {Path(args.model).name}", disable=args.quiet,
              smoothing=0.1) as bar:
        def progress(done: int, _: int | None) -> None:
            bar.set_description("indexing", refresh=False)
            bar.update(done - bar.n)

        return engine(args.engine, load_settings()).run(items, store, args.collection, model, options, progress)


def _ocr(wanted: bool) -> Literal["now"] | None:
    """OCR for this build where it was asked for and Tesseract is here; where it is not, a note says so and
    the build goes on without it."""
    if not wanted:
        return None
    reason = ocr.missing()
    if reason:
        print(f"note: {reason} The build goes on without it.", file=sys.stderr)
        return None
    return "now"


def shard_of(source: str, count: int) -> int:
    """Which of ``count`` shards a source belongs to: stable across runs and machines."""
    return int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "big") % count


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {index} of {count}: I must be from 0 to N-1")
    return index, count


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value



if __name__ == "__main__":
    sys.exit(main())
