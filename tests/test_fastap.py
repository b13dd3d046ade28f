import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference
from metrickit import miners
from metrickit.losses import fastap

CASE = checks.LossCase(
    fn=mk.F.fastap_loss,
    module=mk.losses.FastAPLoss,
    name="fastap",
    reference=pair_reference.fastap,
    hyper=dict(num_bins=7),
    bad=[({"num_bins": 0}, ValueError, "num_bins"), ({"num_bins": 2.5}, TypeError, "num_bins"),
         ({"num_bins": True}, TypeError, "num_bins")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: FastAPLoss(num_bins) with LpDistance(power=2) (its default normalises embeddings:
    # squared distances in [0, 4]) and MeanReducer over the anchors with a positive
    for bins in (10, 4):
        theirs = pml_losses.FastAPLoss(num_bins=bins, distance=pml_distances.LpDistance(power=2))
        checks.assert_equals_pml(lambda x, y, b=bins: mk.F.fastap_loss(x, y, num_bins=b),
                                 theirs, dtype, tol, True)


def test_duplicated_and_opposite_embeddings_match_reference():
    # duplicates put d² at 0 (here S rounds to just above 1 for the negative pairs (1, 6) and
    # (4, 9), beyond the clamp) and opposite rows at 4 (the last bin's upper end): the dense
    # binning's edge slots
    g = torch.Generator().manual_seed(10)
    base = torch.randn(5, 6, dtype=torch.float64, generator=g)
    near = base[1:2] + 0.01 * torch.randn(1, 6, dtype=torch.float64, generator=g)
    emb = torch.cat([base, base[:2] * 2, -base[2:4], base[4:] * 3, near])
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 2, 0, 3, 2, 1])  # row 10: 1's positive in bin 0
    x = emb.clone().requires_grad_(True)
    ours = mk.F.fastap_loss(x, labels, num_bins=5, reduction="none")
    x_ref = emb.clone().requires_grad_(True)
    ref = checks.expected(CASE, x_ref, labels, "none", num_bins=5)
    checks.assert_close(ours, ref, 1e-10)
    mask = torch.ones(11, dtype=torch.bool)
    mask[[2, 3, 7, 8]] = False  # rows at d² = 4 exactly: a kink, the reference's subgradient
    (g_ours,) = torch.autograd.grad(ours[mask].sum(), x)
    (g_ref,) = torch.autograd.grad(ref[mask].sum(), x_ref)
    assert torch.isfinite(g_ours).all()
    checks.assert_close(g_ours, g_ref, 1e-7)


@pytest.mark.parametrize("mined", [False, True])
def test_any_bin_block_gives_the_one_block_loss(mined, monkeypatch):
    # the dense binning runs in sub-blocks of BIN_BLOCK_ELEMENTS within each row block
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (15,), generator=g)
    x = torch.randn(15, 5, dtype=torch.float64, generator=g)
    pairs = miners.MultiSimilarityMiner(epsilon=0.2)(x, labels) if mined else None
    results = []
    for elements in (1 << 20, 1, 20, 45):  # one sub-block; 1, 1 and 3 rows per sub-block
        monkeypatch.setattr(fastap, "BIN_BLOCK_ELEMENTS", elements)
        leaf = x.clone().requires_grad_(True)
        loss = mk.F.fastap_loss(leaf, labels, reduction="none", indices_tuple=pairs)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        results.append((loss.detach(), grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
    assert results[0][1].abs().sum() > 0
