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
from proxy_reference import normalized_softmax_loss as ref_loss


def fn(x, y, p, reduction="mean"):
    return mk.F.normalized_softmax_loss(x, y, p, temperature=0.25, reduction=reduction)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 0.25, reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, seed=8)
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_equals_pml():
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss as PML

    torch.manual_seed(0)
    ours = mk.losses.NormalizedSoftmaxLoss(8, 16)
    assert assert_equals_pml(ours, PML(8, 16), "W", transpose=True) > 0
    torch.manual_seed(1)
    ours = mk.losses.NormalizedSoftmaxLoss(8, 16, temperature=np.float32(0.5))
    assert_equals_pml(ours, PML(8, 16, temperature=0.5), "W", transpose=True)


def test_edge_cases():
    assert_edge_cases(mk.F.normalized_softmax_loss)


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
