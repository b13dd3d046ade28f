"""Construction-time validation, one vocabulary, explicit algorithms, and the bad-input
regressions of issue 15 (each of these failed on the code before it)."""

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit import miners
from metrickit.distances import pairwise_distance
from metrickit.masks import pair_masks

L = mk.losses


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: L.ContrastiveLoss(distance="manhattan"), ValueError, "distance must be one of"),
        (lambda: L.BatchContrastiveLoss(distance="manhattan"), ValueError, "distance"),
        (lambda: L.WARPLoss(exact="yes"), TypeError, "exact must be a bool"),
        (lambda: L.BatchTripletLoss(soft="False"), TypeError, "soft must be a bool"),
        (lambda: L.BatchTripletLoss(squared=1), TypeError, "squared must be a bool"),
        (lambda: L.TripletMarginLoss(soft="False"), TypeError, "soft must be a bool"),
        (lambda: L.SymmetricTripletLoss(soft="no"), TypeError, "soft must be a bool"),
        (lambda: L.BatchTripletLoss(algorithm="gpu"), ValueError, "algorithm must be one of"),
        (lambda: L.BatchTripletLoss(soft=True, algorithm="blockwise"), ValueError, "blockwise"),
        (lambda: L.BatchTripletLoss(reduction="none", algorithm="blockwise"), ValueError,
         "blockwise"),
        (lambda: L.BatchTripletLoss(margin="0.2"), TypeError, "margin must be a real number"),
        (lambda: L.TripletCenterLoss(3.0, 4), TypeError, "num_classes must be an integer"),
        (lambda: L.CrossBatchMemory(L.BatchTripletLoss(), 4, start_step=1.5), TypeError,
         "start_step"),
        (lambda: mk.distributed.DistributedLoss(L.NPairLoss(), anchors="local"), TypeError,
         "BatchLoss"),
    ],
)
def test_modules_validate_every_argument_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_functional_forms_refuse_string_booleans():
    x, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match="soft must be a bool"):
        mk.F.batch_triplet_loss(x, y, soft="False")
    with pytest.raises(TypeError, match="exact must be a bool"):
        mk.F.warp_loss(torch.randn(2, 3), torch.rand(2, 3) > 0.5, exact="yes")
    with pytest.raises(TypeError, match="squared must be a bool"):
        miners.triplet_difficulty(x, y, squared="yes")


def test_numpy_scalars_are_numbers_everywhere():
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert L.BatchTripletLoss(margin=np.float32(0.25)).margin == 0.25
    assert L.BatchContrastiveLoss(margin=np.float64(1.5)).margin == 1.5
    assert L.LiftedStructureLoss(margin=np.int64(1)).margin == 1.0
    assert L.BatchQuadrupletLoss(np.float32(1.0), np.float32(0.5)).margin2 == 0.5
    assert L.BatchNPairLoss(l2_reg=np.float32(0.0)).l2_reg == 0.0
    center = L.TripletCenterLoss(np.int64(4), np.int64(4), margin=np.float32(1.0))
    assert center.proxies.shape == (4, 4) and center.centers is center.proxies
    assert L.WARPLoss(max_sampled=np.int64(5), exact=np.bool_(True)).exact is True
    xbm = L.CrossBatchMemory(L.BatchTripletLoss(), np.int64(4), np.int64(8), np.int64(0))
    assert xbm.memory_embeddings.shape == (8, 4)
    loss = L.BatchTripletLoss()(x, y, ref_embeddings=x * 1, ref_labels=y, ref_offset=np.int64(0))
    torch.testing.assert_close(loss, L.BatchTripletLoss()(x, y))
    a, p, n = miners.mine_offline(x, y, "hard", margin=np.float32(0.2), chunk_size=np.int64(3))
    assert len(a) == 8


# ---- bad-input regressions -------------------------------------------------------------------


def test_batch_npair_on_an_empty_batch_is_zero_with_a_graph():
    x = torch.zeros(0, 3, requires_grad=True)
    for reduction in ("mean", "sum"):
        loss = mk.F.batch_npair_loss(x, torch.zeros(0, dtype=torch.long), reduction=reduction)
        assert loss.item() == 0 and loss.requires_grad
        loss.backward()
    none = mk.F.batch_npair_loss(x, torch.zeros(0, dtype=torch.long), reduction="none")
    assert none.shape == (0,)


@pytest.mark.parametrize("bad", [-1.0, 2.0, float("nan"), 0.5])
def test_contrastive_refuses_pair_labels_other_than_0_and_1(bad):
    x1, x2 = torch.randn(3, 2), torch.randn(3, 2)
    y = torch.tensor([1.0, bad, 0.0])
    with pytest.raises(ValueError, match="y must hold only 0 .* and 1"):
        mk.F.contrastive_loss(x1, x2, y)
    for good in (torch.tensor([1, 0, 1]), torch.tensor([True, False, True])):
        assert mk.F.contrastive_loss(x1, x2, good) >= 0


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_mine_offline_does_not_depend_on_chunking_for_near_ties(mining):
    # float32 points repeated with 1e-6 noise: many pairs' distances differ in the last bits,
    # which the Gram expansion rounded differently per block before (seeds 28 and 29 failed)
    for seed in (28, 29):
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(20, 32, generator=g)
        x = base[torch.randint(0, 20, (200,), generator=g)] + 1e-6 * torch.randn(200, 32,
                                                                                 generator=g)
        y = torch.randint(0, 5, (200,), generator=g)
        whole = miners.mine_offline(x, y, mining, margin=0.5, chunk_size=1024)
        for chunk in (1, 7, 64, 300):
            parts = miners.mine_offline(x, y, mining, margin=0.5, chunk_size=chunk)
            for u, v in zip(whole, parts, strict=True):
                assert torch.equal(u, v), (seed, chunk)


