import numpy as np
import pytest

from metrickit.recsys.data import from_arrays
from metrickit.recsys.splits import leave_last_out, random_split


def _data(seed=0, n_users=30, n_items=40):
    g = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        n = int(g.integers(1, 25))
        users += [u] * n
        items += g.choice(n_items, n, replace=False).tolist()
    return from_arrays(users, items, timestamps=g.permutation(len(users)).astype(float))


def _pairs(d):
    return set(zip(d.user.tolist(), d.item.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(3))
def test_random_split_has_no_leakage_and_n_test_per_user(seed):
    d = _data(seed)
    train, test = random_split(d, n_test=5, seed=seed)
    assert not _pairs(train) & _pairs(test)
    assert _pairs(train) | _pairs(test) == _pairs(d)
    counts, tc = d.user_counts(), test.user_counts()
    np.testing.assert_array_equal(tc, np.where(counts - 5 >= 1, 5, 0))
    assert train.users is d.users and test.items is d.items


def test_random_split_fraction_and_min_train():
    d = _data(1)
    train, test = random_split(d, n_test=None, test_fraction=0.25, min_train=3)
    counts = d.user_counts()
    want = np.rint(0.25 * counts).astype(int)
    want[counts - want < 3] = 0
    np.testing.assert_array_equal(test.user_counts(), want)


def test_random_split_is_seeded():
    d = _data(2)
    a, b, c = (random_split(d, 3, seed=s).test for s in (7, 7, 8))
    assert _pairs(a) == _pairs(b) != _pairs(c)


def test_leave_last_out_holds_out_latest():
    d = _data(3)
    train, test = leave_last_out(d, n_test=2)
    assert not _pairs(train) & _pairs(test)
    for u in range(d.n_users):
        t_tr = train.timestamps[train.user == u]
        t_te = test.timestamps[test.user == u]
        if len(t_te):
            assert len(t_te) == 2 and t_te.min() > t_tr.max()
        else:
            assert d.user_counts()[u] <= 2  # cold user: everything stays in train


def test_leave_last_out_ties_follow_row_order():
    d = from_arrays([0, 0, 0], [1, 2, 3], timestamps=[5.0, 5.0, 5.0])
    assert leave_last_out(d).test.item.tolist() == [2]


def test_cold_items_keep_or_drop():
    d = from_arrays([0, 0, 1, 1], ["a", "b", "a", "c"])
    train, test = random_split(d, n_test=1, seed=0)
    cold = set(test.item.tolist()) - set(train.item.tolist())
    _, dropped = random_split(d, n_test=1, seed=0, cold_items="drop")
    assert not set(dropped.item.tolist()) & cold
    assert len(dropped) == len(test) - sum(test.item == c for c in cold).sum()


def test_bad_arguments():
    d = _data()
    with pytest.raises(ValueError, match="exactly one"):
        random_split(d, n_test=3, test_fraction=0.2)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        random_split(d, n_test=0)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        random_split(d, n_test=None, test_fraction=1.5)
    with pytest.raises(ValueError, match="cold_items must be one of"):
        random_split(d, cold_items="maybe")
    with pytest.raises(ValueError, match="needs timestamps"):
        leave_last_out(from_arrays([0], [0]))
