import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.supcon_loss,
    module=mk.losses.SupConLoss,
    name="supcon",
    reference=pair_reference.supcon,
    hyper=dict(temperature=0.2),
    bad=[({"temperature": -0.1}, ValueError, "temperature"),
         ({"temperature": "0.1"}, TypeError, "temperature")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: SupConLoss(temperature) with its CosineSimilarity and AvgNonZeroReducer (mean over
    # the anchors with a positive)
    for kw in ({}, dict(temperature=0.07)):
        checks.assert_equals_pml(lambda x, y, kw=kw: mk.F.supcon_loss(x, y, **kw),
                                 pml_losses.SupConLoss(**kw), dtype, tol, True)
