import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import t64
from metrickit.distances import (
    DISTANCES,
    chunked_pairwise,
    gathered_distance,
    get_distance,
    pairwise_distance,
    rowwise_distance,
    safe_sqrt,
)
from reference import numeric_grad, triplet_dist

SHAPES = [(1, 1, 3), (5, 7, 4), (12, 3, 6)]  # (N, M, D)


def brute_matrix(x, y, kind, zero_diagonal=False):
    out = np.array([[triplet_dist(a, b, kind) for b in y] for a in x])
    if zero_diagonal:
        np.fill_diagonal(out, 0.0)
    return out


def with_duplicates(n, d, seed, distance):
    """Random rows where row 0 repeats as row n-1 and, except for cosine (undefined at 0), row 1
    is all zeros."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[-1] = x[0]
    if distance != "cosine":
        x[1] = 0.0
    return x


def self_brute(x, kind):
    return brute_matrix(x, x, kind, zero_diagonal=kind != "dot")


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pairwise_values_match_brute_force(distance, shape):
    n, m, d = shape
    g = np.random.default_rng(n * 100 + m)
    x, y = g.normal(size=(n, d)) * 3, g.normal(size=(m, d))
    np.testing.assert_allclose(
        pairwise_distance(t64(x), t64(y), distance).numpy(),
        brute_matrix(x, y, distance),
        rtol=1e-10,
        atol=1e-10,
    )
    got = pairwise_distance(t64(x), None, distance).numpy()
    np.testing.assert_allclose(got, self_brute(x, distance), rtol=1e-10, atol=1e-10)
    if distance != "dot":
        assert (np.diag(got) == 0).all()
    np.testing.assert_array_equal(
        get_distance(distance)(t64(x), t64(y)).numpy(),
        pairwise_distance(t64(x), t64(y), distance).numpy(),
    )


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pairwise_gradients_match_brute_force(distance, shape):
    n, m, d = shape
    g = np.random.default_rng(n + m)
    x, y = g.normal(size=(n, d)), g.normal(size=(m, d))
    w_cross, w_self = g.normal(size=(n, m)), g.normal(size=(n, n))
    tx, ty = t64(x, grad=True), t64(y, grad=True)
    ((pairwise_distance(tx, ty, distance) * t64(w_cross)).sum()).backward()
    ref_x = numeric_grad(lambda v: float((brute_matrix(v, y, distance) * w_cross).sum()), x)
    ref_y = numeric_grad(lambda v: float((brute_matrix(x, v, distance) * w_cross).sum()), y)
    np.testing.assert_allclose(tx.grad.numpy(), ref_x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ty.grad.numpy(), ref_y, rtol=1e-6, atol=1e-7)
    tx = t64(x, grad=True)
    ((pairwise_distance(tx, None, distance) * t64(w_self)).sum()).backward()
    ref = numeric_grad(lambda v: float((self_brute(v, distance) * w_self).sum()), x)
    np.testing.assert_allclose(tx.grad.numpy(), ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_self_distance_diagonal_has_zero_gradient(distance):
    # large offset: the Gram expansion alone leaves a nonzero (rounding) diagonal
    x = t64(np.random.default_rng(0).normal(size=(6, 5)) + 1e3, grad=True)
    pairwise_distance(x, None, distance).diagonal().sum().backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("distance", DISTANCES)
def test_identical_rows_give_finite_exact_gradients(distance):
    n, d = 7, 3
    x = with_duplicates(n, d, 1, distance)
    w = np.random.default_rng(2).normal(size=(n, n))
    tx = t64(x, grad=True)
    ((pairwise_distance(tx, None, distance) * t64(w)).sum()).backward()
    assert torch.isfinite(tx.grad).all()
    # pairs of equal rows have d = 0 and are given gradient 0; every other pair is smooth
    coincide = np.array([[np.array_equal(a, b) for b in x] for a in x])
    if distance == "dot":
        coincide[:] = False
    w_rest = np.where(coincide, 0.0, w)
    ref = numeric_grad(lambda v: float((self_brute(v, distance) * w_rest).sum()), x)
    np.testing.assert_allclose(tx.grad.numpy(), ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("distance", DISTANCES)
def test_rowwise_values_and_gradients(distance):
    x = with_duplicates(6, 4, 3, distance)
    y = np.random.default_rng(4).normal(size=(6, 4))
    y[0] = x[0]  # one identical pair
    w = np.random.default_rng(5).normal(size=6)
    tx, ty = t64(x, grad=True), t64(y, grad=True)
    out = rowwise_distance(tx, ty, distance)
    ref = [triplet_dist(a, b, distance) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    (out * t64(w)).sum().backward()
    same_rows = [distance != "dot" and np.array_equal(a, b) for a, b in zip(x, y, strict=True)]

    def brute(xv, yv):
        return sum(
            wi * triplet_dist(a, b, distance)
            for wi, a, b, same in zip(w, xv, yv, same_rows, strict=True)
            if not same
        )

    np.testing.assert_allclose(
        tx.grad.numpy(), numeric_grad(lambda v: brute(v, y), x), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        ty.grad.numpy(), numeric_grad(lambda v: brute(x, v), y), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("chunk_size", [1, 3, 50])
def test_chunked_blocks_equal_the_full_matrix(distance, chunk_size):
    g = np.random.default_rng(6)
    x, y = with_duplicates(8, 3, 7, distance), g.normal(size=(5, 3))
    for other, full in (
        (y, pairwise_distance(t64(x), t64(y), distance)),
        (None, torch.tensor(self_brute(x, distance))),
    ):
        blocks = list(
            chunked_pairwise(t64(x), None if other is None else t64(other), distance, chunk_size)
        )
        assert [s for s, _ in blocks] == list(range(0, 8, chunk_size))
        got = torch.cat([b for _, b in blocks])
        if other is None:  # every distance, dot included, has an exact 0 self-distance here
            full = full.fill_diagonal_(0)
            assert (got.diagonal() == 0).all()
            np.testing.assert_allclose(got.numpy(), full.numpy(), rtol=1e-10, atol=1e-10)
        else:
            torch.testing.assert_close(got, full, rtol=0, atol=0)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_chunked_gradients_equal_the_full_matrix(distance):
    x = with_duplicates(7, 3, 8, distance)
    w = t64(np.random.default_rng(9).normal(size=(7, 7)))
    a, b = t64(x, grad=True), t64(x, grad=True)
    (torch.cat([blk for _, blk in chunked_pairwise(a, None, distance, 3)]) * w).sum().backward()
    (pairwise_distance(b, None, distance) * w).sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_safe_sqrt_values_and_gradient_at_zero():
    sq = torch.tensor([-1.0, 0.0, 4.0, 1e-30, 9.0], dtype=torch.float64, requires_grad=True)
    out = safe_sqrt(sq)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 2.0, 1e-15, 3.0], dtype=torch.float64))
    out.sum().backward()
    expected = torch.tensor([0.0, 0.0, 0.25, 0.5e15, 1 / 6], dtype=torch.float64)
    torch.testing.assert_close(sq.grad, expected)
    zero = torch.zeros(3, requires_grad=True)
    (safe_sqrt(zero) * 0).sum().backward()  # the NaN case of torch.sqrt
    assert (zero.grad == 0).all()


def test_safe_sqrt_twice_differentiable_away_from_zero():
    sq = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    assert gradcheck(safe_sqrt, (sq.requires_grad_(),))
    assert gradgradcheck(safe_sqrt, (sq,))


@pytest.mark.parametrize("distance", DISTANCES)
def test_pairwise_double_backward(distance):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert gradgradcheck(lambda a: pairwise_distance(a, None, distance), (x,))
    assert gradgradcheck(lambda a, b: pairwise_distance(a, b, distance), (x, y))
    assert gradgradcheck(lambda a, b: rowwise_distance(a, b, distance), (x[:4].detach(), y))
    # identical rows: second derivatives stay finite
    z = torch.cat([x, x[:2]]).detach().requires_grad_()
    (grad,) = torch.autograd.grad(pairwise_distance(z, None, distance).sum(), z, create_graph=True)
    (hess,) = torch.autograd.grad((grad**2).sum(), z)
    assert torch.isfinite(hess).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("distance", DISTANCES)
def test_half_precision_inputs(dtype, distance):
    x = torch.tensor(with_duplicates(6, 4, 10, distance)).to(dtype).requires_grad_()
    y = torch.randn(3, 4, generator=torch.Generator().manual_seed(3)).to(dtype)
    xs = x.detach().double().numpy()
    for out, ref in (
        (pairwise_distance(x, None, distance), self_brute(xs, distance)),
        (pairwise_distance(x, y, distance), brute_matrix(xs, y.double().numpy(), distance)),
        (
            rowwise_distance(x[:3], y, distance),
            [triplet_dist(a, b, distance) for a, b in zip(xs[:3], y.double().numpy(), strict=True)],
        ),
    ):
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
        out.sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


def test_bad_inputs():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="distance"):
        pairwise_distance(x, None, "manhattan")
    with pytest.raises(ValueError, match="same embedding size, got 3 and 2"):
        pairwise_distance(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="x contains NaN"):
        pairwise_distance(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(TypeError, match="y must be a floating-point tensor"):
        pairwise_distance(x, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        next(chunked_pairwise(x, chunk_size=0))
    with pytest.raises(ValueError, match="y must be 2-D"):
        next(chunked_pairwise(x, torch.randn(3)))
    with pytest.raises(ValueError, match="distance"):
        rowwise_distance(x, x, "l1")


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_gathered_distance_is_the_matrix_entries(distance):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, dtype=torch.float64, generator=g)
    x[5] = x[2]  # a duplicate row: distance 0 off the diagonal
    columns = torch.tensor([[1, 0], [1, 6], [5, 2], [0, 0], [4, 3], [2, 5], [6, 1]])  # i, i too
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got = gathered_distance(a, columns, distance)
    want = pairwise_distance(b, distance=distance).gather(1, columns)
    # same formula, other summation order: only the duplicate pair's sqrt(rounding) can differ
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-7)
    weights = torch.rand(columns.shape, dtype=torch.float64, generator=g)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    half = gathered_distance(x.to(torch.bfloat16), columns, distance)
    assert half.dtype == torch.float32  # computed in float32, as pairwise_distance