# ---- algorithms: every path through the public API, equal values and gradients -------------

TRIPLET_CASES = [
    (mining, soft, reduction)
    for mining in ("all", "hard", "semihard")
    for soft in (False, True)
    for reduction in ("mean", "sum", "none")
]


@pytest.mark.parametrize("mining, soft, reduction", TRIPLET_CASES)
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_every_triplet_algorithm_gives_the_same_loss_and_gradient(mining, soft, reduction,
                                                                  distance):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (24,), generator=g)
    x0 = torch.randn(24, 5, generator=g, dtype=torch.float64)
    margin = 2.0 if distance == "dot" else 0.3
    squared = distance == "squared_euclidean"
    dist = "euclidean" if squared else distance
    algorithms = ["dense", "sorted"]
    if mining != "all" or (not soft and reduction != "none"):
        algorithms.append("blockwise")
    results = []
    for algorithm in algorithms:
        x = x0.clone().requires_grad_(True)
        loss = L.BatchTripletLoss(margin, mining, squared, soft, dist, reduction, algorithm)
        out = loss(x, y)
        out.sum().backward()
        results.append((algorithm, out.detach(), x.grad))
    _, want, want_grad = results[0]
    assert want.abs().sum() > 0
    for algorithm, got, grad in results[1:]:
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=algorithm)
        torch.testing.assert_close(grad, want_grad, rtol=1e-8, atol=1e-10, msg=algorithm)


def test_blockwise_needs_the_batch_as_its_references():
    x, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    loss = L.BatchTripletLoss(algorithm="blockwise")
    with pytest.raises(ValueError, match="blockwise.*its own references"):
        loss(x, y, ref_embeddings=x.clone(), ref_labels=y, ref_offset=0)
    with pytest.raises(ValueError, match="blockwise.*indices_tuple"):
        loss(x, y, miners.all_triplets(y))


@pytest.mark.parametrize("algorithm", ["dense", "sorted"])
def test_triplet_core_algorithms_agree(algorithm):
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (15,), generator=g)
    x = torch.randn(15, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    pos, neg = pair_masks(y)
    d = pairwise_distance(x)
    auto = mk.F.triplet_loss_from_distances(d, pos, neg, 0.4)
    got = mk.F.triplet_loss_from_distances(d, pos, neg, 0.4, algorithm=algorithm)
    torch.testing.assert_close(got, auto, rtol=1e-12, atol=1e-12)
    (g1,) = torch.autograd.grad(auto, x, retain_graph=True)
    (g2,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_difficulty_count_algorithms_agree():
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 4, (30,), generator=g)
    x = torch.randn(30, 3, generator=g).round()  # exact distance ties
    counts = [miners.triplet_difficulty(x, y, 0.5, algorithm=a)
              for a in ("auto", "thresholds", "sorted")]
    for c in counts[1:]:
        assert {k: int(v) for k, v in c.items()} == {k: int(v) for k, v in counts[0].items()}
    assert int(counts[0]["hard"]) > 0
    with pytest.raises(ValueError, match="algorithm"):
        miners.triplet_difficulty(x, y, algorithm="gpu")


def test_warp_takes_its_mask_as_relevant_and_positives_is_deprecated():
    scores = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    want = mk.F.warp_loss(scores, relevant=mask, exact=True)
    with pytest.warns(DeprecationWarning, match="positives= is deprecated"):
        assert torch.equal(mk.F.warp_loss(scores, positives=mask, exact=True), want)
    with pytest.warns(DeprecationWarning, match="positives= is deprecated"):
        assert torch.equal(L.WARPLoss(exact=True)(scores, positives=mask), want)
    assert torch.equal(L.WARPLoss(exact=True)(scores, mask), want)
    with pytest.raises(TypeError, match="once"):
        mk.F.warp_loss(scores, mask, positives=mask)
    with pytest.raises(TypeError, match="needs relevant"):
        mk.F.warp_loss(scores)
    with pytest.raises(TypeError, match="relevant must be a bool mask"):
        mk.F.warp_loss(scores, mask.long())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [(0, 0), (40, 5), (-1, -1)])
def test_one_non_finite_value_anywhere_is_refused(dtype, bad, where):
    from metrickit._validation import check_embeddings

    x = torch.randn(41, 18).to(dtype)[:, ::3]  # strided too
    check_embeddings(x)
    x[where] = bad
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        check_embeddings(x, "x")
