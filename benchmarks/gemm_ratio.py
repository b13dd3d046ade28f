"""``python -m benchmarks.gemm_ratio``: forward + backward time of every batch loss against the
matrix-product floor, side by side in one process.

The floor is the three B×B×D matrix products any loss on the Gram matrix needs: S = X Xᵀ
(forward) and the two products of its backward, G X and Gᵀ X for a [B, B] gradient G. No loss
built on the pairwise similarities can be faster (up to its elementwise passes). Runs alternate
(floor, loss, floor, loss, ...) so that background load hits both alike; each loss's ratio is
the median of its times over the median of the floor times taken beside it. Times are the
process's CPU time (``time.process_time``: with one thread it equals the wall time of an idle
machine, and a loaded machine's waiting does not count) and, beside it, the wall time. Input: random
Gaussian rows scaled to unit norm, P×K labels (K samples per class, shuffled). Peak memory is
the rise of the resident set size over one forward + backward (see :mod:`benchmarks.memory`).

Besides the registered names, ``mnrl_pairs[_symmetric][_dense]`` time the (anchors, positives)
form of the multiple negatives ranking loss (the rows as anchors, the rows shifted by one as
their positives: B×B logits like the batch losses; ``_dense``: ``algorithm="dense"``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metrickit.functional import multiple_negatives_ranking_loss
from metrickit.losses import ProxyLoss, get_loss, list_losses
from metrickit.losses._registry import get_loss_class

from .machine import describe
from .memory import PeakMemory

PAIR_FORMS = {
    "mnrl_pairs": {},
    "mnrl_pairs_symmetric": {"symmetric": True},
    "mnrl_pairs_dense": {"algorithm": "dense"},
    "mnrl_pairs_symmetric_dense": {"symmetric": True, "algorithm": "dense"},
}


def batch_losses() -> list[str]:
    """Registered losses that score a batch against itself (proxy/classification losses are
    not: their cost is B×C, not B×B)."""
    return [name for name in list_losses() if not issubclass(get_loss_class(name), ProxyLoss)]


def inputs(batch: int, dim: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm Gaussian rows [batch, dim] and P×K labels (shuffled)."""
    if batch % k:
        raise SystemExit(f"--batch must be a multiple of --k, got {batch} and {k}")
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    labels = torch.arange(batch // k).repeat_interleave(k)[torch.randperm(batch, generator=g)]
    return x, labels


def floor_step(x: torch.Tensor) -> Callable[[], object]:
    """The three B×B×D products: S = X Xᵀ, then G X and Gᵀ X with G = S."""

    def step() -> object:
        s = x @ x.T
        return s @ x, s.T @ x

    return step


def loss_step(name: str, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    """Forward + backward of the registered loss ``name`` at its defaults (or of a pair form)."""
    leaf = x.clone().requires_grad_(True)
    if name in PAIR_FORMS:
        def loss_fn(rows, _labels):
            return multiple_negatives_ranking_loss(rows, rows.roll(1, 0), **PAIR_FORMS[name])
    else:
        loss_fn = get_loss(name)

    def step() -> object:
        leaf.grad = None
        loss = loss_fn(leaf, labels)
        loss.backward()
        return leaf.grad

    return step


def timed(step: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(name: str, x, labels, repeats: int) -> dict[str, float]:
    """Median CPU and wall seconds of the loss and of the floor (alternating), and the loss's
    peak bytes."""
    floor, loss = floor_step(x), loss_step(name, x, labels)
    loss()  # warm-up
    with PeakMemory(torch.device("cpu")) as mem:
        loss()
    floors, losses = [], []
    for _ in range(repeats):
        floors.append(timed(floor))
        losses.append(timed(loss))
    out: dict[str, float] = {"peak_bytes": mem.bytes}
    for i, clock in enumerate(("cpu", "wall")):
        f = statistics.median(t[i] for t in floors)
        t = statistics.median(t[i] for t in losses)
        out.update({f"floor_{clock}": f, f"loss_{clock}": t, f"ratio_{clock}": t / f})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=4, help="samples per class")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="+", default=None,
                        help="registered names or mnrl_pairs[_symmetric][_dense] (default: every "
                             "batch loss)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.losses or batch_losses()
    unknown = sorted(set(names) - set(list_losses()) - set(PAIR_FORMS))
    if unknown:
        raise SystemExit(f"unknown loss(es): {', '.join(unknown)}; valid: {list_losses()}")
    x, labels = inputs(args.batch, args.dim, args.k, args.seed)
    info = describe("cpu")
    print(f"B={args.batch} D={args.dim} K={args.k}, float32, {args.threads} thread(s), "
          f"{args.repeats} alternating runs; {info['cpu']} ({os.cpu_count()} logical cores), "
          f"torch {info['torch']}, load average at start {os.getloadavg()[0]:.2f}")
    print()
    print("| loss | floor CPU ms | loss CPU ms | ratio (CPU) | ratio (wall) | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = measure(name, x, labels, args.repeats)
        print(f"| {name} | {r['floor_cpu'] * 1e3:.0f} | {r['loss_cpu'] * 1e3:.0f} | "
              f"{r['ratio_cpu']:.2f}× | {r['ratio_wall']:.2f}× | "
              f"{r['peak_bytes'] / 2**20:.0f} MiB |", flush=True)
    print()
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
