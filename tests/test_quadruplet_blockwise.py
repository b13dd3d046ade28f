"""The blockwise batch-all quadruplet loss (the default algorithm) against the "sorted" one and
the brute-force reference: values and float64 gradients, with every block size, both counting
strategies and threshold tables from coarse (most look-ups fall back to a binary search) to
fine; the threshold rank table on its own."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrickit as mk
from conftest import random_batch, t64
from metrickit._kernels import count_at_most, rank_table
from metrickit.losses import _batch_all, _quadruplet_blockwise
from reference import batch_quadruplet, quadruplet_cross, ref_set_quadruplet

# (elements per block, largest slot count for the comparison passes, log2 of the table size)
KERNELS = [(1 << 19, 32, 18), (1, 32, 18), (7, 0, 1), (1 << 19, 0, 4), (30, 2, 0)]


def _use(kernel):
    block, slots, buckets = kernel
    _quadruplet_blockwise.BLOCK_ELEMENTS = block
    _quadruplet_blockwise.LOG2_BUCKETS = buckets
    _batch_all.MAX_LOOP_SLOTS = slots


@pytest.fixture(params=KERNELS, ids=lambda k: "block{}-loop{}-table{}".format(*k))
def kernel(request, monkeypatch):
    for mod, name in [(_quadruplet_blockwise, "BLOCK_ELEMENTS"),
                      (_quadruplet_blockwise, "LOG2_BUCKETS"), (_batch_all, "MAX_LOOP_SLOTS")]:
        monkeypatch.setattr(mod, name, getattr(mod, name))
    _use(request.param)
    return request.param


def _both(x, labels, margins=(1.0, 0.5), **refs):
    """(value, grads) of the sorted and the blockwise algorithm on the same float64 inputs."""
    out = []
    for algorithm in ("sorted", "blockwise"):
        leaves = [t.detach().clone().requires_grad_() for t in (x, refs.get("ref_embeddings"))
                  if t is not None]
        kw = dict(refs)
        if len(leaves) == 2:
            kw["ref_embeddings"] = leaves[1]
        loss = mk.F.batch_quadruplet_loss(leaves[0], labels, *margins, algorithm=algorithm, **kw)
        loss.backward()
        out.append((loss.item(), [t.grad for t in leaves]))
    return out


def _assert_same(got, want):
    (v_got, g_got), (v_want, g_want) = got, want
    assert v_got == pytest.approx(v_want, rel=1e-12, abs=1e-300)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * (1 + float(b.abs().max())))


@pytest.mark.parametrize("margins", [(1.0, 0.5), (0.3, 2.0), (0.0, 0.0)])
def test_equals_the_sorted_algorithm(kernel, layout, margins):
    x = t64(random_batch(layout, dim=3, seed=5))
    sorted_, blockwise = _both(x, torch.tensor(layout), margins)
    assert sorted_[0] > 0
    _assert_same(blockwise, sorted_)


def test_matches_bruteforce_on_a_larger_batch(kernel):
    labels = np.arange(14) % 4
    emb = random_batch(labels, dim=3, seed=2)
    loss = mk.F.batch_quadruplet_loss(t64(emb), torch.tensor(labels), 1.2, 0.9)
    assert loss.item() == pytest.approx(batch_quadruplet(emb, labels, 1.2, 0.9), rel=1e-12)


@pytest.mark.parametrize("offset", [None, 0, 3])
def test_reference_sets_equal_the_sorted_algorithm_and_bruteforce(kernel, offset):
    g = np.random.default_rng(7)
    yr = np.array([0, 0, 1, 2, 2, 3, 4, 1, 5, 2, 0])
    xr = g.normal(size=(len(yr), 3))
    if offset is None:
        xa, ya = g.normal(size=(5, 3)), np.array([0, 1, 1, 2, 6])  # class 6 has no reference
        want = quadruplet_cross(xa, ya, xr, yr, 1.0, 0.5)
    else:
        xa, ya = xr[offset : offset + 5], yr[offset : offset + 5]
        want = ref_set_quadruplet(xr, yr, offset, 5, 1.0, 0.5)
    refs = {"ref_embeddings": t64(xr), "ref_labels": torch.tensor(yr), "ref_offset": offset}
    sorted_, blockwise = _both(t64(xa), torch.tensor(ya), **refs)
    assert blockwise[0] == pytest.approx(want, rel=1e-12)
    _assert_same(blockwise, sorted_)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [2, 2, 2, 2], [5], [0, 1, 0, 1]])
def test_degenerate_batches_equal_the_sorted_algorithm(kernel, labels):
    """No positive pair, one class, one sample, two classes (no term 2): the same value as the
    sorted algorithm (0 where nothing is active), finite equal gradients."""
    x = t64(random_batch(labels, dim=3, seed=1))
    sorted_, blockwise = _both(x, torch.tensor(labels))
    _assert_same(blockwise, sorted_)
    if len(set(labels)) == len(labels) or len(set(labels)) == 1:
        assert blockwise[0] == 0 and not blockwise[1][0].any()


def test_identical_embeddings_give_finite_gradients(kernel):
    x = torch.ones(9, 4, dtype=torch.float64)
    sorted_, blockwise = _both(x, torch.arange(9) // 3)
    assert blockwise[0] == pytest.approx(1.5)
    assert torch.isfinite(blockwise[1][0]).all()
    _assert_same(blockwise, sorted_)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=9),
    data=st.data(),
    margins=st.sampled_from([(0.0, 0.0), (1.0, 2.0), (2.0, 1.0)]),
    kernel=st.sampled_from(KERNELS),
)
def test_exact_ties_on_a_grid(labels, data, margins, kernel):
    # integer coordinates: many distances equal thresholds exactly; those hinges are 0
    coords = data.draw(
        st.lists(st.integers(-2, 2), min_size=2 * len(labels), max_size=2 * len(labels))
    )
    emb = np.array(coords, dtype=float).reshape(len(labels), 2)
    old = (_quadruplet_blockwise.BLOCK_ELEMENTS, _batch_all.MAX_LOOP_SLOTS,
           _quadruplet_blockwise.LOG2_BUCKETS)
    _use(kernel)
    try:
        loss = mk.F.batch_quadruplet_loss(t64(emb), torch.tensor(labels), *margins)
    finally:
        _use(old)
    assert loss.item() == pytest.approx(batch_quadruplet(emb, labels, *margins), rel=1e-12)


def test_float32_batch_equals_the_sorted_algorithm():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(160, 16, generator=g), dim=1)
    labels = torch.arange(160) % 37
    values, grads = [], []
    for algorithm in ("sorted", "blockwise"):
        leaf = x.clone().requires_grad_()
        loss = mk.F.batch_quadruplet_loss(leaf, labels, algorithm=algorithm)
        loss.backward()
        values.append(loss.item())
        grads.append(leaf.grad)
    assert values[1] == pytest.approx(values[0], rel=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert mk.F.batch_quadruplet_loss(x, labels).item() == pytest.approx(values[1], rel=1e-6)


def test_algorithm_argument():
    x, labels = torch.randn(8, 3), torch.arange(8) % 3
    loss = mk.losses.get_loss("quadruplet", algorithm="sorted")
    assert loss.algorithm == "sorted"
    assert loss(x, labels).item() == pytest.approx(mk.F.batch_quadruplet_loss(x, labels).item())
    mined = mk.miners.all_pairs(labels)
    with pytest.raises(ValueError, match="algorithm='blockwise'.*indices_tuple"):
        mk.F.batch_quadruplet_loss(x, labels, indices_tuple=mined, algorithm="blockwise")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        mk.losses.BatchQuadrupletLoss(algorithm="fast")
    auto = mk.F.batch_quadruplet_loss(x, labels, indices_tuple=mined)
    assert auto.item() == pytest.approx(mk.F.batch_quadruplet_loss(x, labels).item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("log2_buckets", [0, 3, 18])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rank_table_counts_like_a_binary_search(dtype, log2_buckets, offset):
    g = torch.Generator().manual_seed(3)
    thresholds = torch.cat([torch.rand(50, generator=g) * 3, torch.tensor([0.0, 0.0, 1.5, 1.5])])
    thresholds += offset  # offset 0: thresholds at 0, whose bucket holds every value ≤ 0
    values = torch.cat([torch.rand(400, generator=g) * 4 - 0.5, thresholds, torch.tensor(
        [0.0, -0.0, -1.0, float("inf"), 1e-40, 1.5])]).to(dtype)
    table = rank_table(thresholds.to(dtype), log2_buckets)
    assert table.table.numel() <= 2**log2_buckets + 3
    # a coarse table resolves by binary search, a fine one by stepping over a bucket's few
    if log2_buckets == 0 or (log2_buckets == 18 and offset):
        assert (table.width > 0) == bool(log2_buckets)
    want = torch.searchsorted(table.sorted, values, right=True)
    assert torch.equal(count_at_most(table, values).long(), want)
    empty = rank_table(torch.empty(0, dtype=dtype))
    assert not count_at_most(empty, values).any()


def test_value_without_a_gradient_is_the_same(kernel):
    """Without a gradient the blockwise algorithms count into scratch blocks instead of keeping
    the coefficients: the same values, the batch against itself and against references."""
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(14, 3, generator=g, dtype=torch.float64), torch.arange(14) % 4
    refs = {"ref_embeddings": x[2:], "ref_labels": labels[2:], "ref_offset": None}
    for kw in ({}, refs):
        with_grad = mk.F.batch_quadruplet_loss(x.clone().requires_grad_(), labels, **kw)
        with torch.no_grad():
            without = mk.F.batch_quadruplet_loss(x, labels, **kw)
        assert with_grad.item() > 0
        assert without.item() == pytest.approx(with_grad.item(), rel=1e-12)
