import math

import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch, t64
from metrickit.distances import pairwise_distance
from metrickit.losses._lifted_blockwise import lifted_blockwise
from metrickit.losses._pairs import batch_call
from metrickit.masks import pair_masks
from reference import euclid, lifted_structure, numeric_grad

AGG = {"mean": np.mean, "sum": np.sum, "none": lambda v: np.asarray(v)}


@pytest.mark.parametrize("algorithm", ["blockwise", "dense"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("margin", [1.0, 0.2])
@pytest.mark.parametrize("negatives", ["mean", "sum"])
def test_matches_bruteforce(layout, reduction, margin, negatives, algorithm):
    emb = random_batch(layout, dim=3, seed=8)
    x = t64(emb, True)
    loss = mk.F.lifted_structure_loss(
        x, torch.tensor(layout), margin=margin, reduction=reduction, negatives=negatives,
        algorithm=algorithm,
    )
    agg = AGG[reduction]
    ref = agg(lifted_structure(emb, layout, margin, negatives))
    np.testing.assert_allclose(loss.detach().numpy(), ref, rtol=1e-10)
    loss.sum().backward()
    num = numeric_grad(lambda v: np.sum(agg(lifted_structure(v, layout, margin, negatives))), emb)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


def test_paper_normalisation_one_over_two_p():
    labels = np.array([0, 0, 1, 1, 1])
    emb = random_batch(labels, seed=9)
    js = []
    for i, j in [(0, 1), (2, 3), (2, 4), (3, 4)]:
        negs = [k for k in range(5) if labels[k] != labels[i]]
        s = sum(
            math.exp(1 - euclid(emb[i], emb[k])) + math.exp(1 - euclid(emb[j], emb[k]))
            for k in negs
        )
        js.append(math.log(s) + euclid(emb[i], emb[j]))
    paper = sum(max(v, 0) ** 2 for v in js) / (2 * 4)
    loss = mk.F.lifted_structure_loss(t64(emb), torch.tensor(labels), negatives="sum")
    assert loss.item() == pytest.approx(paper)


def run_both(x, labels, refs=None, grad_seed=1, **kw):
    """(loss, ∂/∂embeddings, ∂/∂references) of the dense and the blockwise algorithms, with
    random per-term upstream weights (so every term's gradient counts)."""
    out = []
    for algorithm in ("dense", "blockwise"):
        a = x.detach().clone().requires_grad_()
        extra = {}
        if refs is not None:
            extra = dict(ref_embeddings=refs[0].detach().clone().requires_grad_(),
                         ref_labels=refs[1], ref_offset=refs[2])
        loss = mk.F.lifted_structure_loss(a, labels, algorithm=algorithm, **kw, **extra)
        g = torch.rand(loss.shape, dtype=loss.dtype,
                       generator=torch.Generator().manual_seed(grad_seed))
        (loss * g).sum().backward()
        out.append((loss.detach(), a.grad, extra.get("ref_embeddings", a).grad))
    return out


def assert_same(dense, blockwise, rtol=1e-12):
    for u, v in zip(dense, blockwise, strict=True):
        assert u.shape == v.shape and torch.isfinite(v).all()
        if u.numel():
            assert (u - v).abs().max() <= rtol * u.abs().max(), (u, v)


REF_LAYOUTS = {  # anchors' labels, references' labels (extra rows), where the anchors sit
    "memory_after": ([0, 1, 1, 2, 0, 3], [2, 0, 1, 4, 3, 3, 0], 0),
    "rank_in_middle": ([0, 1, 1, 2, 0, 3], [2, 0, 1, 4, 3, 3, 0], 3),
    "separate": ([0, 1, 1, 2, 0, 3], [2, 0, 1, 4, 3, 3, 0], None),
    "one_class": ([5, 5, 5, 5], [5, 5, 5], 2),
    "no_positive": ([0, 1, 2], [3, 4, 5, 6], None),
}


@pytest.mark.parametrize("negatives", ["mean", "sum"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(REF_LAYOUTS))
def test_blockwise_equals_dense_with_references(case, reduction, negatives):
    labels, extra, offset = REF_LAYOUTS[case]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(labels), 5, dtype=torch.float64, generator=g)
    others = torch.randn(len(extra), 5, dtype=torch.float64, generator=g)
    if offset is None:
        refs, ref_labels = others, extra
    else:
        refs = torch.cat([others[:offset], x, others[offset:]])
        ref_labels = extra[:offset] + labels + extra[offset:]
    refs = (refs, torch.tensor(ref_labels), offset)
    for margin in (1.0, 0.3, 4.0):
        dense, blockwise = run_both(x, torch.tensor(labels), refs, margin=margin,
                                    reduction=reduction, negatives=negatives)
        assert_same(dense, blockwise)


@pytest.mark.parametrize("negatives", ["mean", "sum"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("labels", [
    torch.arange(40) % 7, torch.arange(24) // 4, torch.zeros(9, dtype=torch.long),
    torch.arange(6), torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4]),
])
def test_blockwise_equals_dense_in_batch(labels, reduction, negatives):
    x = torch.randn(len(labels), 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for margin, scale in ((1.0, 1.0), (0.2, 0.3), (2.0, 3.0)):
        dense, blockwise = run_both(x * scale, labels, margin=margin, reduction=reduction,
                                    negatives=negatives)
        assert_same(dense, blockwise)


@pytest.mark.parametrize("offset", [0, 2, None])
def test_blockwise_every_block_size_equals_one_block(monkeypatch, offset):
    labels = torch.arange(30) % 4
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 5, dtype=torch.float64, generator=g)
    refs = None
    if offset is not None:
        refs = (torch.cat([torch.randn(offset, 5, dtype=torch.float64, generator=g), x]),
                torch.cat([torch.arange(offset) % 3, labels]), offset)
    names = ("ref_embeddings", "ref_labels", "ref_offset")
    extra = {} if refs is None else dict(zip(names, refs, strict=True))
    one_block = run_both(x, labels, refs)[1]
    for elements in (1, 37, 120):  # one row (or fewer) per block, ragged last blocks
        monkeypatch.setattr("metrickit.losses._lifted_blockwise.ROW_BLOCK_ELEMENTS", elements)
        assert_same(one_block, run_both(x, labels, refs)[1])
        with torch.no_grad():  # the forward-only sweep (no [B, M] matrix kept)
            value = mk.F.lifted_structure_loss(x, labels, algorithm="blockwise", **extra)
        assert value.item() == pytest.approx(one_block[0].item(), rel=1e-12)


@pytest.mark.parametrize("negatives", ["mean", "sum"])
def test_blockwise_gradcheck(negatives):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0]), torch.tensor([1, 0, 2, 4, 1])

    def in_batch(x):
        return mk.F.lifted_structure_loss(x, labels, reduction="none", negatives=negatives,
                                          algorithm="blockwise")

    def with_refs(x, r):
        return mk.F.lifted_structure_loss(
            x, labels, ref_embeddings=torch.cat([r[:2], x, r[2:]]),
            ref_labels=torch.cat([ref_labels[:2], labels, ref_labels[2:]]), ref_offset=2,
            negatives=negatives, algorithm="blockwise")

    assert torch.autograd.gradcheck(in_batch, (x,))
    assert torch.autograd.gradcheck(with_refs, (x, r))


