"""Shared test data for the recommender tests."""

from __future__ import annotations

import numpy as np

from metrickit.recsys.data import IdMap, Interactions, from_arrays


def random_interactions(n_users: int, n_items: int, seed: int, max_per_user: int) -> Interactions:
    """Each user interacts with 1 to ``max_per_user`` - 1 distinct random items (seeded)."""
    g = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        chosen = g.choice(n_items, int(g.integers(1, max_per_user)), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return from_arrays(users, items, user_map=IdMap(range(n_users)),
                       item_map=IdMap(range(n_items)))
