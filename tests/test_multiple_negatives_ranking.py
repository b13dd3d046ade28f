"""Multiple negatives ranking loss: plain-loop references, sentence-transformers equality, edges."""

import math

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit.functional import (
    batch_multiple_negatives_ranking_loss,
    matryoshka_loss,
    multiple_negatives_ranking_loss,
)
from metrickit.losses import BatchMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
from reference import numeric_grad

REDUCTIONS = ("mean", "sum", "none")


def cos(x, y):
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def ref_mnrl(a, p, negs=None, ids=None, scale=20.0, symmetric=False, sim=cos):
    """Per-pair terms, by loops. negs: [B][K] rows; ids: one per candidate (positives, then
    the hard negatives k=0 of every pair, k=1 of every pair, ...) or None."""
    b = len(a)
    cands = list(p)
    if negs is not None:
        cands += [negs[i][k] for k in range(len(negs[0])) for i in range(b)]
    out = []
    for i in range(b):
        fwd = [scale * sim(a[i], c) for j, c in enumerate(cands)
               if j == i or ids is None or ids[j] != ids[i]]
        term = lse(fwd) - scale * sim(a[i], p[i])
        if symmetric:
            rev = [scale * sim(p[i], a[j]) for j in range(b)
                   if j == i or ids is None or ids[j] != ids[i]]
            term = 0.5 * (term + lse(rev) - scale * sim(p[i], a[i]))
        out.append(term)
    return out


def ref_batch(x, labels, scale=20.0):
    """Anchor i's positive: the next sample of its class after it (cyclically)."""
    b = len(x)
    out = []
    for i in range(b):
        partner = next((j % b for j in range(i + 1, i + b) if labels[j % b] == labels[i]), None)
        if partner is None:
            continue
        cands = [scale * cos(x[i], x[j]) for j in range(b)
                 if j == partner or labels[j] != labels[i]]
        out.append(lse(cands) - scale * cos(x[i], x[partner]))
    return out


def reduce(terms, reduction):
    if reduction == "none":
        return np.array(terms)
    return sum(terms) / (len(terms) if reduction == "mean" and terms else 1)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def t64(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_values_match_loops(reduction, symmetric, k):
    b, d = 6, 5
    a, p = rand(b, d, seed=1), rand(b, d, seed=2)
    negs = rand(b, k, d, seed=3) if k else None
    got = multiple_negatives_ranking_loss(
        t64(a), t64(p), None if negs is None else t64(negs), scale=7.0, symmetric=symmetric,
        reduction=reduction)
    want = reduce(ref_mnrl(a, p, negs, scale=7.0, symmetric=symmetric), reduction)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)


def test_dot_similarity_and_two_dim_negatives_match_loops():
    a, p, n = rand(5, 3, seed=4), rand(5, 3, seed=5), rand(5, 3, seed=6)
    got = multiple_negatives_ranking_loss(t64(a), t64(p), t64(n), scale=0.5, similarity="dot")
    want = np.mean(ref_mnrl(a, p, n[:, None, :], scale=0.5, sim=lambda x, y: float(x @ y)))
    assert got.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_labels_mask_duplicates_of_the_own_positive(symmetric):
    a, p, n = rand(7, 4, seed=7), rand(7, 4, seed=8), rand(7, 2, 4, seed=9)
    labels = np.array([3, 1, 3, 0, 1, 3, 2])
    neg_labels = np.array([[1, 9], [3, 3], [8, 8], [0, 2], [7, 7], [1, 5], [3, 4]])
    ids = list(labels) + list(neg_labels[:, 0]) + list(neg_labels[:, 1])
    got = multiple_negatives_ranking_loss(
        t64(a), t64(p), t64(n), labels=torch.tensor(labels),
        negative_labels=torch.tensor(neg_labels), symmetric=symmetric, reduction="none")
    want = ref_mnrl(a, p, n, ids=ids, symmetric=symmetric)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # without negative_labels the hard negatives are always negatives
    got = multiple_negatives_ranking_loss(t64(a), t64(p), t64(n), labels=torch.tensor(labels),
                                          symmetric=symmetric, reduction="none")
    want = ref_mnrl(a, p, n, ids=list(labels) + [100 + i for i in range(14)],
                    symmetric=symmetric)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_exact_duplicates_are_found_without_labels():
    a, p = rand(6, 4, seed=10), rand(6, 4, seed=11)
    p[4] = p[1]
    n = rand(6, 1, 4, seed=12)
    n[2, 0] = p[1]  # a hard negative equal to pairs 1 and 4's positive
    ids = [0, 1, 2, 3, 1, 5] + [6, 7, 1, 9, 10, 11]
    got = multiple_negatives_ranking_loss(t64(a), t64(p), t64(n), reduction="none")
    np.testing.assert_allclose(got.numpy(), ref_mnrl(a, p, n, ids=ids), rtol=1e-12)
    kept = multiple_negatives_ranking_loss(t64(a), t64(p), t64(n), exclude_duplicates=False,
                                           reduction="none")
    np.testing.assert_allclose(kept.numpy(), ref_mnrl(a, p, n), rtol=1e-12)
    assert kept[1] > got[1] and kept[0] == got[0]




