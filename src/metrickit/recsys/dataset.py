"""Bring your own data: train, test and validation interactions with one shared id mapping.

:func:`make_dataset` reads each part from a pandas DataFrame, a CSV file or a scipy sparse
[users, items] matrix. The id maps come from the training part, and every other part is encoded
with those same :class:`~.data.IdMap` objects, so an index means the same user or item in all
parts (and :func:`~.metrics.evaluate` can verify it). A test or validation row is *dropped and
counted* (``unknown="drop"``, the default) or is an error (``unknown="error"``) when

* its user or item has no training interaction (an id seen only at test time: the model has
  nothing learned for it), or
* the (user, item) pair is also a training row (it would be excluded from the ranking anyway).

The counts are in :attr:`Dataset.dropped`, per part and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_choice
from .data import UNKNOWN, IdMap, Interactions, from_dataframe, from_sparse


@dataclass
class Dataset:
    """Train interactions, and optional test and validation interactions sharing its id maps.

    ``dropped[part][reason]`` counts the rows of ``part`` ("test", "validation") left out, with
    reasons "unknown user id", "unknown item id" and "in train".
    """

    train: Interactions
    test: Interactions | None = None
    validation: Interactions | None = None
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def users(self) -> IdMap:
        return self.train.users

    @property
    def items(self) -> IdMap:
        return self.train.items


def _frame(part: Any, name: str, sep: str):  # -> pandas.DataFrame
    import pandas as pd

    if isinstance(part, pd.DataFrame):
        return part
    if isinstance(part, (str, Path)):
        path = Path(part)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: interaction file {str(path)!r} does not exist")
        return pd.read_csv(path, sep=sep, dtype=str)
    raise TypeError(
        f"{name} must be a pandas DataFrame, a CSV path or a scipy sparse matrix, got "
        f"{type(part).__name__}"
    )


def _from_sparse_part(part: Any, name: str, train: Interactions) -> Interactions:
    import scipy.sparse as sp

    if not sp.issparse(part):
        raise TypeError(f"{name} must be a scipy sparse matrix like train, got "
                        f"{type(part).__name__}")
    if part.shape != train.shape:
        raise ValueError(f"{name} has shape {part.shape} but train has {train.shape}: sparse "
                         "parts share one [users, items] index space")
    raw = from_sparse(part)
    return Interactions(raw.user, raw.item, train.users, train.items, raw.weights)


def _keep_seen(part: Interactions, train: Interactions, unknown: str, name: str
               ) -> Interactions:
    """Drop (or reject) rows whose user/item has no train row, or which repeat a train row."""
    reasons = {
        "unknown user id": train.user_counts()[part.user] == 0,
        "unknown item id": train.item_counts()[part.item] == 0,
        "in train": np.isin(part.keys(), train.keys()),
    }
    what = {"unknown user id": "a user without training data",
            "unknown item id": "an item without training data",
            "in train": "a (user, item) pair that is also a training row"}
    keep = np.ones(len(part), dtype=bool)
    dropped = dict(part.dropped)
    for reason, bad in reasons.items():
        bad = bad & keep
        if not bad.any():
            continue
        if unknown == "error":
            row = int(np.argmax(bad))
            user, item = part.users.ids[part.user[row]], part.items.ids[part.item[row]]
            raise ValueError(
                f"{name}: {int(bad.sum())} rows have {what[reason]}, e.g. user {user!r}, item "
                f"{item!r}; pass unknown='drop' to drop and count them"
            )
        dropped[reason] = dropped.get(reason, 0) + int(bad.sum())
        keep &= ~bad
    out = part.subset(keep) if dropped else part
    out.dropped = dropped
    return out


def make_dataset(
    train: Any,
    test: Any = None,
    validation: Any = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str = ",",
    unknown: str = "drop",
    duplicates: str = "error",
) -> Dataset:
    """Train (and test, validation) interactions from DataFrames, CSV files or scipy sparse
    matrices (all parts of one kind), encoded with the training part's id maps.

    Args:
        train, test, validation: a pandas DataFrame or a CSV path (one row per interaction,
            columns ``user_col``, ``item_col`` and optionally ``weight_col``,
            ``timestamp_col``; CSV ids are read as strings), or a scipy sparse [users, items]
            matrix (ids are row/column numbers; every part has train's shape).
        unknown: "drop" [default] drops and counts test/validation rows with a user or item
            that has no training row, or that repeat a training pair (see the module doc);
            "error" raises a ValueError naming the first such row.
        duplicates: how repeated (user, item) rows within a part are merged (see
            :func:`~.data.from_arrays`) ["error"].
    """
    import scipy.sparse as sp

    check_choice(unknown, "unknown", UNKNOWN)
    parts = {"test": test, "validation": validation}
    if sp.issparse(train):
        base = from_sparse(train)
        encoded = {name: _from_sparse_part(p, name, base) for name, p in parts.items()
                   if p is not None}
    else:
        def read(part: Any, name: str, maps: tuple[IdMap, IdMap] | None) -> Interactions:
            if sp.issparse(part):
                raise TypeError(f"{name} is a sparse matrix but train is not: give every part "
                                "in one form")
            try:
                return from_dataframe(_frame(part, name, sep), user_col, item_col, weight_col,
                                      timestamp_col, duplicates, *(maps or (None, None)),
                                      unknown=unknown)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

        base = read(train, "train", None)
        maps = (base.users, base.items)
        encoded = {name: read(p, name, maps) for name, p in parts.items() if p is not None}
    checked = {name: _keep_seen(p, base, unknown, name) for name, p in encoded.items()}
    return Dataset(base, checked.get("test"), checked.get("validation"),
                   {name: p.dropped for name, p in checked.items()})