@pytest.mark.parametrize("negatives", ["mean", "sum"])
def test_blockwise_negatives_at_distance_zero(negatives):
    # coinciding samples of different classes: their e^{−d}/d is ∞, their gradient 0 (as the
    # dense path's safe square root), and nothing else changes. Small integers: every squared
    # distance is exact (the Gram expansion's rounding would turn a 0 into a d of ~1e-8).
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-3, 4, (10, 3), generator=g).double()
    x[5] = x[0]
    x[6] = x[0]
    labels = torch.tensor([0, 0, 1, 1, 2, 1, 2, 0, 1, 2])
    dense, blockwise = run_both(x, labels, negatives=negatives)
    assert_same(dense, blockwise)
    ones = torch.ones(12, 4, dtype=torch.float64)
    assert_same(*run_both(ones, torch.arange(12) % 3, negatives=negatives))


def test_blockwise_falls_back_beyond_its_exponent_range():
    # class 0 at ±1e3, class 1 near 0: every negative of a class-0 pair is 1e3 away, so its
    # e^{−d} underflows and the blockwise algorithm hands over to the dense one
    g = torch.Generator().manual_seed(8)
    x = torch.randn(8, 3, dtype=torch.float64, generator=g)
    x[:4, 0] += torch.tensor([1e3, -1e3, 1e3, -1e3], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert lifted_blockwise(x, batch_call(x, labels, None, None, None, None), 1.0, False) is None
    near = x / 1e3
    call = batch_call(near, labels, None, None, None, None)
    assert lifted_blockwise(near, call, 1.0, False) is not None
    dense, blockwise = run_both(x, labels, negatives="sum")
    assert dense[0].item() > 1e5
    assert_same(dense, blockwise)


def test_core_with_a_separate_reference_set():
    # N(i): references of another class than anchor i; N(j): anchors of another class than j.
    g = np.random.default_rng(10)
    xa, ya = g.normal(size=(4, 3)), [0, 1, 1, 2]
    xr, yr = g.normal(size=(6, 3)), [1, 0, 3, 1, 0, 2]

    def brute(xa, xr):
        terms = []
        for i in range(4):
            for j in range(6):
                if ya[i] != yr[j]:
                    continue
                s = sum(math.exp(1 - euclid(xa[i], xr[k])) for k in range(6) if yr[k] != ya[i])
                s += sum(math.exp(1 - euclid(xa[k], xr[j])) for k in range(4) if ya[k] != yr[j])
                terms.append(0.5 * max(math.log(s) + euclid(xa[i], xr[j]), 0) ** 2)
        return np.mean(terms)

    a, r = t64(xa, True), t64(xr, True)
    pos, neg = pair_masks(torch.tensor(ya), torch.tensor(yr))
    loss = mk.F.lifted_structure_from_distances(pairwise_distance(a, r), pos, neg, negatives="sum")
    assert loss.item() == pytest.approx(brute(xa, xr), rel=1e-10)
    loss.backward()
    np.testing.assert_allclose(a.grad.numpy(), numeric_grad(lambda v: brute(v, xr), xa), atol=1e-6)
    np.testing.assert_allclose(r.grad.numpy(), numeric_grad(lambda v: brute(xa, v), xr), atol=1e-6)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [4, 4, 4], [5]])
