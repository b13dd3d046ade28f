"""``python -m benchmarks.amp_quality``: the demo config (``metrickit demo``: small CNN, MNIST-5k,
batch-hard triplet, 8 epochs) trained in float32 and with bf16 autocast on the CPU, same seeds;
test MAP@R and P@1 of each, and the training time."""

from __future__ import annotations

import argparse
import time

import torch

import metrickit as mk
from metrickit.cli.demo import DEMO_CONFIG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'precision':>9} {'seed':>4} {'MAP@R':>7} {'P@1':>7} {'fit s':>7}")
    for seed in args.seeds:
        for precision in ("32", "bf16"):
            cfg = mk.TrainConfig.from_dict({**DEMO_CONFIG, "seed": seed, "device": "cpu",
                                            "precision": precision, "output": None})  # fmt: skip
            trainer = mk.Trainer(cfg, progress=False)
            start = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - start
            m = trainer.evaluate()["trained"]
            print(f"{precision:>9} {seed:>4} {m['map_at_r']:>7.4f} {m['precision_at_1']:>7.4f} "
                  f"{seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
