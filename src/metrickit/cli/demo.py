"""``metrickit demo``: a small CNN trained on MNIST-5k with batch-hard triplet loss, in about 30 s.

Trains on 4,000 images, evaluates on 1,000 held-out ones (trained vs untrained network vs raw
pixels), writes the run directory (default runs/demo, replaced if it holds an earlier run) with
report.html, and prints the metrics table and the elapsed time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from . import UsageError

DEMO_CONFIG = {
    "dataset": "mnist5k",
    "model": "cnn",
    "embedding_dim": 64,
    "normalize": True,
    "loss": "triplet",
    "loss_params": {"margin": 0.2},
    "miner": "hard",
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
    parser.add_argument("--output", "-o", default="runs/demo", help="run directory [runs/demo]")
    parser.add_argument("--epochs", type=int, default=DEMO_CONFIG["epochs"], help="epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto [auto]")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training import TrainConfig, Trainer
    from .train import print_results

    start = time.perf_counter()
    torch.set_num_threads(_idle_cpus())
    config = TrainConfig.from_dict(
        {**DEMO_CONFIG, "epochs": args.epochs, "seed": args.seed, "device": args.device,
         "output": args.output}
    )
    trainer = Trainer(config, progress=not args.quiet)
    _clear_previous_run(Path(args.output))
    results = trainer.run()
    print_results(trainer.run_dir, results, time.perf_counter() - start)
    return 0


def _clear_previous_run(run_dir: Path) -> None:
    """Remove an earlier run in ``run_dir``; refuse to touch a directory that is not a run."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not (run_dir / "config.json").is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not empty and holds no metrickit run; choose another --output"
        )
    shutil.rmtree(run_dir)


def _idle_cpus() -> int:
    """CPUs this process may use minus the current load (at least 1).

    The demo's batches are small: extra intra-op threads gain little, and threads competing with
    other busy processes for the same cores slow every step down many times over.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, cpus - busy)
