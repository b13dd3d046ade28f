import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from metrickit.evaluation import (
    make_verification_pairs,
    pair_verification_metrics,
    verification_metrics,
)
from metrickit.evaluation.verification import far_key
from reference import eval_distance, verification_bruteforce


def check_against_bruteforce(dist, same):
    out = verification_metrics(torch.tensor(dist), torch.tensor(same))
    ref = verification_bruteforce(dist, same)
    assert out["roc_auc"] == pytest.approx(roc_auc_score(same, -np.asarray(dist)), abs=1e-12)
    assert out["verification_accuracy"] == pytest.approx(ref["verification_accuracy"], abs=1e-12)
    assert out["verification_threshold"] == ref["verification_threshold"]
    assert out["eer"] == pytest.approx(ref["eer"], abs=1e-12)
    assert out["tar_at_far_1e-3"] == pytest.approx(ref[1e-3], abs=1e-12)
    assert out["tar_at_far_1e-2"] == pytest.approx(ref[1e-2], abs=1e-12)
    assert out["num_same_pairs"] == int(np.sum(same))


def test_hand_made_case():
    # distances 1 2 3 4 with same = T F T F: thresholds give (FAR, TAR) = (0,0), (0,½), (½,½),
    # (½,1), (1,1) → AUC = ¾; best accuracy ¾ at t = 1 (and t = 3; the smaller is kept);
    # FAR − FRR: −1, −½, 0 → EER = ½ exactly at t = 2.
    out = verification_metrics(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1, 0, 1, 0]))
    assert out["roc_auc"] == 0.75
    assert out["verification_accuracy"] == 0.75 and out["verification_threshold"] == 1.0
    assert out["eer"] == 0.5
    assert out["tar_at_far_1e-2"] == 0.5


def test_eer_interpolates_between_operating_points():
    # (FAR, FRR) jumps from (0, 2/3) to (1, 0) at the single different pair: FAR − FRR goes
    # from −2/3 to 1, crossing at a = 2/5 → EER = 2/5.
    out = verification_metrics(torch.tensor([1.0, 2.0, 2.0, 2.0]), torch.tensor([1, 1, 1, 0]))
    assert out["eer"] == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(4))
def test_random_scores_match_bruteforce_and_sklearn(seed):
    g = np.random.default_rng(seed)
    same = g.random(400) < 0.3
    dist = g.normal(size=400) - 1.0 * same
    check_against_bruteforce(dist, same)


def test_heavy_ties_match_bruteforce():
    g = np.random.default_rng(5)
    same = g.random(3000) < 0.5
    dist = np.round(g.normal(size=3000) - same, 1)  # ~60 distinct values
    check_against_bruteforce(dist, same)


def test_tar_at_far_is_conservative():
    # 2000 different pairs, so FAR 1e-3 allows exactly 2 false accepts
    g = np.random.default_rng(6)
    neg = g.uniform(0, 1, 2000)
    pos = g.uniform(0, 1, 500)
    dist = np.concatenate([pos, neg])
    same = np.concatenate([np.ones(500, bool), np.zeros(2000, bool)])
    out = verification_metrics(dist, same)
    third_neg = np.sort(neg)[2]
    assert out["tar_at_far_1e-3"] == pytest.approx(np.mean(pos < third_neg))


def test_similarity_scores_flip_the_direction():
    g = np.random.default_rng(7)
    same = g.random(300) < 0.4
    dist = g.normal(size=300) - same
    a = verification_metrics(torch.tensor(dist), torch.tensor(same))
    b = verification_metrics(torch.tensor(-dist), torch.tensor(same), similarity=True)
    assert b["verification_threshold"] == -a["verification_threshold"]
    assert {k: v for k, v in a.items() if k != "verification_threshold"} == pytest.approx(
        {k: v for k, v in b.items() if k != "verification_threshold"}
    )


def test_far_key():
    assert far_key(1e-3) == "tar_at_far_1e-3" and far_key(0.01) == "tar_at_far_1e-2"
    assert far_key(1.5e-4) == "tar_at_far_1.5e-4"


def test_all_pairs_when_few():
    labels = torch.tensor([3, 1, 3, 2, 1])
    first, second, same = make_verification_pairs(labels, max_pairs=10)
    expected = list(itertools.combinations(range(5), 2))
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == expected
    assert same.tolist() == [bool(labels[i] == labels[j]) for i, j in expected]


