"""``metrickit train``: train an embedding network, evaluate it, write a run directory.

Options come from the defaults of :class:`~metrickit.training.TrainConfig`, then ``--config
FILE`` (YAML/TOML/JSON), then the flags given; ``--resume RUN_DIR`` starts from the run's saved
config instead of the defaults and continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from . import UsageError
from ._common import (
    add_dataset,
    add_deprecated,
    add_device,
    add_output,
    add_quiet,
    add_threads,
    apply_threads,
)

_DESCRIPTION = (
    "Train an embedding network on P×K batches, evaluate it on the test split and write a run "
    "directory. Options: defaults, then --config FILE (YAML/TOML/JSON), then flags; --resume "
    "RUN_DIR starts from that run's saved config and continues from its last checkpoint."
)
_HELP_EPILOG = "Example: metrickit train --dataset digits --loss triplet --mining hard --epochs 5"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an embedding network and evaluate it",
        description=_DESCRIPTION,
        epilog=_HELP_EPILOG,
        argument_default=argparse.SUPPRESS,
    )
    add_config_options(parser)
    parser.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON file of options")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    add_quiet(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig option; absent flags leave the option to the config/defaults."""
    add = parser.add_argument
    add_dataset(parser, "built-in name (digits, mnist5k, flavia), an image folder (one sub-folder "
                "per class), a .csv, .npy or .npz file")
    add("--label-column", metavar="NAME", help="CSV: the column holding the class [label]")
    add("--image-size", type=_image_size, metavar="SIZE",
        help="image folders: resize every image to SIZE or HEIGHTxWIDTH pixels")
    add("--image-mode", choices=("L", "RGB"), help="image folders: L greyscale or RGB [L]")
    add("--standardize", action=argparse.BooleanOptionalAction,
        help="z-score every feature with the training split's statistics (feature vectors)")
    add("--stream", action=argparse.BooleanOptionalAction,
        help="image folders: read each image from disk when used instead of loading them all")
    add("--augment", choices=("none", "crop_flip", "torchvision"),
        help="training images: random resized crop + flip (built-in torch or torchvision) [none]")
    add("--model", help="embedding network: mlp, cnn, or a backbone torchvision:NAME, timm:NAME, "
        "package.module:factory")
    add("--weights", metavar="FILE",
        help="backbone weights from a local .safetensors or torch.save file (weights_only)")
    add("--freeze-epochs", type=int, metavar="N",
        help="train only the embedding head of a backbone for the first N epochs [0]")
    add("--embedding-dim", type=int, help="embedding size")
    add("--normalize", action=argparse.BooleanOptionalAction, help="L2-normalise embeddings")
    add("--loss", help="registered batch loss, e.g. triplet, contrastive, lifted_structure")
    add(
        "--loss-param",
        dest="loss_params",
        action="append",
        metavar="NAME=VALUE",
        help="a loss parameter, repeatable (e.g. --loss-param margin=0.2)",
    )
    add("--mining", help="triplet mining: all, hard or semihard (for losses with a mining option)")
    add_deprecated(parser, "--miner", "--mining", dest="mining")
    add("-P", "--p", dest="p", type=int, help="classes per batch [min(8, training classes)]")
    add("-K", "--k", dest="k", type=int, help="samples per class in a batch [4]")
    add("--batches-per-epoch", type=int, help="P×K batches per epoch")
    add("--optimizer", help="adam, adamw or sgd")
    add("--lr", type=float, help="learning rate")
    add("--loss-lr", type=float, help="learning rate of the loss's proxies/centres [proxy: 100×lr]")
    add("--weight-decay", type=float, help="weight decay")
    add("--epochs", type=int, help="number of epochs")
    add("--precision", choices=("32", "bf16", "fp16"),
        help="32, or mixed precision: bf16 autocast, fp16 autocast with loss scaling [32]")
    add("--schedule", choices=("constant", "cosine", "linear"),
        help="learning-rate decay per step after the warmup [constant]")
    add("--warmup-steps", type=int, metavar="N", help="linear learning-rate warmup steps [0]")
    add("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm to NORM [off]")
    add("--workers", type=int, metavar="N", help="DataLoader worker processes [0]")
    add("--pin-memory", action=argparse.BooleanOptionalAction,
        help="DataLoader pin_memory (faster host-to-GPU copies)")
    add("--seed", type=int, help="random seed (data split, initialisation, batches)")
    add_device(parser)
    add("--protocol", help="holdout (same classes) or zero_shot (unseen test classes)")
    add("--test-size", type=_number, help="test fraction in (0, 1) or number of test samples")
    add("--eval-every", type=int, help="evaluate on the test split every N epochs (0: at the end)")
    add("--validation-size", type=_number, metavar="SIZE",
        help="validation fraction/count held out of the training split; evaluated every "
        "--eval-every epochs (every epoch if 0), keeps checkpoints/best.pt")
    add("--best-metric", metavar="METRIC",
        help="validation metric that selects the best checkpoint [map_at_r]")
    add("--patience", type=int, metavar="N",
        help="stop after N validations without improvement (0: never) [0]")
    add("--tensorboard", action=argparse.BooleanOptionalAction,
        help="also log to RUN_DIR/tensorboard (needs the tensorboard package)")
    add_output(parser, "run directory [runs/train]")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given on the command line."""
    from ..training.config import field_names

    values = {k: v for k, v in vars(args).items() if k in field_names()}
    if "loss_params" in values:
        values["loss_params"] = parse_loss_params(values["loss_params"])
    return values


def parse_loss_params(items: list[str]) -> dict[str, Any]:
    """``["margin=0.2", "soft=true"]`` → ``{"margin": 0.2, "soft": True}`` (YAML scalars)."""
    params = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--loss-param must look like NAME=VALUE, got {item!r}")
        try:
            params[name.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            params[name.strip()] = text
    return params


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..training import TrainConfig, Trainer, read_config_file
    from ..training.config import read_config_json

    start = time.perf_counter()
    apply_threads(args)
    distributed.init_from_env()  # under torchrun: one process per device, global-batch loss
    flags = flag_overrides(args)
    resume = getattr(args, "resume", None)
    if resume is not None:
        if "output" in flags and Path(flags["output"]) != Path(resume):
            raise UsageError("--output and --resume name different run directories")
        base = TrainConfig.from_dict(read_config_json(Path(resume) / "config.json"))
        flags["output"] = resume
    else:
        base = TrainConfig()
    if "config" in args:
        base = base.merged(read_config_file(args.config))
    config = base.merged(flags)
    trainer = Trainer(config, progress=not getattr(args, "quiet", False))
    results = trainer.run(resume=resume is not None)
    if distributed.is_main_process():
        print_results(trainer.run_dir, results, time.perf_counter() - start)
    return 0


def print_results(run_dir: Path, results: Mapping[str, Any], elapsed: float) -> None:
    from ..training import format_results_table

    print(format_results_table(results))
    print(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})")
    print(f"elapsed: {elapsed:.1f} s")


def _image_size(text: str) -> int | list[int]:
    """``"64"`` → 64, ``"48x64"`` → [48, 64] (height × width)."""
    parts = text.lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}") from None
    if len(sides) > 2 or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}")
    return sides[0] if len(sides) == 1 else sides


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)
