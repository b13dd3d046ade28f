"""normalized_softmax: its own checks; the shared ones (reference values and gradients, PML
equality, edge cases) run in tests/test_proxy_shared.py."""

import pytest
import torch

import metrickit as mk
from proxy_checks import assert_module_contract


def test_scale_free_and_tiny_temperature_is_finite():
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(32, 8, generator=g), torch.randn(4, 8, generator=g, requires_grad=True)
    y = torch.arange(32) % 4
    base = mk.F.normalized_softmax_loss(x, y, p)
    torch.testing.assert_close(mk.F.normalized_softmax_loss(3 * x, y, 0.5 * p), base)
    out = mk.F.normalized_softmax_loss(x, y, p, temperature=1e-4)
    out.backward()
    assert torch.isfinite(out) and out > 100 and torch.isfinite(p.grad).all()


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.NormalizedSoftmaxLoss, "normalized_softmax",
        ("norm_softmax", "normsoftmax", "cosine_softmax"), mk.F.normalized_softmax_loss,
        temperature=0.1,
    )
    assert m.temperature == 0.1
    assert mk.losses.NormalizedSoftmaxLoss(1000, 64).proxies.std().item() == pytest.approx(
        1.0, rel=0.02
    )
    with pytest.raises(ValueError, match="temperature"):
        mk.losses.NormalizedSoftmaxLoss(3, 4, temperature=-0.05)
    with pytest.raises(TypeError, match="temperature"):
        mk.losses.NormalizedSoftmaxLoss(3, 4, temperature="0.05")
