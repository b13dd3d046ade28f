"""User–item interactions: id mapping, loading (DataFrame, CSV, scipy sparse), implicit feedback.

An :class:`Interactions` holds one row per distinct (user, item) pair, as contiguous indices into
an :class:`IdMap` of raw user ids and one of raw item ids, with an optional weight (e.g. a rating)
and an optional timestamp per row. Duplicate (user, item) rows are an error unless the caller
chooses how to merge them (``duplicates="first" | "last" | "sum"``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import check_choice

if TYPE_CHECKING:  # pandas/scipy are imported where they are used, so recsys stays light
    import pandas as pd
    import scipy.sparse as sp

DUPLICATES = ("error", "first", "last", "sum")
UNKNOWN = ("error", "drop")


class IdMap:
    """A bijection between raw ids (any hashable) and contiguous indices 0..n-1.

    Indices follow the order in which ids were first given (or sorted order with ``sort=True``).
    """

    def __init__(self, ids: Iterable[Hashable], sort: bool = False) -> None:
        unique = list(dict.fromkeys(ids))
        if sort:
            unique.sort()
        self._ids = np.empty(len(unique), dtype=object)
        self._ids[:] = unique
        self._index = {raw: i for i, raw in enumerate(unique)}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw: Hashable) -> bool:
        return raw in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and list(self._ids) == list(other._ids)

    __hash__ = None  # type: ignore[assignment]

    @property
    def ids(self) -> np.ndarray:
        """Raw ids in index order (object array)."""
        return self._ids

    def to_index(self, raw: Iterable[Hashable], name: str = "id") -> np.ndarray:
        """Indices of raw ids; an unknown id raises a ``KeyError`` naming it."""
        out = []
        for r in raw:
            try:
                out.append(self._index[r])
            except KeyError:
                raise KeyError(f"unknown {name} {r!r} (not seen in the training data)") from None
        return np.asarray(out, dtype=np.int64)

    def to_raw(self, index: Iterable[int] | np.ndarray) -> np.ndarray:
        """Raw ids of indices (object array)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for an IdMap of {len(self)} ids")
        return self._ids[index]


def same_ids(a: IdMap, b: IdMap) -> bool:
    """Do two id maps give every id the same index (the same object, or equal)?"""
    return a is b or a == b


