"""``python -m benchmarks.trainer_overhead``: per-step time of ``mk.Trainer`` against a
hand-written loop on the same network, data and P×K batches, side by side in one process.

Both read their batches by indexing in-memory tensors with the same sampler's indices (the same
data "loading"), run forward, loss, backward and an Adam step, and fetch the loss to the host
once per step. Runs alternate (hand, trainer, hand, ...) and the median per-step time of each
is reported, so background load hits both alike. The trainer also computes the triplet
difficulty shares of every batch for triplet losses (its progress statistics): shown separately.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import metrickit as mk
from metrickit.data import load_dataset, split_dataset
from metrickit.losses import get_loss
from metrickit.models import build_model
from metrickit.samplers import PKSampler


def hand_loop(model, loss_fn, x, y, sampler, lr) -> float:
    """Seconds per step of the plain loop."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for batch in sampler:
        idx = torch.as_tensor(batch)
        embeddings = model(x[idx])
        loss = loss_fn(embeddings, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return (time.perf_counter() - start) / len(sampler)


def trainer_loop(model, loss_fn, train, steps, p, k, lr) -> float:
    """Seconds per step of ``Trainer.fit`` (one epoch of ``steps`` steps, in memory)."""
    cfg = mk.TrainConfig(p=p, k=k, batches_per_epoch=steps, epochs=1, output=None, device="cpu")
    trainer = mk.Trainer(cfg, model=model, train=train, loss=loss_fn, progress=False,
                         optimizer=lambda groups: torch.optim.Adam(groups, lr=lr))  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    train, _ = split_dataset(data, "holdout", 1000, seed=0)
    p, k, lr = 10, 4, 3e-3
    sampler = PKSampler(train.y, p=p, k=k, num_batches=args.steps, seed=0)
    print(f"mnist5k train split {tuple(train.x.shape)}, cnn (64-d), P×K = {p}×{k}, "
          f"{args.steps} steps × {args.repeats} repeats, {args.threads} thread(s)")
    print(f"{'loss':<24} {'hand ms/step':>12} {'trainer ms/step':>16} {'overhead':>9}")
    for name, make_loss in [
        ("contrastive", lambda: get_loss("contrastive")),
        ("triplet (hard)", lambda: get_loss("triplet", mining="hard")),
    ]:
        hand, ours = [], []
        for _ in range(args.repeats):
            for which in ("hand", "trainer"):
                torch.manual_seed(0)
                model = build_model("cnn", (1, 28, 28), embedding_dim=64, normalize=True)
                if which == "hand":
                    hand.append(hand_loop(model, make_loss(), train.x, train.y, sampler, lr))
                else:
                    ours.append(trainer_loop(model, make_loss(), train, args.steps, p, k, lr))
        h, t = statistics.median(hand), statistics.median(ours)
        print(f"{name:<24} {h * 1e3:>12.2f} {t * 1e3:>16.2f} {100 * (t / h - 1):>+8.1f}%")


if __name__ == "__main__":
    main()
