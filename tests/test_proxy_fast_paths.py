"""The proxy losses' fast paths against the plain autograd expressions they replaced, in float64.

Sub-centre ArcFace takes max (not amax) over the sub-centres, SoftTriple computes its relaxed
similarity over centre-major columns with an analytic backward, and the cosines normalise rows
with an analytic backward: same values and gradients (to rounding) as before.
"""

import math

import pytest
import torch
from torch.nn import functional as F

import metrickit as mk
from metrickit.distances import unit_rows
from metrickit.losses import _proxy


def problem(batch=40, classes=6, per_class=1, dim=8, seed=0, zero_row=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    if zero_row:  # cosine 0 with everything (a tie of all sub-centres)
        x[0] = 0
    x[1] *= 1e-13  # a row shorter than the norm floor
    p = torch.randn(classes * per_class, dim, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (batch,), generator=g), p


def assert_same(new, old, x, y, p):
    """Value and both gradients of ``new`` and ``old`` agree to float64 rounding."""
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ps = [p.clone().requires_grad_() for _ in range(2)]
    a, b = new(xs[0], y, ps[0]), old(xs[1], y, ps[1])
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    (a * torch.linspace(1, 2, a.numel(), dtype=a.dtype).view(a.shape)).sum().backward()
    (b * torch.linspace(1, 2, b.numel(), dtype=b.dtype).view(b.shape)).sum().backward()
    assert xs[0].grad.abs().max() > 0 and ps[0].grad.abs().max() > 0
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(ps[0].grad, ps[1].grad, rtol=1e-11, atol=1e-13)


LOSSES = {  # name -> (functional with small hyper-parameters, rows per class)
    "proxy_anchor": (lambda x, y, p, r: mk.F.proxy_anchor_loss(x, y, p, reduction=r), 1),
    "normalized_softmax": (
        lambda x, y, p, r: mk.F.normalized_softmax_loss(x, y, p, 0.5, reduction=r), 1),
    "cosface": (lambda x, y, p, r: mk.F.cosface_loss(x, y, p, 0.3, 4.0, reduction=r), 1),
    "arcface": (lambda x, y, p, r: mk.F.arcface_loss(x, y, p, 0.5, 4.0, reduction=r), 1),
    "subcenter_arcface": (
        lambda x, y, p, r: mk.F.subcenter_arcface_loss(x, y, p, 3, 0.5, 4.0, reduction=r), 3),
    "soft_triple": (lambda x, y, p, r: mk.F.soft_triple_loss(x, y, p, 4, reduction=r), 4),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_unit_rows_backward_is_autograds(name, reduction, monkeypatch):
    fn, k = LOSSES[name]
    x, y, p = problem(per_class=k, seed=1)
    new = lambda x, y, p: fn(x, y, p, reduction)  # noqa: E731
    with monkeypatch.context() as m:
        m.setattr(_proxy._UnitRows, "apply", unit_rows)
        xs, ps = x.clone().requires_grad_(), p.clone().requires_grad_()
        old_value = fn(xs, y, ps, reduction)
        (old_value * torch.linspace(1, 2, old_value.numel(), dtype=x.dtype)
         .view(old_value.shape)).sum().backward()
    xn, pn = x.clone().requires_grad_(), p.clone().requires_grad_()
    value = new(xn, y, pn)
    torch.testing.assert_close(value, old_value.detach(), rtol=0, atol=0)  # same forward
    (value * torch.linspace(1, 2, value.numel(), dtype=x.dtype).view(value.shape)).sum().backward()
    torch.testing.assert_close(xn.grad, xs.grad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(pn.grad, ps.grad, rtol=1e-12, atol=1e-13)
    assert xn.grad[1].abs().max() > 1e6  # the row under the floor: g / ε, as autograd's


def _old_subcenter_arcface(x, y, p, k, margin, scale, reduction):
    cos = (unit_rows(x) @ unit_rows(p).T).view(x.shape[0], -1, k).amax(2)
    c = cos.gather(1, y[:, None])
    sin = (1 - c * c).clamp_min(1e-12).sqrt()
    target = torch.where(c >= -math.cos(margin), c * math.cos(margin) - sin * math.sin(margin),
                         c - margin * math.sin(margin))
    return F.cross_entropy(scale * cos.scatter(1, y[:, None], target), y, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_subcenter_arcface_equals_the_amax_path(reduction):
    x, y, p = problem(per_class=3, seed=2, zero_row=False)  # no ties: amax split them evenly
    assert_same(lambda x, y, p: mk.F.subcenter_arcface_loss(x, y, p, 3, 0.5, 4.0, reduction),
                lambda x, y, p: _old_subcenter_arcface(x, y, p, 3, 0.5, 4.0, reduction), x, y, p)


def test_subcenter_arcface_tie_gives_the_gradient_to_the_first_sub_centre():
    x, y, p = problem(per_class=2, seed=3)
    p[1::2] = p[0::2]  # both sub-centres of every class identical
    p.requires_grad_()
    mk.F.subcenter_arcface_loss(x, y, p, 2).backward()
    assert p.grad[0::2].abs().sum(1).min() > 0 and p.grad[1::2].abs().max() == 0  # as PML
    q = p.detach()[0::2].clone().requires_grad_()
    mk.F.arcface_loss(x, y, q).backward()
    torch.testing.assert_close(p.grad[0::2], q.grad, rtol=1e-12, atol=1e-14)


def _old_soft_triple(x, y, p, k, la, gamma, tau, margin, reduction):
    classes = p.shape[0] // k
    sims = (unit_rows(x) @ unit_rows(p).T).view(-1, classes, k)
    relaxed = (torch.softmax(sims / gamma, 2) * sims).sum(2)
    logits = la * relaxed.scatter_add(1, y[:, None], relaxed.new_full((len(y), 1), -margin))
    terms = F.cross_entropy(logits, y, reduction="none")
    w = unit_rows(p).view(classes, k, -1)
    upper = torch.ones(k, k, dtype=torch.bool).triu(1)
    dist = (2 + 1e-5 - 2 * (w @ w.transpose(1, 2)).clamp_max(1)[:, upper]).sqrt()
    terms = terms + tau * dist.sum() / (classes * k * (k - 1))
    return {"none": terms, "sum": terms.sum(), "mean": terms.mean()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_soft_triple_equals_the_class_major_softmax_path(reduction, gamma):
    x, y, p = problem(per_class=5, seed=4)
    args = (5, 20.0, gamma, 0.2, 0.01, reduction)
    assert_same(lambda x, y, p: mk.F.soft_triple_loss(x, y, p, *args),
                lambda x, y, p: _old_soft_triple(x, y, p, *args), x, y, p)
