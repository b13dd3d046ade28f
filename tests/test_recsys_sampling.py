import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metrickit.recsys import sampling
from metrickit.recsys.data import IdMap, from_arrays
from metrickit.recsys.sampling import NegativeSampler


def _interactions(rows, n_users, n_items):
    pairs = sorted(set(rows))
    return from_arrays([u for u, _ in pairs], [i for _, i in pairs],
                       user_map=IdMap(range(n_users)), item_map=IdMap(range(n_items)))


@st.composite
def problems(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 12))
    rows = []
    for u in range(n_users):  # each user keeps at least one negative
        k = draw(st.integers(0 if u else 1, n_items - 1))
        rows += [(u, i) for i in draw(st.permutations(range(n_items)))[:k]]
    return _interactions(rows, n_users, n_items)


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["uniform", "popularity"]), st.booleans(),
       st.integers(0, 2**31))
def test_never_returns_a_known_positive(data, strategy, bitmap, seed):
    old = sampling._BITMAP_MAX
    sampling._BITMAP_MAX = old if bitmap else 0  # also exercise the searchsorted lookup
    try:
        s = NegativeSampler(data, strategy)
    finally:
        sampling._BITMAP_MAX = old
    users = torch.arange(data.n_users).repeat(5)
    neg = s.sample(users, 7, torch.Generator().manual_seed(seed))
    assert neg.shape == (users.shape[0], 7)
    csr = data.to_csr().toarray()
    assert (neg >= 0).all() and (neg < data.n_items).all()
    assert not csr[users[:, None].numpy(), neg.numpy()].any()
    assert not s.is_positive(users[:, None], neg).any()


def test_uniform_is_uniform_over_negatives():
    # user 0 owns most items: rejection runs out of rounds, the exact fallback takes over
    data = _interactions([(0, i) for i in range(0, 18)] + [(1, 3)], 2, 20)
    s = NegativeSampler(data)
    neg = s.sample(torch.tensor([0, 1]), 20000, torch.Generator().manual_seed(0))
    c0 = np.bincount(neg[0].numpy(), minlength=20)
    assert c0[:18].sum() == 0 and abs(c0[18] - 10000) < 400
    c1 = np.bincount(neg[1].numpy(), minlength=20)
    assert c1[3] == 0
    assert np.all(np.abs(c1[np.arange(20) != 3] - 20000 / 19) < 200)


def test_exact_uniform_matches_brute_force_enumeration():
    data = _interactions([(0, 1), (0, 3), (1, 0), (1, 4), (2, 2)], 3, 5)
    s = NegativeSampler(data)
    # r-th negative of each user, against listing the negatives
    for u, negs in [(0, [0, 2, 4]), (1, [1, 2, 3]), (2, [0, 1, 3, 4])]:
        g = torch.Generator().manual_seed(1)
        got = s._exact_uniform(torch.full((4000,), u), g)
        assert set(got.tolist()) == set(negs)


def test_popularity_follows_counts():
    data = _interactions([(u, 0) for u in range(1, 7)] + [(1, 1), (2, 1), (3, 2)], 8, 4)
    s = NegativeSampler(data, "popularity")
    neg = s.sample(torch.tensor([0]), 30000, torch.Generator().manual_seed(0))[0]
    freq = np.bincount(neg.numpy(), minlength=4) / 30000
    np.testing.assert_allclose(freq, [6 / 9, 2 / 9, 1 / 9, 0], atol=0.015)


def test_positives_allowed_when_asked():
    data = _interactions([(0, 0), (0, 1)], 1, 3)
    s = NegativeSampler(data, exclude_positives=False)
    neg = s.sample(torch.tensor([0]), 300, torch.Generator().manual_seed(0))
    assert set(neg[0].tolist()) == {0, 1, 2}
    assert s.n_negatives(torch.tensor([0])).item() == 3


def test_bad_inputs():
    full = _interactions([(0, 0), (0, 1)], 1, 2)
    with pytest.raises(ValueError, match="interacted with all 2 items"):
        NegativeSampler(full)
    data = _interactions([(0, 0)], 1, 2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        NegativeSampler(data, "random")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        NegativeSampler(data).sample(torch.tensor([0]), 0)
