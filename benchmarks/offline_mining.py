"""Offline mining speed and memory: ``mine_offline`` next to the exact kNN over the same data.

One case per process (peak RSS is per process): ``python -m benchmarks.offline_mining --n 30000
--dim 64 --classes 10 --what mine`` prints one JSON line (wall and process CPU seconds, peak RSS in
MiB above the inputs; on a shared machine the CPU seconds are the comparable figure). Run it
with ``PYTHONPATH`` at two source trees to compare versions side by side.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.memory import status_kib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--what", choices=("mine-hard", "mine-semihard", "knn"), default="mine-hard")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import metrickit as mk
    from metrickit.evaluation.knn import knn

    g = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(0, args.classes, (args.n,), generator=g)
    centres = torch.randn(args.classes, args.dim, generator=g)
    x = centres[labels] + 0.8 * torch.randn(args.n, args.dim, generator=g)
    base = status_kib("VmRSS") or 0
    t, cpu = time.perf_counter(), time.process_time()
    if args.what == "knn":
        knn(x, k=1, backend="torch")
    else:
        a, _, _ = mk.miners.mine_offline(x, labels, args.what.split("-")[1])
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    peak = ((status_kib("VmHWM") or 0) - base) / 1024
    print(json.dumps({"what": args.what, "n": args.n, "dim": args.dim, "classes": args.classes,
                      "threads": args.threads, "seconds": round(seconds, 2),
                      "cpu_seconds": round(cpu_seconds, 2),
                      "peak_mib_above_inputs": round(peak)}))


if __name__ == "__main__":
    main()
