"""Losses over scored pairs ``(x1, x2, score)``: a gold similarity per pair (e.g. STS-B 0–5).

``cosine_similarity`` regresses the cosine on the score; ``cosent`` and ``angle`` only ask the
pairs to be ranked like their scores (sentence-transformers' CosineSimilarityLoss, CoSENTLoss and
AnglELoss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_embeddings,
    check_floating,
    check_positive,
    check_reduction,
    check_same_shape,
    compute_dtype,
    reduce,
)
from ._base import Loss


def _check_scored_pairs(x1: Tensor, x2: Tensor, score: Tensor) -> None:
    check_embeddings(x1, "x1")
    check_embeddings(x2, "x2")
    check_same_shape({"x1": x1, "x2": x2})
    check_floating(score, "score", ndim=1)
    if score.shape[0] != x1.shape[0]:
        raise ValueError(f"score must have one entry per pair ({x1.shape[0]}), got shape "
                         f"{tuple(score.shape)}")


def _cosine(x1: Tensor, x2: Tensor) -> Tensor:
    dtype = compute_dtype(x1)
    return F.cosine_similarity(x1.to(dtype), x2.to(dtype), dim=1)


def _angle_similarity(x1: Tensor, x2: Tensor) -> Tensor:
    """[B] |Σ_k Re(z1_k z̄2_k) + Im(z1_k z̄2_k)| of the normalised embeddings read as complex.

    z = u + iv with u the first half of the L2-normalised embedding and v the second (an odd D
    is padded with a zero): Re gives cos(x1, x2), Im gives Σ_k (v1_k u2_k − u1_k v2_k).
    """
    dtype = compute_dtype(x1)
    x1, x2 = x1.to(dtype), x2.to(dtype)
    if x1.shape[1] % 2:
        x1, x2 = F.pad(x1, (0, 1)), F.pad(x2, (0, 1))
    x1, x2 = F.normalize(x1, dim=1), F.normalize(x2, dim=1)
    u1, v1 = x1.chunk(2, dim=1)
    u2, v2 = x2.chunk(2, dim=1)
    return ((x1 * x2).sum(1) + (v1 * u2 - u1 * v2).sum(1)).abs()


def _ranking_logsumexp(sim: Tensor, score: Tensor, scale: float) -> Tensor:
    """log(1 + Σ_{score_i < score_j} exp(λ(sim_i − sim_j))), in O(B log B) by sorting the scores.

    After sorting by score, the pairs of row i are the rows j with a strictly larger score, a
    suffix of the order; Σ_j exp(−λ sim_j) over that suffix is a reversed log-cumsum-exp.
    """
    s = scale * sim
    score, order = score.to(s.dtype).sort()
    s = s[order]
    suffix = torch.logcumsumexp(-s.flip(0), dim=0).flip(0)
    suffix = torch.cat([suffix, s.new_full((1,), float("-inf"))])
    first_larger = torch.searchsorted(score, score, right=True)
    terms = s + suffix[first_larger]
    return torch.logsumexp(torch.cat([s.new_zeros(1), terms]), dim=0)


def _reduce_batch_term(loss: Tensor, reduction: str) -> Tensor:
    """The batch's one term: "mean" and "sum" give it, "none" gives it with shape [1]."""
    return loss.reshape(1) if reduction == "none" else loss


def cosine_similarity_loss(
    x1: Tensor, x2: Tensor, score: Tensor, reduction: str = "mean"
) -> Tensor:
    r"""Squared error between the cosine of each pair and its gold score.

    .. math:: \ell_i = (\cos(x_{1,i}, x_{2,i}) - s_i)^2

    ``"mean"`` is sentence-transformers' CosineSimilarityLoss (MSE); scores are expected in
    [−1, 1] (rescale e.g. STS 0–5 to [0, 1]).

    Source: N. Reimers & I. Gurevych, "Sentence-BERT", EMNLP 2019 (regression objective).
    """
    _check_scored_pairs(x1, x2, score)
    check_reduction(reduction)
    cos = _cosine(x1, x2)
    return reduce((cos - score.to(cos.dtype)).pow(2), reduction).to(x1.dtype)


