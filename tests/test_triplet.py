import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrickit as mk
from conftest import random_batch, t64
from metrickit.losses import triplet as triplet_module
from reference import (
    batch_triplet,
    numeric_grad,
    triplet_dist,
    triplet_dist_matrix,
    triplet_masks,
    triplet_terms_from_matrix,
)

MINING = ["all", "hard", "semihard"]


def _explicit_ref(a, p, n, margin, soft, kind):
    d_ap = np.array([triplet_dist(x, y, kind) for x, y in zip(a, p, strict=True)])
    d_an = np.array([triplet_dist(x, y, kind) for x, y in zip(a, n, strict=True)])
    x = d_ap - d_an
    return np.logaddexp(0, x) if soft else np.maximum(x + margin, 0)


@pytest.mark.parametrize(
    "kwargs, kind",
    [
        ({}, "euclidean"),
        ({"squared": True}, "squared_euclidean"),
        ({"soft": True}, "euclidean"),
        ({"distance": "cosine", "margin": 0.3}, "cosine"),
    ],
)
def test_margin_loss_matches_reference(kwargs, kind):
    g = np.random.default_rng(0)
    a, p, n = (g.normal(size=(7, 3)) for _ in range(3))
    margin, soft = kwargs.get("margin", 0.2), kwargs.get("soft", False)
    ta, tp, tn = t64(a, True), t64(p, True), t64(n, True)
    none = mk.F.triplet_margin_loss(ta, tp, tn, reduction="none", **kwargs)
    ref = _explicit_ref(a, p, n, margin, soft, kind)
    np.testing.assert_allclose(none.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    assert ref.min() == 0 or soft  # the hinge is active on some rows and not on others
    loss = mk.F.triplet_margin_loss(ta, tp, tn, **kwargs)
    assert loss.item() == pytest.approx(ref.mean(), rel=1e-12)
    assert mk.F.triplet_margin_loss(ta, tp, tn, reduction="sum", **kwargs).item() == (
        pytest.approx(ref.sum(), rel=1e-12)
    )
    loss.backward()
    for got, arr, f in (
        (ta, a, lambda v: _explicit_ref(v, p, n, margin, soft, kind).mean()),
        (tp, p, lambda v: _explicit_ref(a, v, n, margin, soft, kind).mean()),
        (tn, n, lambda v: _explicit_ref(a, p, v, margin, soft, kind).mean()),
    ):
        np.testing.assert_allclose(got.grad.numpy(), numeric_grad(f, arr), atol=1e-7)


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_batch_value_and_grad_match_reference(layout, mining, soft, squared):
    emb = random_batch(layout, seed=4)
    kind = "squared_euclidean" if squared else "euclidean"
    margin = 0.5
    x = t64(emb, True)
    labels = torch.tensor(layout)
    loss = mk.F.batch_triplet_loss(x, labels, margin, mining, squared=squared, soft=soft)
    mean, _, _ = batch_triplet(emb, layout, margin, mining, soft, kind)
    assert loss.item() == pytest.approx(mean, rel=1e-10)
    loss.backward()
    num = numeric_grad(lambda v: batch_triplet(v, layout, margin, mining, soft, kind)[0], emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("soft", [False, True])
def test_reductions_sum_and_none(mining, soft):
    layout = [0, 0, 0, 1, 1, 2, 2, 2, 3]
    emb = random_batch(layout, dim=3, seed=7)
    x, labels = t64(emb, True), torch.tensor(layout)
    _, total, none = batch_triplet(emb, layout, 0.3, mining, soft)
    got_none = mk.F.batch_triplet_loss(x, labels, 0.3, mining, soft=soft, reduction="none")
    np.testing.assert_allclose(got_none.detach().numpy(), none, rtol=1e-10, atol=1e-12)
    got_sum = mk.F.batch_triplet_loss(x, labels, 0.3, mining, soft=soft, reduction="sum")
    assert got_sum.item() == pytest.approx(total, rel=1e-10)
    assert got_none.sum().item() == pytest.approx(got_sum.item(), rel=1e-12)
    got_sum.backward()
    num = numeric_grad(lambda v: batch_triplet(v, layout, 0.3, mining, soft)[1], emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


@pytest.mark.parametrize("distance", ["cosine", "dot"])
@pytest.mark.parametrize("mining", MINING)
def test_other_distances(distance, mining):
    layout = [0, 0, 1, 1, 1, 2, 2]
    emb = random_batch(layout, seed=2)
    loss = mk.F.batch_triplet_loss(t64(emb), torch.tensor(layout), 0.1, mining, distance=distance)
    assert loss.item() == pytest.approx(batch_triplet(emb, layout, 0.1, mining, False, distance)[0])


def test_hand_computed_example_on_a_line():
    # 1-D points with a tie: anchor 2 (x=1.5) has its positive and a negative both at 1.5
    x = torch.tensor([[0.0], [1.0], [1.5], [3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    semihard = mk.F.batch_triplet_loss(x, labels, 1.0, "semihard", reduction="none")
    # strict d(a,n) > d(a,p): anchor 2 falls back to its farthest negative (1.5), term = m
    assert semihard.tolist() == [0.5, 0.0, 1.0, 0.5]
    hard = mk.F.batch_triplet_loss(x, labels, 1.0, "hard", reduction="none")
    assert hard.tolist() == [0.5, 1.5, 2.0, 0.5]
    # batch all: non-zero terms 0.5, 1.5, 1 (the tie), 2, 0.5 -> 5.5 / 5
    assert mk.F.batch_triplet_loss(x, labels, 1.0, "all").item() == pytest.approx(1.1)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    data=st.data(),
    margin=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    mining=st.sampled_from(MINING),
)
def test_grid_embeddings_with_ties_match_reference(labels, data, margin, mining):
    # integer points on a line: distances are exact integers, so ties are frequent and exact
    coords = data.draw(st.lists(st.integers(-3, 3), min_size=len(labels), max_size=len(labels)))
    emb = np.array(coords, dtype=float)[:, None]
    x = t64(emb)
    lab = torch.tensor(labels)
    mean, total, none = batch_triplet(emb, labels, margin, mining)
    assert mk.F.batch_triplet_loss(x, lab, margin, mining).item() == pytest.approx(mean)
    assert mk.F.batch_triplet_loss(x, lab, margin, mining, reduction="sum").item() == (
        pytest.approx(total)
    )
    got_none = mk.F.batch_triplet_loss(x, lab, margin, mining, reduction="none")
    np.testing.assert_allclose(got_none.numpy(), none, atol=1e-12)


def test_core_with_separate_reference_set():
    g = np.random.default_rng(5)
    q, r = g.normal(size=(5, 3)), g.normal(size=(8, 3))
    ql, rl = [0, 1, 1, 2, 3], [0, 0, 1, 2, 2, 2, 4, 1]
    pos, neg = triplet_masks(ql, rl)
    dist = triplet_dist_matrix(q, ref=r)
    tq = t64(q, True)
    d = mk.distances.pairwise_distance(tq, t64(r))
    p_mask, n_mask = mk.masks.pair_masks(torch.tensor(ql), torch.tensor(rl))
    for mining in MINING:
        terms, divisor, _ = triplet_terms_from_matrix(dist, pos, neg, 0.4, mining)
        got = mk.F.triplet_loss_from_distances(d, p_mask, n_mask, 0.4, mining)
        assert got.item() == pytest.approx(sum(terms) / max(divisor, 1), rel=1e-10)


def test_soft_batch_all_chunks_agree(monkeypatch):
    layout = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    emb = random_batch(layout, seed=9)
    labels = torch.tensor(layout)

    def run():
        x = t64(emb, True)
        loss = mk.F.batch_triplet_loss(x, labels, mining="all", soft=True)
        loss.backward()
        return loss.detach(), x.grad

    whole, g_whole = run()
    monkeypatch.setattr(triplet_module, "_SOFT_BLOCK_ELEMENTS", 1)  # one anchor per chunk
    chunked, g_chunked = run()
    torch.testing.assert_close(chunked, whole, rtol=1e-14, atol=0)
    torch.testing.assert_close(g_chunked, g_whole, rtol=1e-12, atol=1e-15)
    num = numeric_grad(lambda v: batch_triplet(v, layout, 0.2, "all", True)[0], emb)
    np.testing.assert_allclose(g_chunked.numpy(), num, atol=1e-7)


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [4, 4, 4], [0]], ids=["no_pos", "one", "B1"])
def test_nothing_to_average_gives_zero_with_graph(mining, labels):
    x = torch.randn(len(labels), 3, dtype=torch.float64, requires_grad=True)
    loss = mk.F.batch_triplet_loss(x, torch.tensor(labels), mining=mining)
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    none = mk.F.batch_triplet_loss(x, torch.tensor(labels), mining=mining, reduction="none")
    assert none.numel() == 0


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("soft", [False, True])
def test_core_with_empty_reference_set(mining, soft):
    d = torch.zeros(3, 0, requires_grad=True)
    empty = torch.zeros(3, 0, dtype=torch.bool)
    loss = mk.F.triplet_loss_from_distances(d, empty, empty, mining=mining, soft=soft)
    loss.backward()
    assert loss.item() == 0 and loss.requires_grad


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("soft", [False, True])
def test_identical_embeddings_give_finite_gradients(mining, soft):
    x = torch.ones(6, 3, dtype=torch.float64, requires_grad=True)
    loss = mk.F.batch_triplet_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), 0.2, mining, soft=soft)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # every distance is 0: each term is m (hinge) or softplus(0) = ln 2
    assert loss.item() == pytest.approx(np.log(2) if soft else 0.2)


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("soft", [False, True])
def test_huge_distances_stay_finite(mining, soft):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(9, 4, generator=g) * 1e15).requires_grad_()
    loss = mk.F.batch_triplet_loss(x, torch.arange(9) % 3, mining=mining, soft=soft)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert loss.item() > 1e13  # the hard terms are of the order of the distances


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mining", MINING)
def test_half_precision(dtype, mining):
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 4
    full = mk.F.batch_triplet_loss(x.to(dtype).float(), labels, mining=mining)
    half = mk.F.batch_triplet_loss(x.to(dtype), labels, mining=mining)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=2e-2)


