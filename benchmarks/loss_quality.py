"""``python -m benchmarks.loss_quality``: every registered batch loss at its defaults, same budget.

Like the tables of Musgrave, Belongie & Lim, "A Metric Learning Reality Check" (ECCV 2020), at a
much smaller scale: one network per data set, one optimiser, one budget, the loss's own default
hyper-parameters, several seeds; test MAP@R and P@1 (mean ± std over the seeds) on

* mnist5k hold-out (1,000 test images of the 10 trained digits), small CNN;
* mnist5k zero-shot (trained on 5 digits, tested on the 5 unseen ones), small CNN;
* flavia zero-shot (16 species trained, 16 unseen tested; 1,907 leaves), MLP on the features.

Results are cached per (loss, data set, seed) in the JSON file, so a rerun only trains what is
missing (``--only NAME`` retrains a loss). Prints the markdown table (or writes ``--out``);
docs/loss_quality.md holds it with the conditions of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {
    "mnist5k holdout": {"dataset": "mnist5k", "protocol": "holdout", "test_size": 1000,
                        "model": "cnn", "epochs": 5, "p": 10, "k": 4},
    "mnist5k zero-shot": {"dataset": "mnist5k", "protocol": "zero_shot", "model": "cnn",
                          "epochs": 5, "p": 5, "k": 8},
    "flavia zero-shot": {"dataset": "flavia", "protocol": "zero_shot", "model": "mlp",
                         "epochs": 20, "p": 8, "k": 4},
}
COMMON = {"embedding_dim": 64, "normalize": True, "optimizer": "adam", "lr": 1e-3}
METRICS = ("map_at_r", "precision_at_1")


def run_one(loss: str, setting: str, seed: int) -> dict[str, Any]:
    """Train one run in memory-light mode (no report) and return its test metrics."""
    from metrickit.training import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict(
            {**COMMON, **SETTINGS[setting], "loss": loss, "seed": seed,
             "output": str(Path(tmp) / "run"), "device": "cpu"}
        )
        start = time.perf_counter()
        trainer = Trainer(cfg, progress=False)
        history = trainer.fit()
        row = history[-1]
        out = {m: float(row[f"test_{m}"]) for m in METRICS}
        out["final_loss"] = float(row["loss"])
        out["seconds"] = time.perf_counter() - start
        emb = trainer.embed(trainer.x_test)
        out["collapsed"] = int(emb.shape[0] - emb.unique(dim=0).shape[0])
        return out


def summarise(cells: list[dict[str, Any]], metric: str) -> str:
    values = [c[metric] for c in cells if math.isfinite(c.get(metric, math.nan))]
    if not values:
        return "failed"
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return f"{mean:.3f} ± {std:.3f}"


def render(results: dict[str, Any], losses: list[str], seeds: list[int]) -> str:
    head = "| loss | " + " | ".join(f"{s} MAP@R | {s} P@1" for s in SETTINGS) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(SETTINGS))]
    for loss in losses:
        row = [loss]
        for setting in SETTINGS:
            cells = [results[k] for seed in seeds
                     if (k := f"{loss}|{setting}|{seed}") in results]
            row += [summarise(cells, m) for m in METRICS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import torch

    from metrickit.losses import list_losses

    p = argparse.ArgumentParser(prog="python -m benchmarks.loss_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--losses", nargs="+", help="registered names [all]")
    p.add_argument("--only", nargs="+", default=[], help="retrain these losses (ignore cache)")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/loss_quality.json")
    p.add_argument("--out", help="write the markdown table here [print it]")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    losses = args.losses or list_losses()
    for loss in losses:
        for setting in args.settings:
            for seed in args.seeds:
                key = f"{loss}|{setting}|{seed}"
                if key in results and loss not in args.only:
                    continue
                try:
                    results[key] = run_one(loss, setting, seed)
                except Exception as exc:  # a loss that cannot train is a row of the table too
                    results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(key, results[key], flush=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
                os.replace(tmp, path)
    table = render(results, losses, args.seeds)
    if args.out:
        Path(args.out).write_text(table)
    else:
        print(table)


if __name__ == "__main__":
    main()
