"""Train/test splits used in recommender papers, per user and without leakage.

Both splits hold out rows of each user: since an :class:`~metrickit.recsys.data.Interactions`
has one row per distinct (user, item) pair, a user's test items never appear in that user's train
rows. Train and test share the id maps (the catalogue), so indices mean the same in both.

Cold users and items, explicitly:

* a user with too few rows to keep ``min_train`` of them in train after holding out gets *no*
  test rows (all rows stay in train); such users and users without any row are left out of the
  evaluation (:mod:`metrickit.recsys.metrics` averages over users with test items).
* an item whose rows all land in test is *cold*: it stays in the catalogue (its embedding is
  only regularised). ``cold_items="drop"`` removes such test rows instead.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._validation import check_nonnegative, check_positive_int
from .data import Interactions

COLD_ITEMS = ("keep", "drop")


class Split(NamedTuple):
    train: Interactions
    test: Interactions


def _finish(data: Interactions, test_mask: np.ndarray, cold_items: str) -> Split:
    if cold_items not in COLD_ITEMS:
        raise ValueError(f"cold_items must be one of {COLD_ITEMS}, got {cold_items!r}")
    train = data.subset(~test_mask)
    if cold_items == "drop":
        seen = train.item_counts() > 0
        test_mask = test_mask & seen[data.item]
    return Split(train, data.subset(test_mask))


def _check_min_train(min_train: object) -> int:
    if isinstance(min_train, bool) or not isinstance(min_train, numbers.Integral) or min_train < 0:
        raise ValueError(f"min_train must be an integer >= 0, got {min_train!r}")
    return int(min_train)


def _rank_within_user(data: Interactions, order_key: np.ndarray) -> np.ndarray:
    """0-based rank of each row among its user's rows, by ascending ``order_key`` (stable)."""
    order = np.lexsort((order_key, data.user))
    counts = data.user_counts()
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(data), dtype=np.int64)
    rank[order] = np.arange(len(data)) - starts[data.user[order]]
    return rank


def random_split(
    data: Interactions,
    n_test: int | None = 10,
    test_fraction: float | None = None,
    min_train: int = 1,
    seed: int = 0,
    cold_items: str = "keep",
) -> Split:
    """Random per-user holdout: ``n_test`` test rows per user [10] (MovieLens ua.base/ua.test
    style), or ``round(test_fraction * n_u)`` of each user's n_u rows when ``test_fraction`` is
    given (then pass ``n_test=None``). A user keeps all rows in train unless at least
    ``min_train`` [1] remain there. Seeded: the same seed gives the same split.
    """
    if (n_test is None) == (test_fraction is None):
        raise ValueError("give exactly one of n_test and test_fraction")
    if n_test is not None:
        n_test = check_positive_int(n_test, "n_test")
    if test_fraction is not None and not 0 < check_nonnegative(test_fraction,
                                                               "test_fraction") < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    min_train = _check_min_train(min_train)
    counts = data.user_counts()
    if n_test is not None:
        per_user = np.full(data.n_users, n_test, dtype=np.int64)
    else:
        per_user = np.rint(test_fraction * counts).astype(np.int64)
    per_user[counts - per_user < min_train] = 0
    rank = _rank_within_user(data, np.random.default_rng(seed).random(len(data)))
    return _finish(data, rank < per_user[data.user], cold_items)


def leave_last_out(
    data: Interactions, n_test: int = 1, min_train: int = 1, cold_items: str = "keep"
) -> Split:
    """Leave-last-out by timestamp: each user's ``n_test`` [1] latest rows are the test set.
    Equal timestamps are ordered by row order (a later row counts as later)."""
    if data.timestamps is None:
        raise ValueError("leave_last_out needs timestamps, but these interactions have none")
    n_test = check_positive_int(n_test, "n_test")
    min_train = _check_min_train(min_train)
    counts = data.user_counts()
    rank = _rank_within_user(data, data.timestamps)  # stable: ties keep row order
    from_end = counts[data.user] - 1 - rank
    held = (from_end < n_test) & (counts[data.user] - n_test >= min_train)
    return _finish(data, held, cold_items)
