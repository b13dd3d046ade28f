"""The blocked batch-all kernel (CPU hinge batch all) against the brute-force reference, with
every block size (row blocks, and products of several row blocks) and both counting strategies
(comparison passes and binary search)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrickit as mk
from conftest import random_batch, t64
from metrickit.losses import _batch_all
from metrickit.masks import class_slots
from reference import batch_triplet, numeric_grad

# (elements per block, largest slot count for the comparison passes)
KERNELS = [(1 << 20, 32), (1, 32), (7, 0), (1 << 20, 0), (30, 2)]


@pytest.fixture(params=KERNELS, ids=lambda k: f"block{k[0]}-loop{k[1]}")
def kernel(request, monkeypatch):
    block, slots = request.param
    monkeypatch.setattr(_batch_all, "BLOCK_ELEMENTS", block)
    monkeypatch.setattr(_batch_all, "MAX_LOOP_SLOTS", slots)
    # one product per 3 row blocks: several products, and several row blocks per product
    monkeypatch.setattr(_batch_all, "PRODUCT_ELEMENTS", 3 * block)
    return request.param


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_value_and_grad_match_reference(kernel, layout, distance, reduction):
    emb = random_batch(layout, dim=3, seed=11)
    squared = distance == "squared_euclidean"
    x = t64(emb, True)
    kw = {"squared": True} if squared else {"distance": distance}
    loss = mk.F.batch_triplet_loss(x, torch.tensor(layout), 0.4, "all", reduction=reduction, **kw)
    pick = 0 if reduction == "mean" else 1
    ref = batch_triplet(emb, layout, 0.4, "all", False, distance)
    assert ref[1] > 0  # some triplets are active, so the gradient is not trivially 0
    assert loss.item() == pytest.approx(ref[pick], rel=1e-10)
    loss.backward()
    num = numeric_grad(lambda v: batch_triplet(v, layout, 0.4, "all", False, distance)[pick], emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    data=st.data(),
    margin=st.sampled_from([0.0, 1.0, 2.0]),
    kernel=st.sampled_from(KERNELS),
)
def test_exact_ties_on_a_grid(labels, data, margin, kernel):
    # integer coordinates: exact distance ties between positives, negatives and thresholds
    coords = data.draw(
        st.lists(st.integers(-2, 2), min_size=2 * len(labels), max_size=2 * len(labels))
    )
    emb = np.array(coords, dtype=float).reshape(len(labels), 2)
    old = _batch_all.BLOCK_ELEMENTS, _batch_all.MAX_LOOP_SLOTS
    _batch_all.BLOCK_ELEMENTS, _batch_all.MAX_LOOP_SLOTS = kernel
    try:
        total, count = _batch_all.batch_all_hinge_total(
            t64(emb), torch.tensor(labels), margin, "squared_euclidean"
        )
    finally:
        _batch_all.BLOCK_ELEMENTS, _batch_all.MAX_LOOP_SLOTS = old
    mean, ref_total, _ = batch_triplet(emb, labels, margin, "all", False, "squared_euclidean")
    assert total.item() == pytest.approx(ref_total, abs=1e-12)
    active = sum(
        1
        for a, la in enumerate(labels)
        for p, lp in enumerate(labels)
        for n, ln in enumerate(labels)
        if la == lp
        and a != p
        and la != ln
        and ((emb[a] - emb[p]) ** 2).sum() + margin > ((emb[a] - emb[n]) ** 2).sum()
    )
    assert int(count) == active


def test_identical_embeddings_and_single_class(kernel):
    x = torch.zeros(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = mk.F.batch_triplet_loss(x, labels, 0.5)
    assert loss.item() == pytest.approx(0.5)  # every triplet is m − 0 + 0
    loss.backward()
    assert torch.isfinite(x.grad).all()
    one = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = mk.F.batch_triplet_loss(one, torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(one.grad, torch.zeros_like(one))


def test_large_batch_equals_the_distance_matrix_path(kernel):
    # the generic path over a precomputed distance matrix is an independent implementation
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 9, (70,), generator=g)
    x = torch.randn(70, 5, generator=g, dtype=torch.float64, requires_grad=True)
    fused = mk.F.batch_triplet_loss(x, labels, 0.3)
    (g1,) = torch.autograd.grad(fused, x)
    pos, neg = mk.masks.pair_masks(labels)
    generic = mk.F.triplet_loss_from_distances(mk.distances.pairwise_distance(x), pos, neg, 0.3)
    (g2,) = torch.autograd.grad(generic, x)
    torch.testing.assert_close(fused, generic, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_class_slots_pack_each_class():
    labels = torch.tensor([3, 1, 3, 2, 1, 3])
    members, positives, n_pos = class_slots(labels)
    assert members.tolist() == [[0, 2, 5], [1, 4, 1], [0, 2, 5], [3, 3, 3], [1, 4, 4], [0, 2, 5]]
    assert positives.tolist() == [[2, 5], [4, 1], [0, 5], [3, 3], [1, 4], [0, 2]]
    assert n_pos.tolist() == [2, 1, 2, 0, 1, 2]
    members, positives, n_pos = class_slots(torch.tensor([4]))
    assert members.tolist() == [[0]] and positives.shape == (1, 0) and n_pos.tolist() == [0]
