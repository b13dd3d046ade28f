"""Collapse rate of a loss on mnist5k: test images mapped to an embedding shared with another.

``python -m benchmarks.lifted_collapse --seeds 0 1 2 3 4 --epochs 5`` trains ``metrickit train
--dataset mnist5k --loss lifted_structure`` once per seed (default: CNN, P×K = 10×4, as the
mnist5k hold-out setting of benchmarks/loss_quality.py; ``--model mlp --p 8 --k 4`` for the CLI's
defaults) and prints, per seed, how many test images share a bit-identical embedding with another
test image, and MAP@R. ``--loss-param margin=0.5`` style options change the loss
(``--loss-param negatives=sum``: the paper's log-sum-exp, the default before the fix).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from metrickit.cli.train import parse_loss_params
from metrickit.training import TrainConfig, Trainer


def shared_embeddings(emb: torch.Tensor) -> int:
    """Number of rows equal, bit for bit, to at least one other row."""
    _, inverse, counts = torch.unique(emb, dim=0, return_inverse=True, return_counts=True)
    return int((counts[inverse] > 1).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loss", default="lifted_structure")
    ap.add_argument("--loss-param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--protocol", default="holdout", choices=("holdout", "zero_shot"))
    ap.add_argument("--no-normalize", dest="normalize", action="store_false")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = parse_loss_params(args.loss_param)
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(dataset="mnist5k", model=args.model, loss=args.loss,
                              loss_params=params, epochs=args.epochs, seed=seed, output=out,
                              p=args.p, k=args.k, protocol=args.protocol,
                              normalize=args.normalize)
            trainer = Trainer(cfg, progress=False)
            history = trainer.fit()
            emb = trainer.embed(trainer.x_test)
            metrics = trainer._metrics(trainer.model)
        print(json.dumps({
            "loss": args.loss, "params": params, "protocol": args.protocol, "p": args.p,
            "k": args.k, "normalize": args.normalize, "seed": seed, "epochs": args.epochs,
            "test_images": emb.shape[0], "sharing_an_embedding": shared_embeddings(emb),
            "distinct_embeddings": int(torch.unique(emb, dim=0).shape[0]),
            "final_loss": round(history[-1].get("loss", float("nan")), 4),
            "map_at_r": round(metrics.get("map_at_r", float("nan")), 4),
        }), flush=True)


if __name__ == "__main__":
    main()
