"""Measure one case: ``python -m benchmarks.worker '<json>'`` prints ``RESULT <json>``.

The parent runs each case in a fresh process so that the peak memory is the case's own. Order:
imports and inputs, one warm-up run (its output is the value that gets checked), one run under
:class:`PeakMemory`, then timed runs (median reported). With ``repeats=0`` only the warm-up runs:
the cross-checks use that to recompute a case in float64.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .cases import EVAL_TASK, LOSS_TASKS, PROXY_TASKS, Case
from .inputs import PROXY_CLASSES, TEXT_TASKS, clustered, text_pairs
from .memory import PeakMemory

RESULT_PREFIX = "RESULT "


@dataclass(frozen=True)
class Settings:
    device: str = "cpu"
    threads: int = 2
    repeats: int = 5
    budget_s: float = 20.0
    margin: float = 0.2
    seed: int = 0
    dtype: str = "float32"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_triplets(mined: Any) -> int:
    """Number of triplets in a miner's output: a count, a mask or an (a, p, n) index tuple."""
    if isinstance(mined, torch.Tensor):
        if mined.dim() == 0:
            return int(mined)
        return int(mined.sum()) if mined.dtype == torch.bool else int(mined.shape[0])
    if len(mined) == 4:  # PML pair form (a1, p, a2, n): triplets share the anchor
        return int((mined[0][:, None] == mined[2][None, :]).sum())
    return int(mined[0].numel())


def _step(case: Case, fn: Callable, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], Any]:
    if case.task in LOSS_TASKS:
        leaf = x.detach().clone().requires_grad_(True)

        def step() -> Any:
            leaf.grad = None
            loss = fn(leaf, labels)
            loss.backward()
            return loss.detach(), leaf.grad

        return step
    if case.task == EVAL_TASK:
        return lambda: fn(x, labels)

    def mine() -> Any:
        with torch.no_grad():
            return fn(x, labels)

    return mine


def _summarise(case: Case, out: Any) -> dict[str, Any]:
    if case.task in LOSS_TASKS:
        loss, grad = out
        return {"value": float(loss), "grad": grad.detach().to("cpu", torch.float64)}
    if case.task == EVAL_TASK:
        return {"value": {k: float(v) for k, v in out.items()}}
    return {"value": count_triplets(out)}


def run_case(case: Case, settings: Settings, grad_path: str | None = None) -> dict[str, Any]:
    """Measure ``case`` in this process; returns the result record (see module docstring)."""
    torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    param = settings.threads if case.task == EVAL_TASK else settings.margin
    fn = case.spec.build(param)
    if case.task in TEXT_TASKS:  # x = the two sides of B pairs stacked, labels = their scores
        x, labels = text_pairs(case.task, case.batch, case.dim, seed=settings.seed)
    else:
        x, labels = clustered(case.batch, case.k, case.dim, seed=settings.seed,
                              spread=_spread(case))
    if case.task in PROXY_TASKS:
        labels = labels % PROXY_CLASSES
    x, labels = x.to(device, getattr(torch, settings.dtype)), labels.to(device)
    step = _step(case, fn, x, labels)

    _sync(device)
    t0 = time.perf_counter()
    summary = _summarise(case, step())
    _sync(device)
    warmup_s = time.perf_counter() - t0

    times: list[float] = []
    if settings.repeats == 0:
        return _finish(case, summary, grad_path, times=[warmup_s], warmup_s=warmup_s,
                       peak_bytes=None, memory_method=None)
    with PeakMemory(device) as mem:
        step()
    while len(times) < settings.repeats and (not times or sum(times) < settings.budget_s):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return _finish(case, summary, grad_path, times=times, warmup_s=warmup_s,
                   peak_bytes=mem.bytes, memory_method=mem.method)


def _finish(case: Case, summary: dict[str, Any], grad_path: str | None, *, times: list[float],
            **fields: Any) -> dict[str, Any]:
    grad = summary.pop("grad", None)
    if grad is not None and grad_path:
        torch.save(grad, grad_path)
    return {
        **case.to_dict(),
        "status": "ok",
        "time_s": statistics.median(times),
        "times_s": times,
        **fields,
        "grad_path": grad_path if grad is not None else None,
        **summary,
    }


def _spread(case: Case) -> float:
    """Class-centre scale: mixed triplet difficulty for batches, moderate P@1 for retrieval."""
    return 0.65 if case.task == EVAL_TASK else 0.5


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    case = Case(**spec["case"])
    result = run_case(case, Settings(**spec["settings"]), spec.get("grad_path"))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
