"""Smoke tests of the pair-loss benchmark cases (MNRL, CoSENT, …): tiny sizes, ours against ST."""

import pytest
import torch
from benchmarks.cases import IMPLS, Case
from benchmarks.checks import check_values
from benchmarks.inputs import SCORED_TASKS, TEXT_TASKS, text_pairs
from benchmarks.run import build_grid, parse_args
from benchmarks.worker import Settings, run_case

import metrickit as mk

TINY = Settings(repeats=1, budget_s=1.0)


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_text_case_measures_the_loss_and_agrees_with_st(task, tmp_path):
    pytest.importorskip("sentence_transformers")
    results = [run_case(Case(task, name, 16, 1, 8), TINY, str(tmp_path / f"{name}.pt"))
               for name in ("metrickit", "st")]
    x, y = text_pairs(task, 16, 8)
    if task in SCORED_TASKS:
        expected = getattr(mk.F, f"{task}_loss")(x[:16], x[16:], y)
    else:
        expected = mk.F.multiple_negatives_ranking_loss(
            x[:16], x[16:], symmetric=task.endswith("symmetric"))
    assert results[0]["status"] == "ok" and results[0]["value"] == pytest.approx(expected.item())
    assert torch.load(tmp_path / "metrickit.pt").shape == (32, 8)  # both sides' gradients
    check_values(results)
    assert results[1]["check"]["ok"] is True, results[1]["check"]


def test_text_inputs_pair_rows_and_score_levels():
    x, pairs = text_pairs("multiple_negatives_ranking", 64, 16)
    assert x.shape == (128, 16) and torch.equal(pairs, torch.arange(64))
    assert torch.cosine_similarity(x[:64], x[64:]).mean() > 0.2  # positives are closer
    x, score = text_pairs("cosent", 256, 16)
    levels = torch.unique(score)
    assert levels.min() == 0 and levels.max() == 1 and len(levels) > 20
    cos = torch.cosine_similarity(x[:256], x[256:])
    assert torch.corrcoef(torch.stack([cos, score]))[0, 1] > 0.5  # scores rank the pairs


def test_grid_has_text_cases_with_one_k_and_st_labels():
    cases = build_grid(parse_args(["--tasks", "cosent", "--impls", "metrickit", "st",
                                   "--sizes", "512", "1024", "--ks", "4", "32"]))
    assert {(c.impl, c.batch, c.k, c.dim) for c in cases} == {
        (n, b, 1, 128) for n in ("metrickit", "st") for b in (512, 1024)}
    assert "directions" in IMPLS[("multiple_negatives_symmetric", "st")].label
