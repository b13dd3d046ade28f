import dataclasses

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


@pytest.mark.parametrize("m, gamma", [(0.5, 256.0), (0.9, 64.0), (0.0, 16.0), (-0.2, 8.0)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_margins_and_scales_match_reference(m, gamma, reduction):
    # γm² > 30 takes the extra pass for each row's exact shift; m ≤ 0 clamps at −m ≥ 0
    case = dataclasses.replace(CASE, hyper=dict(m=m, gamma=gamma))
    checks.reference_values_and_grads(case, [0, 0, 1, 1, 1, 2, 2, 3, 0, 2, 4], reduction)


def test_large_gamma_m_squared_keeps_float32_negatives():
    # every negative at s = 0 has z_n = −γm² ≈ −207, below float32's exp range: the row's shift
    # must be its exact largest z_n (with a bound from the largest t alone, e^{z_n − shift}
    # underflows to 0 and the anchors would count as having no negative)
    eye = torch.eye(3, dtype=torch.float64)
    x = torch.stack([eye[0], -eye[0], eye[1], -eye[1], eye[2], -eye[2]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    want = pair_reference.circle(x, labels, m=0.9, gamma=256.0)
    want = torch.stack(want[0])
    got = mk.F.circle_loss(x.float(), labels, m=0.9, gamma=256.0, reduction="none")
    assert float(want.min()) > 100
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_exponents_below_the_float_range_keep_values_and_gradients():
    # a negative almost equal to its anchor sets the row's shift near γ: the row's other
    # exponents fall far below float32's normal range and are raised to its edge (terms ~3e-38
    # next to sums of at least e^{−30}), checked against float64
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 8, dtype=torch.float64, generator=g)
    x[11] = x[0] + 0.01 * torch.randn(8, dtype=torch.float64, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 2, 5])
    want = mk.F.circle_loss(x, labels, reduction="none")
    low = x.float().requires_grad_(True)
    got = mk.F.circle_loss(low, labels, reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)
    leaf = x.clone().requires_grad_(True)
    (g64,) = torch.autograd.grad(mk.F.circle_loss(leaf, labels), leaf)
    (g32,) = torch.autograd.grad(mk.F.circle_loss(low, labels), low)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-6 * float(g64.abs().max()))
