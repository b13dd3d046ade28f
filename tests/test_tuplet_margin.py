import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.tuplet_margin_loss,
    module=mk.losses.TupletMarginLoss,
    name="tuplet_margin",
    reference=pair_reference.tuplet_margin,
    hyper=dict(margin=10.0, scale=8.0),
    bad=[({"scale": 0.0}, ValueError, "scale"), ({"margin": -1.0}, ValueError, "margin"),
         ({"margin": None}, TypeError, "margin")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: TupletMarginLoss(margin in degrees, scale) with its CosineSimilarity and MeanReducer
    # over positive pairs
    for kw in ({}, dict(margin=20.0, scale=16.0)):
        checks.assert_equals_pml(lambda x, y, kw=kw: mk.F.tuplet_margin_loss(x, y, **kw),
                                 pml_losses.TupletMarginLoss(**kw), dtype, tol)
