"""``python -m benchmarks.proxy_interleaved``: the proxy losses against PML, timed interleaved in
one process.

A proxy loss's forward + backward takes milliseconds, so the process-per-case runner
(:mod:`benchmarks.run`) sees mostly the load of the moment. Here both implementations run in one
process on the same inputs as that runner (P×K batch, labels mod 100 classes, shared class
vectors), alternating (ours, PML, PML, ours, ...) so that background load hits both alike. Each
time is the median over the calls of the process's CPU time (``time.process_time``: with one
thread it equals the wall time of an idle machine, and waiting for a core does not count); the
wall-time ratio is printed beside it. The first call of each checks that the values agree.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Callable

import torch

from .cases import PROXY_TASKS
from .gemm_ratio import timed
from .inputs import PROXY_CLASSES, clustered
from .machine import describe
from .ours import proxy
from .peers import pml_proxy


def steps(task: str, batch: int, dim: int, k: int) -> tuple[Callable[[], float], ...]:
    """(ours, PML) forward + backward steps of ``task``, each returning the loss value."""
    x, labels = clustered(batch, k, dim)
    labels = labels % PROXY_CLASSES

    def step(fn: Callable) -> Callable[[], float]:
        leaf = x.clone().requires_grad_(True)

        def run() -> float:
            leaf.grad = None
            loss = fn(leaf, labels)
            loss.backward()
            return loss.item()

        return run

    return step(proxy(task)(0.0)), step(pml_proxy(task)(0.0))


def measure(task: str, batch: int, dim: int, k: int, calls: int) -> dict[str, float]:
    """Median CPU and wall seconds of ours and PML (alternating), and their first values."""
    ours, pml = steps(task, batch, dim, k)
    out = {"ours_value": ours(), "pml_value": pml()}  # also the warm-up
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "pml": []}
    for i in range(calls):
        for name, step in (("ours", ours), ("pml", pml))[:: 1 if i % 2 == 0 else -1]:
            times[name].append(timed(step))
    for name, ts in times.items():
        out[f"{name}_cpu"] = statistics.median(t[0] for t in ts)
        out[f"{name}_wall"] = statistics.median(t[1] for t in ts)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(PROXY_TASKS), choices=PROXY_TASKS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=4, help="samples per class in the batch")
    parser.add_argument("--calls", type=int, default=40, help="timed calls of each")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = describe("cpu")
    print(f"D={args.dim} K={args.k}, {PROXY_CLASSES} classes, float32, {args.threads} thread(s), "
          f"{args.calls} alternating calls each; {info['cpu']} ({os.cpu_count()} logical cores), "
          f"torch {info['torch']}, load average at start {os.getloadavg()[0]:.2f}")
    print()
    print("| loss | B | metrickit CPU ms | PML CPU ms | ratio (CPU) | ratio (wall) | values |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for task in args.tasks:
        for batch in args.sizes:
            r = measure(task, batch, args.dim, args.k, args.calls)
            same = math.isclose(r["ours_value"], r["pml_value"], rel_tol=1e-5, abs_tol=1e-6)
            print(f"| {task} | {batch} | {r['ours_cpu'] * 1e3:.2f} | {r['pml_cpu'] * 1e3:.2f} | "
                  f"{r['ours_cpu'] / r['pml_cpu']:.2f}× | {r['ours_wall'] / r['pml_wall']:.2f}× | "
                  f"{'equal' if same else 'DIFFER'} ({r['ours_value']:.6g}) |", flush=True)
    print()
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
