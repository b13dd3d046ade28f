"""Evaluation of learned embeddings: exact kNN, retrieval, clustering and verification metrics."""

from .knn import knn, knn_chunks
from .retrieval import retrieval_metrics

__all__ = ["knn", "knn_chunks", "retrieval_metrics"]