def test_no_usable_pair_gives_zero_with_zero_grads(labels):
    # all distinct: no positive pair; one class: the pairs have no negative and are skipped.
    x = torch.randn(len(labels), 3, requires_grad=True)
    loss = mk.F.lifted_structure_loss(x, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    assert mk.F.lifted_structure_loss(x, torch.tensor(labels), reduction="none").shape == (0,)


@pytest.mark.parametrize("negatives", ["mean", "sum"])
def test_identical_embeddings_give_finite_grads(negatives):
    x = torch.ones(12, 4, requires_grad=True)
    loss = mk.F.lifted_structure_loss(x, torch.arange(12) // 3, margin=1.0, negatives=negatives)
    loss.backward()
    # d = 0 everywhere: J = log(2·9·e^m), or log(e^m) = m for the mean over the 2·9 negatives
    j = 1.0 + (math.log(2 * 9) if negatives == "sum" else 0.0)
    assert loss.item() == pytest.approx(0.5 * j**2, rel=1e-6)
    assert torch.isfinite(x.grad).all()


def test_huge_distances_do_not_overflow():
    # positives 2e6 apart, negatives 1e6 away: exp(m − d) underflows, the log-sum-exp must not.
    x = torch.zeros(4, 2)
    x[0, 0], x[1, 0] = 1e6, -1e6
    x.requires_grad_()
    loss = mk.F.lifted_structure_loss(x, torch.tensor([0, 0, 1, 1]), negatives="sum")
    loss.backward()
    j01 = 1 + math.log(4) - 1e6 + 2e6  # pair (0, 1): four terms e^{m − 1e6}, d_01 = 2e6
    j23 = 1 + math.log(4) - 1e6  # pair (2, 3): the same four terms, d_23 = 0, so J < 0
    expected = (0.5 * j01**2 + 0.5 * max(j23, 0) ** 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.randn(12, 8)
    labels = torch.arange(12) % 3
    full = mk.F.lifted_structure_loss(x.to(dtype).float(), labels)
    half = mk.F.lifted_structure_loss(x.to(dtype), labels)
    assert half.dtype == dtype
    assert half.float().item() == pytest.approx(full.item(), rel=1e-2)


def test_module_equals_functional_and_registry():
    x, labels = torch.randn(8, 3), torch.arange(8) % 3
    m = mk.losses.get_loss("lifted", margin=0.5, reduction="sum")
    assert isinstance(m, mk.losses.LiftedStructureLoss)
    assert isinstance(mk.losses.get_loss("lifted_structure"), mk.losses.LiftedStructureLoss)
    expected = mk.F.lifted_structure_loss(x, labels, 0.5, "sum")
    assert torch.equal(m(x, labels), expected)
    paper = mk.losses.LiftedStructureLoss(negatives="sum")
    assert torch.equal(paper(x, labels), mk.F.lifted_structure_loss(x, labels, negatives="sum"))


def test_bad_inputs_name_the_argument():
    x, labels = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="margin"):
        mk.F.lifted_structure_loss(x, labels, margin=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        mk.F.lifted_structure_loss(x, labels, reduction="avg")
    with pytest.raises(ValueError, match="negatives must be one of"):
        mk.F.lifted_structure_loss(x, labels, negatives="max")
    with pytest.raises(ValueError, match="negatives must be one of"):
        mk.losses.LiftedStructureLoss(negatives="max")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        mk.F.lifted_structure_loss(x, labels, algorithm="sorted")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        mk.losses.LiftedStructureLoss(algorithm="fast")
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="algorithm='blockwise'.*indices_tuple"):
        mk.F.lifted_structure_loss(x, labels, indices_tuple=pairs, algorithm="blockwise")
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        mk.F.lifted_structure_loss(x, labels[:3])
    with pytest.raises(TypeError, match="labels must be an integer"):
        mk.F.lifted_structure_loss(x, labels.float())
    with pytest.raises(ValueError, match="embeddings must be 2-D"):
        mk.F.lifted_structure_loss(torch.randn(4), labels)


def separated_unit_batch(classes: int, per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings, class c at the basis vector e_c: positives coincide, negatives
    are √2 apart (farther than m + d = 1 at the default margin)."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.eye(classes)[labels].requires_grad_(), labels


@pytest.mark.parametrize("classes", [8, 32])
def test_defaults_stop_pulling_a_separated_normalised_batch(classes):
    # Regression (mnist5k collapse, docs/losses.md): with the paper's log-sum-exp J ≥
    # log(|N(i)| + |N(j)|) + m − 2 > 0 on the unit sphere, so positives were pulled together for
    # ever (here J = log 56 + 1 − √2 ≈ 3.6 at P×K = 8×4) and a ReLU network collapsed inputs onto
    # one vector. At the defaults a separated batch is a minimum: loss 0, no gradient, whatever P.
    x, labels = separated_unit_batch(classes)
    loss = mk.F.lifted_structure_loss(x, labels)
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    assert mk.losses.LiftedStructureLoss()(x, labels).item() == 0
    paper = mk.F.lifted_structure_loss(x, labels, negatives="sum").item()
    j = math.log(2 * (classes - 1) * 4) + 1 - math.sqrt(2)
    assert paper == pytest.approx(0.5 * j**2, rel=1e-5) and paper > 6
