"""``metrickit text``: sentence embeddings — train, evaluate, encode.

* ``metrickit text train --model all-minilm-l6-v2 --dataset stsb --loss cosent -o runs/stsb``
* ``metrickit text evaluate RUN_DIR`` (fine-tuned beside zero-shot, on the run's test data)
* ``metrickit text encode RUN_DIR --input texts.txt --output emb.npy`` (RUN_DIR may also be a
  model directory or a built-in model name)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UsageError
from ._common import (
    add_dataset,
    add_output,
    add_quiet,
    add_run_dir,
    add_threads,
    apply_threads,
    run_dir_of,
)

_EPILOG = (
    "Examples: metrickit text train --model all-minilm-l6-v2 --dataset stsb --loss cosent "
    "-o runs/stsb; metrickit text evaluate runs/stsb; "
    "metrickit text encode runs/stsb --input texts.txt --output emb.npy"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "text", help="sentence embeddings: train, evaluate, encode", epilog=_EPILOG
    )
    sub = parser.add_subparsers(dest="text_command", metavar="ACTION", required=True)

    train = sub.add_parser("train", help="fine-tune a sentence encoder, evaluate it")
    add = train.add_argument
    add("--model", default="all-minilm-l6-v2", help="built-in model name or model directory")
    add_dataset(train, "stsb, or a CSV/TSV/JSONL file of pairs or scored pairs [stsb]",
                default="stsb")
    add("--data", dest="dataset", help=argparse.SUPPRESS)  # the same, shown once in the help
    add("--loss", default="cosent", help="cosent, angle, cosine, mnrl or mnrl_sym")
    add("--loss-param", action="append", default=[], metavar="NAME=VALUE", help="e.g. scale=20")
    add("--epochs", type=int, default=1)
    add("--batch-size", type=int, default=16)
    add("--lr", type=float, default=2e-5)
    add("--warmup-ratio", type=float, default=0.1)
    add("--weight-decay", type=float, default=0.01)
    add("--max-grad-norm", type=float, default=1.0)
    add("--seed", type=int, default=0)
    add("--mini-batch-size", type=int, help="GradCache: embed the batch this many texts at a time")
    add("--min-score", type=float, help="pair losses on scored data: keep pairs scored >= this")
    add("--precision", choices=("32", "bf16", "fp16"), default="32",
        help="32, or mixed precision: bf16 autocast, fp16 autocast with loss scaling [32]")
    add("--eval-steps", type=int, default=0, metavar="N",
        help="evaluate on the dev split every N steps too (0: after each epoch only)")
    add("--best-metric", metavar="METRIC",
        help="keep the weights of the best dev evaluation by METRIC (e.g. spearman), not the last")
    add("--patience", type=int, default=0, metavar="N",
        help="with --best-metric: stop after N evaluations without improvement (0: never)")
    add("--score-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="scores' range")
    add("--max-seq-length", type=int, help="truncate texts to this many tokens")
    add("--eval-data", help="test file (default: the data set's test split)")
    add("--dev-data", help="dev file, evaluated during training (default: the data set's dev "
        "split; stsb has one)")
    add_threads(train)
    add_output(train, "new run directory", required=True)
    add_quiet(train)
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a text run beside its zero-shot model")
    add_run_dir(evaluate, "a text run directory")
    evaluate.add_argument("--eval-data", help="test file (default: the run's test data)")
    add_threads(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    encode = sub.add_parser("encode", help="embed the lines of a text file into a .npy array")
    encode.add_argument("run_dir", metavar="RUN_DIR", help="text run, model directory or name")
    encode.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    encode.add_argument("-o", "--output", metavar="FILE", required=True, help="output .npy file")
    encode.add_argument("--batch-size", type=int, default=64)
    add_threads(encode)
    encode.set_defaults(func=run_encode)


def _loss_params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UsageError(f"--loss-param must be NAME=NUMBER, got {item!r}")
    return params


def _print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    names = list(dict.fromkeys(k for m in metrics.values() for k in m))
    print(f"{'metric':<12}" + "".join(f"{col:>12}" for col in metrics))
    for name in names:
        cells = "".join(f"{m.get(name, float('nan')):>12.2f}" for m in metrics.values())
        print(f"{name:<12}{cells}")


def run_train(args: argparse.Namespace) -> int:
    from ..rundir import RunDir
    from ..text.fit import FitConfig
    from ..text.losses import get_text_loss
    from ..text.run import KIND, train_run

    config = FitConfig(
        loss=args.loss,
        loss_params=_loss_params(args.loss_param),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        mini_batch_size=args.mini_batch_size,
        min_score=args.min_score,
        precision=args.precision,
        eval_steps=args.eval_steps,
        best_metric=args.best_metric,
        patience=args.patience,
    )
    get_text_loss(config.loss, **config.loss_params)  # a bad loss fails before any work
    apply_threads(args)
    run = RunDir.create(args.output, KIND)
    try:
        metrics = train_run(
            run,
            args.model,
            args.dataset,
            config,
            eval_data=args.eval_data,
            dev_data=args.dev_data,
            score_range=tuple(args.score_range) if args.score_range else None,
            max_seq_length=args.max_seq_length,
            progress=not args.quiet,
        )
    except BaseException:
        run.discard()  # nothing half-written
        raise
    run.close()
    if metrics:
        _print_metrics(metrics)
    print(f"run written to {run.path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..text.run import evaluate_run

    run_dir = run_dir_of(args, "text evaluate")
    apply_threads(args)
    _print_metrics(evaluate_run(Path(run_dir), args.eval_data))
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from ..text.run import encode_file

    apply_threads(args)
    emb = encode_file(args.run_dir, Path(args.input), Path(args.output), args.batch_size)
    print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} written to {args.output}")
    return 0
