import math

import numpy as np
import pytest
import torch

import metrickit as mk
from proxy_checks import (
    assert_edge_cases,
    assert_equals_pml,
    assert_matches_reference,
    assert_module_contract,
    random_problem,
)
from proxy_reference import arcface_loss as ref_loss


def fn(x, y, p, reduction="mean"):
    return mk.F.arcface_loss(x, y, p, margin=0.6, scale=3.0, reduction=reduction)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 0.6, 3.0, reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, seed=10)
    # the first sample points away from its proxy: θ > π − m takes the fallback branch
    emb[0] = -proxies[layout[0]] + 0.05 * emb[0]
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_both_branches_are_exercised_and_exact():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for theta in (0.3, math.pi - 0.2):  # below and above π − m with m = 0.5
        x = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float64)
        target = math.cos(theta + 0.5) if theta <= math.pi - 0.5 else (
            math.cos(theta) - 0.5 * math.sin(0.5)
        )
        other = math.sin(theta)
        expected = -2 * target + math.log(math.exp(2 * target) + math.exp(2 * other))
        out = mk.F.arcface_loss(x, torch.tensor([0]), p, margin=0.5, scale=2.0)
        assert out.item() == pytest.approx(expected, rel=1e-12)


def test_equals_pml():
    from pytorch_metric_learning.losses import ArcFaceLoss as PML

    torch.manual_seed(0)
    ours = mk.losses.ArcFaceLoss(8, 16)  # PML's margin is in degrees
    pml = PML(8, 16, margin=math.degrees(0.5))
    assert assert_equals_pml(ours, pml, "W", transpose=True) > 0
    torch.manual_seed(1)
    ours = mk.losses.ArcFaceLoss(8, 16, margin=np.float32(0.3), scale=10)
    assert_equals_pml(ours, PML(8, 16, margin=math.degrees(np.float32(0.3)), scale=10), "W",
                      transpose=True)


def test_edge_cases():
    assert_edge_cases(mk.F.arcface_loss)


def test_no_nan_at_theta_0_and_pi_and_no_overflow_at_scale_64():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    x = torch.tensor([[2.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    out = mk.F.arcface_loss(x, torch.tensor([0, 0, 1]), p)  # θ = 0, θ = π, norm 0
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all() and torch.isfinite(p.grad).all()
    # s = 64 with every sample at θ = π from its class: logits ±64, a log-sum-exp is needed
    g = torch.Generator().manual_seed(0)
    p = torch.randn(10, 8, generator=g)
    y = torch.arange(40) % 10
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = (-p[y]).to(dtype).requires_grad_()
        out = mk.F.arcface_loss(x, y, p, scale=64.0)
        out.backward()
        assert torch.isfinite(out) and out.float() > 64 and torch.isfinite(x.grad).all()


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.ArcFaceLoss, "arcface", ("additive_angular_margin", "arc_face"),
        mk.F.arcface_loss, margin=0.4, scale=30.0,
    )
    assert (m.margin, m.scale) == (0.4, 30.0)
    with pytest.raises(ValueError, match="margin"):
        mk.losses.ArcFaceLoss(3, 4, margin=28.6)  # radians, not degrees
    with pytest.raises(ValueError, match="scale"):
        mk.F.arcface_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(2, 3), scale=-1)
