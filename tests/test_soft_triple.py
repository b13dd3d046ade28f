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
from proxy_reference import soft_triple_loss as ref_loss

PARAMS = {"la": 3.0, "gamma": 0.5, "tau": 0.7, "margin": 0.2}


def fn(x, y, p, reduction="mean"):
    return mk.F.soft_triple_loss(x, y, p, 3, reduction=reduction, **PARAMS)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 3, reduction=reduction, **PARAMS)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, per_class=3, seed=12)
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_regulariser_alone_and_one_centre():
    # R at the paper's other defaults, against the reference; it only adds to the loss
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.arange(6) % 2
    p = torch.randn(2 * 4, 4, generator=g, dtype=torch.float64)
    with_reg = mk.F.soft_triple_loss(x, y, p, 4, tau=1.0)
    without = mk.F.soft_triple_loss(x, y, p, 4, tau=0.0)
    expected = ref_loss(x.numpy(), y.numpy(), p.numpy(), 4, 20.0, 0.1, 1.0, 0.01, "mean")
    assert with_reg.item() == pytest.approx(expected, rel=1e-12)
    assert with_reg > without
    # one centre per class: SoftTriple is CosFace with scale la and margin δ, and R = 0
    q = p[:2]
    torch.testing.assert_close(
        mk.F.soft_triple_loss(x, y, q, 1), mk.F.cosface_loss(x, y, q, margin=0.01, scale=20.0)
    )


def test_equals_pml():
    from pytorch_metric_learning.losses import SoftTripleLoss as PML
    from pytorch_metric_learning.regularizers import SparseCentersRegularizer

    torch.manual_seed(0)
    ours = mk.losses.SoftTripleLoss(8, 16, tau=0.0)
    assert assert_equals_pml(ours, PML(8, 16), "fc", transpose=True) > 0
    # with the regulariser: PML's SparseCentersRegularizer has finfo.tiny where the paper's
    # code (and ours) has 1e-5 under the square root: equal to ~1e-6 relative
    torch.manual_seed(1)
    ours = mk.losses.SoftTripleLoss(8, 16, centers_per_class=np.int64(4), la=np.float32(10))
    reg = SparseCentersRegularizer(num_classes=8, centers_per_class=4)
    pml = PML(8, 16, centers_per_class=4, la=10, weight_regularizer=reg, weight_reg_weight=0.2)
    assert_equals_pml(ours, pml, "fc", transpose=True, rtol=1e-5)


def test_edge_cases():
    assert_edge_cases(lambda x, y, p, **kw: mk.F.soft_triple_loss(x, y, p, 2, **kw), 2)


def test_large_scale_and_identical_centres_are_finite():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    p = torch.randn(4, 8, generator=g).repeat_interleave(3, 0).requires_grad_()  # K copies
    out = mk.F.soft_triple_loss(x, torch.arange(16) % 4, p, 3, la=1e4, gamma=1e-3)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(p.grad).all()


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.SoftTripleLoss, "soft_triple", ("softtriple",), mk.F.soft_triple_loss,
        per_class=2, centers_per_class=2, la=10.0, gamma=0.2, tau=0.1, margin=0.05,
    )
    assert (m.centers_per_class, m.la, m.gamma, m.tau, m.margin) == (2, 10.0, 0.2, 0.1, 0.05)
    big = mk.losses.SoftTripleLoss(100, 64)  # U(±1/√(C·K)) with C·K = 1000
    assert big.proxies.shape == (1000, 64)
    assert big.proxies.abs().max().item() <= 1 / np.sqrt(1000)
    assert big.proxies.std().item() == pytest.approx(1 / np.sqrt(3000), rel=0.02)
    for name in ("la", "gamma"):
        with pytest.raises(ValueError, match=name):
            mk.losses.SoftTripleLoss(3, 4, **{name: 0})
    with pytest.raises(ValueError, match="tau"):
        mk.losses.SoftTripleLoss(3, 4, tau=-0.2)
    with pytest.raises(TypeError, match="centers_per_class"):
        mk.losses.SoftTripleLoss(3, 4, centers_per_class=True)
