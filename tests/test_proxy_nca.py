"""proxy_nca: its own checks; the shared ones (reference values and gradients, PML equality,
edge cases) run in tests/test_proxy_shared.py."""

import pytest
import torch

import metrickit as mk
from proxy_checks import assert_module_contract


def test_one_class_is_zero_and_low_temperature_is_finite():
    x = torch.randn(5, 3, requires_grad=True)
    out = mk.F.proxy_nca_loss(x, torch.zeros(5, dtype=torch.long), torch.randn(1, 3))
    out.backward()
    assert out.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(32, 8, generator=g), torch.randn(4, 8, generator=g, requires_grad=True)
    out = mk.F.proxy_nca_loss(x, torch.arange(32) % 4, p, temperature=1e-4)
    out.backward()
    assert torch.isfinite(out) and out > 100 and torch.isfinite(p.grad).all()


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.ProxyNCALoss, "proxy_nca", ("proxynca", "proxy_nca_pp", "proxynca_pp"),
        mk.F.proxy_nca_loss, temperature=0.5,
    )
    assert m.temperature == 0.5
    big = mk.losses.ProxyNCALoss(1000, 64)
    assert big.proxies.std().item() == pytest.approx(1 / 8, rel=0.02)
    with pytest.raises(ValueError, match="temperature"):
        mk.losses.ProxyNCALoss(3, 4, temperature=0)
    with pytest.raises(TypeError, match="temperature"):
        mk.losses.ProxyNCALoss(3, 4, temperature=True)
