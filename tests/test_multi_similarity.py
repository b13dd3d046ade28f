import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.multi_similarity_loss,
    module=mk.losses.MultiSimilarityLoss,
    name="multi_similarity",
    reference=pair_reference.multi_similarity,
    hyper=dict(alpha=2.0, beta=10.0, base=0.4),
    bad=[({"alpha": 0.0}, ValueError, "alpha"), ({"beta": -1.0}, ValueError, "beta"),
         ({"base": float("nan")}, ValueError, "base"), ({"alpha": True}, TypeError, "alpha"),
         ({"base": "0.5"}, TypeError, "base")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: MultiSimilarityLoss(alpha, beta, base) with its default CosineSimilarity and
    # MeanReducer (mean over all anchors) is exactly this loss
    for kw in ({}, dict(alpha=3.0, beta=20.0, base=0.3)):
        x, labels = checks.assert_equals_pml(
            lambda x, y, kw=kw: mk.F.multi_similarity_loss(x, y, **kw),
            pml_losses.MultiSimilarityLoss(**kw), dtype, tol)
    # and with PML's miner's pairs
    mined = pml_miners.MultiSimilarityMiner()(x, labels)
    ours = mk.F.multi_similarity_loss(x, labels, indices_tuple=mined)
    theirs = pml_losses.MultiSimilarityLoss()(x, labels, mined)
    assert ours.item() == pytest.approx(theirs.item(), rel=tol)


def test_miner_matches_loops_and_pml():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=g)
    labels = torch.randint(0, 4, (20,), generator=g)
    a1, p, a2, n = mk.miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    want_pos, want_neg = set(), set()
    for i, (pos, neg) in enumerate(pair_reference.candidates(x.double(), labels)):
        hardest_pos = min((float(s) for _, s in pos), default=float("inf"))
        hardest_neg = max((float(s) for _, s in neg), default=float("-inf"))
        want_pos |= {(i, j) for j, s in pos if float(s) - 0.1 < hardest_neg}
        want_neg |= {(i, j) for j, s in neg if float(s) + 0.1 > hardest_pos}
    got_pos = set(zip(a1.tolist(), p.tolist(), strict=True))
    got_neg = set(zip(a2.tolist(), n.tolist(), strict=True))
    assert got_pos == want_pos and got_neg == want_neg
    assert 0 < len(got_pos) and 0 < len(got_neg)
    b1, q, b2, m = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert got_pos == set(zip(b1.tolist(), q.tolist(), strict=True))
    assert got_neg == set(zip(b2.tolist(), m.tolist(), strict=True))


def test_miner_validates_epsilon_and_references():
    with pytest.raises(TypeError, match="epsilon"):
        mk.miners.MultiSimilarityMiner(epsilon="0.1")
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    a1, p, a2, n = mk.miners.MultiSimilarityMiner()(x, labels, x, labels, 0)
    assert not ((a1 == p).any())  # own column is never a positive
    empty = mk.miners.MultiSimilarityMiner()(x, torch.tensor([0, 1, 2, 3]))
    assert all(t.numel() == 0 for t in empty[:2])
