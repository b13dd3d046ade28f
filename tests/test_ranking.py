import math

import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import t64
from reference import (
    harmonic,
    numeric_grad,
    warp_exact,
    warp_sampled,
    warp_sampled_expectation,
)

AGG = {"mean": np.mean, "sum": np.sum, "none": lambda v: np.asarray(v)}


# --- pairwise hinge ------------------------------------------------------------------------------


def _hinge_ref(sp, sn, margin):
    """Per-positive negatives along the last axis of sn (sp [N], sn [N, S])."""
    return [
        [max(0.0, margin - sp[i] + sn[i][k]) for k in range(len(sn[i]))] for i in range(len(sp))
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hinge_several_negatives_per_positive(reduction):
    g = np.random.default_rng(0)
    sp, sn = g.normal(size=5), g.normal(size=(5, 5))  # square on purpose: rows, not columns
    p, n = t64(sp, True), t64(sn, True)
    loss = mk.F.pairwise_hinge_loss(p, n, margin=0.5, reduction=reduction)
    agg = AGG[reduction]
    np.testing.assert_allclose(loss.detach().numpy(), agg(_hinge_ref(sp, sn, 0.5)), rtol=1e-12)
    loss.sum().backward()
    active = (0.5 - sp[:, None] + sn > 0).astype(float)
    scale = 1 / active.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(p.grad.numpy(), -active.sum(1) * scale, atol=1e-12)
    np.testing.assert_allclose(n.grad.numpy(), active * scale, atol=1e-12)


@pytest.mark.parametrize(
    "pos_shape, neg_shape, out_shape",
    [
        ((4,), (4,), (4,)),
        ((4, 1), (4, 3), (4, 3)),
        ((), (6,), (6,)),
        ((2, 3), (2, 3, 5), (2, 3, 5)),
    ],
)
def test_hinge_broadcasting(pos_shape, neg_shape, out_shape):
    sp, sn = (
        torch.randn(pos_shape, dtype=torch.float64),
        torch.randn(neg_shape, dtype=torch.float64),
    )
    out = mk.F.pairwise_hinge_loss(sp, sn, reduction="none")
    assert out.shape == out_shape
    if len(neg_shape) == len(pos_shape) + 1:
        sp = sp.unsqueeze(-1)
    torch.testing.assert_close(out, (1 - sp + sn).clamp_min(0))


def test_hinge_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"s_pos and s_neg .*s_pos \(3,\) and s_neg \(4,\)"):
        mk.F.pairwise_hinge_loss(torch.randn(3), torch.randn(4))


# --- BPR -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bpr_matches_log1p_exp_and_softplus(reduction):
    g = np.random.default_rng(1)
    sp, sn = g.normal(size=(6,)) * 3, g.normal(size=(6, 4)) * 3
    p, n = t64(sp, True), t64(sn, True)
    loss = mk.F.bpr_loss(p, n, reduction=reduction)
    ref = [[math.log1p(math.exp(sn[i, k] - sp[i])) for k in range(4)] for i in range(6)]
    np.testing.assert_allclose(loss.detach().numpy(), AGG[reduction](ref), rtol=1e-12)
    soft = torch.nn.functional.softplus(n - p[:, None])
    torch.testing.assert_close(mk.F.bpr_loss(p, n, reduction="none"), soft)
    loss.sum().backward()
    f = AGG[reduction]
    num = numeric_grad(lambda v: np.sum(f(np.log1p(np.exp(sn - v[:, None])))), sp)
    np.testing.assert_allclose(p.grad.numpy(), num, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_bpr_is_stable_for_huge_gaps(dtype):
    sp = torch.tensor([0.0, 0.0, 1e4, -1e4], dtype=dtype, requires_grad=True)
    sn = torch.tensor([1e4, -1e4, -1e4, 1e4], dtype=dtype)
    loss = mk.F.bpr_loss(sp, sn, reduction="none")
    expected = torch.tensor([1e4, 0.0, 0.0, 2e4])  # softplus(x) → x for x ≫ 0, → e^x ≈ 0 for x ≪ 0
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.float(), expected.to(dtype).float(), rtol=1e-3, atol=1e-6)
    loss.sum().backward()
    torch.testing.assert_close(sp.grad.float(), torch.tensor([-1.0, 0.0, 0.0, -1.0]))


# --- WARP, exact ---------------------------------------------------------------------------------


