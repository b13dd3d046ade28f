"""``evaluate_embeddings``: retrieval, clustering and verification metrics in one flat dict."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _inputs
from .clustering import clustering_metrics
from .retrieval import DEFAULT_KS, retrieval_metrics
from .verification import DEFAULT_MAX_PAIRS, pair_verification_metrics


@torch.no_grad()
def evaluate_embeddings(
    embeddings: Tensor,
    labels: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    distance: str = "euclidean",
    clustering: bool = True,
    verification: bool = True,
    seed: int = 0,
    *,
    chunk_size: int | None = None,
    backend: str = "auto",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    n_init: int = 1,
) -> dict[str, float]:
    """All evaluation metrics of labelled embeddings (tensor or NumPy array) as plain floats.

    Keys: ``precision_at_1``, ``recall_at_{k}`` for each of ``ks``, ``r_precision``,
    ``map_at_r``, ``num_queries``, ``num_excluded_queries`` (:func:`retrieval_metrics`,
    leave-one-out); ``nmi``, ``ami`` (:func:`clustering_metrics`, if ``clustering``);
    ``roc_auc``, ``verification_accuracy``, ``verification_threshold``, ``eer``,
    ``tar_at_far_1e-3``, ``tar_at_far_1e-2``, ``num_same_pairs``, ``num_different_pairs``
    (:func:`pair_verification_metrics` with ``max_pairs`` pairs, if ``verification``).
    """
    x = _inputs.embeddings(embeddings, "embeddings")
    y = _inputs.labels(labels, x.shape[0], x.device, "labels")
    out = retrieval_metrics(
        x, y, ks=ks, distance=distance, chunk_size=chunk_size, backend=backend
    )
    if clustering:
        out.update(clustering_metrics(x, y, seed=seed, n_init=n_init))
    if verification:
        out.update(pair_verification_metrics(x, y, distance, max_pairs=max_pairs, seed=seed))
    return out
