"""Build or update a searchable image index: python index_builder.py --dataset SOURCE --store DIR."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from search.build import build_index
from search.embedders import DEFAULT_MODEL, load_embedder
from search.errors import SearchError
from search.sources import open_source
from search.store import DEFAULT_COLLECTION, connect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see README.md."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, help="a Hub dataset name, a folder of images, or a saved/parquet dataset")
    p.add_argument("--store", required=True, type=Path, help="the store folder (Chroma + thumbnails)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers CLIP name or path, or 'pixels'")
    p.add_argument("--collection", default=DEFAULT_COLLECTION)
    p.add_argument("--split", default="train")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--caption-column")
    p.add_argument("--limit", type=_positive, help="take at most N images from the source")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 where it agrees with fp32 (mean cosine >= 0.999) on the first images")
    p.add_argument("--workers", type=_positive, default=2, help="decoding threads")
    p.add_argument("--report", type=Path, help="write the build report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run a build; exit 0 unless the build could not run at all."""
    args = parse_args(argv)
    try:
        source = open_source(
            args.dataset,
            split=args.split,
            image_column=args.image_column,
            label_column=args.label_column,
            caption_column=args.caption_column,
            limit=args.limit,
        )
        embedder = load_embedder(args.model, args.device)
        report = build_index(
            source.items,
            store_dir=args.store,
            client=connect(args.store, create=True),
            collection=args.collection,
            embedder=embedder,
            source=source.description,
            batch_size=args.batch_size,
            precision=args.precision,
            workers=args.workers,
            total=source.total,
            progress=not args.quiet,
        )
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    print(report.summary())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
