"""Recommenders from implicit feedback, with the ranking losses of :mod:`metrickit.losses.ranking`.

    >>> from metrickit import recsys
    >>> ml = recsys.load_movielens("movielens-100k")          # no download (see datasets)
    >>> train, test = recsys.random_split(ml.interactions.to_implicit(), n_test=10)
    >>> model = recsys.MatrixFactorization(train.n_users, train.n_items, dim=32)
    >>> history = recsys.fit(model, train, recsys.FitConfig(loss="warp"))
    >>> recsys.evaluate(model, train, test, k=10)               # AUC, Precision@10, NDCG@10, ...

Your own data: ``recsys.make_dataset(train_df, test_df)`` (DataFrames, CSV paths or sparse
matrices) encodes every part with the training part's id maps.

Layers: data/datasets/dataset → splits → sampling → models → train → metrics (all below the CLI).
"""

from .data import IdMap, Interactions, from_arrays, from_csv, from_dataframe, from_sparse
from .dataset import Dataset, make_dataset
from .datasets import MovieLens, load_movielens, movielens_features
from .metrics import evaluate, popularity_scorer, rank_metrics, top_k, validation_metrics
from .models import FeatureTower, MatrixFactorization, Recommender, TwoTower, build_features
from .sampling import NegativeSampler
from .splits import Split, leave_last_out, random_split
from .steps import kos_positives, softmax_step, warp_kos_step, warp_step
from .train import FitConfig, fit

__all__ = [
    "IdMap",
    "Interactions",
    "from_arrays",
    "from_csv",
    "from_dataframe",
    "from_sparse",
    "Dataset",
    "make_dataset",
    "MovieLens",
    "load_movielens",
    "movielens_features",
    "Split",
    "random_split",
    "leave_last_out",
    "NegativeSampler",
    "Recommender",
    "MatrixFactorization",
    "TwoTower",
    "FeatureTower",
    "build_features",
    "FitConfig",
    "fit",
    "warp_step",
    "warp_kos_step",
    "kos_positives",
    "softmax_step",
    "evaluate",
    "validation_metrics",
    "popularity_scorer",
    "rank_metrics",
    "top_k",
]
