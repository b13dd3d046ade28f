"""Matryoshka wrapper: explicit prefix sums for batch, tuple and scored-pair losses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metrickit as mk
from metrickit.functional import (
    batch_contrastive_loss,
    cosent_loss,
    matryoshka_loss,
    multiple_negatives_ranking_loss,
    triplet_margin_loss,
)
from metrickit.losses import MatryoshkaLoss


def by_hand(loss, dims, weights, normalize, *args, **kwargs):
    """Σ_k w_k loss(args cut to dims[k]) with the embedding arguments named explicitly."""
    total = 0
    for dim, w in zip(dims, weights, strict=True):
        def cut(x, dim=dim):
            if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() >= 2):
                return x
            x = x[..., :dim]
            return F.normalize(x, dim=-1) if normalize else x
        total = total + w * loss(*map(cut, args), **{k: cut(v) for k, v in kwargs.items()})
    return total


@pytest.mark.parametrize("normalize", [False, True])
def test_batch_loss_with_references_and_labels(normalize):
    x = torch.randn(12, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 3, 3, 3])
    loss = mk.losses.get_loss("contrastive", margin=0.7)
    got = MatryoshkaLoss(loss, dims=(8, 4, 2), weights=(1, 0.5, np.float32(0.25)),
                         normalize=normalize)(x, labels)
    want = by_hand(loss, (8, 4, 2), (1, 0.5, 0.25), normalize, x, labels)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got != batch_contrastive_loss(x, labels, margin=0.7)


def test_tuple_and_keyword_embeddings_and_none_reduction():
    a, p, n = (torch.randn(5, 6, dtype=torch.float64) for _ in range(3))
    got = matryoshka_loss(triplet_margin_loss, a, p, negative=n, dims=[6, 3], reduction="none")
    want = by_hand(triplet_margin_loss, (6, 3), (1, 1), False, a, p, negative=n,
                   reduction="none")
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    hard = torch.randn(5, 2, 6, dtype=torch.float64)  # [B, K, D] hard negatives are cut too
    got = matryoshka_loss(multiple_negatives_ranking_loss, a, p, hard, dims=(4, 2))
    want = by_hand(multiple_negatives_ranking_loss, (4, 2), (1, 1), False, a, p, hard)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_scores_are_not_cut_and_gradients_flow():
    x1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(6, 4, dtype=torch.float64)
    score = torch.rand(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda u: matryoshka_loss(cosent_loss, u, x2, score, dims=(4, 2), weights=(1, 2),
                                  normalize=True), (x1,))
    matryoshka_loss(cosent_loss, x1, x2, score, dims=(2,)).backward()
    assert x1.grad[:, 2:].abs().sum() == 0 and x1.grad[:, :2].abs().sum() > 0


def test_half_precision_and_zero_prefix_norm():
    x = torch.randn(8, 6).to(torch.bfloat16)
    out = matryoshka_loss(mk.losses.get_loss("mnrl"), x, torch.tensor([0, 0, 1, 1] * 2),
                          dims=(6, 2), normalize=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out)
    z = torch.zeros(4, 6, requires_grad=True)  # normalising a zero prefix: no NaN
    matryoshka_loss(multiple_negatives_ranking_loss, z, z + 1, dims=(3,),
                    normalize=True).backward()
    assert torch.isfinite(z.grad).all()


def test_bad_arguments_are_refused_clearly():
    loss = mk.losses.get_loss("triplet")
    with pytest.raises(ValueError, match="at least one prefix length"):
        MatryoshkaLoss(loss, dims=())
    with pytest.raises(TypeError, match="dims must be a sequence"):
        MatryoshkaLoss(loss, dims=64)
    with pytest.raises(TypeError, match=r"dims\[1\] must be an integer"):
        MatryoshkaLoss(loss, dims=(64, 32.0))
    with pytest.raises(ValueError, match="distinct"):
        MatryoshkaLoss(loss, dims=(64, 64))
    with pytest.raises(ValueError, match="one entry per dim"):
        MatryoshkaLoss(loss, dims=(64, 32), weights=(1,))
    with pytest.raises(ValueError, match=r"weights\[0\] must be a finite number >= 0"):
        MatryoshkaLoss(loss, dims=(64,), weights=(-1,))
    with pytest.raises(TypeError, match="normalize must be a bool"):
        MatryoshkaLoss(loss, dims=(64,), normalize="yes")
    with pytest.raises(TypeError, match="loss must be a callable"):
        MatryoshkaLoss("triplet", dims=(64,))
    assert MatryoshkaLoss(loss, dims=(np.int64(8),)).dims == (8,)
    with pytest.raises(ValueError, match="must not exceed the embedding size 8"):
        MatryoshkaLoss(loss, dims=(16, 8))(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no embedding argument"):
        matryoshka_loss(lambda s: s.sum(), torch.rand(4), dims=(2,))
