"""cosface: its own checks; the shared ones (reference values and gradients, PML equality,
edge cases) run in tests/test_proxy_shared.py."""

import numpy as np
import pytest
import torch

import metrickit as mk
from proxy_checks import assert_module_contract


def test_large_scale_does_not_overflow():
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(32, 8, generator=g), torch.randn(4, 8, generator=g, requires_grad=True)
    out = mk.F.cosface_loss(x.half(), torch.arange(32) % 4, p, scale=1e4)
    out.backward()
    assert torch.isfinite(out) and out.float() > 100 and torch.isfinite(p.grad).all()


def test_margin_applies_to_the_own_class_only():
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = mk.F.cosface_loss(x, torch.tensor([0]), p, margin=0.5, scale=2.0)
    assert out.item() == pytest.approx(np.log1p(np.exp(2 * 0 - 2 * 0.5)), rel=1e-12)


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.CosFaceLoss, "cosface", ("large_margin_cosine", "lmcl", "additive_cosine_margin"),
        mk.F.cosface_loss, margin=0.2, scale=30.0,
    )
    assert (m.margin, m.scale) == (0.2, 30.0)
    with pytest.raises(ValueError, match="scale"):
        mk.losses.CosFaceLoss(3, 4, scale=0)
    with pytest.raises(ValueError, match="margin"):
        mk.losses.CosFaceLoss(3, 4, margin=float("nan"))
