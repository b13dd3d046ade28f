import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.ntxent_loss,
    module=mk.losses.NTXentLoss,
    name="ntxent",
    reference=pair_reference.ntxent,
    hyper=dict(temperature=0.2),
    bad=[({"temperature": 0.0}, ValueError, "temperature"),
         ({"temperature": True}, TypeError, "temperature")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: NTXentLoss(temperature) with its CosineSimilarity and MeanReducer over positive pairs
    for kw in ({}, dict(temperature=0.5)):
        checks.assert_equals_pml(lambda x, y, kw=kw: mk.F.ntxent_loss(x, y, **kw),
                                 pml_losses.NTXentLoss(**kw), dtype, tol)


def test_simclr_views_and_aliases():
    # two views per sample, labelled by sample: the SimCLR / InfoNCE setting
    x = torch.randn(16, 8, dtype=torch.float64)
    labels = torch.arange(8).repeat(2)
    ours = mk.F.ntxent_loss(x, labels, temperature=0.5)
    theirs = pml_losses.NTXentLoss(temperature=0.5)(x, labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    for alias in ("infonce", "nt_xent", "info_nce"):
        assert isinstance(mk.losses.get_loss(alias), mk.losses.NTXentLoss)
