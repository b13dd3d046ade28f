"""Checks shared by the tests of the cosine-similarity pair losses (one ``LossCase`` each).

Each ``tests/test_<loss>.py`` calls these with its case: brute-force reference values and
float64 gradients (``pair_reference``), the reference-set contract, mined pairs, edge cases,
half precision, and constructor validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch


@dataclass
class LossCase:
    fn: Callable  # the functional form
    module: type  # the Module
    name: str  # registry name
    reference: Callable  # pair_reference function
    hyper: dict  # non-default hyper-parameters used by the reference tests
    bad: list = field(default_factory=list)  # (constructor kwargs, exception, message)
    smooth: bool = True  # the gradient is the true derivative (gradcheck applies)
    rtol: float = 1e-9


def expected(case: LossCase, x, labels, reduction, **kw):
    terms, divisor = case.reference(x, labels, **{**case.hyper, **kw})
    stacked = torch.stack(terms) if terms else torch.zeros(0, dtype=torch.float64)
    if reduction == "none":
        return stacked
    total = stacked.sum()
    return total if reduction == "sum" else total / max(divisor, 1)


def assert_close(a, b, rtol):
    np.testing.assert_allclose(
        np.asarray(a.detach()), np.asarray(b.detach()), rtol=rtol, atol=rtol * 1e-3
    )


def reference_values_and_grads(case: LossCase, layout, reduction, seed=3):
    emb = random_batch(layout, dim=5, seed=seed)
    labels = torch.tensor(layout)
    x = torch.tensor(emb, requires_grad=True)
    ours = case.fn(x, labels, **case.hyper, reduction=reduction)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    x_ref = torch.tensor(emb, requires_grad=True)
    ref = expected(case, x_ref, labels, reduction)
    (g_ref,) = torch.autograd.grad(ref.sum(), x_ref)
    assert ours.shape == ref.shape
    assert_close(ours, ref, case.rtol)
    assert_close(g_ours, g_ref, 1e-7)
    assert float(g_ref.abs().max()) > 0  # the comparison has something to compare


def gradcheck(case: LossCase):
    if not case.smooth:
        pytest.skip("the loss's gradient treats some weights as constants (not a derivative)")
    x = torch.tensor(random_batch([0, 0, 1, 1, 1, 2, 2, 3], dim=4, seed=5), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    assert torch.autograd.gradcheck(
        lambda z: case.fn(z, labels, **case.hyper, reduction="none"), (x,)
    )


def references_equal_batch(case: LossCase):
    x = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 4, 2])
    for reduction in ("mean", "sum", "none"):
        plain = case.fn(x, labels, **case.hyper, reduction=reduction)
        (g_plain,) = torch.autograd.grad(plain.sum(), x)
        refs = case.fn(x, labels, **case.hyper, reduction=reduction,
                       ref_embeddings=x.clone(), ref_labels=labels.clone(), ref_offset=0)
        (g_refs,) = torch.autograd.grad(refs.sum(), x)
        assert_close(refs, plain, 1e-12)
        assert_close(g_refs, g_plain, 1e-10)


def references_match_reference(case: LossCase, offset):
    g = torch.Generator().manual_seed(11)
    labels = torch.tensor([0, 1, 2, 0, 1])
    mem_labels = torch.tensor([2, 0, 1, 1, 0, 2, 3, 0, 1, 2])
    x = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    memory = torch.randn(10, 4, dtype=torch.float64, generator=g, requires_grad=True)
    if offset is None:
        refs, ref_labels = memory, mem_labels
    else:  # the anchors sit at rows 3..7 of the references
        refs = torch.cat([memory[:3], x, memory[3:]])
        ref_labels = torch.cat([mem_labels[:3], labels, mem_labels[3:]])
    for reduction in ("mean", "none"):
        ours = case.fn(x, labels, **case.hyper, reduction=reduction, ref_embeddings=refs,
                       ref_labels=ref_labels, ref_offset=offset)
        g_ours = torch.autograd.grad(ours.sum(), (x, memory))
        ref = expected(case, x, labels, reduction, refs=refs, ref_labels=ref_labels,
                       offset=offset)
        g_ref = torch.autograd.grad(ref.sum(), (x, memory))
        assert_close(ours, ref, case.rtol)
        for a, b in zip(g_ours, g_ref, strict=True):
            assert_close(a, b, 1e-7)


def mined_pairs_match_reference(case: LossCase):
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    centres = random_batch([0, 1, 2], dim=3, seed=8)[labels.numpy()]
    x = torch.tensor(centres + 0.6 * random_batch(labels, dim=3, seed=9), requires_grad=True)
    a1, p, a2, n = mk.miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert 0 < len(a1) < 36 and 0 < len(a2) < 96  # the miner did select
    mined = set(zip(a1.tolist(), p.tolist(), strict=True)) | set(
        zip(a2.tolist(), n.tolist(), strict=True))
    ours = case.fn(x, labels, **case.hyper, indices_tuple=(a1, p, a2, n))
    ref = expected(case, x, labels, "mean", mined=mined)
    assert_close(ours, ref, case.rtol)
    assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0], 1e-7)
    full = case.fn(x, labels, **case.hyper)
    assert not torch.allclose(ours, full)  # mining changed the loss


def edge_cases(case: LossCase):
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = case.fn(empty, torch.zeros(0, dtype=torch.long), **case.hyper)
    loss.backward()
    assert loss.item() == 0 and empty.grad.shape == (0, 4)
    layouts = {
        "no positive pair": [0, 1, 2, 3, 4],
        "one class": [7, 7, 7, 7, 7],
        "single sample": [3],
    }
    for name, layout in layouts.items():
        emb = random_batch(layout, dim=4, seed=2)
        x = torch.tensor(emb, requires_grad=True)
        ours = case.fn(x, torch.tensor(layout), **case.hyper)
        ours.backward()
        ref = expected(case, torch.tensor(emb), torch.tensor(layout), "mean")
        assert_close(ours, ref, case.rtol), name
        assert torch.isfinite(x.grad).all(), name


def identical_embeddings(case: LossCase):
    for dtype in (torch.float32, torch.float64):
        x = torch.ones(6, 5, dtype=dtype, requires_grad=True)
        loss = case.fn(x, torch.tensor([0, 0, 0, 1, 1, 2]), **case.hyper)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def large_scales(case: LossCase):
    emb = random_batch([0, 0, 1, 1, 2, 2, 2], dim=4, seed=4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    base = case.fn(torch.tensor(emb), labels, **case.hyper)
    for factor in (1e-20, 1e20):
        for dtype in (torch.float32, torch.float64):
            x = torch.tensor(emb * factor, dtype=dtype, requires_grad=True)
            loss = case.fn(x, labels, **case.hyper)
            loss.backward()
            assert torch.isfinite(x.grad).all()
            assert loss.item() == pytest.approx(base.item(), rel=1e-4)  # cosine: scale-free


def half_precision(case: LossCase, dtype):
    x = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(24) % 5
    half = case.fn(x.to(dtype), labels, **case.hyper)
    full = case.fn(x.to(dtype).float(), labels, **case.hyper)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=1e-2)
    xh = x.to(dtype).requires_grad_()
    case.fn(xh, labels, **case.hyper).backward()
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad.float()).all()


def module_and_registry(case: LossCase):
    x = torch.randn(10, 4)
    labels = torch.randint(0, 3, (10,))
    module = case.module(**case.hyper)
    assert isinstance(module, mk.losses._base.BatchLoss)
    assert torch.equal(module(x, labels), case.fn(x, labels, **case.hyper))
    assert isinstance(mk.losses.get_loss(case.name), case.module)
    numpy_hyper = {k: (np.float32(v) if isinstance(v, float) else np.int64(v))
                   for k, v in case.hyper.items()}
    assert torch.allclose(case.module(**numpy_hyper)(x, labels), module(x, labels))


def cross_batch_memory(case: LossCase):
    """Under CrossBatchMemory the second batch's loss is the reference loss over the batch
    followed by the first batch (detached) as candidates."""
    g = torch.Generator().manual_seed(4)
    first = torch.randn(6, 4, dtype=torch.float64, generator=g)
    second = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    labels1, labels2 = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 2, 0, 1, 3, 3])
    xbm = mk.losses.CrossBatchMemory(case.module(**case.hyper).double(), 4, memory_size=8)
    xbm(first, labels1)
    ours = xbm(second, labels2)
    refs = torch.cat([second, first.float().double()])  # the memory is stored in float32
    ref = expected(case, second, labels2, "mean", refs=refs,
                   ref_labels=torch.cat([labels2, labels1]), offset=0)
    assert_close(ours, ref, case.rtol)
    assert_close(torch.autograd.grad(ours, second)[0], torch.autograd.grad(ref, second)[0], 1e-7)


def bad_arguments(case: LossCase):
    for kwargs, exc, message in case.bad + [({"reduction": "avg"}, ValueError, "reduction")]:
        with pytest.raises(exc, match=message):
            case.module(**kwargs)


class PairLossContract:
    """The checks above as tests: ``class TestContract(PairLossContract): CASE = ...``."""

    CASE: LossCase

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_reference_values_and_grads(self, layout, reduction):
        reference_values_and_grads(self.CASE, layout, reduction)

    def test_gradcheck(self):
        gradcheck(self.CASE)

    def test_references_equal_batch(self):
        references_equal_batch(self.CASE)

    @pytest.mark.parametrize("offset", [None, 3])
    def test_references_match_reference(self, offset):
        references_match_reference(self.CASE, offset)

    def test_mined_pairs(self):
        mined_pairs_match_reference(self.CASE)

    def test_edge_cases(self):
        edge_cases(self.CASE)

    def test_identical_embeddings(self):
        identical_embeddings(self.CASE)

    def test_large_scales(self):
        large_scales(self.CASE)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision(self, dtype):
        half_precision(self.CASE, dtype)

    def test_module_and_registry(self):
        module_and_registry(self.CASE)

    def test_cross_batch_memory(self):
        cross_batch_memory(self.CASE)

    def test_bad_arguments(self):
        bad_arguments(self.CASE)


def assert_equals_pml(ours, theirs, dtype, tol, anchor_without_positive=False):
    """``ours(x, labels)`` equals the PML loss ``theirs(x, labels)`` in value and gradient on a
    random batch of 32 × 8 with 6 classes (and one singleton anchor if asked)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, dtype=dtype, generator=g, requires_grad=True)
    labels = torch.randint(0, 6, (32,), generator=g)
    if anchor_without_positive:
        labels[0] = 99
    a, b = ours(x, labels), theirs(x, labels)
    assert a.item() == pytest.approx(b.item(), rel=tol)
    g_ours, g_theirs = (torch.autograd.grad(v, x)[0] for v in (a, b))
    assert torch.allclose(g_ours, g_theirs, rtol=tol * 10, atol=tol * 10)
    return x, labels
