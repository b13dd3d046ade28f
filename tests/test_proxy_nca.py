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
from proxy_reference import proxy_nca_loss as ref_loss


def fn(x, y, p, reduction="mean"):
    return mk.F.proxy_nca_loss(x, y, p, temperature=0.3, reduction=reduction)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 0.3, reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, seed=6)
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_equals_pml():
    from pytorch_metric_learning.losses import ProxyNCALoss as PML

    torch.manual_seed(0)
    ours = mk.losses.ProxyNCALoss(8, 16)  # T = 1/9 is PML's softmax_scale = 9
    assert assert_equals_pml(ours, PML(8, 16, softmax_scale=9), "proxies", transpose=False) > 0
    torch.manual_seed(1)
    ours = mk.losses.ProxyNCALoss(8, 16, temperature=np.float64(1.0))
    assert_equals_pml(ours, PML(8, 16), "proxies", transpose=False)


def test_edge_cases():
    assert_edge_cases(mk.F.proxy_nca_loss)


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
