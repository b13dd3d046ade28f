"""Markdown report: machine, method, one table per task, cross-checks and the targets."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .cases import IMPL_NAMES, IMPLS, TASK_TITLES, TASKS
from .checks import (
    COUNT_RTOL,
    F64_GRAD_RTOL,
    F64_VALUE_RTOL,
    FLIP_ROWS,
    GRAD_RTOL,
    METRIC_ATOL,
    VALUE_RTOL,
)
from .plot import NAMES
from .runner import gib

_PEER_CONFIG = """\
Peer configurations (all Euclidean, margin 0.2, no embedding normalisation):

- **PML** (pytorch-metric-learning): `distance=LpDistance(normalize_embeddings=False, p=2,
  power=1)` for every loss and miner. Batch-all = `TripletMarginLoss` with no miner (all
  triplets, default `AvgNonZeroReducer`: mean over triplets with loss > 0). Batch-hard =
  `BatchHardMiner` + `TripletMarginLoss(reducer=MeanReducer())` (mean over anchors, as in
  Hermans et al.). Semi-hard = `TripletMarginMiner(type_of_triplets="semihard")` +
  `TripletMarginLoss`: a *different definition* (every triplet with 0 < d(a,n) − d(a,p) ≤ m,
  not the TF-Addons / FaceNet choice of one negative per positive pair), so only its time and
  memory are compared. Evaluation = `AccuracyCalculator(k="max_bin_count")` with its default
  faiss `IndexFlatL2` k-NN; the query itself is excluded.