def test_module_and_registry():
    x, labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    m = mk.losses.BatchTripletLoss(margin=0.3, mining="semihard", soft=True)
    assert torch.equal(m(x, labels), mk.F.batch_triplet_loss(x, labels, 0.3, "semihard", soft=True))
    for name in ("triplet", "batch_triplet", "triplet_margin"):
        assert isinstance(mk.losses.get_loss(name, mining="hard"), mk.losses.BatchTripletLoss)
    a, p, n = torch.randn(3, 5, 2)
    tm = mk.losses.TripletMarginLoss(margin=0.1, squared=True, reduction="sum")
    assert torch.equal(tm(a, p, n), mk.F.triplet_margin_loss(a, p, n, 0.1, True, reduction="sum"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(margin=-0.1), "margin"),
        (dict(mining="hardest"), "mining"),
        (dict(distance="manhattan"), "distance"),
        (dict(squared=True, distance="cosine"), "squared"),
        (dict(reduction="avg"), "reduction"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mk.F.batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), **kwargs)
    if "mining" not in kwargs:
        with pytest.raises(ValueError, match=match):
            mk.F.triplet_margin_loss(*torch.randn(3, 4, 2), **kwargs)


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        mk.F.batch_triplet_loss(x, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        mk.F.batch_triplet_loss(x, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer"):
        mk.F.batch_triplet_loss(x, torch.zeros(4))
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        mk.F.batch_triplet_loss(torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="anchor.*positive.*negative"):
        mk.F.triplet_margin_loss(x, x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="positive must be 2-D"):
        mk.F.triplet_margin_loss(x, torch.randn(4), x)
    d = torch.rand(3, 5)
    ok = torch.zeros(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="pos_mask must be a bool tensor"):
        mk.F.triplet_loss_from_distances(d, ok.long(), ok)
    with pytest.raises(ValueError, match="neg_mask must be a bool tensor of the shape"):
        mk.F.triplet_loss_from_distances(d, ok, ok[:, :4])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid", [False, True])
def test_packed_batch_all_equals_the_sorted_path(seed, grid):
    # CPU uses the packed counting path; accelerators use the sorted-row path: both exact.
    from metrickit.distances import pairwise_distance
    from metrickit.losses.triplet import _batch_all, _batch_all_total
    from metrickit.masks import pair_masks
    from metrickit.miners import count_triplets

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (40,), generator=g)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    if grid:
        x = x.round()  # exact distance ties
    x.requires_grad_(True)
    dist = pairwise_distance(x)
    pos, neg = pair_masks(labels)
    terms, count = _batch_all(dist, pos, neg, 0.5, soft=False)
    total, count2 = _batch_all_total(dist, pos, neg, 0.5)
    assert int(count) == int(count2)
    torch.testing.assert_close(total, terms.sum(), rtol=1e-12, atol=1e-12)
    (g1,) = torch.autograd.grad(terms.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    packed = count_triplets(dist, pos, neg, 0.5)
    # the sorted path, as run on accelerators
    from metrickit._kernels import count_below, sort_rows

    rows = sort_rows(dist, neg)
    hard = torch.where(pos, count_below(rows, dist), 0).sum()
    violating = torch.where(pos, count_below(rows, dist + 0.5), 0).sum()
    assert int(packed["hard"]) == int(hard)
    assert int(packed["hard"] + packed["semihard"]) == int(violating)
