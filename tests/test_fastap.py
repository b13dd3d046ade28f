import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference

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
