"""``metrickit evaluate RUN_DIR``: re-evaluate a saved run from its last checkpoint.

Prints the metrics table (raw input, untrained and trained network on the test split) and
rewrites the run's metrics.json, history.csv, plots and report.html.
"""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="re-evaluate a saved run", description=__doc__.replace("``", "")
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by metrickit train")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the run's device)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import Trainer
    from ..training.outputs import write_run_outputs
    from .train import print_results

    start = time.perf_counter()
    overrides = {"device": args.device} if args.device else {}
    trainer = Trainer.from_run_dir(args.run_dir, overrides, progress=False)
    trainer.restore()
    results = trainer.evaluate()
    write_run_outputs(trainer, results)
    print_results(trainer.run_dir, results, time.perf_counter() - start)
    return 0