@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_exact_duplicates_by_value_signed_zero_and_one_ulp(dtype):
    """Duplicates are equal values (0.0 = −0.0, as torch.unique); one ulp apart is no duplicate."""
    g = torch.Generator().manual_seed(13)
    p = torch.randn(6, 5, generator=g)
    p[0, 2], p[3], p[4] = 0.0, p[0], p[1]
    p[3, 2] = -0.0
    a, p = (p + 0.1 * torch.randn(6, 5, generator=g)).to(dtype), p.to(dtype)
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16}
    p[4, :1].view(ints[dtype])[0] += 1  # pair 4's positive is one ulp from pair 1's
    got = multiple_negatives_ranking_loss(a, p, reduction="none")
    want = multiple_negatives_ranking_loss(a, p, labels=torch.tensor([0, 1, 2, 0, 4, 5]),
                                           reduction="none")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    unmasked = multiple_negatives_ranking_loss(a, p, exclude_duplicates=False, reduction="none")
    assert (unmasked[[0, 3]] > got[[0, 3]]).all()
    assert (unmasked[[1, 2, 4, 5]] == got[[1, 2, 4, 5]]).all()
@pytest.mark.parametrize("symmetric", [False, True])
def test_float64_gradients_match_finite_differences(symmetric):
    a, p, n = rand(4, 3, seed=13), rand(4, 3, seed=14), rand(4, 2, 3, seed=15)
    labels = [0, 1, 0, 2]
    ids = labels + [10 + i for i in range(8)]
    ta, tp, tn = t64(a, True), t64(p, True), t64(n, True)
    loss = multiple_negatives_ranking_loss(ta, tp, tn, labels=torch.tensor(labels), scale=3.0,
                                           symmetric=symmetric)
    loss.backward()
    for x, tx, name in ((a, ta, "a"), (p, tp, "p"), (n, tn, "n")):
        def f(v, name=name):
            args = {"a": a, "p": p, "n": n, name: v}
            return np.mean(ref_mnrl(args["a"], args["p"], args["n"], ids=ids, scale=3.0,
                                    symmetric=symmetric))
        np.testing.assert_allclose(tx.grad.numpy(), numeric_grad(f, x), atol=1e-7)
    assert torch.autograd.gradcheck(
        lambda u, v, w: multiple_negatives_ranking_loss(u, v, w, scale=3.0, symmetric=symmetric),
        (t64(a, True), t64(p, True), t64(n, True)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4], [5, 1, 1, 7, 9, 9, 2],
                                    [0, 1, 0, 1, 1, 0]])
def test_batch_form_matches_loops(reduction, labels):
    x = rand(len(labels), 4, seed=16)
    got = batch_multiple_negatives_ranking_loss(t64(x), torch.tensor(labels), reduction=reduction)
    want = reduce(ref_batch(x, labels), reduction)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)