- **ST** (sentence-transformers): `BatchAllTripletLoss`, `BatchHardTripletLoss`,
  `BatchSemiHardTripletLoss` built with `model=None`; their `batch_*_triplet_loss(labels,
  embeddings)` methods are called directly (ST's semi-hard follows TF-Addons).
- **ST** losses over pairs (`multiple_negatives_ranking`, `multiple_negatives_symmetric`,
  `cosent`, `angle`, `cosine_similarity`): built with `model=None` at their defaults (scale 20,
  cosine: metrickit's defaults too) and called on the embeddings,
  `compute_loss_from_embeddings([x1, x2], scores)`. The symmetric one is
  `MultipleNegativesRankingLoss(directions=("query_to_doc", "doc_to_query"),
  partition_mode="per_direction")`, which ST documents as identical to its deprecated
  `MultipleNegativesSymmetricRankingLoss`. Inputs: B pairs of D-dim embeddings (K unused,
  shown as 1), no duplicate positives; scored pairs get 26 score levels in [0, 1]
  (`benchmarks/inputs.py`, `text_pairs`); the gradient compared is that of both sides.
- **torch**: the naive baseline in `benchmarks/naive.py`: a dense B×B×B cube for batch-all and
  semi-hard, B×B masked max/min for batch-hard.
"""

_METHOD = """\
Every (task, implementation, size) case runs in a fresh Python process on identical
inputs (seeded P×K batches: P = B/K classes, centres N(0, 0.25/D), samples + N(0, 1/D);
retrieval sets: 1000 classes, centres N(0, 0.4225/D), samples + N(0, 1/D), P@1 ≈ 0.7 at 10k).
Time = median of up to {repeats} runs after one warm-up (fewer when one run takes more than
{budget:.0f} s), forward + backward for the losses, `torch.set_num_threads({threads})`,
`torch.cuda.synchronize()` around each run on CUDA. Peak memory = peak resident set size
(VmHWM, reset after imports and input creation) minus the resident size at that point, for one
run after the warm-up; on CUDA, `torch.cuda.max_memory_allocated` above the allocation at that
point. Cases whose memory estimate (read off each algorithm, see `benchmarks/peers.py`) is above
{max_gib:g} GiB are skipped, and a process is killed when its resident memory passes
{kill_gib:g} GiB or it runs past {timeout:.0f} s; a larger size of an implementation that
already failed is not tried.
"""


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_ratio(x: float) -> str:
    return f"{x:.2g}×" if x < 10 else f"{x:.0f}×"


def _cell(r: dict[str, Any] | None, ours: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return f"{r['status']}: {r['reason']}" if r["status"] != "unavailable" else "n/a"
    time, mem = _fmt_time(r["time_s"]), gib(r["peak_bytes"])
    if ours is not None and ours is not r and ours["status"] == "ok":
        time += f" ({_fmt_ratio(r['time_s'] / ours['time_s'])})"
        mem += f" ({_fmt_ratio(r['peak_bytes'] / max(ours['peak_bytes'], 2**20))})"
    mark = {True: " ✓", False: " ✗", None: " ≠def"}[r["check"]["ok"]] if "check" in r else ""
    return f"{time} · {mem}{mark}"


def _table(task: str, results: list[dict[str, Any]]) -> list[str]:
    rows: dict[tuple[int, int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        rows[(r["batch"], r["k"], r["dim"])][r["impl"]] = r
    impls = [n for n in IMPL_NAMES if any(n in row for row in rows.values())]
    size = "N" if task == "eval" else "B"
    per = "per class" if task == "eval" else "K"
    head = [size, per, "D"] + [f"{NAMES[n]}: {IMPLS[(task, n)].label}" for n in impls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (b, k, d), row in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        ours = row.get("metrickit")
        cells = [_cell(row.get(n), ours) for n in impls]
        lines.append("| " + " | ".join([str(b), str(k), str(d), *cells]) + " |")
    lines += ["", *_check_lines(task, results)]
    return lines


def _check_lines(task: str, results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        c = r.get("check")
        if c and c["ok"] is not None:
            tag = "agrees" if c["ok"] else "**DISAGREES**"
            out.append(f"- {NAMES[r['impl']]} vs {NAMES[c['ref']]}, B={r['batch']} K={r['k']} "
                       f"D={r['dim']}: {tag} ({c['detail']})")
    for n in IMPL_NAMES:
        spec = IMPLS.get((task, n))
        if spec and spec.note and any(r["impl"] == n for r in results):
            out.append(f"- {NAMES[n]}: {spec.note}")
    return out + [""] if out else []


def _find(results: list[dict[str, Any]], task: str, impl: str, b: int, k: int, d: int):
    for r in results:
        if (r["task"], r["impl"], r["batch"], r["k"], r["dim"]) == (task, impl, b, k, d):
            return r if r["status"] == "ok" else None
    return None


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The project's performance targets (2-core CPU, D=128, K=4), each met / missed / n.m."""
    def both(task: str, b: int, k: int = 4, d: int = 128):
        return _find(results, task, "metrickit", b, k, d), _find(results, task, "pml", b, k, d)

    out = []
    ours, pml = both("batch_all", 1024)
    if ours and pml:
        t, m = pml["time_s"] / ours["time_s"], pml["peak_bytes"] / max(ours["peak_bytes"], 1)
        ok = t >= 20 and m >= 10
        out.append(f"batch-all, B=1024: ≥ 20× faster than PML with ≤ 1/10 of its memory — "
                   f"{'met' if ok else '**MISSED**'}: {t:.1f}× faster, {m:.1f}× less memory")
    else:
        out.append("batch-all, B=1024 vs PML — not measured")
    ours = _find(results, "batch_all", "metrickit", 8192, 4, 128)
    if ours:
        ok = ours["time_s"] < 2 and ours["peak_bytes"] < 2 * 2**30
        out.append(f"batch-all, B=8192: under 2 s and 2 GiB — {'met' if ok else '**MISSED**'}: "
                   f"{_fmt_time(ours['time_s'])}, {gib(ours['peak_bytes'])}")
    else:
        out.append("batch-all, B=8192 — not measured")
    for task in ("batch_hard", "semihard"):
        ours, pml = both(task, 512)
        if ours and pml:
            ok = ours["time_s"] < pml["time_s"]
            out.append(f"{task}, B=512: faster than PML miner + loss — "
                       f"{'met' if ok else '**MISSED**'}: {_fmt_time(ours['time_s'])} vs "
                       f"{_fmt_time(pml['time_s'])}")
        else:
            out.append(f"{task}, B=512 vs PML — not measured")
    n = max((r["batch"] for r in results if r["task"] == "eval"), default=0)
    ours, pml = both("eval", n, n // 1000 if n else 0)
    if ours and pml:
        same = pml.get("check", {}).get("ok")
        ok = ours["time_s"] <= pml["time_s"] and same
        out.append(f"evaluation, {n} × 128: no slower than PML, identical values — "
                   f"{'met' if ok else '**MISSED**'}: {_fmt_time(ours['time_s'])} vs "
                   f"{_fmt_time(pml['time_s'])}, values {'identical' if same else 'DIFFER'}")
    else:
        out.append("evaluation vs PML — not measured")
    return [f"- {line}" for line in out]


def _load(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    s = meta["settings"]
    load = f"{_load(meta.get('load_start'))} → {_load(meta.get('load_end'))}"
    lines = ["# Benchmarks", ""]
    if meta.get("preliminary"):
        lines += [f"> **PRELIMINARY** — measured with {s['threads']} thread(s) while other jobs "
                  f"shared the CPU (1-minute load average {load}); timings are noisy. Re-run "
                  "the full grid (`python -m benchmarks.run`) on a quiet machine.", ""]
    lines += [
        "Install the peers with `.venv/bin/pip install -e '.[bench]'` (pytorch-metric-learning, "
        "faiss-cpu, sentence-transformers; none of them replaces torch). Run `python -m "
        "benchmarks.run` for the full grid (about 40 minutes on an idle 2-core machine, most of "
        "it in the peers' large cases), `--quick` for a subset (about 7 minutes), `--device cuda` "
        "on a GPU, `--help` for the rest. This file was generated by:", "",
        "```", meta["command"], "```", "",
        "## Machine", "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
        f"{m['ram_gib']:.0f} GiB RAM" + (f"; GPU: {m['gpu']}" if m.get("gpu") else ""),
        f"- device: {m['device']}, threads: {s['threads']}, load average {load}, "
        f"wall time {meta['wall_s']:.0f} s",
        f"- Python {m['python']}, torch {m['torch']}, metrickit {m['metrickit']} "
        f"(commit {m['metrickit_commit']}), pytorch-metric-learning "
        f"{m['pytorch-metric-learning']}, sentence-transformers {m['sentence-transformers']}, "
        f"faiss-cpu {m['faiss-cpu']}",
        "", "## Method", "",
        _METHOD.format(repeats=s["repeats"], budget=s["budget_s"], threads=s["threads"],
                       max_gib=meta["max_gib"], kill_gib=meta["kill_gib"],
                       timeout=meta["timeout_s"]),
        _PEER_CONFIG,
        "Cells: time · peak memory; (n×) = that implementation ÷ metrickit (above 1: metrickit "
        "is faster / smaller); ✓ / ✗ = same result as metrickit: loss value within "
        f"{VALUE_RTOL:g} and gradient within {GRAD_RTOL:g} (relative), mined-triplet counts within "
        f"{COUNT_RTOL:g} (relative), retrieval metrics within {METRIC_ATOL:g}; ≠def = different "
        "definition, not compared. Hard and semi-hard mining pick one negative, and at a float32 "
        "near-tie two implementations may pick different ones: a gradient that differs more is "
        "computed again by both in float64, where it must agree (value within "
        f"{F64_VALUE_RTOL:g}, gradient within {F64_GRAD_RTOL:g}); where that run cannot be made, "
        f"at most {FLIP_ROWS:.0%} of the rows may differ.", "",
        "## Targets", "", *targets(results), "",
    ]
    for task in TASKS:
        rs = [r for r in results if r["task"] == task]
        if rs:
            lines += [f"## {TASK_TITLES[task]}", "", *_table(task, rs)]
    if meta.get("plot"):
        task = meta.get("plot_task", "batch_all")
        lines += ["## Scaling", "", f"![{task} time against batch size]({meta['plot']})", ""]
    return "\n".join(lines).rstrip() + "\n"
