"""Smoke tests of the benchmark harness (benchmarks/): tiny sizes, metrickit and plain torch only.

No timing is asserted; the harness is checked for running, for measuring the right values (against
the brute-force references) and for its skip / kill / cross-check / report logic.
"""

import json
import math

import numpy as np
import pytest
import torch
from benchmarks import naive, peers
from benchmarks.cases import PAIR_TASKS, TRIPLET_TASKS, Case
from benchmarks.checks import check_values
from benchmarks.inputs import clustered
from benchmarks.report import render
from benchmarks.run import main
from benchmarks.runner import GIB, precheck, run_isolated
from benchmarks.worker import Settings, run_case

import metrickit as mk
from reference import (
    batch_hard_triplet_list,
    batch_triplet,
    numeric_grad,
    retrieval_bruteforce,
    semihard_triplet_list,
    triplet_difficulty_counts,
    triplet_list,
)

MINING = {"batch_all": "all", "batch_hard": "hard", "semihard": "semihard"}
NAIVE = {"batch_all": naive.batch_all, "batch_hard": naive.batch_hard, "semihard": naive.semihard}
TINY = Settings(repeats=1, budget_s=1.0)


@pytest.mark.parametrize("task", TRIPLET_TASKS)
def test_worker_measures_our_loss_on_b16(task, tmp_path):
    grad_path = str(tmp_path / "g.pt")
    r = run_case(Case(task, "metrickit", 16, 4, 8), TINY, grad_path)
    x, labels = clustered(16, 4, 8)
    ref = batch_triplet(x.double().numpy(), labels.tolist(), 0.2, MINING[task])[0]
    assert r["status"] == "ok"
    assert r["value"] == pytest.approx(ref, rel=1e-5)
    assert ref > 0  # the synthetic batch has active triplets, so the check has teeth
    assert len(r["times_s"]) == 1 and r["time_s"] > 0 and r["peak_bytes"] >= 0
    assert r["memory_method"] in ("VmHWM", "ru_maxrss")
    assert torch.load(grad_path).shape == (16, 8)


@pytest.mark.parametrize("task", PAIR_TASKS)
def test_pair_loss_cases_agree_with_pml_on_b16(task, tmp_path):
    results = [
        run_case(Case(task, name, 16, 4, 8), TINY, str(tmp_path / f"{name}.pt"))
        for name in ("metrickit", "pml")
    ]
    x, labels = clustered(16, 4, 8)
    assert results[0]["value"] == pytest.approx(
        float(getattr(mk.F, f"{task}_loss")(x.double(), labels)), rel=1e-5)
    check_values(results)
    assert results[1]["check"]["ok"] is True, results[1]["check"]
    assert results[0]["value"] > 0


@pytest.mark.parametrize("task", TRIPLET_TASKS)
@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 2, 2, 2], [3, 1, 3, 1, 1, 2, 2, 3]])
def test_naive_baselines_match_bruteforce(task, labels):
    emb = np.random.default_rng(4).normal(size=(len(labels), 3)) * 0.5
    x = torch.tensor(emb, requires_grad=True)
    loss = NAIVE[task](x, torch.tensor(labels), 0.3)
    loss.backward()
    f = lambda v: batch_triplet(v, labels, 0.3, MINING[task])[0]  # noqa: E731
    assert loss.item() == pytest.approx(f(emb), rel=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(f, emb), atol=1e-6)


def test_miner_cases_count_like_bruteforce():
    x, labels = clustered(16, 4, 8)
    emb, lab = x.double().numpy(), labels.tolist()
    want = {
        "miner_hard": len(batch_hard_triplet_list(emb, lab)),
        "miner_semihard": len(semihard_triplet_list(emb, lab)),
        "miner_difficulty": triplet_difficulty_counts(emb, lab, 0.2)["semihard"],
    }
    for task, count in want.items():
        assert run_case(Case(task, "metrickit", 16, 4, 8), TINY)["value"] == count, task
    assert want["miner_difficulty"] > 0


def test_eval_case_matches_bruteforce():
    r = run_case(Case("eval", "metrickit-torch", 60, 6, 8), TINY)
    x, labels = clustered(60, 6, 8, spread=0.65)
    ref = retrieval_bruteforce(x.double().numpy(), labels.numpy())
    for key, value in r["value"].items():
        assert value == pytest.approx(ref[key], abs=1e-12), key


