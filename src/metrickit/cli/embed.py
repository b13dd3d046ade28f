"""``metrickit embed RUN_DIR --dataset DATA -o emb.npy``: embeddings of new data with a trained
run's network and preprocessing (batched, with a progress bar); any data format metrickit reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import UsageError
from ._common import (
    add_dataset,
    add_device,
    add_quiet,
    add_run_dir,
    add_threads,
    apply_threads,
    run_dir_of,
)


def add_data_input(parser: argparse.ArgumentParser, what: str) -> None:
    """``--dataset`` (``--data`` also accepted) for the data a command embeds."""
    add_dataset(parser, f"{what}: a built-in name, an image folder, a .csv, .npy or .npz file")
    parser.add_argument("--data", dest="dataset", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1024, help="inputs per batch [1024]")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed data with a trained run", description=__doc__.replace("``", "")
    )
    add_run_dir(parser, "a directory written by metrickit train")
    add_data_input(parser, "the data to embed")
    parser.add_argument("-o", "--output", metavar="FILE", required=True,
                        help="the .npy file of [N, D] float32 embeddings")  # fmt: skip
    add_device(parser, help="cpu or cuda [cpu]", default="cpu")
    add_quiet(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import load_run
    from ..rundir import atomic_write

    run_dir = run_dir_of(args, "embed")
    apply_threads(args)
    if not args.dataset:
        raise UsageError("give the data to embed with --dataset")
    out = Path(args.output)
    if out.suffix != ".npy":
        raise UsageError(f"-o must name a .npy file, got {str(out)!r}")
    embedder = load_run(run_dir, device=args.device)
    emb = embedder.embed(args.dataset, args.batch_size, progress=not args.quiet)
    try:
        atomic_write(out, lambda f: np.save(f, emb))
    except OSError as exc:
        raise UsageError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    print(f"{emb.shape[0]} embeddings of size {emb.shape[1]} written to {out}")
    return 0
