import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from metrickit.evaluation import clustering_metrics, evaluate_embeddings, retrieval_metrics
from metrickit.evaluation.verification import pair_verification_metrics

EVALUATE_KEYS = {
    "precision_at_1", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8",
    "r_precision", "map_at_r", "nmi", "ami", "roc_auc", "verification_accuracy",
    "verification_threshold", "eer", "tar_at_far_1e-3", "tar_at_far_1e-2",
}


def blobs(n_classes=4, per_class=15, dim=5, spread=0.3, seed=0):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_classes, dim)) * 3
    labels = np.repeat(np.arange(n_classes), per_class)
    return (centres[labels] + spread * g.normal(size=(labels.size, dim))).astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_called_directly(seed):
    x, y = blobs(spread=2.0, seed=seed)
    out = clustering_metrics(torch.tensor(x), torch.tensor(y), seed=seed, n_init=3)
    pred = KMeans(n_clusters=4, n_init=3, random_state=seed).fit_predict(x)
    assert out["nmi"] == normalized_mutual_info_score(y, pred)
    assert out["ami"] == adjusted_mutual_info_score(y, pred)


def test_separated_blobs_score_one():
    x, y = blobs(spread=0.01)
    assert clustering_metrics(x, y) == {"nmi": 1.0, "ami": 1.0}


def test_clustering_bad_inputs():
    x = torch.randn(6, 2)
    with pytest.raises(ValueError, match="at least 2 classes for clustering, got 1"):
        clustering_metrics(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        clustering_metrics(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_init must be a positive integer"):
        clustering_metrics(x, torch.tensor([0, 1] * 3), n_init=0)


def test_evaluate_embeddings_is_the_union_of_the_parts():
    x, y = blobs(spread=1.5, seed=2)
    out = evaluate_embeddings(x, y, seed=5)
    assert EVALUATE_KEYS <= set(out)
    assert all(isinstance(v, (float, int)) and not isinstance(v, bool) for v in out.values())
    parts = {
        **retrieval_metrics(x, y),
        **clustering_metrics(x, y, seed=5),
        **pair_verification_metrics(x, y, seed=5),
    }
    assert out == parts


def test_evaluate_embeddings_optional_parts_and_half_precision():
    x, y = blobs(seed=3)
    out = evaluate_embeddings(torch.tensor(x).half(), y, clustering=False, verification=False)
    assert "nmi" not in out and "roc_auc" not in out
    assert out["precision_at_1"] == 1.0 and out["map_at_r"] == 1.0