@dataclass
class Interactions:
    """Distinct (user, item) interactions as indices into ``users`` / ``items`` id maps.

    ``weights`` (float) and ``timestamps`` (float) are optional, one per row. ``dropped``
    counts the rows left out when it was built, by reason (e.g. ``{"unknown item id": 3}``).
    """

    user: np.ndarray
    item: np.ndarray
    users: IdMap
    items: IdMap
    weights: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    dropped: dict[str, int] = field(default_factory=dict, compare=False)
    _csr: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        n = self.user.shape[0]
        if self.user.ndim != 1 or self.item.shape != (n,):
            raise ValueError(
                f"user and item must be 1-D of one length, got shapes {self.user.shape} and "
                f"{self.item.shape}"
            )
        for name in ("weights", "timestamps"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.shape != (n,):
                    raise ValueError(f"{name} must have one entry per row ({n}), got {v.shape}")
                setattr(self, name, v)
        if n and (self.user.min() < 0 or self.user.max() >= len(self.users)):
            raise ValueError("user indices fall outside the user id map")
        if n and (self.item.min() < 0 or self.item.max() >= len(self.items)):
            raise ValueError("item indices fall outside the item id map")

    def __len__(self) -> int:
        return self.user.shape[0]

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_users, self.n_items

    def keys(self) -> np.ndarray:
        """One int64 key per row, ``user * n_items + item`` (unique within an Interactions)."""
        return self.user * self.n_items + self.item

    def to_csr(self) -> sp.csr_matrix:
        """Binary [n_users, n_items] CSR matrix of the interactions (cached), sorted indices."""
        if self._csr is None:
            import scipy.sparse as sp

            data = np.ones(len(self), dtype=np.float32)
            m = sp.csr_matrix((data, (self.user, self.item)), shape=self.shape)
            m.sort_indices()
            self._csr = m
        return self._csr

    def subset(self, rows: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask or index array, with the same id maps."""
        pick = (lambda v: None if v is None else v[rows])  # noqa: E731
        return Interactions(
            self.user[rows], self.item[rows], self.users, self.items,
            pick(self.weights), pick(self.timestamps),
        )

    def to_implicit(self, threshold: float | None = None) -> Interactions:
        """Implicit feedback: keep rows with ``weight >= threshold`` (all rows when None),
        dropping weights. Users/items left without rows stay in the id maps (cold)."""
        if threshold is None:
            keep = np.ones(len(self), dtype=bool)
        else:
            if self.weights is None:
                raise ValueError("threshold needs weights (ratings); these interactions have none")
            keep = self.weights >= float(threshold)
        out = self.subset(keep)
        out.weights = None
        return out

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)


def _dedupe(
    user: np.ndarray, item: np.ndarray, n_items: int, extra: dict[str, np.ndarray | None],
    duplicates: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    keys = user * n_items + item
    uniq, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    if uniq.shape[0] == keys.shape[0]:
        return user, item, extra
    if duplicates == "error":
        k = int(uniq[counts > 1][0])
        raise ValueError(
            f"{int((counts - 1).sum())} duplicate (user, item) rows, e.g. user index "
            f"{k // n_items}, item index {k % n_items}; pass duplicates='first', 'last' or 'sum'"
        )
    if duplicates == "last":
        last = np.zeros(uniq.shape[0], dtype=np.int64)
        last[inverse] = np.arange(keys.shape[0])  # later rows overwrite earlier ones
        rows = last
    else:
        rows = first
    order = np.sort(rows)  # keep the input's row order
    out = {k: None if v is None else v[order] for k, v in extra.items()}
    if duplicates == "sum" and extra.get("weights") is not None:
        sums = np.bincount(inverse, weights=extra["weights"])
        out["weights"] = sums[np.searchsorted(uniq, keys[order])]
    return user[order], item[order], out


def _encode(raw: Sequence[Hashable] | np.ndarray, id_map: IdMap | None, name: str
            ) -> tuple[IdMap, np.ndarray]:
    """(id map, codes): a new map in order of first appearance, or codes in a given map with -1
    for ids it does not hold."""
    if id_map is not None:
        index = id_map._index
        return id_map, np.fromiter((index.get(r, -1) for r in raw), dtype=np.int64,
                                   count=len(raw))
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(raw, dtype=object), sort=False)
    if (codes < 0).any():
        raise ValueError(f"a {name} is missing (None/NaN) in row {int(np.argmax(codes < 0))}")
    return IdMap(uniques.tolist()), codes.astype(np.int64)


def _drop_unknown(
    raw: dict[str, Sequence[Hashable] | np.ndarray], codes: dict[str, np.ndarray], unknown: str,
) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of rows whose ids are all known, and the count dropped per reason; with
    ``unknown="error"`` an unknown id is a ValueError naming it and the count."""
    check_choice(unknown, "unknown", UNKNOWN)
    keep = np.ones(len(next(iter(codes.values()))), dtype=bool)
    dropped: dict[str, int] = {}
    for name, c in codes.items():
        bad = c < 0
        if not bad.any():
            continue
        if unknown == "error":
            first = int(np.argmax(bad))
            raise ValueError(
                f"{int(bad.sum())} rows have a {name} not in the given id map, e.g. "
                f"{raw[name][first]!r} in row {first} (ids seen only here, not in the training "
                "data); pass unknown='drop' to drop and count such rows"
            )
        dropped[f"unknown {name}"] = int((bad & keep).sum())
        keep &= ~bad
    return keep, dropped


def from_arrays(
    users: Sequence[Hashable] | np.ndarray,
    items: Sequence[Hashable] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    duplicates: str = "error",
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    unknown: str = "error",
) -> Interactions:
    """Interactions from parallel arrays of raw ids.

    Id maps are built from the ids in order of first appearance unless given (e.g. the training
    data's ``users``/``items``, to encode test data alike). An id the given map lacks is a
    ``ValueError`` with ``unknown="error"`` [default]; ``unknown="drop"`` drops such rows and
    counts them in the result's ``dropped``. ``duplicates``: "error" [default] | "first" |
    "last" | "sum" (sums weights, keeps the first timestamp).
    """
    if len(users) == 0:
        raise ValueError("interactions are empty: at least one (user, item) row is needed")
    if len(users) != len(items):
        raise ValueError(f"users and items must have one length, got {len(users)} and {len(items)}")
    umap, u = _encode(users, user_map, "user id")
    imap, i = _encode(items, item_map, "item id")
    extra = {
        "weights": None if weights is None else np.asarray(weights, dtype=np.float64),
        "timestamps": None if timestamps is None else np.asarray(timestamps, dtype=np.float64),
    }
    for name, v in extra.items():
        if v is not None and v.shape != (len(users),):
            raise ValueError(f"{name} must have one entry per row ({len(users)}), got {v.shape}")
    keep, dropped = _drop_unknown({"user id": users, "item id": items},
                                  {"user id": u, "item id": i}, unknown)
    if dropped:
        u, i = u[keep], i[keep]
        extra = {k: None if v is None else v[keep] for k, v in extra.items()}
    u, i, extra = _dedupe(u, i, len(imap), extra, duplicates)
    out = Interactions(u, i, umap, imap, extra["weights"], extra["timestamps"])
    out.dropped = dropped
    return out


def from_dataframe(
    df: pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    duplicates: str = "error",
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    unknown: str = "error",
) -> Interactions:
    """Interactions from a DataFrame with one row per interaction (see :func:`from_arrays`)."""
    for role, col in (("user_col", user_col), ("item_col", item_col), ("weight_col", weight_col),
                      ("timestamp_col", timestamp_col)):
        if col is not None and col not in df.columns:
            raise ValueError(f"{role}={col!r} is not a column; columns are {list(df.columns)}")
    return from_arrays(
        df[user_col].tolist(),
        df[item_col].tolist(),
        None if weight_col is None else df[weight_col].to_numpy(),
        None if timestamp_col is None else df[timestamp_col].to_numpy(),
        duplicates, user_map, item_map, unknown,
    )


def from_csv(
    path: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str = ",",
    duplicates: str = "error",
) -> Interactions:
    """Interactions from a delimited text file with a header row (ids are read as strings)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {str(path)!r} does not exist")
    dtypes = {user_col: str, item_col: str}
    df = pd.read_csv(path, sep=sep, dtype=dtypes)
    return from_dataframe(df, user_col, item_col, weight_col, timestamp_col, duplicates)


def from_sparse(matrix: sp.spmatrix | sp.sparray) -> Interactions:
    """Interactions from a scipy sparse [n_users, n_items] matrix; stored non-zeros become rows
    with their values as weights. Ids are the row/column numbers; empty rows/columns are kept."""
    import scipy.sparse as sp

    if not sp.issparse(matrix) or matrix.ndim != 2:
        raise TypeError(f"matrix must be a 2-D scipy sparse matrix, got {type(matrix).__name__}")
    coo = sp.coo_matrix(matrix)
    coo.sum_duplicates()
    coo.eliminate_zeros()
    if coo.nnz == 0:
        raise ValueError("interactions are empty: the sparse matrix has no non-zero entry")
    n_users, n_items = coo.shape
    return Interactions(
        coo.row.astype(np.int64), coo.col.astype(np.int64),
        IdMap(range(n_users)), IdMap(range(n_items)), weights=coo.data.astype(np.float64),
    )
