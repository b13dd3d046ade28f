"""Smoke tests of the proxy-loss benchmark cases: tiny sizes, ours against PML."""

import pytest
import torch
from benchmarks.cases import PROXY_TASKS, Case
from benchmarks.checks import check_values
from benchmarks.inputs import PROXY_CLASSES, clustered, proxy_vectors
from benchmarks.ours import PROXY_PER_CLASS
from benchmarks.run import build_grid, parse_args
from benchmarks.worker import Settings, run_case

import metrickit as mk

TINY = Settings(repeats=1, budget_s=1.0)


@pytest.mark.parametrize("task", PROXY_TASKS)
def test_proxy_case_measures_the_loss_and_agrees_with_pml(task, tmp_path):
    results = [run_case(Case(task, name, 16, 4, 8), TINY, str(tmp_path / f"{name}.pt"))
               for name in ("metrickit", "pml")]
    x, labels = clustered(16, 4, 8)
    w = proxy_vectors(PROXY_CLASSES * PROXY_PER_CLASS.get(task, 1), 8)
    expected = getattr(mk.F, f"{task}_loss")(x, labels % PROXY_CLASSES, w)
    assert results[0]["status"] == "ok" and results[0]["value"] == pytest.approx(expected.item())
    assert torch.load(tmp_path / "metrickit.pt").shape == (16, 8)
    check_values(results)
    assert results[1]["check"]["ok"] is True, results[1]["check"]


def test_grid_has_proxy_cases_from_b512_at_d128():
    cases = build_grid(parse_args(["--tasks", "arcface", "--impls", "metrickit", "pml"]))
    assert {(c.impl, c.batch, c.dim) for c in cases} == {
        (n, b, 128) for n in ("metrickit", "pml") for b in (512, 1024, 2048, 4096, 8192)
    }