def test_batch_form_gradients_and_tuple_form_equivalence():
    labels = [0, 2, 1, 0, 2, 1, 1]
    x = rand(7, 3, seed=17)
    tx = t64(x, True)
    batch_multiple_negatives_ranking_loss(tx, torch.tensor(labels), scale=4.0).backward()
    want = numeric_grad(lambda v: np.mean(ref_batch(v, labels, scale=4.0)), x)
    np.testing.assert_allclose(tx.grad.numpy(), want, atol=1e-7)
    partner = [3, 4, 5, 0, 1, 6, 2]  # next of the class, cyclically
    pairs = multiple_negatives_ranking_loss(t64(x), t64(x[partner]), labels=torch.tensor(labels),
                                            scale=4.0, reduction="none")
    batch = batch_multiple_negatives_ranking_loss(t64(x), torch.tensor(labels), scale=4.0,
                                                  reduction="none")
    np.testing.assert_allclose(batch.numpy(), pairs.numpy(), rtol=1e-12)


def test_batch_form_with_references_and_a_miner():
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    x = t64(rand(6, 3, seed=18))
    whole = batch_multiple_negatives_ranking_loss(x, labels, reduction="none")
    as_refs = batch_multiple_negatives_ranking_loss(
        x, labels, ref_embeddings=x, ref_labels=labels, ref_offset=0, reduction="none")
    torch.testing.assert_close(as_refs, whole, rtol=0, atol=0)
    # the second half of the batch as anchors against the whole batch (distributed-style)
    part = batch_multiple_negatives_ranking_loss(
        x[3:], labels[3:], ref_embeddings=x, ref_labels=labels, ref_offset=3, reduction="none")
    torch.testing.assert_close(part, whole[3:], rtol=0, atol=0)
    # a miner's pairs: anchor 0 keeps only positive 2 and negative 1
    a1, p, a2, n = (torch.tensor(v) for v in ([0], [2], [0], [1]))
    mined = batch_multiple_negatives_ranking_loss(x, labels, (a1, p, a2, n), reduction="none")
    xs = x.numpy()
    want = lse([20 * cos(xs[0], xs[2]), 20 * cos(xs[0], xs[1])]) - 20 * cos(xs[0], xs[2])
    assert mined.shape == (1,) and mined.item() == pytest.approx(want, rel=1e-12)


