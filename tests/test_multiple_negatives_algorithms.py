"""Multiple negatives ranking loss: the blockwise algorithm equals the dense one (values and
float64 gradients, relative 1e-12) in every configuration, with any row-block size."""

import pytest
import torch

from metrickit.functional import (
    batch_multiple_negatives_ranking_loss,
    multiple_negatives_ranking_loss,
)
from metrickit.losses import (
    BatchMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
    _pair_rows,
    multiple_negatives,
)

REDUCTIONS = ("mean", "sum", "none")


def randn(*shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def both(fn, tensors, **kwargs):
    """{algorithm: (value, gradients)} of fn(*tensors, **kwargs), a random weighting of the
    terms as the upstream gradient (so "none" checks every term's gradient)."""
    out = {}
    for algorithm in ("dense", "blockwise"):
        leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in tensors]
        value = fn(*leaves, algorithm=algorithm, **kwargs)
        weight = randn(*value.shape, seed=99, dtype=value.dtype)
        (value * weight).sum().backward()
        grads = [t.grad if t.grad is not None else torch.zeros_like(t)
                 for t in leaves if t.is_floating_point()]
        out[algorithm] = (value.detach(), grads)
    return out


def largest(t):
    return float(t.abs().max()) if t.numel() else 0.0


def assert_same(out, rtol=1e-12):
    """Equal within ``rtol`` of each tensor's largest magnitude."""
    (v_dense, g_dense), (v_block, g_block) = out["dense"], out["blockwise"]
    for d, b in zip([v_dense, *g_dense], [v_block, *g_block], strict=True):
        torch.testing.assert_close(b, d, rtol=rtol, atol=rtol * largest(d))


