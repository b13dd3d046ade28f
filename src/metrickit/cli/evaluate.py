"""``metrickit evaluate RUN_DIR``: re-evaluate a saved run from its last (or best) checkpoint.

Prints the metrics table (raw input, untrained and trained network on the test split) and
rewrites the run's metrics.json, history.csv, plots and report.html (atomically, holding the
run's lock).
"""

from __future__ import annotations

import argparse
import time

from ._common import add_device, add_run_dir, add_threads, apply_threads, run_dir_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="re-evaluate a saved run", description=__doc__.replace("``", "")
    )
    add_run_dir(parser, "a directory written by metrickit train")
    add_device(parser, help="cpu, cuda or auto (default: the run's device)")
    parser.add_argument(
        "--checkpoint", choices=("last", "best"), default="last",
        help="the last epoch's weights, or the best validation epoch's [last]",
    )
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..rundir import locked
    from ..training import Trainer
    from ..training.trainer import CONFIG_FILE, RUN_KIND
    from .train import print_results

    run_dir = run_dir_of(args, "evaluate")
    start = time.perf_counter()
    apply_threads(args)
    overrides = {"device": args.device} if args.device else {}
    with locked(run_dir, RUN_KIND, required=CONFIG_FILE):
        trainer = Trainer.from_run_dir(run_dir, overrides, progress=False)
        trainer.restore()
        results = trainer.evaluate(checkpoint=args.checkpoint)
        trainer.write_outputs(results)
    print_results(trainer.run_dir, results, time.perf_counter() - start)
    return 0
