"""Clustering quality of embeddings: k-means with k = number of classes, then NMI and AMI."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from torch import Tensor

from .._validation import check_positive_int
from . import _inputs


@torch.no_grad()
def clustering_metrics(
    embeddings: Tensor, labels: Tensor, seed: int = 0, n_init: int = 1
) -> dict[str, float]:
    """``{"nmi", "ami"}`` of scikit-learn ``KMeans`` clusters against the labels.

    KMeans runs with ``n_clusters`` = number of distinct labels, k-means++ initialisation,
    ``n_init`` restarts (explicit, default 1) and ``random_state=seed``; the scores are
    scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score``
    (arithmetic-mean normalisation). Embeddings are clustered in float32 (float64 stays float64).
    """
    x = _inputs.embeddings(embeddings, "embeddings")
    y = _inputs.labels(labels, x.shape[0], torch.device("cpu"), "labels").numpy()
    check_positive_int(n_init, "n_init")
    classes = int(np.unique(y).size)
    if classes < 2:
        raise ValueError(f"labels must contain at least 2 classes for clustering, got {classes}")
    data = x.detach().cpu()
    data = data.double() if data.dtype == torch.float64 else data.float()
    kmeans = KMeans(n_clusters=classes, n_init=n_init, random_state=seed)
    predicted = kmeans.fit_predict(data.numpy())
    return {
        "nmi": float(normalized_mutual_info_score(y, predicted, average_method="arithmetic")),
        "ami": float(adjusted_mutual_info_score(y, predicted, average_method="arithmetic")),
    }
