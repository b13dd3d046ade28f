"""Lifted structured loss (Song et al. 2016): every positive pair of the batch, without anchor /
positive roles, is pushed away from all negatives of both of its members."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_embeddings, check_labels, check_nonnegative, check_reduction, reduce
from ..distances import pairwise_distance
from ..masks import pair_masks, upper_triangle
from ._base import Loss
from ._registry import register_loss


def lifted_structure_from_distances(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    margin: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Core of :func:`lifted_structure_loss` on a precomputed [B, M] distance matrix.

    Rows are anchors, columns references; each True entry (i, j) of ``pos_mask`` is one pair, with
    N(i) = the references in row i of ``neg_mask`` and N(j) = the anchors in column j of it. In a
    batch against itself (symmetric ``dist`` and masks, ``pos_mask`` restricted to i < j) this is
    exactly the paper's loss. Both sums are log-sum-exps over one row / one column (O(B·M)), so
    nothing overflows. A pair whose members have no negative at all is skipped (it is neither
    counted nor differentiated); with no pair left the loss is 0 with zero gradients.
    """
    neg_fill = torch.finfo(dist.dtype).min  # finite, so empty rows keep finite gradients
    x = (margin - dist).masked_fill(~neg_mask, neg_fill)
    lse_rows = torch.logsumexp(x, dim=1)
    lse_cols = torch.logsumexp(x, dim=0)
    j = torch.logaddexp(lse_rows[:, None], lse_cols[None, :]) + dist
    pairs = pos_mask & (neg_mask.any(1)[:, None] | neg_mask.any(0)[None, :])
    per_pair = 0.5 * j.clamp_min(0).pow(2)
    if reduction == "none":
        return per_pair[pairs]
    per_pair = torch.where(pairs, per_pair, torch.zeros_like(per_pair))
    return reduce(per_pair, reduction, weight_count=pairs.sum())


def lifted_structure_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Lifted structured loss over a labelled batch.

    For each positive pair (i, j), i < j:

    .. math::
        J_{ij} = \log\Big(\sum_{k \in N(i)} e^{m - d_{ik}} + \sum_{l \in N(j)} e^{m - d_{jl}}\Big)
                 + d_{ij},
        \qquad L = \frac{1}{2|P|} \sum_{(i,j) \in P} \max(J_{ij}, 0)^2

    with d the Euclidean distance and N(i) the samples of other classes than i. The term of a
    pair is ½ max(J_ij, 0)², so ``reduction="mean"`` gives L, ``"sum"`` 2|P|·L and ``"none"`` the
    per-pair terms in row-major order of the upper triangle. Pairs whose members have no negative
    (a batch of one class) are skipped; no positive pair gives 0 with zero gradients.

    Paper: H. O. Song, Y. Xiang, S. Jegelka, S. Savarese, "Deep Metric Learning via Lifted
    Structured Feature Embedding", CVPR 2016. Defaults: margin=1.0 (m), Euclidean distance.
    """
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    dist = pairwise_distance(embeddings)
    pos, neg = pair_masks(labels)
    pos = pos & upper_triangle(embeddings.shape[0], embeddings.device)
    loss = lifted_structure_from_distances(dist, pos, neg, margin, reduction)
    return loss.to(embeddings.dtype)


@register_loss("lifted_structure", aliases=("lifted",))
class LiftedStructureLoss(Loss):
    """Module form of :func:`lifted_structure_loss`; ``forward(embeddings, labels)``."""

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return lifted_structure_loss(embeddings, labels, self.margin, self.reduction)
