import math

import numpy as np
import pytest
import torch

from metrickit.recsys.data import IdMap, from_arrays
from metrickit.recsys.metrics import evaluate, popularity_scorer, rank_metrics, top_k
from reference import ref_recsys_user_metrics

NAMES = ("auc", "precision", "recall", "hit_rate", "ndcg", "map", "mrr")


def _masks(n_items, sets):
    m = torch.zeros(len(sets), n_items, dtype=torch.bool)
    for r, s in enumerate(sets):
        m[r, list(s)] = True
    return m


def _random_case(seed, n_users=12, n_items=15, levels=4):
    g = np.random.default_rng(seed)
    scores = g.integers(0, levels, size=(n_users, n_items)).astype(float)  # many ties
    train = [set(g.choice(n_items, g.integers(0, 6), replace=False).tolist())
             for _ in range(n_users)]
    test = [set(g.choice([i for i in range(n_items) if i not in t], g.integers(0, 5),
                         replace=False).tolist()) for t in train]
    return scores, train, test


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_per_user_metrics_match_brute_force_with_ties(seed, k):
    scores, train, test = _random_case(seed)
    if seed % 2:
        scores = scores + np.random.default_rng(seed).normal(size=scores.shape)  # no ties
    got = rank_metrics(torch.tensor(scores), _masks(15, train), _masks(15, test), k)
    for u in range(len(train)):
        ref = ref_recsys_user_metrics(list(scores[u]), train[u], test[u], k)
        for name in NAMES:
            v = got[name][u].item()
            if ref is None:
                assert math.isnan(v)
            elif math.isnan(ref[name]):
                assert math.isnan(v), name
            else:
                assert v == pytest.approx(ref[name], abs=1e-12), (name, u)


def test_hand_made_case():
    # items 0..5; train {0}; test {2, 4}; scores rank 1 > 2 > 3 > 4 > 5 (0 excluded)
    s = torch.tensor([[9.0, 5, 4, 3, 2, 1]])
    m = rank_metrics(s, _masks(6, [{0}]), _masks(6, [{2, 4}]), k=2)
    assert m["precision"].item() == 0.5  # top-2 = items 1, 2
    assert m["recall"].item() == 0.5
    assert m["mrr"].item() == 0.5
    assert m["auc"].item() == pytest.approx(3 / 6)  # negatives {1, 3, 5}: 2 beats 3, 5; 4 beats 5
    assert m["ndcg"].item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["map"].item() == pytest.approx((1 / 2) / 2)


def test_constant_scores_earn_nothing_from_ties():
    s = torch.zeros(1, 8)
    m = rank_metrics(s, _masks(8, [set()]), _masks(8, [{0, 1}]), k=5)
    assert m["auc"].item() == 0.5
    assert m["precision"].item() == 0 and m["hit_rate"].item() == 0
    assert m["mrr"].item() == pytest.approx(1 / 7)


def test_user_without_negatives_has_nan_auc_only():
    m = rank_metrics(torch.tensor([[1.0, 2, 3]]), _masks(3, [{0}]), _masks(3, [{1, 2}]), k=2)
    assert math.isnan(m["auc"].item())
    assert m["precision"].item() == 1.0


def test_top_k_ties_by_index_and_excluded_never_listed():
    s = torch.tensor([[1.0, 3, 3, 0, 3]])
    items, valid = top_k(s, _masks(5, [{2}]), 4)
    assert items[0].tolist()[:3] == [1, 4, 0] and valid.all()
    items, valid = top_k(s, _masks(5, [{0, 1, 2}]), 4)
    assert items[0][valid[0]].tolist() == [4, 3]


def _split_data(seed=0):
    scores, train, test = _random_case(seed, n_users=9, n_items=11)
    um, im = IdMap(range(9)), IdMap(range(11))
    tr = from_arrays([u for u in range(9) for _ in train[u]],
                     [i for u in range(9) for i in train[u]], user_map=um, item_map=im)
    te = from_arrays([u for u in range(9) for _ in test[u]],
                     [i for u in range(9) for i in test[u]], user_map=um, item_map=im)
    return scores, train, test, tr, te


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_evaluate_averages_over_users_with_test_items(batch_size):
    scores, train, test, tr, te = _split_data()
    fn = lambda users: torch.tensor(scores)[users]  # noqa: E731
    got = evaluate(fn, tr, te, k=3, batch_size=batch_size)
    refs = [r for u in range(9) if (r := ref_recsys_user_metrics(list(scores[u]), train[u],
                                                                test[u], 3)) is not None]
    assert got["users"] == len(refs) < 9  # some users have no test item and are left out
    for name in NAMES:
        key = name if name in ("auc", "mrr") else f"{name}_at_3"
        vals = [r[name] for r in refs if not math.isnan(r[name])]
        assert got[key] == pytest.approx(np.mean(vals), abs=1e-12), name
    listed = set()
    for u in range(9):
        if test[u]:
            cand = sorted((i for i in range(11) if i not in train[u]),
                          key=lambda i: (-scores[u][i], i))
            listed |= set(cand[:3])
    assert got["coverage_at_3"] == pytest.approx(len(listed) / 11)


def test_popularity_baseline_scores_are_train_counts():
    tr = from_arrays([0, 1, 2, 2], ["a", "a", "a", "b"])
    fn = popularity_scorer(tr)
    np.testing.assert_array_equal(fn(torch.tensor([0, 1])).numpy(), [[3, 1], [3, 1]])


def test_evaluate_rejects_bad_inputs():
    tr = from_arrays([0, 1], [0, 1])
    te = from_arrays([0], [1], user_map=tr.users, item_map=tr.items)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        evaluate(popularity_scorer(tr), tr, te, k=0)
    other = from_arrays([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="different user id maps"):
        evaluate(popularity_scorer(tr), tr, other)
