"""proxy_anchor: its own checks; the shared ones (reference values and gradients, PML equality,
edge cases) run in tests/test_proxy_shared.py."""

import math

import pytest
import torch

import metrickit as mk
from proxy_checks import assert_module_contract


def test_proxies_without_positives_count_only_in_the_negative_part():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    out = mk.F.proxy_anchor_loss(x, torch.tensor([0, 0]), p, margin=0.1, alpha=2.0)
    pos = math.log(1 + math.exp(-2 * 0.9) + math.exp(-2 * (0 - 0.1)))
    neg = math.log(1 + math.exp(2 * 0.1) + math.exp(2 * 1.1)) + math.log(
        1 + math.exp(2 * 0.1 - 2) + math.exp(2 * 0.1)
    )
    assert out.item() == pytest.approx(pos / 1 + neg / 3, rel=1e-12)


def test_large_alpha_does_not_overflow():
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(64, 8, generator=g), torch.randn(4, 8, generator=g, requires_grad=True)
    out = mk.F.proxy_anchor_loss(x, torch.arange(64) % 4, p, alpha=1e4)
    out.backward()
    assert torch.isfinite(out) and out > 100 and torch.isfinite(p.grad).all()


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.ProxyAnchorLoss, "proxy_anchor", ("proxyanchor",), mk.F.proxy_anchor_loss,
        margin=0.2, alpha=16.0,
    )
    assert m.margin == 0.2 and m.alpha == 16.0
    big = mk.losses.ProxyAnchorLoss(1000, 64)  # Kaiming normal, fan_out: std sqrt(2 / C)
    assert big.proxies.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    with pytest.raises(ValueError, match="alpha"):
        mk.losses.ProxyAnchorLoss(3, 4, alpha=0)
    with pytest.raises(TypeError, match="margin"):
        mk.losses.ProxyAnchorLoss(3, 4, margin="0.1")
    with pytest.raises(ValueError, match="margin"):
        mk.F.proxy_anchor_loss(torch.randn(2, 2), torch.tensor([0, 1]), torch.randn(2, 2),
                               margin=-1.0)
