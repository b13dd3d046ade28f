import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

CASE = checks.LossCase(
    fn=mk.F.circle_loss,
    module=mk.losses.CircleLoss,
    name="circle",
    reference=pair_reference.circle,
    hyper=dict(m=0.3, gamma=16.0),
    smooth=False,
    bad=[({"gamma": 0}, ValueError, "gamma"), ({"m": float("inf")}, ValueError, "m"),
         ({"gamma": False}, TypeError, "gamma")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol):
    # PML: CircleLoss(m, gamma) with its CosineSimilarity and AvgNonZeroReducer (mean over the
    # anchors with a positive and a negative, whose loss is never exactly 0 here)
    for kw in (dict(m=0.25, gamma=256.0), dict(m=0.4, gamma=80.0)):
        checks.assert_equals_pml(lambda x, y, kw=kw: mk.F.circle_loss(x, y, **kw),
                                 pml_losses.CircleLoss(**kw), dtype, tol, True)


def test_defaults_are_the_papers():
    loss = mk.losses.CircleLoss()
    assert (loss.m, loss.gamma) == (0.25, 256.0)