def _warp_problem(seed=2, q=4, i=7):
    g = np.random.default_rng(seed)
    scores = g.normal(size=(q, i))
    positives = g.random((q, i)) < 0.35
    positives[0] = True  # a query with no negative: its terms are 0
    positives[1, :] = False
    positives[1, 2] = True
    scores[1, 2] = 10.0  # no violator: exact rank 0, term 0
    positives[2, 0] = positives[3, 1] = True
    return scores, positives


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_warp_exact_matches_bruteforce(reduction):
    scores, positives = _warp_problem()
    s = t64(scores, True)
    loss = mk.F.warp_loss(s, torch.tensor(positives), margin=0.8, exact=True, reduction=reduction)
    agg = AGG[reduction]
    ref = warp_exact(scores, positives, 0.8)
    assert len(ref) == positives.sum() and 0 < sum(v > 0 for v in ref) < len(ref)
    np.testing.assert_allclose(loss.detach().numpy(), agg(ref), rtol=1e-12)
    loss.sum().backward()
    num = numeric_grad(lambda v: np.sum(agg(warp_exact(v, positives, 0.8))), scores)
    np.testing.assert_allclose(s.grad.numpy(), num, atol=1e-7)


def test_warp_without_positives_is_zero_with_zero_grads():
    s = torch.randn(3, 5, requires_grad=True)
    for exact in (True, False):
        loss = mk.F.warp_loss(s, torch.zeros(3, 5, dtype=torch.bool), exact=exact)
        loss.backward()
        assert loss.item() == 0 and torch.equal(s.grad, torch.zeros_like(s))


# --- WARP, sampled -------------------------------------------------------------------------------


def test_warp_sampled_never_picks_a_positive():
    # Positives score +5, negatives −5: only a positive could violate (5 > 5 − m).
    positives = torch.rand(6, 9, generator=torch.Generator().manual_seed(0)) < 0.5
    positives[:, 0] = True
    scores = torch.where(positives, 5.0, -5.0).requires_grad_()
    gen = torch.Generator().manual_seed(1)
    loss = mk.F.warp_loss(scores, positives, max_sampled=50, generator=gen, reduction="none")
    assert loss.shape == (int(positives.sum()),)
    assert torch.equal(loss, torch.zeros_like(loss))