def pairs_inputs(b=9, d=5, k=0, seed=0):
    a, p = randn(b, d, seed=seed), randn(b, d, seed=seed + 1)
    return (a, p) if not k else (a, p, randn(b, k, d, seed=seed + 2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_pairs_without_duplicates(reduction, symmetric, k, similarity):
    scale = 20.0 if similarity == "cosine" else 0.7
    out = both(multiple_negatives_ranking_loss, pairs_inputs(k=k), scale=scale,
               similarity=similarity, symmetric=symmetric, reduction=reduction)
    assert_same(out)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negative_labels", [False, True])
def test_pairs_with_label_duplicates_and_hard_negatives(reduction, symmetric,
                                                        with_negative_labels):
    a, p, n = pairs_inputs(k=2, seed=3)
    labels = torch.tensor([3, 1, 3, 0, 1, 3, 2, 5, 2])
    neg_labels = torch.tensor([[1, 9], [3, 3], [8, 8], [0, 2], [7, 7], [1, 5], [3, 4], [2, 2],
                               [6, 0]])

    def fn(a, p, n, **kw):
        return multiple_negatives_ranking_loss(
            a, p, n, labels=labels, negative_labels=neg_labels if with_negative_labels else None,
            **kw)

    assert_same(both(fn, (a, p, n), symmetric=symmetric, reduction=reduction))


@pytest.mark.parametrize("symmetric", [False, True])
def test_pairs_with_exact_duplicates(symmetric):
    a, p, n = pairs_inputs(k=1, seed=5)
    p[4], p[7] = p[1], p[1]
    n[2, 0] = p[1]
    a[6] = a[0]  # equal anchors are no duplicates: only the candidates' ids count
    out = both(multiple_negatives_ranking_loss, (a, p, n), symmetric=symmetric,
               reduction="none")
    assert_same(out)
    plain = both(multiple_negatives_ranking_loss, (a, p, n), symmetric=symmetric,
                 exclude_duplicates=False, reduction="none")
    assert_same(plain)
    assert (plain["blockwise"][0][[1, 4, 7]] > out["blockwise"][0][[1, 4, 7]]).all()


@pytest.mark.parametrize("symmetric", [False, True])
def test_pairs_all_identical_rows_and_large_scale(symmetric):
    same = torch.ones(5, 4, dtype=torch.float64)
    for kwargs in ({}, {"exclude_duplicates": False}):
        out = both(multiple_negatives_ranking_loss, (same, same), symmetric=symmetric,
                   reduction="none", **kwargs)
        assert_same(out)
        assert all(torch.isfinite(g).all() for g in out["blockwise"][1])
    out = both(multiple_negatives_ranking_loss, pairs_inputs(k=1, seed=7), scale=1e6,
               symmetric=symmetric)
    assert_same(out, rtol=1e-9)  # terms of size 1e6 lose their last digits to rounding


def test_pairs_empty_batch():
    empty = torch.zeros(0, 4, dtype=torch.float64)
    for reduction in REDUCTIONS:
        out = both(multiple_negatives_ranking_loss, (empty, empty, torch.zeros(0, 2, 4,
                   dtype=torch.float64)), symmetric=True, reduction=reduction)
        assert out["blockwise"][0].numel() == (0 if reduction == "none" else 1)
        assert_same(out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_pairs_half_precision_inputs(dtype, symmetric):
    a, p, n = (t.to(dtype) for t in pairs_inputs(b=12, d=8, k=1, seed=9))
    values = {}
    for algorithm in ("dense", "blockwise"):
        leaves = [t.clone().requires_grad_() for t in (a, p, n)]
        value = multiple_negatives_ranking_loss(*leaves, symmetric=symmetric, algorithm=algorithm)
        value.backward()
        assert value.dtype == dtype and all(t.grad.dtype == dtype for t in leaves)
        values[algorithm] = (value.float(), [t.grad.float() for t in leaves])
    # both compute in float32: equal up to float32 rounding and one rounding to dtype
    torch.testing.assert_close(values["blockwise"][0], values["dense"][0], rtol=1e-3, atol=0)
    for gd, gb in zip(values["dense"][1], values["blockwise"][1], strict=True):
        torch.testing.assert_close(gb, gd, rtol=1e-2, atol=1e-3)


def test_pairs_many_row_blocks_equal_one(monkeypatch):
    a, p, n = pairs_inputs(b=11, k=2, seed=11)
    labels = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5, 0, 6, 7])
    want = both(multiple_negatives_ranking_loss, (a, p, n), labels=labels, symmetric=True,
                reduction="none")["dense"]
    for elements in (1, 33, 70):  # one row per block, 1 row, 2 rows of the 33 candidates
        monkeypatch.setattr(_pair_rows, "ROW_BLOCK_ELEMENTS", elements)
        got = both(multiple_negatives_ranking_loss, (a, p, n), labels=labels, symmetric=True,
                   reduction="none")["blockwise"]
        assert_same({"dense": want, "blockwise": got})


LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_batch_form(reduction, similarity):
    x = randn(len(LABELS), 5, seed=13)
    out = both(batch_multiple_negatives_ranking_loss, (x, LABELS), similarity=similarity,
               scale=20.0 if similarity == "cosine" else 0.5, reduction=reduction)
    assert_same(out)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("offset", [None, 0, 3])
@pytest.mark.parametrize("mined", [False, True])
def test_batch_form_with_references_and_a_miner(reduction, offset, mined, monkeypatch):
    x, memory = randn(len(LABELS), 5, seed=15), randn(20, 5, seed=16)
    memory_labels = torch.tensor([4, 0, 2, 1, 5, 3, 3, 0, 1, 2, 6, 6, 0, 1, 2, 5, 4, 3, 0, 1])
    if offset is not None:  # the anchors sit at rows offset.. of the references
        memory[offset:offset + 14], memory_labels[offset:offset + 14] = x, LABELS
    g = torch.Generator().manual_seed(17)
    indices = None
    if mined:
        indices = tuple(torch.randint(0, n, (40,), generator=g) for n in (14, 20, 14, 20))

    def fn(x, memory, **kw):
        return batch_multiple_negatives_ranking_loss(
            x, LABELS, indices, ref_embeddings=memory, ref_labels=memory_labels,
            ref_offset=offset, reduction=reduction, **kw)

    want = both(fn, (x, memory))
    assert_same(want)
    monkeypatch.setattr(_pair_rows, "ROW_BLOCK_ELEMENTS", 25)  # one row per block
    got = both(fn, (x, memory))
    assert_same({"dense": want["dense"], "blockwise": got["blockwise"]})


def test_batch_form_samples_without_positive_and_no_anchor():
    x = randn(6, 3, seed=19)
    assert_same(both(batch_multiple_negatives_ranking_loss, (x, torch.tensor([0, 1, 1, 2, 3, 3])),
                     reduction="none"))
    for reduction in REDUCTIONS:
        out = both(batch_multiple_negatives_ranking_loss, (x, torch.arange(6)),
                   reduction=reduction)
        assert_same(out)
        assert out["blockwise"][0].abs().sum() == 0
        assert out["blockwise"][1][0].abs().sum() == 0


def test_algorithm_is_validated_and_kept_by_the_modules():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        MultipleNegativesRankingLoss(algorithm="sparse")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        batch_multiple_negatives_ranking_loss(randn(4, 3, seed=0), torch.arange(4),
                                              algorithm="fast")
    loss = BatchMultipleNegativesRankingLoss(algorithm="dense")
    assert loss.keywords()["algorithm"] == "dense"
    x = randn(6, 3, seed=21)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(loss(x, labels), BatchMultipleNegativesRankingLoss()(x, labels),
                               rtol=1e-12, atol=0)
    a, p = pairs_inputs(seed=23)
    torch.testing.assert_close(
        MultipleNegativesRankingLoss(symmetric=True, algorithm="dense")(a, p),
        MultipleNegativesRankingLoss(symmetric=True, algorithm="blockwise")(a, p),
        rtol=1e-12, atol=0)


@pytest.mark.parametrize(("scale", "fused"), [(21.8, True), (22.0, False)])
def test_symmetric_one_exponential_at_the_edge_of_its_float32_span(scale, fused, monkeypatch):
    """Cosine logits spanning 2λ: λ = 21.8 is within float32's span for one exponential (column
    sums of e^(−2λ) stay normal), λ = 22 is not and takes the two-pass way; both as dense."""
    calls = []
    apply = multiple_negatives._SymmetricSoftmax.apply
    monkeypatch.setattr(multiple_negatives._SymmetricSoftmax, "apply",
                        lambda *args: calls.append(1) or apply(*args))
    # every anchor opposite positive 0 (its column all −λ) and near the others (rows up to +λ)
    a = torch.tensor([[-1.0, 0.0], [-1.0, 0.001], [-1.0, -0.002]])
    p = torch.tensor([[1.0, 0.0], [-1.0, 0.01], [-1.0, -0.01]])
    out = {}
    for algorithm in ("dense", "blockwise"):
        leaves = [t.clone().requires_grad_() for t in (a, p)]
        value = multiple_negatives_ranking_loss(*leaves, scale=scale, symmetric=True,
                                                reduction="none", algorithm=algorithm)
        value.sum().backward()
        out[algorithm] = [value.detach(), *(t.grad for t in leaves)]
    assert len(calls) == int(fused)
    assert out["dense"][0][0] > scale  # ½(about 2λ + log 2 forward, log 3 backward)
    for d, b in zip(out["dense"], out["blockwise"], strict=True):
        torch.testing.assert_close(b, d, rtol=1e-5, atol=1e-5 * largest(d))
