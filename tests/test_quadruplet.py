import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch, t64
from metrickit.distances import pairwise_distance
from metrickit.masks import pair_masks
from reference import batch_quadruplet, numeric_grad, quadruplet_cross, quadruplet_tuples, sqeuclid

AGG = {"mean": np.mean, "sum": np.sum, "none": lambda v: np.asarray(v)}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tuples_value_and_grad_match_reference(reduction):
    g = np.random.default_rng(3)
    arrays = [g.normal(size=(6, 3)) * s for s in (1.0, 0.7, 0.8, 0.6)]
    tensors = [t64(v, True) for v in arrays]
    loss = mk.F.quadruplet_loss(*tensors, margin1=1.5, margin2=0.7, reduction=reduction)
    agg = AGG[reduction]
    ref = agg(quadruplet_tuples(*arrays, 1.5, 0.7))
    assert np.asarray(ref).size and np.all(np.asarray(quadruplet_tuples(*arrays, 1.5, 0.7)) >= 0)
    np.testing.assert_allclose(loss.detach().numpy(), ref, rtol=1e-12)
    loss.sum().backward()
    for k, t in enumerate(tensors):

        def f(v, k=k):
            args = list(arrays)
            args[k] = v
            return np.sum(agg(quadruplet_tuples(*args, 1.5, 0.7)))

        np.testing.assert_allclose(t.grad.numpy(), numeric_grad(f, arrays[k]), atol=1e-7)


@pytest.mark.parametrize("margins", [(1.0, 0.5), (0.3, 2.0), (0.0, 0.0)])
def test_batch_matches_bruteforce(layout, margins):
    emb = random_batch(layout, dim=3, seed=5)
    x = t64(emb, True)
    loss = mk.F.batch_quadruplet_loss(x, torch.tensor(layout), *margins)
    assert loss.item() == pytest.approx(batch_quadruplet(emb, layout, *margins), rel=1e-10)
    loss.backward()
    num = numeric_grad(lambda v: batch_quadruplet(v, layout, *margins), emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


def test_ties_on_the_margin_are_not_counted():
    # Integer points and margins: squared distances are exact, many tuples sit exactly on the
    # hinge (loss 0) and must stay out of the non-zero averages.
    g = np.random.default_rng(0)
    emb = g.integers(0, 3, size=(12, 2)).astype(float)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    ties = sum(
        1
        for a in range(12)
        for p in range(12)
        for n in range(12)
        if a != p
        and labels[a] == labels[p] != labels[n]
        and sqeuclid(emb[a], emb[p]) - sqeuclid(emb[a], emb[n]) + 1.0 == 0
    )
    assert ties > 0
    loss = mk.F.batch_quadruplet_loss(t64(emb), torch.tensor(labels), 1.0, 2.0)
    assert loss.item() == pytest.approx(batch_quadruplet(emb, labels, 1.0, 2.0), rel=1e-12)


def test_two_classes_have_no_second_term():
    labels = np.array([0, 1, 0, 1, 1, 0])
    emb = random_batch(labels, seed=6)
    low = mk.F.batch_quadruplet_loss(t64(emb), torch.tensor(labels), 1.0, 0.0)
    high = mk.F.batch_quadruplet_loss(t64(emb), torch.tensor(labels), 1.0, 100.0)
    assert low.item() == high.item() == pytest.approx(batch_quadruplet(emb, labels, 1.0, 100.0))
    assert low.item() > 0


def test_against_a_separate_reference_set():
    g = np.random.default_rng(7)
    xa, ya = g.normal(size=(5, 3)), np.array([0, 1, 1, 2, 3])
    xr, yr = g.normal(size=(9, 3)), np.array([0, 0, 1, 2, 2, 3, 4, 1, 5])
    a, r = t64(xa, True), t64(xr, True)
    pos, neg = pair_masks(torch.tensor(ya), torch.tensor(yr))
    _, ref_neg = pair_masks(torch.tensor(yr))
    dist = pairwise_distance(a, r, "squared_euclidean")
    ref_dist = pairwise_distance(r, distance="squared_euclidean")
    loss = mk.F.quadruplet_from_distances(dist, pos, neg, ref_dist, ref_neg, 1.0, 0.5)
    assert loss.item() == pytest.approx(quadruplet_cross(xa, ya, xr, yr, 1.0, 0.5), rel=1e-10)
    loss.backward()
    na = numeric_grad(lambda v: quadruplet_cross(v, ya, xr, yr, 1.0, 0.5), xa)
    nr = numeric_grad(lambda v: quadruplet_cross(xa, ya, v, yr, 1.0, 0.5), xr)
    np.testing.assert_allclose(a.grad.numpy(), na, atol=1e-6)
    np.testing.assert_allclose(r.grad.numpy(), nr, atol=1e-6)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [2, 2, 2, 2], [5]])
def test_degenerate_batches_give_zero_with_zero_grads(labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    loss = mk.F.batch_quadruplet_loss(x, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_identical_embeddings_give_the_margins_and_finite_grads():
    x = torch.ones(9, 4, requires_grad=True)
    loss = mk.F.batch_quadruplet_loss(x, torch.arange(9) // 3, 1.0, 0.5)
    loss.backward()
    assert loss.item() == pytest.approx(1.5)
    assert torch.isfinite(x.grad).all()


def test_huge_distances_stay_finite_and_accurate():
    labels = torch.arange(12) // 3
    x64 = torch.randn(12, 8, dtype=torch.float64) * 1e4
    x = x64.float().requires_grad_()
    loss = mk.F.batch_quadruplet_loss(x, labels)
    loss.backward()
    ref = mk.F.batch_quadruplet_loss(x64.float().double(), labels)
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.randn(16, 8)
    labels = torch.arange(16) % 4
    full = mk.F.batch_quadruplet_loss(x.to(dtype).float(), labels)
    half = mk.F.batch_quadruplet_loss(x.to(dtype), labels)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=1e-2)


def test_modules_equal_functional_and_registry():
    t = [torch.randn(5, 3) for _ in range(4)]
    m = mk.losses.QuadrupletLoss(0.4, 0.2, "none")
    assert torch.equal(m(*t), mk.F.quadruplet_loss(*t, 0.4, 0.2, "none"))
    x, labels = torch.randn(9, 3), torch.arange(9) % 3
    b = mk.losses.get_loss("quadruplet", margin1=0.4, margin2=0.2)
    assert isinstance(b, mk.losses.BatchQuadrupletLoss)
    assert torch.equal(b(x, labels), mk.F.batch_quadruplet_loss(x, labels, 0.4, 0.2))


def test_bad_inputs_name_the_argument():
    t = [torch.randn(4, 2) for _ in range(3)]
    with pytest.raises(ValueError, match="negative2"):
        mk.F.quadruplet_loss(*t, torch.randn(4, 3))
    with pytest.raises(ValueError, match="margin2"):
        mk.F.quadruplet_loss(*t, torch.randn(4, 2), margin2=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        mk.F.quadruplet_loss(*t, torch.randn(4, 2), reduction="avg")
    with pytest.raises(ValueError, match="margin1"):
        mk.F.batch_quadruplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), margin1=-1.0)
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        mk.F.batch_quadruplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        mk.F.batch_quadruplet_loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
