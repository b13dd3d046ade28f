"""``metrickit search INDEX_DIR --dataset QUERIES -k 10``: the nearest gallery items of each query
(embedded with the index's run), printed or written as CSV (query, rank, id, label, distance).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from . import UsageError
from ._common import add_output, add_quiet, add_run_dir, add_threads, add_top_k, apply_threads
from .embed import add_data_input


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search an index with queries", description=__doc__.replace("``", "")
    )
    add_run_dir(parser, "a directory written by metrickit index", metavar="INDEX_DIR")
    add_data_input(parser, "the queries")
    add_top_k(parser, "neighbours per query [10]", default=10)
    add_output(parser, "write the neighbours to this CSV file instead of printing them")
    add_quiet(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import Index
    from ..rundir import atomic_write_text
    from ._common import run_dir_of

    index_dir = run_dir_of(args, "search")
    apply_threads(args)
    if not args.dataset:
        raise UsageError("give the queries with --dataset")
    if args.top_k < 1:
        raise UsageError(f"-k must be >= 1, got {args.top_k}")
    index = Index.load(index_dir)
    result = index.search(args.dataset, k=args.top_k, batch_size=args.batch_size,
                          progress=not args.quiet)  # fmt: skip
    text = io.StringIO()
    fields = ["query", "rank", "id", "label", "distance"]
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows())
    if args.output:
        atomic_write_text(Path(args.output), text.getvalue())
        print(f"{result.indices.shape[0]} queries × {result.indices.shape[1]} neighbours "
              f"written to {args.output}")
    else:
        print(text.getvalue(), end="")
    return 0
