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
from proxy_reference import cosface_loss as ref_loss


def fn(x, y, p, reduction="mean"):
    return mk.F.cosface_loss(x, y, p, margin=0.3, scale=5.0, reduction=reduction)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 0.3, 5.0, reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, seed=9)
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_equals_pml():
    from pytorch_metric_learning.losses import CosFaceLoss as PML

    torch.manual_seed(0)
    ours = mk.losses.CosFaceLoss(8, 16)
    assert assert_equals_pml(ours, PML(8, 16), "W", transpose=True) > 0
    torch.manual_seed(1)
    ours = mk.losses.CosFaceLoss(8, 16, margin=np.float64(0.2), scale=np.int64(10))
    assert_equals_pml(ours, PML(8, 16, margin=0.2, scale=10), "W", transpose=True)


def test_edge_cases():
    assert_edge_cases(mk.F.cosface_loss)


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
