"""Evaluation of learned embeddings: exact kNN, retrieval, clustering and verification metrics.

Layer: imports only :mod:`metrickit.distances` and :mod:`metrickit._validation` (and scikit-learn,
optionally faiss); never losses, training, the CLI or plots.
"""

from .ann import ANNIndex, ann_search, hard_negatives, recall_at_k
from .clustering import clustering_metrics
from .evaluate import evaluate_embeddings
from .knn import knn, knn_chunks
from .retrieval import retrieval_metrics
from .verification import (
    make_verification_pairs,
    pair_verification_metrics,
    verification_metrics,
)

__all__ = [
    "knn",
    "knn_chunks",
    "retrieval_metrics",
    "clustering_metrics",
    "verification_metrics",
    "make_verification_pairs",
    "pair_verification_metrics",
    "evaluate_embeddings",
    "ANNIndex",
    "ann_search",
    "recall_at_k",
    "hard_negatives",
]
