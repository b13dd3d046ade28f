"""Offline mining speed and memory: ``mine_offline`` next to the exact kNN over the same data.

``python -m benchmarks.offline_mining --n 60000 --what knn,mine-hard,mine-semihard --rounds 2``
runs the cases in turn, round after round, in one process, and prints one JSON line per case
and round (wall and process CPU seconds; on a shared machine the CPU seconds of one process are
the comparable figure) and a last line with each case's median CPU time over the rounds and its
ratio to the kNN's. With a single case (one round) the line also holds the peak RSS in MiB above
the inputs (peak RSS is per process: measure memory one case per process). Run it with
``PYTHONPATH`` at two source trees to compare versions side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from benchmarks.memory import status_kib

CASES = ("knn", "mine-hard", "mine-semihard")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--what", default="mine-hard",
                    help=f"comma-separated cases among {', '.join(CASES)}")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    what = args.what.split(",")
    if any(w not in CASES for w in what) or args.rounds < 1:
        ap.error(f"--what takes cases among {', '.join(CASES)}; --rounds at least 1")
    torch.set_num_threads(args.threads)
    import metrickit as mk
    from metrickit.evaluation.knn import knn

    g = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(0, args.classes, (args.n,), generator=g)
    centres = torch.randn(args.classes, args.dim, generator=g)
    x = centres[labels] + 0.8 * torch.randn(args.n, args.dim, generator=g)
    base = status_kib("VmRSS") or 0
    cpu_times: dict[str, list[float]] = {w: [] for w in what}
    for r in range(args.rounds):
        for case in what:
            load = os.getloadavg()[0]
            t, cpu = time.perf_counter(), time.process_time()
            if case == "knn":
                knn(x, k=1, backend="torch")
            else:
                mk.miners.mine_offline(x, labels, case.split("-")[1])
            seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
            cpu_times[case].append(cpu_seconds)
            line = {"what": case, "round": r, "n": args.n, "dim": args.dim,
                    "classes": args.classes, "threads": args.threads,
                    "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                    "load_1min_at_start": round(load, 1)}
            if len(what) == 1 and args.rounds == 1:
                line["peak_mib_above_inputs"] = round(
                    ((status_kib("VmHWM") or 0) - base) / 1024)
            print(json.dumps(line), flush=True)
    median = {w: statistics.median(v) for w, v in cpu_times.items()}
    summary = {w: {"median_cpu_seconds": round(m, 2)} for w, m in median.items()}
    if "knn" in median:
        for w, m in median.items():
            summary[w]["ratio_to_knn"] = round(m / median["knn"], 2)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
