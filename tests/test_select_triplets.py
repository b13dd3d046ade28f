"""Blocked hard / semi-hard mining (``miners.select_triplets``) and the CPU batch-hard / semi-hard
losses built on it, against brute-force references, with every block size, both ways of finding
the semi-hard negatives (one pass per positive, and sorted rows) and both ways of computing the
mined distances (gathered from one distance matrix, and for the mined pairs only)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrickit as mk
from conftest import random_batch, t64
from metrickit import miners
from metrickit.distances import pairwise_distance
from metrickit.losses import triplet as triplet_module
from metrickit.masks import pair_masks
from reference import batch_triplet, numeric_grad, triplet_dist_matrix

# (elements per block of distance rows, largest slot count for the per-positive passes, rows per
# slot up to which the mined distances are gathered from a distance matrix)
KERNELS = [(1 << 20, 16, 64), (1, 16, 0), (5, 0, 64), (1 << 20, 0, 0), (40, 2, 0)]
DISTANCES = ["euclidean", "squared_euclidean", "cosine", "dot"]


@pytest.fixture(params=KERNELS, ids=lambda k: f"block{k[0]}-passes{k[1]}-dense{k[2]}")
def kernel(request, monkeypatch):
    block, passes, dense = request.param
    monkeypatch.setattr(miners, "SELECT_BLOCK_ELEMENTS", block)
    monkeypatch.setattr(miners, "MAX_SELECT_PASSES", passes)
    monkeypatch.setattr(triplet_module, "_DENSE_ROWS_PER_SLOT", dense)
    return request.param


def reference_selection(emb, labels, strategy):
    """(a, p, n) by plain loops with the documented tie rules: farthest positive and nearest
    negative at the lowest column, farthest-negative fallback at the highest column."""
    d = triplet_dist_matrix(emb)
    out = []
    for a, la in enumerate(labels):
        ps = [j for j, lj in enumerate(labels) if lj == la and j != a]
        ns = [j for j, lj in enumerate(labels) if lj != la]
        if not (ps and ns):
            continue
        if strategy == "hard":
            p = max(ps, key=lambda j: (d[a][j], -j))
            out.append((a, p, min(ns, key=lambda j: (d[a][j], j))))
            continue
        for p in ps:
            farther = [n for n in ns if d[a][n] > d[a][p]]
            if farther:
                out.append((a, p, min(farther, key=lambda n: (d[a][n], n))))
            else:
                out.append((a, p, max(ns, key=lambda n: (d[a][n], n))))
    return out


def mined(emb, labels, strategy):
    fn = miners.batch_hard_triplets if strategy == "hard" else miners.semihard_triplets
    a, p, n = fn(t64(emb), torch.tensor(labels))
    return list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_miners_match_reference(kernel, layout, strategy):
    emb = random_batch(layout, dim=3, seed=2)
    want = reference_selection(emb, list(layout), strategy)
    assert want  # every layout here has anchors with a positive and a negative
    assert mined(emb, list(layout), strategy) == want


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    data=st.data(),
    strategy=st.sampled_from(["hard", "semihard"]),
    kernel=st.sampled_from(KERNELS),
)
def test_tie_rules_on_a_grid(labels, data, strategy, kernel):
    # integer coordinates on a line: many exact distance ties, each settled by the stated rule
    coords = data.draw(st.lists(st.integers(-2, 2), min_size=len(labels), max_size=len(labels)))
    emb = np.array(coords, dtype=float)[:, None]
    old = miners.SELECT_BLOCK_ELEMENTS, miners.MAX_SELECT_PASSES
    miners.SELECT_BLOCK_ELEMENTS, miners.MAX_SELECT_PASSES = kernel[:2]
    try:
        assert mined(emb, labels, strategy) == reference_selection(emb, labels, strategy)
    finally:
        miners.SELECT_BLOCK_ELEMENTS, miners.MAX_SELECT_PASSES = old


def test_selection_shapes_and_slots():
    labels = torch.tensor([0, 1, 0, 2, 0, 1])
    x = torch.randn(6, 4)
    hard = miners.select_triplets(x, labels, "hard")
    assert hard.positive.shape == hard.negative.shape == hard.valid.shape == (6, 1)
    assert hard.valid[:, 0].tolist() == [True, True, True, False, True, True]  # 3 has no positive
    semi = miners.select_triplets(x, labels, "semihard")
    assert semi.positive.shape == (6, 2)  # largest class: 3 members, 2 positives each
    assert semi.positive[0].tolist() == [2, 4] and semi.positive[1, 0].item() == 5
    assert semi.valid.sum().item() == 3 * 2 + 2 * 1
    with pytest.raises(ValueError, match="mining"):
        miners.select_triplets(x, labels, "all")


@pytest.mark.parametrize("mining", ["hard", "semihard"])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("soft", [False, True])
def test_loss_equals_the_distance_matrix_path(kernel, layout, mining, distance, soft):
    # the CPU path (mining on blocks, distances of the mined triplets only) against the generic
    # path over the full distance matrix, which the GPU and precomputed distances use
    emb = random_batch(layout, dim=3, seed=5)
    labels = torch.tensor(layout)
    margin = 3.0 if distance == "dot" else 0.3  # dot distances spread wider: keep terms active
    for reduction in ("mean", "sum", "none"):
        x, y = t64(emb, True), t64(emb, True)
        got = mk.F.batch_triplet_loss(
            x, labels, margin, mining, soft=soft, distance=distance, reduction=reduction
        )
        pos, neg = pair_masks(labels)
        want = mk.F.triplet_loss_from_distances(
            pairwise_distance(y, distance=distance), pos, neg, margin, mining, soft, reduction
        )
        assert got.shape == want.shape and want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_loss_value_and_grad_match_reference(kernel, layout, mining):
    emb = random_batch(layout, dim=3, seed=8)
    x = t64(emb, True)
    loss = mk.F.batch_triplet_loss(x, torch.tensor(layout), 0.4, mining)
    ref = batch_triplet(emb, list(layout), 0.4, mining)[0]
    assert ref > 0 and loss.item() == pytest.approx(ref, rel=1e-10)
    loss.backward()
    num = numeric_grad(lambda v: batch_triplet(v, list(layout), 0.4, mining)[0], emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


@pytest.mark.parametrize("mining", ["hard", "semihard"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_is_mined_and_computed_in_float32(mining, dtype):
    emb = random_batch([0, 0, 1, 1, 2, 2, 2, 3], dim=5, seed=3)
    half = torch.tensor(emb, dtype=dtype, requires_grad=True)
    loss = mk.F.batch_triplet_loss(half, torch.tensor([0, 0, 1, 1, 2, 2, 2, 3]), 0.5, mining)
    rounded = half.detach().double().numpy()  # what the loss sees, exactly
    ref = batch_triplet(rounded, [0, 0, 1, 1, 2, 2, 2, 3], 0.5, mining)[0]
    assert loss.dtype == dtype and ref > 0
    assert loss.item() == pytest.approx(ref, rel=1e-2)
    loss.backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad).all()