def test_memory_estimates_and_skips():
    # the triplet count behind the estimates is the brute-force one
    assert peers.triplet_count(12, 3) == len(triplet_list([i // 3 for i in range(12)]))
    # PML's B³ cube below INT32_MAX elements, its per-anchor loop above
    assert peers.pml_all_triplets_bytes(1024, 4) > 1024**3
    assert peers.pml_all_triplets_bytes(8192, 32) > 100 * GIB
    rec = precheck(Case("batch_all", "torch", 8192, 4, 128), 8 * GIB)
    assert rec["status"] == "skipped" and rec["reason"].startswith("would need ~")
    assert precheck(Case("batch_all", "torch", 64, 4, 128), 8 * GIB) is None


def test_watchdog_kills_a_case_over_its_memory_cap(tmp_path):
    rec = run_isolated(Case("batch_all", "torch", 64, 4, 8), TINY, str(tmp_path), 60, 1)
    assert rec["status"] == "killed"


def test_cross_checks_flag_a_disagreement(tmp_path):
    results = [
        run_case(Case("batch_all", name, 16, 4, 8), TINY, str(tmp_path / f"{name}.pt"))
        for name in ("metrickit", "torch")
    ]
    check_values(results)
    assert results[1]["check"]["ok"] is True and results[1]["check"]["ref"] == "metrickit"
    results[1]["value"] *= 1.01
    check_values(results)
    assert results[1]["check"]["ok"] is False


def test_end_to_end_report(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--tasks", "batch_all", "--impls", "metrickit", "torch", "--sizes", "16", "64",
            "--ks", "4", "--dims", "8", "--eval-sizes", "--repeats", "1", "--max-gib", "0.001",
            "--out", str(out),
            "--plot", str(tmp_path / "p.png"), "--preliminary"]
    assert main(argv) == 0
    text = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    by = {(r["impl"], r["batch"]): r for r in data["results"]}
    assert by[("metrickit", 16)]["status"] == "ok"
    assert by[("torch", 16)]["check"]["ok"] is True
    assert by[("torch", 64)]["status"] == "skipped"  # its B³ cube is over the 1 MiB cap
    assert math.isfinite(by[("metrickit", 64)]["time_s"])
    assert "PRELIMINARY" in text and "skipped: would need ~" in text and "✓" in text
    assert (tmp_path / "p.png").stat().st_size > 0
    assert render(data["results"], data["meta"]) == text


@pytest.mark.parametrize(("task", "expected"), [("semihard", True), ("batch_all", False)])
def test_one_flipped_row_is_a_near_tie_only_for_selective_mining(task, expected, tmp_path):
    g = torch.ones(200, 4, dtype=torch.float64)
    flipped = g.clone()
    flipped[7] = -5  # one row's gradient differs, as when another negative is selected
    results = []
    for name, grad in (("metrickit", g), ("st", flipped)):
        path = str(tmp_path / f"{name}.pt")
        torch.save(grad, path)
        results.append({"task": task, "impl": name, "batch": 200, "k": 4, "dim": 4,
                        "status": "ok", "value": 1.0, "grad_path": path})
    check_values(results)
    assert results[1]["check"]["ok"] is expected


def _saved(tmp_path, name, grad, value=1.0, task="semihard"):
    path = str(tmp_path / f"{name}.pt")
    torch.save(grad, path)
    return {"task": task, "impl": name, "batch": 200, "k": 4, "dim": 4, "status": "ok",
            "value": value, "grad_path": path}


@pytest.mark.parametrize(("f64_agrees", "expected"), [(True, True), (False, False)])
def test_float32_gradient_differences_are_settled_in_float64(f64_agrees, expected, tmp_path):
    g = torch.ones(200, 4, dtype=torch.float64)
    flipped = g.clone()
    flipped[:50] = -5  # a quarter of the rows: too many to pass without the float64 run
    results = [_saved(tmp_path, "metrickit", g), _saved(tmp_path, "st", flipped)]
    asked = []

    def recheck(case):
        asked.append(case)
        other = g if f64_agrees or case.impl == "metrickit" else g * 1.001
        return _saved(tmp_path, f"{case.impl}-f64", other)

    check_values(results, recheck)
    assert {c.impl for c in asked} == {"metrickit", "st"}
    assert all((c.task, c.batch, c.k, c.dim) == ("semihard", 200, 4, 4) for c in asked)
    assert results[1]["check"]["ok"] is expected
    assert "float64" in results[1]["check"]["detail"]
    check_values(results)  # no float64 run possible: 50 of 200 rows is over the 1% allowance
    assert results[1]["check"]["ok"] is False


def test_worker_recomputes_a_case_in_float64(tmp_path):
    grad_path = str(tmp_path / "g64.pt")
    f64 = Settings(repeats=0, dtype="float64")
    r = run_case(Case("semihard", "metrickit", 16, 4, 8), f64, grad_path)
    x, labels = clustered(16, 4, 8)
    emb, lab = x.double().numpy(), labels.tolist()
    f = lambda v: batch_triplet(v, lab, 0.2, "semihard")[0]  # noqa: E731
    assert r["status"] == "ok" and r["peak_bytes"] is None and len(r["times_s"]) == 1
    assert r["value"] == pytest.approx(f(emb), rel=1e-12) and f(emb) > 0
    grad = torch.load(grad_path)
    assert grad.dtype == torch.float64
    np.testing.assert_allclose(grad.numpy(), numeric_grad(f, emb), atol=1e-7)
