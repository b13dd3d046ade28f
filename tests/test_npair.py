import math

import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch, t64
from reference import batch_npair, npair_batch_pairs, npair_terms, numeric_grad

AGG = {"mean": np.mean, "sum": np.sum, "none": lambda v: np.asarray(v)}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("l2_reg", [0.0, 0.25])
def test_pairs_value_and_grad_match_reference(reduction, l2_reg):
    g = np.random.default_rng(2)
    a_np, p_np = g.normal(size=(5, 3)), g.normal(size=(5, 3))
    a, p = t64(a_np, True), t64(p_np, True)
    loss = mk.F.npair_loss(a, p, l2_reg=l2_reg, reduction=reduction)
    agg = AGG[reduction]
    ref = agg(npair_terms(a_np, p_np, l2_reg))
    np.testing.assert_allclose(loss.detach().numpy(), ref, rtol=1e-12)
    loss.sum().backward()
    ga = numeric_grad(lambda v: np.sum(agg(npair_terms(v, p_np, l2_reg))), a_np)
    gp = numeric_grad(lambda v: np.sum(agg(npair_terms(a_np, v, l2_reg))), p_np)
    np.testing.assert_allclose(a.grad.numpy(), ga, atol=1e-7)
    np.testing.assert_allclose(p.grad.numpy(), gp, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_batch_form_matches_reference(layout, reduction):
    emb = random_batch(layout, dim=3, seed=4)
    x = t64(emb, True)
    loss = mk.F.batch_npair_loss(x, torch.tensor(layout), l2_reg=0.1, reduction=reduction)
    agg = AGG[reduction]
    ref = agg(batch_npair(emb, layout, 0.1))
    np.testing.assert_allclose(loss.detach().numpy(), ref, rtol=1e-12)
    loss.sum().backward()
    num = numeric_grad(lambda v: np.sum(agg(batch_npair(v, layout, 0.1))), emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-7)


def test_batch_pairs_are_first_two_samples_of_each_class():
    labels = torch.tensor([7, 3, 9, 3, 7, 7, 3, 5])
    assert npair_batch_pairs(labels.tolist()) == [(0, 4), (1, 3)]
    x = torch.randn(8, 4, dtype=torch.float64)
    batch = mk.F.batch_npair_loss(x, labels, reduction="none")
    explicit = mk.F.npair_loss(x[[0, 1]], x[[4, 3]], reduction="none")
    torch.testing.assert_close(batch, explicit, rtol=1e-14, atol=0)


def test_one_pair_costs_only_its_l2_term():
    x = torch.tensor([[1.0, 2.0], [0.5, 0.0], [3.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])  # one pair (0, 2); the singleton class 1 is unused
    assert mk.F.batch_npair_loss(x, labels).item() == 0.0
    assert mk.F.batch_npair_loss(x, labels, l2_reg=0.5).item() == pytest.approx(0.5 * (5 + 18))


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [4]])
def test_no_pair_gives_zero_with_zero_grads(labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    loss = mk.F.batch_npair_loss(x, torch.tensor(labels), l2_reg=0.3)
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    assert mk.F.batch_npair_loss(x, torch.tensor(labels), reduction="none").shape == (0,)


def test_identical_embeddings_give_log_n_and_finite_grads():
    x = torch.ones(8, 3, requires_grad=True)
    loss = mk.F.batch_npair_loss(x, torch.arange(8) // 2)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4))
    assert torch.isfinite(x.grad).all()


def test_huge_similarities_do_not_overflow():
    eye = torch.eye(4) * 100  # dot products up to 1e4: exp would overflow in float32
    assert mk.F.npair_loss(eye, eye).item() == 0.0  # own pair dominates: log(1 + 3e^-1e4)
    shifted = eye.roll(1, dims=0)  # a_i·p_i = 0 and a_i·p_{i-1} = 1e4
    a = eye.clone().requires_grad_()
    loss = mk.F.npair_loss(a, shifted)
    loss.backward()
    assert loss.item() == pytest.approx(1e4, rel=1e-6)
    assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.randn(12, 8)
    labels = torch.arange(12) % 4
    full = mk.F.batch_npair_loss(x, labels, l2_reg=0.01)
    half = mk.F.batch_npair_loss(x.to(dtype), labels, l2_reg=0.01)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=3e-2)


def test_modules_equal_functional_and_registry():
    a, p = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.equal(mk.losses.NPairLoss(0.1, "sum")(a, p), mk.F.npair_loss(a, p, 0.1, "sum"))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    m = mk.losses.get_loss("npair", l2_reg=0.2)
    assert isinstance(m, mk.losses.BatchNPairLoss)
    assert torch.equal(m(a, labels), mk.F.batch_npair_loss(a, labels, l2_reg=0.2))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="anchors.*positives"):
        mk.F.npair_loss(torch.randn(4, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="l2_reg"):
        mk.F.npair_loss(torch.randn(4, 2), torch.randn(4, 2), l2_reg=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        mk.F.batch_npair_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), reduction="avg")
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        mk.F.batch_npair_loss(torch.randn(4, 2), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="positives must be 2-D"):
        mk.F.npair_loss(torch.randn(4, 2), torch.randn(4))
    with pytest.raises(TypeError, match="anchors must be a torch.Tensor"):
        mk.F.npair_loss([[0.0]], torch.randn(1, 1))
