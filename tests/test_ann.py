import numpy as np
import pytest
import torch

from metrickit.evaluation import ann
from metrickit.evaluation.ann import ANNIndex, ann_search, hard_negatives, recall_at_k
from metrickit.evaluation.knn import faiss_available
from reference import eval_distance, knn_bruteforce

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")

DISTANCES = ["euclidean", "squared_euclidean", "cosine", "dot"]


def _data(n=300, d=8, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)).astype(np.float32)


def _recall_loops(found, exact):
    hits = sum(len({j for j in f if j >= 0} & set(e)) for f, e in zip(found, exact, strict=True))
    return hits / (len(found) * len(found[0]))


@pytest.mark.parametrize("distance", DISTANCES)
def test_flat_is_exact(distance):
    ref, q = _data(120), _data(15, seed=1)
    dist, idx = ANNIndex(ref, distance).search(q, k=5)
    bd, bi = knn_bruteforce(q.astype(float), ref.astype(float), k=5, kind=distance)
    assert idx.tolist() == bi
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-4, atol=1e-4)


@needs_faiss
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_at_full_breadth_are_exact(kind, distance):
    ref, q = _data(400), _data(30, seed=2)
    options = {"nlist": 8, "nprobe": 8} if kind == "ivf" else {"ef_search": 400}
    dist, idx = ANNIndex(ref, distance, kind, **options).search(q, k=5)
    bd, bi = knn_bruteforce(q.astype(float), ref.astype(float), k=5, kind=distance)
    assert recall_at_k(idx, torch.tensor(bi)) == 1.0
    # the reported distances are the true distances of the returned references
    for i, row in enumerate(idx.tolist()):
        true = [eval_distance(q[i], ref[j], distance) for j in row]
        np.testing.assert_allclose(dist[i].numpy(), true, rtol=1e-4, atol=1e-4)


@needs_faiss
def test_ivf_with_few_probes_loses_recall_and_reports_missing_rows():
    ref = _data(200, d=4)
    index = ANNIndex(ref, index="ivf", nlist=20, nprobe=1)
    _, exact = ANNIndex(ref).search(k=30)
    dist, idx = index.search(k=30)
    assert (idx == -1).any()  # 1 of 20 cells holds fewer than 31 rows
    assert torch.isinf(dist[idx == -1]).all() and torch.isfinite(dist[idx >= 0]).all()
    r = recall_at_k(idx, exact)
    assert 0 < r < 1
    assert r == pytest.approx(_recall_loops(idx.tolist(), exact.tolist()))


@pytest.mark.parametrize("kind", ["flat", pytest.param("ivf", marks=needs_faiss),
                                  pytest.param("hnsw", marks=needs_faiss)])
def test_self_search_leaves_own_row_out(kind):
    ref = _data(150)
    ref[7] = ref[3]  # a duplicate still counts as a neighbour
    dist, idx = ANNIndex(ref, index=kind, nlist=4, nprobe=4, ef_search=200).search(k=3)
    assert not (idx == torch.arange(150)[:, None]).any()
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dist[3, 0] == 0
    _, bi = knn_bruteforce(ref.astype(float), k=3)
    assert recall_at_k(idx, torch.tensor(bi)) == 1.0


def test_ann_search_forms():
    ref, q = _data(50), _data(4, seed=3)
    torch.testing.assert_close(ann_search(q, ref, k=2), ANNIndex(ref).search(q, k=2))
    torch.testing.assert_close(ann_search(ref, k=2), ANNIndex(ref).search(k=2))
    d, i = ann_search(torch.from_numpy(ref).double(), k=2)  # float64 tensors work too
    assert i.tolist() == knn_bruteforce(ref.astype(float), k=2)[1]


def test_without_faiss_falls_back_to_exact_search(monkeypatch):
    monkeypatch.setattr(ann, "faiss_available", lambda: False)
    ref = _data(60)
    with pytest.warns(UserWarning, match="needs faiss .* exactly"):
        index = ANNIndex(ref, index="hnsw")
    _, idx = index.search(k=4)
    assert idx.tolist() == knn_bruteforce(ref.astype(float), k=4)[1]


def test_recall_at_k_against_loops():
    g = np.random.default_rng(4)
    found = g.integers(-1, 12, size=(9, 4))
    exact = np.stack([g.permutation(12)[:4] for _ in range(9)])
    assert recall_at_k(torch.tensor(found), torch.tensor(exact)) == pytest.approx(
        _recall_loops(found.tolist(), exact.tolist())
    )
    assert recall_at_k(torch.tensor(exact), torch.tensor(exact)) == 1.0


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_hard_negatives_against_brute_force(kind):
    emb = _data(80, d=3, seed=5)
    labels = np.random.default_rng(6).integers(0, 4, size=80)
    got = hard_negatives(emb, labels, k=3, candidates=79, index=kind, ef_search=200)
    for i in range(80):
        others = sorted((eval_distance(emb[i], emb[j]), j) for j in range(80)
                        if labels[j] != labels[i])
        assert got[i].tolist() == [j for _, j in others[:3]]


def test_hard_negatives_pad_with_minus_one():
    emb = _data(6, d=2)
    got = hard_negatives(emb, np.array([0, 0, 0, 0, 0, 1]), k=2)
    assert (got[5] >= 0).all()  # class 1: every other sample is a negative
    assert (got[:5, 1] == -1).all() and (got[:5, 0] == 5).all()


def test_bad_inputs():
    ref = _data(20)
    with pytest.raises(ValueError, match="index must be one of"):
        ANNIndex(ref, index="lsh")
    with pytest.raises(ValueError, match="nlist must be at most the number of references \\(20\\)"):
        ANNIndex(ref, index="ivf", nlist=21)
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        ANNIndex(ref, index="ivf", nprobe=0)
    with pytest.raises(ValueError, match="k must be at most the number of candidates \\(19\\)"):
        ANNIndex(ref).search(k=20)
    with pytest.raises(ValueError, match="same embedding size"):
        ANNIndex(ref).search(_data(2, d=3), k=1)
    with pytest.raises(ValueError, match="found and exact must be"):
        recall_at_k(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        hard_negatives(ref[:1], np.array([0]), k=1)
    with pytest.raises(TypeError, match="reference must be a torch.Tensor or a numpy.ndarray"):
        ANNIndex([[1.0]])
