"""Checks every proxy loss's tests share: reference values/gradients, PML equality, edge cases.

:data:`CASES` lists the losses whose reference and PML checks run from one parametrised test
(tests/test_proxy_shared.py); the others call the ``assert_*`` helpers with their own set-up.

``fn(embeddings, labels, proxies, reduction=...)`` is the functional form with its
hyper-parameters bound; ``ref(emb, labels, proxies, reduction)`` the brute-force reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch

from conftest import t64
from reference import numeric_grad


def random_problem(labels, per_class=1, dim=4, seed=0):
    """Embeddings [B, dim] and proxies [C·per_class, dim] (C = max label + 1), float64 NumPy."""
    g = np.random.default_rng(seed)
    classes = int(max(labels)) + 1
    return g.normal(size=(len(labels), dim)), g.normal(size=(classes * per_class, dim))


def assert_matches_reference(fn, ref, emb, labels, proxies, reduction, gtol=1e-6):
    """Values (1e-10) and float64 gradients wrt embeddings and proxies (central differences)."""
    x, p = t64(emb, True), t64(proxies, True)
    out = fn(x, torch.tensor(labels), p, reduction=reduction)
    expected = ref(emb, labels, proxies, reduction)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    gx = numeric_grad(lambda v: np.sum(ref(v, labels, proxies, reduction)), emb)
    gp = numeric_grad(lambda v: np.sum(ref(emb, labels, v, reduction)), proxies)
    assert np.abs(gx).max() > 0 and np.abs(gp).max() > 0  # the gradients are exercised
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-5, atol=gtol)
    np.testing.assert_allclose(p.grad.numpy(), gp, rtol=1e-5, atol=gtol)


def assert_equals_pml(ours, pml, weight, transpose, batch=48, classes=8, dim=16, rtol=1e-9):
    """Our module and a PML loss agree in float64: value and gradients (embeddings, proxies).

    ``weight`` is PML's class-vector attribute ([D, C·k] when ``transpose``, else [C·k, D]);
    our ``proxies`` are copied into it.
    """
    g = torch.Generator().manual_seed(3)
    ours = ours.double()
    pml = pml.double()
    with torch.no_grad():
        w = getattr(pml, weight)
        w.copy_(ours.proxies.T if transpose else ours.proxies)
    labels = torch.randint(0, classes, (batch,), generator=g)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(x1, labels), pml(x2, labels)
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12)
    a.backward()
    b.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=rtol * 100, atol=1e-12)
    w_grad = getattr(pml, weight).grad
    torch.testing.assert_close(ours.proxies.grad, w_grad.T if transpose else w_grad,
                               rtol=rtol * 100, atol=1e-12)
    return a.item()


def assert_edge_cases(fn, per_class=1):
    """Empty batch, one class, identical and zero embeddings, fp16/bf16, bad labels."""
    dim = 5
    p = torch.randn(3 * per_class, dim, dtype=torch.float64, requires_grad=True)
    # empty batch: 0, attached to the graph
    x = torch.zeros(0, dim, dtype=torch.float64, requires_grad=True)
    for reduction in ("mean", "sum"):
        out = fn(x, torch.zeros(0, dtype=torch.long), p, reduction=reduction)
        assert out.item() == 0 and out.requires_grad
        out.backward()
    assert fn(x, torch.zeros(0, dtype=torch.long), p, reduction="none").numel() in (0, 3)
    # one class (a single proxy): finite value and gradients
    x = torch.randn(4, dim, dtype=torch.float64, requires_grad=True)
    one = torch.randn(per_class, dim, dtype=torch.float64, requires_grad=True)
    out = fn(x, torch.zeros(4, dtype=torch.long), one)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all() and torch.isfinite(one.grad).all()
    # identical embeddings, an embedding of norm 0, an embedding equal to its proxy
    x = torch.ones(4, dim, dtype=torch.float64)
    x[1] = 0
    x[2] = p[0].detach()
    x.requires_grad_()
    p.grad = None
    out = fn(x, torch.tensor([0, 1, 0, 2]), p)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all() and torch.isfinite(p.grad).all()
    # half precision: computed in float32, returned in the input dtype
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, dim, generator=g)
    y = torch.arange(16) % 3
    w = p.detach().float()
    full = fn(x, y, w)
    for dtype in (torch.float16, torch.bfloat16):
        half = fn(x.to(dtype), y, w)
        assert half.dtype == dtype
        assert half.float().item() == pytest.approx(full.item(), rel=2e-2, abs=1e-2)
    # labels outside [0, C)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\).*got values"):
        fn(x, torch.arange(16) % 4, w)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        fn(x, torch.arange(16) % 3 - 1, w)
    with pytest.raises(ValueError, match="proxies must be"):
        fn(x, y, torch.randn(3 * per_class, dim + 1))


def assert_module_contract(cls, name, aliases, functional, per_class=1, **params):
    """Constructor (sizes first, validated), ``proxies`` parameter, registry, forward."""
    import metrickit as mk

    torch.manual_seed(0)
    m = cls(np.int64(6), np.int32(4), **params)
    assert isinstance(m, mk.losses.ProxyLoss)
    assert isinstance(m.proxies, torch.nn.Parameter) and m.proxies.shape == (6 * per_class, 4)
    assert [n for n, _ in m.named_parameters()] == ["proxies"]
    x, y = torch.randn(10, 4), torch.randint(0, 6, (10,))
    assert torch.equal(m(x, y), functional(x, y, m.proxies, **params))
    m(x, y).backward()
    assert m.proxies.grad is not None and m.proxies.grad.abs().sum() > 0
    for key in (name, *aliases):
        built = mk.losses.get_loss(key, num_classes=3, embedding_dim=2, **params)
        assert type(built) is cls and built.proxies.shape == (3 * per_class, 2)
    assert mk.losses.resolve_loss_name(name) == name
    with pytest.raises(ValueError, match="num_classes"):
        cls(0, 4)
    with pytest.raises(TypeError, match="embedding_dim"):
        cls(3, 2.5)
    with pytest.raises(TypeError, match="num_classes"):
        cls(True, 4)
    with pytest.raises(ValueError, match="reduction"):
        cls(3, 4, reduction="avg")
    return m


class Case(NamedTuple):
    """One proxy loss's shared checks: its functional form and brute-force reference with the
    hyper-parameters ``params`` (passed to the reference positionally, in order), the seed of its
    random problem, and PML's loss class with its class-vector attribute and layout, compared at
    each ``(ours, pml)`` pair of constructor arguments of ``pml_configs``."""

    functional: Callable
    reference: Callable
    params: dict
    seed: int
    module: str
    pml: str
    weight: str
    transpose: bool
    pml_configs: list


def _cases() -> dict[str, Case]:
    import metrickit as mk
    import proxy_reference as R

    return {
        "cosface": Case(
            mk.F.cosface_loss, R.cosface_loss, {"margin": 0.3, "scale": 5.0}, 9, "CosFaceLoss",
            "CosFaceLoss", "W", True,
            [({}, {}), ({"margin": np.float64(0.2), "scale": np.int64(10)},
                        {"margin": 0.2, "scale": 10})],
        ),
        "proxy_anchor": Case(  # layout singletons_mixed: proxies without a positive sample
            mk.F.proxy_anchor_loss, R.proxy_anchor_loss, {"margin": 0.2, "alpha": 4.0}, 4,
            "ProxyAnchorLoss", "ProxyAnchorLoss", "proxies", False,
            [({}, {}), ({"margin": 0.3, "alpha": np.float32(10)}, {"margin": 0.3, "alpha": 10})],
        ),
        "normalized_softmax": Case(
            mk.F.normalized_softmax_loss, R.normalized_softmax_loss, {"temperature": 0.25}, 8,
            "NormalizedSoftmaxLoss", "NormalizedSoftmaxLoss", "W", True,
            [({}, {}), ({"temperature": np.float32(0.5)}, {"temperature": 0.5})],
        ),
        "proxy_nca": Case(  # T = 1/9 is PML's softmax_scale = 9
            mk.F.proxy_nca_loss, R.proxy_nca_loss, {"temperature": 0.3}, 6, "ProxyNCALoss",
            "ProxyNCALoss", "proxies", False,
            [({}, {"softmax_scale": 9}), ({"temperature": np.float64(1.0)}, {})],
        ),
    }


CASES = _cases()


def check_case_reference(case: Case, layout, reduction) -> None:
    emb, proxies = random_problem(layout, seed=case.seed)

    def fn(x, y, p, reduction="mean"):
        return case.functional(x, y, p, **case.params, reduction=reduction)

    def ref(e, y, p, reduction):
        return case.reference(e, y, p, *case.params.values(), reduction)

    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def check_case_pml(case: Case) -> None:
    import pytorch_metric_learning.losses as pml_losses

    import metrickit as mk

    for i, (ours_args, pml_args) in enumerate(case.pml_configs):
        torch.manual_seed(i)
        ours = getattr(mk.losses, case.module)(8, 16, **ours_args)
        pml = getattr(pml_losses, case.pml)(8, 16, **pml_args)
        value = assert_equals_pml(ours, pml, case.weight, transpose=case.transpose)
        assert i or value > 0
