import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch, t64
from reference import batch_contrastive, contrastive_pairs, numeric_grad


def test_pairs_value_and_grad_match_reference():
    g = np.random.default_rng(1)
    x1, x2 = g.normal(size=(6, 3)), g.normal(size=(6, 3)) * 0.4
    y = np.array([1, 0, 1, 0, 0, 1])
    a, b = t64(x1, True), t64(x2, True)
    loss = mk.F.contrastive_loss(a, b, torch.tensor(y), margin=1.5)
    ref = np.mean(contrastive_pairs(x1, x2, y, 1.5))
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    ga = numeric_grad(lambda v: np.mean(contrastive_pairs(v, x2, y, 1.5)), x1)
    gb = numeric_grad(lambda v: np.mean(contrastive_pairs(x1, v, y, 1.5)), x2)
    np.testing.assert_allclose(a.grad.numpy(), ga, atol=1e-7)
    np.testing.assert_allclose(b.grad.numpy(), gb, atol=1e-7)


def test_seed_formula_sum_over_batch_over_two():
    # the common TensorFlow form (e.g. https://blog.csdn.net/autocyz/article/details/53149760):
    # reduce_sum(y*d^2 + (1-y)*max(1-d,0)^2) / batch_size / 2
    x1, x2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    d = (x1 - x2).norm(dim=1)
    seed = (y * d**2 + (1 - y) * (1 - d).clamp_min(0) ** 2).sum() / 8 / 2
    assert mk.F.contrastive_loss(x1, x2, y).item() == pytest.approx(seed.item(), rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_batch_form_matches_reference(layout, reduction):
    emb = random_batch(layout, seed=3)
    x = t64(emb, True)
    loss = mk.F.batch_contrastive_loss(x, torch.tensor(layout), margin=2.0, reduction=reduction)
    ref = np.array(batch_contrastive(emb, layout, 2.0))
    agg = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    np.testing.assert_allclose(loss.detach().numpy(), agg(ref), rtol=1e-10)
    loss.sum().backward()
    num = numeric_grad(lambda v: np.sum(agg(np.array(batch_contrastive(v, layout, 2.0)))), emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


def test_module_equals_functional():
    x = torch.randn(10, 4)
    labels = torch.randint(0, 3, (10,))
    m = mk.losses.BatchContrastiveLoss(margin=0.7)
    assert torch.equal(m(x, labels), mk.F.batch_contrastive_loss(x, labels, margin=0.7))
    assert isinstance(mk.losses.get_loss("contrastive", margin=0.7), mk.losses.BatchContrastiveLoss)


def test_identical_embeddings_give_finite_gradients():
    x = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    loss = mk.F.batch_contrastive_loss(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # dissimilar pairs at distance 0 cost ½ m² each: 4 of the 6 pairs
    assert loss.item() == pytest.approx(4 * 0.5 / 6)


def test_single_sample_gives_zero_with_graph():
    x = torch.randn(1, 3, requires_grad=True)
    loss = mk.F.batch_contrastive_loss(x, torch.tensor([0]))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_large_distances_do_not_overflow():
    x1 = torch.full((3, 8), 1e18)
    x2 = -x1
    loss = mk.F.contrastive_loss(x1, x2, torch.tensor([0, 0, 0]))
    assert loss.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.randn(12, 8)
    labels = torch.arange(12) % 3
    full = mk.F.batch_contrastive_loss(x, labels)
    half = mk.F.batch_contrastive_loss(x.to(dtype), labels)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=2e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(margin=-1.0), "margin"),
        (dict(reduction="avg"), "reduction"),
        (dict(distance="manhattan"), "distance"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mk.F.batch_contrastive_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), **kwargs)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        mk.F.batch_contrastive_loss(torch.randn(4, 2), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="x1.*x2"):
        mk.F.contrastive_loss(torch.randn(4, 2), torch.randn(4, 3), torch.ones(4))
    with pytest.raises(ValueError, match="y must be 1-D"):
        mk.F.contrastive_loss(torch.randn(4, 2), torch.randn(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        mk.F.batch_contrastive_loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(TypeError, match="labels must be an integer"):
        mk.F.batch_contrastive_loss(torch.randn(2, 2), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_blockwise_sum_equals_the_dense_pairs_for_any_block(distance, monkeypatch):
    """reduction="sum" runs the blockwise closed form (only the columns past each block's
    offset); "none" lists the pairs densely: equal values and float64 gradients, for blocks of
    every size, against itself, with a reference offset and without one, and without grad."""
    from metrickit.losses import _pair_rows

    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2])
    x = torch.randn(9, 5, dtype=torch.float64, generator=g) * 0.5
    memory = torch.randn(6, 5, dtype=torch.float64, generator=g) * 0.5
    mem_labels = torch.tensor([1, 0, 3, 2, 0, 4])
    calls = {
        "batch": {},
        "offset": dict(ref_embeddings=torch.cat([memory[:2], x, memory[2:]]),
                       ref_labels=torch.cat([mem_labels[:2], labels, mem_labels[2:]]),
                       ref_offset=2),
        "no offset": dict(ref_embeddings=memory, ref_labels=mem_labels, ref_offset=None),
    }
    for case, kw in calls.items():
        leaf = x.clone().requires_grad_(True)
        dense = mk.F.batch_contrastive_loss(leaf, labels, margin=1.2, distance=distance,
                                            reduction="none", **kw).sum()
        (want,) = torch.autograd.grad(dense, leaf)
        for elements in (1 << 20, 1, 10, 25):  # one block; one row; 1-2 rows; 2-3 rows
            monkeypatch.setattr(_pair_rows, "ROW_BLOCK_ELEMENTS", elements)
            monkeypatch.setattr(mk.losses.contrastive, "ROW_BLOCK_ELEMENTS", elements)
            leaf = x.clone().requires_grad_(True)
            got = mk.F.batch_contrastive_loss(leaf, labels, margin=1.2, distance=distance,
                                              reduction="sum", **kw)
            (grad,) = torch.autograd.grad(got, leaf)
            torch.testing.assert_close(got, dense.detach(), rtol=1e-12, atol=1e-12, msg=case)
            torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12, msg=case)
            with torch.no_grad():
                plain = mk.F.batch_contrastive_loss(x, labels, margin=1.2, distance=distance,
                                                    reduction="sum", **kw)
            torch.testing.assert_close(plain, dense.detach(), rtol=1e-12, atol=1e-12, msg=case)
        assert want.abs().sum() > 0, case
