import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit.evaluation import knn
from metrickit.evaluation.knn import faiss_available
from reference import knn_bruteforce

DISTANCES = ["euclidean", "squared_euclidean", "cosine", "dot"]
needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed")


def tied_points(n=60, dim=3, seed=0):
    """Small integers: many exactly tied distances and duplicates, all computed exactly."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, dim)).astype(np.float64)


@pytest.mark.parametrize("kind", DISTANCES)
def test_leave_one_out_matches_bruteforce(kind):
    x = np.random.default_rng(1).normal(size=(40, 5))
    d, i = knn(torch.tensor(x), k=7, distance=kind, backend="torch")
    ref_d, ref_i = knn_bruteforce(x, None, 7, kind)
    assert i.tolist() == ref_i
    np.testing.assert_allclose(d.numpy(), ref_d, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", DISTANCES)
def test_separate_reference_matches_bruteforce(kind):
    g = np.random.default_rng(2)
    q, r = g.normal(size=(13, 4)), g.normal(size=(29, 4))
    d, i = knn(torch.tensor(q), torch.tensor(r), k=29, distance=kind, backend="torch")
    ref_d, ref_i = knn_bruteforce(q, r, 29, kind)
    assert i.tolist() == ref_i
    np.testing.assert_allclose(d.numpy(), ref_d, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["euclidean", "squared_euclidean", "dot"])
@pytest.mark.parametrize("chunk_size", [1, 4, 17, 60, None])
def test_ties_smaller_index_first_for_every_chunk_size(kind, chunk_size):
    x = tied_points()
    d, i = knn(torch.tensor(x), k=12, distance=kind, chunk_size=chunk_size, backend="torch")
    ref_d, ref_i = knn_bruteforce(x, None, 12, kind)
    assert i.tolist() == ref_i
    np.testing.assert_allclose(d.numpy(), ref_d, atol=1e-12)


def test_cosine_ties_between_duplicate_directions():
    base = np.eye(4)
    x = np.concatenate([base, base, base[:2]])  # every direction at least twice
    _, i = knn(torch.tensor(x), k=4, distance="cosine", backend="torch")
    assert i.tolist() == knn_bruteforce(x, None, 4, "cosine")[1]


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 1000])
def test_chunked_equals_one_shot_argsort(chunk_size):
    x = torch.randn(70, 6, dtype=torch.float64)
    y = torch.randn(50, 6, dtype=torch.float64)
    full = torch.cdist(x, y)
    order = np.argsort(full.numpy(), axis=1, kind="stable")[:, :9]
    d, i = knn(x, y, k=9, chunk_size=chunk_size, backend="torch")
    np.testing.assert_array_equal(i.numpy(), order)
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(full.numpy(), order, 1), rtol=1e-10)


def test_duplicates_of_the_query_still_count():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    d, i = knn(x, k=2)
    assert i.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
    assert d[:3].abs().max() == 0


def test_exclude_self_false_finds_self_first():
    x = torch.randn(20, 3, dtype=torch.float64)
    d, i = knn(x, k=1, exclude_self=False, backend="torch")
    assert i[:, 0].tolist() == list(range(20)) and d.abs().max() < 1e-7


def test_matches_pairwise_distance_module():
    x, y = torch.randn(30, 8), torch.randn(25, 8)
    for kind in DISTANCES:
        d, i = knn(x, y, k=5, distance=kind, backend="torch")
        full = mk.distances.pairwise_distance(x, y, kind)
        torch.testing.assert_close(d, full.gather(1, i), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_extreme_magnitudes_do_not_overflow_or_underflow(scale):
    x = np.random.default_rng(3).normal(size=(30, 4))
    d, i = knn(torch.tensor(x * scale, dtype=torch.float32), k=3, backend="torch")
    ref_d, ref_i = knn_bruteforce(x, None, 3)
    assert i.tolist() == ref_i
    assert torch.isfinite(d).all()
    np.testing.assert_allclose(d.numpy() / scale, ref_d, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = torch.randn(40, 8).to(dtype)
    d, i = knn(x, k=4, backend="torch")
    d32, i32 = knn(x.float(), k=4, backend="torch")
    assert d.dtype == torch.float32 and torch.equal(i, i32) and torch.equal(d, d32)


def test_numpy_input_and_k_equal_to_reference_size():
    x = np.random.default_rng(4).normal(size=(6, 2)).astype(np.float32)
    d, i = knn(x, k=5, backend="torch")
    assert sorted(i[0].tolist()) == [1, 2, 3, 4, 5] and d.shape == (6, 5)


@needs_faiss
@pytest.mark.parametrize("kind", DISTANCES)
@pytest.mark.parametrize("loo", [True, False])
def test_faiss_backend_identical_to_torch(kind, loo):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 16, generator=g)
    ref = None if loo else torch.randn(200, 16, generator=g)
    dt, it = knn(x, ref, k=10, distance=kind, backend="torch", chunk_size=64)
    df, i_f = knn(x, ref, k=10, distance=kind, backend="faiss", chunk_size=64)
    assert torch.equal(it, i_f)
    torch.testing.assert_close(df, dt, rtol=1e-4, atol=1e-4)


@needs_faiss
@pytest.mark.parametrize("kind", ["euclidean", "dot"])
def test_faiss_backend_ties_follow_the_same_rule(kind):
    x = torch.tensor(tied_points(n=80), dtype=torch.float32)
    _, it = knn(x, k=9, distance=kind, backend="torch")
    _, i_f = knn(x, k=9, distance=kind, backend="faiss")
    assert torch.equal(it, i_f)
    assert it.tolist() == knn_bruteforce(x.double().numpy(), None, 9, kind)[1]


def test_bad_inputs_name_the_argument():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k must be at most .* \\(4\\), got 5"):
        knn(x, k=5)
    with pytest.raises(ValueError, match="k must be at most the number of references \\(2\\)"):
        knn(x, torch.randn(2, 3), k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn(x, k=0)
    with pytest.raises(ValueError, match="same embedding size, got 3 and 4"):
        knn(x, torch.randn(6, 4), k=1)
    with pytest.raises(ValueError, match="distance must be one of"):
        knn(x, k=1, distance="manhattan")
    with pytest.raises(ValueError, match="backend must be one of"):
        knn(x, k=1, backend="annoy")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        knn(x, k=1, chunk_size=0)
    with pytest.raises(ValueError, match="query must be 2-D"):
        knn(torch.randn(5), k=1)
    with pytest.raises(TypeError, match="query must be a torch.Tensor or a numpy.ndarray"):
        knn([[0.0, 1.0]], k=1)
    with pytest.raises(ValueError, match="query contains NaN"):
        knn(torch.tensor([[0.0], [float("nan")]]), k=1)
