"""``metrickit demo``: a small CNN trained on MNIST-5k with batch-hard triplet loss, in about 30 s.

Trains on 4,000 images, evaluates on 1,000 held-out ones (trained vs untrained network vs raw
pixels), writes the run directory (default runs/demo, replaced if it holds an earlier run) with
report.html, and prints the metrics table and the elapsed time.
"""

from __future__ import annotations

import argparse
import time

from ._common import add_device, add_output, add_quiet, add_threads, apply_threads

DEMO_CONFIG = {
    "dataset": "mnist5k",
    "model": "cnn",
    "embedding_dim": 64,
    "normalize": True,
    "loss": "triplet",
    "loss_params": {"margin": 0.2},
    "mining": "hard",
    "p": 10,
    "k": 4,
    "optimizer": "adam",
    "lr": 3e-3,
    "epochs": 8,
    "seed": 0,
    "protocol": "holdout",
    "test_size": 1000,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train and evaluate a small demo run", description=__doc__.replace("``", "")
    )
    add_output(parser, "run directory [runs/demo]", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=DEMO_CONFIG["epochs"], help="epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    add_device(parser, help="cpu, cuda or auto [auto]", default="auto")
    add_quiet(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..rundir import clear
    from ..training import TrainConfig, Trainer
    from .train import print_results

    start = time.perf_counter()
    apply_threads(args)
    config = TrainConfig.from_dict(
        {**DEMO_CONFIG, "epochs": args.epochs, "seed": args.seed, "device": args.device,
         "output": args.output}
    )
    trainer = Trainer(config, progress=not args.quiet)
    clear(args.output, "train")  # an earlier demo run is replaced; anything else is refused
    results = trainer.run()
    print_results(trainer.run_dir, results, time.perf_counter() - start)
    return 0