def cosent_loss(
    x1: Tensor, x2: Tensor, score: Tensor, scale: float = 20.0, reduction: str = "mean"
) -> Tensor:
    r"""CoSENT: the cosines of the pairs ranked like their gold scores.

    .. math:: L = \log\Big(1 + \sum_{s_i < s_j} e^{\lambda(\cos_i - \cos_j)}\Big)

    over all pairs of pairs (i, j) of the batch whose gold scores are strictly ordered; λ =
    ``scale`` [20.0]. The loss couples the whole batch, so it is one term: every reduction
    returns it (``"none"`` with shape [1]); a batch with fewer than two distinct scores gives 0.

    Source: J. Su, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT", 2022
    (kexue.fm/archives/8847); Huang et al., IEEE/ACM TASLP 2024. As sentence-transformers'
    CoSENTLoss.
    """
    _check_scored_pairs(x1, x2, score)
    scale = check_positive(scale, "scale")
    check_reduction(reduction)
    loss = _ranking_logsumexp(_cosine(x1, x2), score, scale)
    return _reduce_batch_term(loss, reduction).to(x1.dtype)


def angle_loss(
    x1: Tensor, x2: Tensor, score: Tensor, scale: float = 20.0, reduction: str = "mean"
) -> Tensor:
    r"""AnglE: the CoSENT ranking on angle differences in complex space.

    Each normalised embedding is read as a complex vector z = u + iv (first half real, second
    half imaginary; an odd D gets a zero appended). The similarity of a pair is
    a = |Σ_k Re(z₁ₖ z̄₂ₖ) + Im(z₁ₖ z̄₂ₖ)| = |cos(x₁, x₂) + Σ_k (v₁ₖu₂ₖ − u₁ₖv₂ₖ)|
    (the normalised angle difference of the paper, as its reference code sums it), and

    .. math:: L = \log\Big(1 + \sum_{s_i < s_j} e^{\lambda(a_i - a_j)}\Big)

    with λ = ``scale`` [20.0]; one term per batch, as :func:`cosent_loss`. This is the angle
    objective alone, as sentence-transformers' AnglELoss (the paper also adds the cosine and
    in-batch-negative objectives: combine with :func:`cosent_loss` /
    :func:`~metrickit.functional.multiple_negatives_ranking_loss`).

    Paper: X. Li & J. Li, "AnglE-optimized Text Embeddings" (arXiv:2309.12871, 2023; ACL 2024).
    """
    _check_scored_pairs(x1, x2, score)
    scale = check_positive(scale, "scale")
    check_reduction(reduction)
    loss = _ranking_logsumexp(_angle_similarity(x1, x2), score, scale)
    return _reduce_batch_term(loss, reduction).to(x1.dtype)


class CosineSimilarityLoss(Loss):
    """Module form of :func:`cosine_similarity_loss`; ``forward(x1, x2, score)``."""

    def forward(self, x1: Tensor, x2: Tensor, score: Tensor) -> Tensor:
        return cosine_similarity_loss(x1, x2, score, self.reduction)


class CoSENTLoss(Loss):
    """Module form of :func:`cosent_loss`; ``forward(x1, x2, score)``."""

    def __init__(self, scale: float = 20.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.scale = check_positive(scale, "scale")

    def forward(self, x1: Tensor, x2: Tensor, score: Tensor) -> Tensor:
        return cosent_loss(x1, x2, score, self.scale, self.reduction)


class AnglELoss(CoSENTLoss):
    """Module form of :func:`angle_loss`; ``forward(x1, x2, score)``."""

    def forward(self, x1: Tensor, x2: Tensor, score: Tensor) -> Tensor:
        return angle_loss(x1, x2, score, self.scale, self.reduction)