def test_registered_with_aliases_and_trainable_by_name():
    for name in ("multiple_negatives_ranking", "mnrl", "infonce_pairs"):
        assert isinstance(mk.losses.get_loss(name), BatchMultipleNegativesRankingLoss)
    loss = mk.losses.get_loss("mnrl", scale=np.float32(10))
    x = torch.randn(8, 4, requires_grad=True)
    loss(x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_edges_empty_single_identical_and_no_anchor():
    empty = torch.zeros(0, 4, requires_grad=True)
    for out in (multiple_negatives_ranking_loss(empty, empty, symmetric=True),
                batch_multiple_negatives_ranking_loss(empty, torch.zeros(0, dtype=torch.long))):
        out.backward()
        assert out.item() == 0
    one = torch.randn(1, 4, requires_grad=True)
    assert multiple_negatives_ranking_loss(one, one * 2).item() == pytest.approx(0, abs=1e-6)
    same = torch.ones(5, 4, requires_grad=True)
    for kwargs in ({}, {"exclude_duplicates": False}, {"symmetric": True}):
        out = multiple_negatives_ranking_loss(same, same, **kwargs)
        out.backward()
        assert torch.isfinite(same.grad).all()
    # all duplicates masked: log 1 = 0; kept: log 5
    assert multiple_negatives_ranking_loss(same, same).item() == pytest.approx(0, abs=1e-6)
    assert multiple_negatives_ranking_loss(same, same, exclude_duplicates=False).item() == \
        pytest.approx(math.log(5), rel=1e-5)
    x = torch.randn(4, 3, requires_grad=True)
    out = batch_multiple_negatives_ranking_loss(x, torch.arange(4))  # no positive anywhere
    out.backward()
    assert out.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    a, p = torch.randn(16, 8), torch.randn(16, 8)
    want = multiple_negatives_ranking_loss(a.to(dtype).float(), p.to(dtype).float())
    got = multiple_negatives_ranking_loss(a.to(dtype), p.to(dtype))
    assert got.dtype == dtype
    assert got.float().item() == pytest.approx(want.item(), rel=1e-2)


def test_large_scale_stays_finite():
    a = torch.randn(32, 8, dtype=torch.float64, requires_grad=True)
    p = torch.randn(32, 8, dtype=torch.float64)
    out = multiple_negatives_ranking_loss(a, p, scale=1e6)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all()
    want = np.mean(ref_mnrl(a.detach().numpy(), p.numpy(), scale=1e6))
    assert out.item() == pytest.approx(want, rel=1e-9)


def test_bad_arguments_are_refused_clearly():
    a, p = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(TypeError, match="symmetric must be a bool"):
        MultipleNegativesRankingLoss(symmetric="False")
    with pytest.raises(TypeError, match="exclude_duplicates must be a bool"):
        MultipleNegativesRankingLoss(exclude_duplicates=1)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        MultipleNegativesRankingLoss(scale=0)
    with pytest.raises(TypeError, match="scale must be a real number"):
        BatchMultipleNegativesRankingLoss(scale="20")
    with pytest.raises(ValueError, match="similarity must be one of"):
        BatchMultipleNegativesRankingLoss(similarity="euclidean")
    assert MultipleNegativesRankingLoss(scale=np.int64(20), symmetric=np.bool_(True)).symmetric
    with pytest.raises(ValueError, match="negatives must be"):
        multiple_negatives_ranking_loss(a, p, torch.randn(3, 3))
    with pytest.raises(ValueError, match="same shape"):
        multiple_negatives_ranking_loss(a, p[:3])
    with pytest.raises(ValueError, match="negative_labels needs labels"):
        multiple_negatives_ranking_loss(a, p, torch.randn(4, 3),
                                        negative_labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"negative_labels must be integer ids of shape \(4, 2\)"):
        multiple_negatives_ranking_loss(a, p, torch.randn(4, 2, 3), labels=torch.arange(4),
                                        negative_labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        multiple_negatives_ranking_loss(a, p, labels=torch.arange(3))


# --- equality with sentence-transformers on identical inputs --------------------------------


def st_losses():
    return pytest.importorskip(
        "sentence_transformers.sentence_transformer.losses",
        reason="sentence-transformers is not installed (pip install -e '.[dev]')")


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("symmetric", [False, True])
def test_equals_sentence_transformers(k, symmetric):
    losses = st_losses()
    g = torch.Generator().manual_seed(k)
    cols = [torch.randn(16, 12, generator=g, dtype=torch.float64) for _ in range(2 + k)]
    ours_in = [c.clone().requires_grad_() for c in cols]
    st_in = [c.clone().requires_grad_() for c in cols]
    st = (losses.MultipleNegativesRankingLoss(model=None, directions=(
        "query_to_doc", "doc_to_query"), partition_mode="per_direction") if symmetric
        else losses.MultipleNegativesRankingLoss(model=None))
    want = st.compute_loss_from_embeddings(st_in, None)
    negs = torch.stack(ours_in[2:], 1) if k else None
    got = multiple_negatives_ranking_loss(ours_in[0], ours_in[1], negs, symmetric=symmetric)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want.backward()
    got.backward()
    for x, y in zip(ours_in, st_in, strict=True):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)


def test_matryoshka_equals_sentence_transformers():
    """MatryoshkaLoss(normalize=True) around MNRL = ST's MatryoshkaLoss around its MNRL."""
    losses = st_losses()
    from torch import nn

    class Model(nn.Module):  # an identity "encoder": features carry the embeddings
        def forward(self, features):
            return {"sentence_embedding": features["emb"]}

        def get_embedding_dimension(self):
            return 16

    g = torch.Generator().manual_seed(3)
    a, p, n = (torch.randn(10, 16, generator=g, dtype=torch.float64) for _ in range(3))
    model = Model()
    st = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), [16, 8, 4],
                               [1.0, 0.5, 2.0])
    want = st([{"emb": a}, {"emb": p}, {"emb": n}], None)
    got = matryoshka_loss(multiple_negatives_ranking_loss, a, p, n, dims=(16, 8, 4),
                          weights=(1.0, 0.5, 2.0), normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