@pytest.mark.parametrize("max_pairs", [2, 50, 301])
def test_sample_is_balanced_distinct_and_seeded(max_pairs):
    labels = torch.tensor(np.random.default_rng(8).integers(0, 7, size=60))
    first, second, same = make_verification_pairs(labels, max_pairs=max_pairs, seed=3)
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(pairs) == max_pairs == first.numel()
    assert all(i < j for i, j in pairs)
    assert same.tolist() == (labels[first] == labels[second]).tolist()
    assert int(same.sum()) == max_pairs // 2
    again = make_verification_pairs(labels, max_pairs=max_pairs, seed=3)
    other = make_verification_pairs(labels, max_pairs=max_pairs, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(again, (first, second, same), strict=True))
    assert not torch.equal(other[0], first) or not torch.equal(other[1], second)


def test_scarce_same_pairs_are_all_taken():
    labels = torch.tensor([0, 0] + list(range(1, 40)))  # exactly one same-class pair
    first, second, same = make_verification_pairs(labels, max_pairs=100)
    assert int(same.sum()) == 1 and first.numel() == 100
    assert (first[same].item(), second[same].item()) == (0, 1)


def test_sampling_is_uniform_over_same_pairs():
    # classes of sizes 2 and 10: 1 and 45 same pairs; uniform sampling of 23 same pairs gives
    # the small class's pair with probability 23/46
    labels = torch.tensor([0] * 2 + [1] * 10 + list(range(2, 30)))
    hits = 0
    for seed in range(200):
        first, _, same = make_verification_pairs(labels, max_pairs=46, seed=seed)
        hits += int(((first == 0) & same).sum())
    assert 0.4 < hits / 200 < 0.6


def test_pair_metrics_use_embedding_distances():
    g = np.random.default_rng(9)
    emb, labels = g.normal(size=(12, 3)), g.integers(0, 3, size=12)
    out = pair_verification_metrics(torch.tensor(emb), torch.tensor(labels), distance="cosine")
    pairs = list(itertools.combinations(range(12), 2))
    dist = [eval_distance(emb[i], emb[j], "cosine") for i, j in pairs]
    same = [bool(labels[i] == labels[j]) for i, j in pairs]
    assert out["roc_auc"] == pytest.approx(roc_auc_score(same, -np.array(dist)), abs=1e-12)
    assert out["eer"] == pytest.approx(verification_bruteforce(dist, same)["eer"], abs=1e-12)


def test_bad_inputs_name_the_argument():
    d, s = torch.rand(4), torch.tensor([1, 0, 1, 0])
    with pytest.raises(ValueError, match="both same and different pairs, got 4 same"):
        verification_metrics(d, torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="same must be a 1-D bool or integer .* \\(4\\)"):
        verification_metrics(d, s[:3])
    with pytest.raises(ValueError, match="distances must be 1-D"):
        verification_metrics(d[:, None], s)
    with pytest.raises(ValueError, match="fars must be"):
        verification_metrics(d, s, fars=(0.0,))
    with pytest.raises(ValueError, match="max_pairs must be at least 2"):
        make_verification_pairs(s, max_pairs=1)
    with pytest.raises(ValueError, match="labels must have at least 2 entries"):
        make_verification_pairs(torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        pair_verification_metrics(torch.randn(5, 2), s)


def test_wide_embeddings_are_gathered_in_chunks_of_bounded_size(monkeypatch):
    # raw images as embeddings (D in the tens of thousands) must not gather 65,536 pairs × D
    from metrickit.evaluation import verification

    x = torch.randn(30, 5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(30) % 3
    pairs = list(itertools.combinations(range(30), 2))
    dist = torch.stack([(x[i] - x[j]).norm() for i, j in pairs])
    same = torch.tensor([bool(y[i] == y[j]) for i, j in pairs])
    seen = []
    rowwise = verification.rowwise_distance

    def spy(a, b, distance):
        seen.append(a.numel())
        return rowwise(a, b, distance)

    monkeypatch.setattr(verification, "_PAIR_ELEMENTS", 50 * 5000)
    monkeypatch.setattr(verification, "rowwise_distance", spy)
    out = pair_verification_metrics(x, y)
    assert len(seen) == 9 and max(seen) == 50 * 5000  # 435 pairs, 50 a chunk
    expected = verification_metrics(dist, same)
    assert out == pytest.approx(expected, abs=1e-12)