def test_warp_sampled_term_is_zero_iff_no_violator_and_takes_a_possible_value():
    scores, positives = _warp_problem(seed=3, q=5, i=8)
    n_draws = 400  # ≥ catalogue: a violator is missed with probability ≤ (7/8)^400
    gen = torch.Generator().manual_seed(4)
    out = mk.F.warp_loss(
        t64(scores), torch.tensor(positives), 0.8, n_draws, generator=gen, reduction="none"
    ).numpy()
    exact = warp_exact(scores, positives, 0.8)
    np.testing.assert_array_equal(out > 0, np.array(exact) > 0)
    t = 0
    for q in range(len(scores)):
        negs = [j for j in range(scores.shape[1]) if not positives[q, j]]
        for i in np.flatnonzero(positives[q]):
            viol = [
                0.8 - scores[q, i] + scores[q, j] for j in negs if scores[q, j] > scores[q, i] - 0.8
            ]
            possible = [
                harmonic(max(1, len(negs) // n)) * v for n in range(1, n_draws + 1) for v in viol
            ]
            assert out[t] == 0 if not viol else np.isclose(possible, out[t], rtol=1e-12).any()
            t += 1


def test_warp_sampled_gradient_matches_finite_differences():
    scores, positives = _warp_problem(seed=5)
    mask = torch.tensor(positives)

    def loss_at(v):
        gen = torch.Generator().manual_seed(6)  # same draws at every evaluation
        return mk.F.warp_loss(t64(v), mask, 0.8, 3, generator=gen, reduction="sum").item()

    s = t64(scores, True)
    loss = mk.F.warp_loss(
        s, mask, 0.8, 3, generator=torch.Generator().manual_seed(6), reduction="sum"
    )
    loss.backward()
    assert loss.item() > 0
    np.testing.assert_allclose(s.grad.numpy(), numeric_grad(loss_at, scores), atol=1e-6)


@pytest.mark.parametrize("max_sampled", [2, 12])
def test_warp_sampled_expectation_matches_monte_carlo_bruteforce(max_sampled):
    scores, positives = _warp_problem(seed=7, q=4, i=8)
    reps = 20000
    # One call over the problem tiled `reps` times: independent draws for every copy.
    tiled = torch.tensor(scores).repeat(reps, 1)
    gen = torch.Generator().manual_seed(8)
    lib = (
        mk.F.warp_loss(
            tiled,
            torch.tensor(positives).repeat(reps, 1),
            0.8,
            max_sampled,
            generator=gen,
            reduction="none",
        )
        .numpy()
        .reshape(reps, -1)
    )
    rng = np.random.default_rng(9)
    ref = np.array([warp_sampled(scores, positives, 0.8, max_sampled, rng) for _ in range(2000)])
    se = np.sqrt(lib.var(0) / reps + ref.var(0) / len(ref))
    np.testing.assert_array_less(np.abs(lib.mean(0) - ref.mean(0)), 5 * se + 1e-12)
    # Against the exact expectation (no variance on that side) the bound is tight: 5 standard
    # errors stay below 4% of every non-zero term, so a bias of that size fails.
    expected = np.array(warp_sampled_expectation(scores, positives, 0.8, max_sampled))
    se_lib = np.sqrt(lib.var(0) / reps)
    assert (5 * se_lib <= 0.04 * expected + 1e-12).all()
    np.testing.assert_array_less(np.abs(lib.mean(0) - expected), 5 * se_lib + 1e-12)


def test_warp_sampled_is_reproducible_with_a_generator():
    scores, positives = torch.randn(20, 50), torch.rand(20, 50) < 0.1
    a = mk.F.warp_loss(scores, positives, generator=torch.Generator().manual_seed(3), max_sampled=5)
    b = mk.F.warp_loss(scores, positives, generator=torch.Generator().manual_seed(3), max_sampled=5)
    c = mk.F.warp_loss(scores, positives, generator=torch.Generator().manual_seed(4), max_sampled=5)
    assert a.item() == b.item() != c.item()


# --- dtypes, modules, bad inputs -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    sp, sn = torch.randn(8), torch.randn(8, 3)
    scores, positives = torch.randn(4, 6), torch.rand(4, 6) < 0.4
    for f, args in [
        (mk.F.pairwise_hinge_loss, (sp, sn)),
        (mk.F.bpr_loss, (sp, sn)),
        (lambda s, p: mk.F.warp_loss(s, p, exact=True), (scores, positives)),
    ]:
        half = f(*(a.to(dtype) if a.is_floating_point() else a for a in args))
        full = f(*(a.to(dtype).float() if a.is_floating_point() else a for a in args))
        assert half.dtype == dtype
        assert half.float().item() == pytest.approx(full.item(), rel=1e-2)


def test_modules_equal_functional():
    sp, sn = torch.randn(5), torch.randn(5, 2)
    assert torch.equal(
        mk.losses.PairwiseHingeLoss(0.3, "sum")(sp, sn),
        mk.F.pairwise_hinge_loss(sp, sn, 0.3, "sum"),
    )
    assert torch.equal(mk.losses.BPRLoss("none")(sp, sn), mk.F.bpr_loss(sp, sn, "none"))
    scores, positives = torch.randn(4, 6), torch.rand(4, 6) < 0.4
    m = mk.losses.WARPLoss(margin=0.5, max_sampled=7)
    got = m(scores, positives, generator=torch.Generator().manual_seed(0))
    want = mk.F.warp_loss(scores, positives, 0.5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want)
    assert "warp" not in mk.losses.list_losses() and "bpr" not in mk.losses.list_losses()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: mk.F.bpr_loss(torch.tensor([1, 2]), torch.randn(2)), TypeError, "s_pos"),
        (lambda: mk.F.pairwise_hinge_loss(torch.randn(2), [0.0, 1.0]), TypeError, "s_neg"),
        (
            lambda: mk.F.pairwise_hinge_loss(torch.randn(2), torch.randn(2), margin=-1),
            ValueError,
            "margin",
        ),
        (
            lambda: mk.F.bpr_loss(torch.randn(2), torch.randn(2), reduction="avg"),
            ValueError,
            "reduction",
        ),
        (lambda: mk.F.bpr_loss(torch.tensor([float("nan")]), torch.randn(1)), ValueError, "s_pos"),
        (
            lambda: mk.F.warp_loss(torch.randn(3, 4), torch.ones(3, 4)),
            TypeError,
            "relevant must be a bool",
        ),
        (
            lambda: mk.F.warp_loss(torch.randn(3, 4), torch.ones(3, 5, dtype=torch.bool)),
            ValueError,
            r"scores .*relevant",
        ),
        (
            lambda: mk.F.warp_loss(torch.randn(4), torch.ones(4, dtype=torch.bool)),
            ValueError,
            "scores must be 2-D",
        ),
        (
            lambda: mk.F.warp_loss(
                torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool), max_sampled=0
            ),
            ValueError,
            "max_sampled",
        ),
        (
            lambda: mk.F.warp_loss(
                torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool), generator=0
            ),
            TypeError,
            "generator",
        ),
        (
            lambda: mk.F.warp_loss(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool), exact=1),
            TypeError,
            "exact",
        ),
    ],
)
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
