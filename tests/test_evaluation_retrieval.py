import numpy as np
import pytest
import torch

from conftest import random_batch
from metrickit.evaluation import retrieval_metrics
from reference import retrieval_bruteforce

KEYS = ["precision_at_1", "recall_at_1", "recall_at_2", "recall_at_4", "r_precision", "map_at_r"]


def assert_same(out, ref):
    assert set(out) == set(ref)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_five_points_on_a_line_computed_by_hand():
    # x = 0, 1, 2, 3, 10 with labels 0, 0, 1, 0, 1 (worked out on paper; query 1 has a tie
    # between references 0 and 2 at distance 1, resolved to the smaller index, 0):
    #   query  ranking (labels)  R  P@1  R-prec  AP@R
    #   0      1 2 3 4 (0 1 0 1)  2   1    1/2    1/2
    #   1      0 2 3 4 (0 1 0 1)  2   1    1/2    1/2
    #   2      1 3 0 4 (0 0 0 1)  1   0    0      0
    #   3      2 1 0 4 (1 0 0 1)  2   0    1/2    1/4
    #   4      3 2 1 0 (0 1 0 0)  1   0    0      0
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    out = retrieval_metrics(x, torch.tensor([0, 0, 1, 0, 1]), ks=(1, 2, 4))
    expected = {
        "precision_at_1": 0.4, "recall_at_1": 0.4, "recall_at_2": 0.8, "recall_at_4": 1.0,
        "r_precision": 0.3, "map_at_r": 0.25, "num_queries": 5, "num_excluded_queries": 0,
    }
    assert out == pytest.approx(expected)


def test_singleton_class_queries_are_excluded_and_counted():
    x = torch.tensor([[0.0], [1.0], [1.4]])
    out = retrieval_metrics(x, torch.tensor([0, 0, 9]), ks=(1,))
    # query 2 (class 9) has no other member; the nearest of 1 is 2, so P@1 = 1/2 over 2 queries
    assert out["num_queries"] == 2 and out["num_excluded_queries"] == 1
    assert out["precision_at_1"] == 0.5 and out["map_at_r"] == 0.5


@pytest.mark.parametrize("kind", ["euclidean", "cosine", "dot", "squared_euclidean"])
def test_random_layouts_match_bruteforce(layout, kind):
    emb = random_batch(layout, dim=3, seed=7)
    out = retrieval_metrics(torch.tensor(emb), torch.tensor(layout), ks=(1, 2, 4), distance=kind)
    assert_same(out, retrieval_bruteforce(emb, layout, (1, 2, 4), kind))


@pytest.mark.parametrize("chunk_size", [1, 5, None])
def test_ties_and_many_classes_match_bruteforce(chunk_size):
    g = np.random.default_rng(8)
    emb = g.integers(-1, 2, size=(80, 3)).astype(np.float64)  # heavy ties, duplicates
    labels = g.integers(0, 12, size=80)
    out = retrieval_metrics(
        torch.tensor(emb), torch.tensor(labels), chunk_size=chunk_size, backend="torch"
    )
    assert_same(out, retrieval_bruteforce(emb, labels))


def test_one_class_gives_perfect_scores():
    out = retrieval_metrics(torch.randn(9, 2), torch.zeros(9, dtype=torch.long))
    assert all(out[k] == 1.0 for k in KEYS)


def test_separate_query_set_matches_bruteforce():
    g = np.random.default_rng(9)
    ref, ref_labels = g.normal(size=(50, 4)), g.integers(0, 6, size=50)
    query, q_labels = g.normal(size=(20, 4)), g.integers(0, 8, size=20)  # 6, 7 absent: excluded
    out = retrieval_metrics(ref, ref_labels, query, q_labels, ks=(1, 8))
    assert_same(out, retrieval_bruteforce(ref, ref_labels, (1, 8), "euclidean", query, q_labels))
    assert out["num_excluded_queries"] == int(np.sum(q_labels >= 6)) > 0


def test_numpy_and_torch_agree_and_values_are_plain_floats():
    emb = np.random.default_rng(10).normal(size=(30, 5)).astype(np.float32)
    labels = np.arange(30) % 4
    a = retrieval_metrics(emb, labels)
    b = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels))
    assert a == b and all(type(a[k]) is float for k in a if not k.startswith("num_"))


def test_large_classes_need_k_beyond_ks():
    # R = 59 for every query: MAP@R must look 59 deep, beyond max(ks) = 8
    g = np.random.default_rng(11)
    emb, labels = g.normal(size=(120, 2)), np.repeat([0, 1], 60)
    out = retrieval_metrics(torch.tensor(emb), torch.tensor(labels))
    assert_same(out, retrieval_bruteforce(emb, labels))


def test_bad_inputs_name_the_argument():
    x, y = torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        retrieval_metrics(x, y[:5])
    with pytest.raises(ValueError, match="ks must not exceed .* \\(5\\), got \\(1, 8\\)"):
        retrieval_metrics(x, y, ks=(1, 8))
    with pytest.raises(ValueError, match="ks must be a non-empty sequence"):
        retrieval_metrics(x, y, ks=())
    with pytest.raises(ValueError, match="each of ks must be a positive integer"):
        retrieval_metrics(x, y, ks=(1, 0))
    with pytest.raises(ValueError, match="given together"):
        retrieval_metrics(x, y, query_embeddings=x)
    with pytest.raises(ValueError, match="query_embeddings must match embeddings"):
        retrieval_metrics(x, y, torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="no query has another reference"):
        retrieval_metrics(x, torch.arange(6), ks=(1,))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        retrieval_metrics(x, y.float())
    with pytest.raises(ValueError, match="distance must be one of"):
        retrieval_metrics(x, y, ks=(1,), distance="l1")
