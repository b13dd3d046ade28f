import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.margin_loss,
    module=mk.losses.MarginLoss,
    name="margin",
    reference=pair_reference.margin,
    hyper=dict(margin=0.3, beta=1.0),
    bad=[({"margin": -0.1}, ValueError, "margin"), ({"nu": -1.0}, ValueError, "nu"),
         ({"beta": "1.2"}, TypeError, "beta"), ({"learn_beta": 1}, TypeError, "learn_beta"),
         ({"num_classes": 0}, ValueError, "num_classes"),
         ({"num_classes": 2.0}, TypeError, "num_classes")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


def _batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 8, dtype=dtype, generator=g, requires_grad=True)
    return x, torch.randint(0, 5, (32,), generator=g)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: MarginLoss(margin, nu, beta, learn_beta=True[, num_classes]) with its default
    # LpDistance(normalize_embeddings=True) and DivisorReducer, all triplets of the batch
    x, labels = _batch(dtype)
    for kw in (dict(), dict(margin=0.1, beta=1.0, nu=0.2), dict(nu=0.1, num_classes=5)):
        ours = mk.losses.MarginLoss(**kw).to(dtype)
        theirs = pml_losses.MarginLoss(learn_beta=True, **kw).to(dtype)
        with torch.no_grad():
            ours.beta.copy_(ours.beta + torch.linspace(-0.2, 0.2, ours.beta.numel()))
            theirs.beta.copy_(ours.beta)
        a, b = ours(x, labels), theirs(x, labels)
        assert a.item() == pytest.approx(b.item(), rel=tol)
        ga, gb = torch.autograd.grad(a, (x, ours.beta)), torch.autograd.grad(b, (x, theirs.beta))
        for u, v in zip(ga, gb, strict=True):
            assert torch.allclose(u, v, rtol=tol * 10, atol=tol)
        assert ga[1].abs().sum() > 0  # the boundary learns


def test_per_class_beta_matches_reference():
    emb = np.random.default_rng(3).normal(size=(10, 4))
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    beta = [0.9, 1.1, 1.3]
    x = torch.tensor(emb, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        ours = mk.F.margin_loss(x, labels, 0.3, torch.tensor(beta, dtype=torch.float64),
                                reduction=reduction)
        ref = checks.expected(CASE, x, labels, reduction, beta=beta)
        checks.assert_close(ours, ref, 1e-10)
    with pytest.raises(ValueError, match="labels must lie in"):
        mk.F.margin_loss(x, labels + 5, beta=torch.ones(3))


def test_distance_weighted_triplets_match_reference_and_pml():
    x, labels = _batch()
    gen = torch.Generator().manual_seed(5)
    triplets = mk.miners.DistanceWeightedMiner(generator=gen)(x, labels)
    assert triplets[0].numel() > 0
    ours = mk.F.margin_loss(x, labels, indices_tuple=triplets)
    listed = list(zip(*(t.tolist() for t in triplets), strict=True))
    ref = checks.expected(CASE, x, labels, "mean", margin=0.2, beta=1.2, triplets=listed)
    checks.assert_close(ours, ref, 1e-10)
    checks.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0], 1e-7)
    pml = pml_losses.MarginLoss(learn_beta=True).double()  # its β is float32 otherwise
    with torch.no_grad():
        pml.beta.fill_(1.2)
    theirs = pml(x, labels, triplets)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)


def test_invalid_mined_triplets_are_dropped():
    x, labels = _batch()
    same = (labels[None, :] == labels[:, None]).nonzero()
    a, p = same[same[:, 0] != same[:, 1]][0]
    loss = mk.F.margin_loss(x, labels, indices_tuple=(a[None], p[None], p[None]))
    assert loss.item() == 0.0


def _dw_reference(x, labels, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Per anchor, the distance-weighted probabilities of its negatives, by loops."""
    x = np.asarray(x, float)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dim = x.shape[1]
    out = np.zeros((len(x), len(x)))
    for i in range(len(x)):
        for j in range(len(x)):
            if labels[i] == labels[j]:
                continue
            d = float(np.linalg.norm(unit[i] - unit[j]))
            if d >= nonzero_loss_cutoff:
                continue
            d = max(d, cutoff)
            out[i, j] = d ** (2 - dim) * (1 - d * d / 4) ** (-(dim - 3) / 2)
        if out[i].sum() > 0:
            out[i] /= out[i].sum()
    return out


def test_distance_weighted_probabilities_match_loops():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    prob, pos = mk.miners.DistanceWeightedMiner(cutoff=0.7).weights(x, labels)
    want = _dw_reference(x, labels.tolist(), cutoff=0.7)
    np.testing.assert_allclose(prob.numpy(), want, rtol=1e-5, atol=1e-7)
    assert (want > 0).sum() < (labels[:, None] != labels[None, :]).sum()  # the cutoff bites


def test_distance_weighted_sampling_frequencies():
    # 100 identical anchors of class 0 share one distribution over the 8 negatives: each call
    # draws one negative for each of their 9900 positive pairs
    g = torch.Generator().manual_seed(0)
    anchor = torch.randn(1, 6, generator=g)
    negatives = anchor + 0.6 * torch.randn(8, 6, generator=g)
    x = torch.cat([anchor.expand(100, 6), negatives])
    labels = torch.cat([torch.zeros(100, dtype=torch.long), torch.arange(1, 9)])
    want = _dw_reference(x.numpy(), labels.tolist())[0, 100:]
    assert (want > 0).sum() >= 3
    miner = mk.miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(1))
    counts = torch.zeros(8)
    draws = 0
    for _ in range(3):
        a, p, n = miner(x, labels)
        sel = a < 100
        counts += torch.bincount(n[sel] - 100, minlength=8)[:8].float()
        draws += int(sel.sum())
    freq = (counts / draws).numpy()
    sigma = np.sqrt(want * (1 - want) / draws)
    assert np.all(np.abs(freq - want) <= 5 * sigma + 1e-12)
    assert np.all(freq[want == 0] == 0)


def test_distance_weighted_miner_is_seeded_and_valid():
    x, labels = _batch(torch.float32)
    one = mk.miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(7))(x, labels)
    two = mk.miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(7))(x, labels)
    three = mk.miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(8))(x, labels)
    assert all(torch.equal(u, v) for u, v in zip(one, two, strict=True))
    assert not torch.equal(one[2], three[2])
    a, p, n = one
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    pos_pairs = {(i, j) for i in range(32) for j in range(32) if i != j and labels[i] == labels[j]}
    assert set(zip(a.tolist(), p.tolist(), strict=True)) <= pos_pairs
    assert len(set(zip(a.tolist(), p.tolist(), strict=True))) == len(a)  # each pair once


def test_distance_weighted_miner_validates():
    with pytest.raises(ValueError, match="cutoff"):
        mk.miners.DistanceWeightedMiner(cutoff=-1.0)
    with pytest.raises(ValueError, match="nonzero_loss_cutoff"):
        mk.miners.DistanceWeightedMiner(nonzero_loss_cutoff=0)
    with pytest.raises(TypeError, match="generator"):
        mk.miners.DistanceWeightedMiner(generator=3)
    a, p, n = mk.miners.DistanceWeightedMiner()(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    assert a.numel() == p.numel() == n.numel() == 0
    assert math.isfinite(mk.F.margin_loss(torch.randn(4, 3), torch.arange(4)).item())
