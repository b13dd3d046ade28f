"""``python -m benchmarks.run``: metrickit against its peers, in time and peak memory.

Full grid: B ∈ {128 … 8192} × K ∈ {4, 32} × D ∈ {128, 512} for the three triplet losses, miners
at B=512, evaluation on 10k and 100k × 128. ``--quick``: B ∈ {128, 512, 1024}, K=4, D=128,
evaluation on 10k only. Writes the markdown report (``--out``), its raw data (same name,
``.json``) and the scaling plot (batch-all, else the first loss task measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .cases import (
    EVAL_TASK,
    IMPL_NAMES,
    IMPLS,
    LOSS_TASKS,
    MINER_TASKS,
    PROXY_TASKS,
    TASKS,
    TEXT_TASKS,
    Case,
)
from .checks import check_values
from .machine import describe, load_average
from .plot import plot_scaling
from .report import render
from .runner import GIB, gib, precheck, run_isolated
from .worker import Settings

FULL_SIZES = (128, 512, 1024, 2048, 4096, 8192)
QUICK_SIZES = (128, 512, 1024)
EVAL_CLASSES = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small grid, 3 repeats")
    p.add_argument("--sizes", type=int, nargs="+", help="batch sizes B (multiples of every K)")
    p.add_argument("--ks", type=int, nargs="+", help="samples per class K [4 32; quick: 4]")
    p.add_argument("--dims", type=int, nargs="+", help="embedding sizes D [128 512; quick: 128]")
    p.add_argument("--eval-sizes", type=int, nargs="*",
                   help="evaluation set sizes N, 1000 classes, D=128 [10000 100000; quick: 10000]")
    p.add_argument("--miner-size", type=int, default=512, help="B for the miner benchmark [512]")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--impls", nargs="+", choices=IMPL_NAMES, default=list(IMPL_NAMES))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] [cpu]")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads [2]")
    p.add_argument("--repeats", type=int, help="timed runs per case [5; quick: 3]")
    p.add_argument("--budget", type=float, default=20.0,
                   help="stop repeating once the timed runs of a case add up to this many s [20]")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per case [300]")
    p.add_argument("--max-gib", type=float, default=8.0,
                   help="skip cases whose memory estimate is above this [8]")
    p.add_argument("--kill-gib", type=float,
                   help="kill a case whose resident memory passes this [max-gib + 3]")
    p.add_argument("--out", default="docs/BENCHMARKS.md", help="markdown report [%(default)s]")
    p.add_argument("--plot", default="docs/benchmark_batch_all.png", help="[%(default)s]")
    p.add_argument("--preliminary", action="store_true",
                   help="label the report PRELIMINARY (implied by --quick)")
    return p.parse_args(argv)


def build_grid(a: argparse.Namespace) -> list[Case]:
    sizes = a.sizes or (QUICK_SIZES if a.quick else FULL_SIZES)
    ks = a.ks or ((4,) if a.quick else (4, 32))
    dims = a.dims or ((128,) if a.quick else (128, 512))
    evals = a.eval_sizes if a.eval_sizes is not None else ((10_000,) if a.quick else
                                                           (10_000, 100_000))
    cases = []
    for task in a.tasks:
        impls = [n for n in a.impls if (task, n) in IMPLS]
        if task in PROXY_TASKS:  # B from 512, 100 classes, D=128 unless --dims
            cases += [Case(task, n, b, 4, d) for d in (a.dims or (128,)) for n in impls
                      for b in sorted(sizes) if b >= min(512, max(sizes)) and b % 4 == 0]
        elif task in TEXT_TASKS:  # B pairs (K unused, recorded as 1), D=128 unless --dims;
            # the impls of one size back to back, so that a changing load hits them alike
            cases += [Case(task, n, b, 1, d) for d in (a.dims or (128,)) for b in sorted(sizes)
                      for n in impls]
        elif task in LOSS_TASKS:
            cases += [Case(task, n, b, k, d) for d in dims for k in ks for n in impls
                      for b in sorted(sizes) if b % k == 0 and b > k]
        elif task in MINER_TASKS:
            cases += [Case(task, n, a.miner_size, k, 128) for k in ks for n in impls]
        elif task == EVAL_TASK:
            cases += [Case(task, n, size, size // EVAL_CLASSES, 128) for size in evals
                      for n in impls]
    return cases


def run_grid(cases: list[Case], settings: Settings, a: argparse.Namespace,
             grad_dir: str) -> list[dict[str, Any]]:
    max_bytes, kill_gib = a.max_gib * GIB, a.kill_gib or a.max_gib + 3
    failed: dict[tuple, str] = {}  # (task, impl, k, dim) -> size that failed
    results = []
    for i, case in enumerate(cases, 1):
        line = f"[{i}/{len(cases)}] {case.task} {case.impl} B={case.batch} K={case.k} D={case.dim}"
        print(line, end=" ", file=sys.stderr, flush=True)
        series = (case.task, case.impl, case.k, case.dim)
        rec = precheck(case, max_bytes)
        if rec is None and series in failed:
            rec = {**case.to_dict(), "status": "skipped", "reason": failed[series]}
        if rec is None:
            rec = run_isolated(case, settings, grad_dir, a.timeout, kill_gib * GIB)
            if rec["status"] in ("timeout", "killed"):
                failed[series] = f"B={case.batch} already {rec['status']}"
        msg = (f"{rec['time_s']:.4g} s, {gib(rec['peak_bytes'])}" if rec["status"] == "ok"
               else f"{rec['status']}: {rec['reason']}")
        print(msg, file=sys.stderr, flush=True)
        results.append(rec)
    return results


def _float64_recheck(settings: Settings, a: argparse.Namespace, grad_dir: str):
    """``recheck(case)``: the case's value and gradient once more, in float64 (cached)."""
    f64 = replace(settings, dtype="float64", repeats=0)
    kill = (a.kill_gib or a.max_gib + 3) * GIB
    done: dict[Case, dict[str, Any]] = {}

    def recheck(case: Case) -> dict[str, Any]:
        if case not in done:
            print(f"float64 re-check: {case.task} {case.impl} B={case.batch} K={case.k} "
                  f"D={case.dim}", file=sys.stderr, flush=True)
            done[case] = run_isolated(case, f64, grad_dir, a.timeout, kill)
        return done[case]

    return recheck


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    settings = Settings(device=a.device, threads=a.threads,
                        repeats=a.repeats or (3 if a.quick else 5), budget_s=a.budget)
    cases = build_grid(a)
    meta: dict[str, Any] = {
        "command": "python -m benchmarks.run " + shlex.join(argv if argv is not None
                                                            else sys.argv[1:]),
        "machine": describe(a.device),
        "settings": asdict(settings),
        "preliminary": a.quick or a.preliminary,
        "max_gib": a.max_gib,
        "kill_gib": a.kill_gib or a.max_gib + 3,
        "timeout_s": a.timeout,
        "load_start": load_average(),
    }
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as grad_dir:
        results = run_grid(cases, settings, a, grad_dir)
        check_values(results, _float64_recheck(settings, a, grad_dir))
    for r in results:
        r.pop("grad_path", None)
    meta.update(load_end=load_average(), wall_s=time.monotonic() - start)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = {r["task"] for r in results if r["status"] == "ok"}
    plot_task = next((t for t in ("batch_all", *LOSS_TASKS) if t in measured), None)
    if a.plot and plot_task and plot_scaling(results, a.plot, task=plot_task):
        meta.update(plot=os.path.relpath(a.plot, out.parent), plot_task=plot_task)
    text = render(results, meta)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
