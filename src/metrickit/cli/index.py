"""``metrickit index RUN_DIR --dataset GALLERY -o INDEX_DIR``: embed a gallery with a trained run
and save a searchable index (embeddings, ids, labels; no pickle) under the run's distance.
"""

from __future__ import annotations

import argparse

from ._common import (
    add_device,
    add_output,
    add_quiet,
    add_run_dir,
    add_threads,
    apply_threads,
    run_dir_of,
)
from .embed import add_data_input


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="index a gallery for search", description=__doc__.replace("``", "")
    )
    add_run_dir(parser, "a directory written by metrickit train")
    add_data_input(parser, "the gallery")
    add_output(parser, "the index directory (new)", required=True)
    parser.add_argument("--index", dest="kind", choices=("flat", "ivf", "hnsw"), default="flat",
                        help="flat: exact; ivf, hnsw: approximate, need faiss [flat]")
    add_device(parser, help="cpu or cuda [cpu]", default="cpu")
    add_quiet(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import build_index, load_run
    from ..rundir import check_new

    run_dir = run_dir_of(args, "index")
    apply_threads(args)
    check_new(args.output, "index")  # before the gallery is embedded
    embedder = load_run(run_dir, device=args.device)
    index = build_index(embedder, args.dataset, args.kind, args.batch_size, not args.quiet)
    index.save(args.output)
    labelled = "with labels" if index.labels is not None else "without labels"
    print(f"index of {len(index)} items ({labelled}, {index.distance} distance, {index.kind}) "
          f"written to {args.output}")
    return 0
