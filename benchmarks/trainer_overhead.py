"""``python -m benchmarks.trainer_overhead``: per-step time of ``mk.Trainer`` against a
hand-written loop on the same network, data and P×K batches, side by side in one process.

Both read their batches by indexing in-memory tensors with the same sampler's indices (the same
data "loading"), run forward, loss, backward and an Adam step, and fetch the loss to the host
once per step. Runs alternate (hand, trainer, hand, ...) and the median per-step time of each
is reported, so background load hits both alike. Two clocks: wall time, and the CPU time of the
process (``time.process_time``; with one thread it counts only this process's work, so it is
far less inflated by other processes on a loaded machine than wall time, though not immune to
their cache pressure). For triplet losses the trainer also computes the triplet-difficulty
shares of every batch (its progress and history statistics); the "no stats" run switches them
off to show their cost separately.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import metrickit as mk
from metrickit.data import load_dataset, split_dataset
from metrickit.losses import get_loss
from metrickit.models import build_model
from metrickit.samplers import PKSampler


def _timed(run: Callable[[], None], steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of ``run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def hand_loop(model, loss_fn, x, y, sampler, lr) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the plain loop."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def run() -> None:
        for batch in sampler:
            idx = torch.as_tensor(batch)
            embeddings = model(x[idx])
            loss = loss_fn(embeddings, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()

    return _timed(run, len(sampler))


def trainer_loop(model, loss_fn, train, steps, p, k, lr, stats=True) -> tuple[float, float]:
    """(wall, CPU) seconds per step of ``Trainer.fit`` (one epoch of ``steps`` steps, in
    memory); ``stats=False`` switches the triplet-difficulty statistics off."""
    cfg = mk.TrainConfig(p=p, k=k, batches_per_epoch=steps, epochs=1, output=None, device="cpu")
    trainer = mk.Trainer(cfg, model=model, train=train, loss=loss_fn, progress=False,
                         optimizer=lambda groups: torch.optim.Adam(groups, lr=lr))  # fmt: skip
    if not stats:
        trainer.difficulty_options = None
    return _timed(trainer.fit, steps)


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
    print(f"{'loss':<16} {'run':<18} {'wall ms/step':>12} {'overhead':>9} "
          f"{'CPU ms/step':>12} {'overhead':>9}")
    for name, make_loss, runs in [
        ("contrastive", lambda: get_loss("contrastive"), ("hand", "trainer")),
        ("triplet (hard)", lambda: get_loss("triplet", mining="hard"),
         ("hand", "trainer", "trainer, no stats")),
    ]:  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {run: [] for run in runs}
        for _ in range(args.repeats):
            for run in runs:
                torch.manual_seed(0)
                model = build_model("cnn", (1, 28, 28), embedding_dim=64, normalize=True)
                if run == "hand":
                    result = hand_loop(model, make_loss(), train.x, train.y, sampler, lr)
                else:
                    result = trainer_loop(model, make_loss(), train, args.steps, p, k, lr,
                                          stats=run == "trainer")  # fmt: skip
                times[run].append(result)
        medians = {run: [statistics.median(t[i] for t in times[run]) for i in (0, 1)]
                   for run in runs}  # fmt: skip
        for run in runs:
            cells = ""
            for clock in (0, 1):
                t, h = medians[run][clock], medians["hand"][clock]
                change = "" if run == "hand" else f"{100 * (t / h - 1):+.1f}%"
                cells += f" {t * 1e3:>12.2f} {change:>9}"
            print(f"{name:<16} {run:<18}{cells}", flush=True)


if __name__ == "__main__":
    main()
