"""Quadruplet loss (Chen et al. 2017): the triplet term plus a term that asks every positive pair
to be closer than any negative pair, even one that does not share the anchor.

The batch form never enumerates quadruplets (that is O(B⁴)). By default it counts hinge terms
one block of distance rows at a time with a closed-form gradient (:mod:`._quadruplet_blockwise`,
over the upper triangle for the batch against itself, :mod:`._quadruplet_symmetric`: matrix
products worth 1.5 B×B×D ones, O(B²) time for the counts, half a B×B coefficient matrix); the
"sorted" algorithm looks thresholds up in sorted distance lists with ``searchsorted`` and prefix
sums (O(B² log B · K) time and O(B² K) memory for at most K samples per class).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._kernels import sort_rows, sum_below
from .._validation import (
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    compute_dtype,
    reduce,
)
from ..distances import pairwise_distance, rowwise_distance
from ..masks import pair_masks
from ._base import BatchLoss, Loss
from ._pairs import IndicesTuple, batch_call, check_algorithm, pair_masks_of, reference_distance
from ._quadruplet_blockwise import blockwise_quadruplet
from ._quadruplet_symmetric import symmetric_quadruplet
from ._registry import register_loss


def quadruplet_loss(
    anchor: Tensor,
    positive: Tensor,
    negative1: Tensor,
    negative2: Tensor,
    margin1: float = 1.0,
    margin2: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    r"""Quadruplet loss over explicit quadruplets.

    .. math:: \ell = \max(0, d^2(a,p) - d^2(a,n_1) + m_1) + \max(0, d^2(a,p) - d^2(n_1,n_2) + m_2)

    with d² the squared Euclidean distance; a and p share a class, n1 and n2 come from two other,
    distinct classes. The second term pushes positive pairs below negative pairs that do not
    contain the anchor; its margin m2 is the weaker one.

    Paper: W. Chen, X. Chen, J. Zhang, K. Huang, "Beyond triplet loss: a deep quadruplet network
    for person re-identification", CVPR 2017.

    Args:
        anchor, positive, negative1, negative2: [N, D] embeddings.
        margin1: m1 ≥ 0 of the triplet term [1.0].
        margin2: m2 ≥ 0 of the negative-pair term [0.5].
        reduction: "mean" | "sum" | "none" ["mean"].
    """
    named = {"anchor": anchor, "positive": positive, "negative1": negative1, "negative2": negative2}
    for name, x in named.items():
        check_embeddings(x, name)
    check_same_shape(named)
    margin1 = check_nonnegative(margin1, "margin1")
    margin2 = check_nonnegative(margin2, "margin2")
    check_reduction(reduction)
    d_ap = rowwise_distance(anchor, positive, "squared_euclidean")
    d_an = rowwise_distance(anchor, negative1, "squared_euclidean")
    d_nn = rowwise_distance(negative1, negative2, "squared_euclidean")
    loss = (d_ap - d_an + margin1).clamp_min(0) + (d_ap - d_nn + margin2).clamp_min(0)
    return reduce(loss, reduction).to(anchor.dtype)


ALGORITHMS = ("blockwise", "sorted")


def _hinge_mean(total: Tensor, count: Tensor, pairs: Tensor) -> Tensor:
    """Σ hinge / #non-zero tuples over the selected pairs (0 if there is none).

    Pairs with a count of 0 are dropped explicitly: their total is 0 only up to the rounding of
    the prefix-sum differences."""
    pairs = pairs & (count > 0)
    total = torch.where(pairs, total, torch.zeros_like(total))
    count = torch.where(pairs, count, torch.zeros_like(count))
    return total.sum() / count.sum().clamp_min(1)


def quadruplet_from_distances(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    ref_dist: Tensor,
    ref_neg_mask: Tensor,
    margin1: float = 1.0,
    margin2: float = 0.5,
    own_mask: Tensor | None = None,
) -> Tensor:
    """Core of :func:`batch_quadruplet_loss` on precomputed squared distances.

    Args:
        dist: [B, M] squared distances, rows anchors, columns references.
        pos_mask, neg_mask: [B, M] positives / negatives n1 (other class) of each anchor.
        ref_dist: [M, M] symmetric squared distances among the references (n1, n2 candidates).
        ref_neg_mask: [M, M] reference pairs of distinct classes.
        own_mask: [B, M] the references of each anchor's class [``~neg_mask``]; needed when
            ``neg_mask`` keeps only some of the other classes' references (mined pairs).

    The references of an anchor's own class (K at most) hold its positives, so only those K
    columns are looked at: O(B·M log M) for the sorts, O(B·K·M) memory for the gathered rows of
    term 2 and O(B·K² log M) for the look-ups.
    """
    own = ~neg_mask if own_mask is None else own_mask
    n_own = own.sum(1)
    k = int(n_own.max()) if own.numel() else 0  # one host sync: the width of the member table
    members = torch.argsort((~own).to(torch.uint8), dim=1, stable=True)[:, :k]  # [B, K]
    member_ok = torch.arange(k, device=dist.device)[None, :] < n_own[:, None]
    pairs = pos_mask.gather(1, members) & member_ok  # (a, p) with p = members[a, k]
    d_ap = dist.gather(1, members)

    # Term 1: for (a, p), the negatives n with d_an < t = d_ap + m1, from a's sorted negatives.
    rows = sort_rows(dist, neg_mask)
    t1 = d_ap + margin1
    c1, s1 = sum_below(rows, t1)
    term1 = _hinge_mean(c1 * t1 - s1, c1, pairs)

    # Term 2: negative pairs {n1, n2} with d < t = d_ap + m2, counted over all distinct-class
    # reference pairs, minus those with a member in the anchor's class (a pair of distinct classes
    # has at most one such member, so summing over the members' rows counts each pair once).
    t2 = d_ap + margin2
    m = ref_dist.shape[0]
    upper = torch.ones(m, m, dtype=torch.bool, device=dist.device).triu_(1)
    pair_rows = sort_rows(ref_dist.reshape(-1), (ref_neg_mask & upper).reshape(-1))
    c_all, s_all = sum_below(pair_rows, t2.reshape(-1))
    if ref_dist is dist and ref_neg_mask is neg_mask:
        ref_rows = rows
    else:
        ref_rows = sort_rows(ref_dist, ref_neg_mask)
    queries = t2[:, None, :].expand(-1, k, -1)  # [B, K rows, K pairs]
    c_own, s_own = sum_below(ref_rows.take(members), queries)
    c_own = torch.where(member_ok[:, :, None], c_own, torch.zeros_like(c_own)).sum(1)
    s_own = torch.where(member_ok[:, :, None], s_own, torch.zeros_like(s_own)).sum(1)
    c2 = c_all.view_as(t2) - c_own
    s2 = s_all.view_as(t2) - s_own
    term2 = _hinge_mean(c2 * t2 - s2, c2, pairs)
    return term1 + term2


def batch_quadruplet_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin1: float = 1.0,
    margin2: float = 0.5,
    *,
    indices_tuple: IndicesTuple | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
    algorithm: str = "auto",
) -> Tensor:
    r"""Quadruplet loss over every valid quadruplet of a labelled batch (batch-all).

    .. math::
        L = \frac{\sum_{(a,p,n_1)} [d^2_{ap} - d^2_{an_1} + m_1]_+}{\#\{\text{non-zero}\}}
          + \frac{\sum_{(a,p,n_1,n_2)} [d^2_{ap} - d^2_{n_1n_2} + m_2]_+}{\#\{\text{non-zero}\}}

    Term 1 runs over (a, p, n1) with y_a = y_p, a ≠ p, y_n1 ≠ y_a; term 2 over (a, p, n1, n2) with
    additionally y_n2 ≠ y_a and y_n2 ≠ y_n1. Each term is averaged over its tuples with a non-zero
    loss (0 if there is none), as batch-all triplet mining does. The pair (a, p) is ordered and the
    negative pair {n1, n2} unordered; since the ordered versions only repeat tuples a fixed number
    of times, the averages do not depend on this choice. A batch of two classes has no term 2 (it
    is 0); one without a positive pair gives 0.

    With a reference set (``ref_embeddings``, ``ref_labels``, ``ref_offset``) the anchors are the
    batch and p, n1, n2 come from the references. With a miner's ``indices_tuple`` the (a, p)
    pairs are its positive pairs and n1 its negative pairs' negatives; the negative pairs
    {n1, n2} of term 2 are all those of the references.

    Never enumerates quadruplets. ``algorithm`` (both exact, equal up to rounding):

    * ``"blockwise"``: from the embeddings, one cache-sized block of distance rows at a time:
      every hinge term is counted against the sorted thresholds (a table look-up per distance
      for term 2) and the gradient is the closed form Σ W_ij ∂d_ij with those counts as W (two
      matrix products); O(B·M + M²) memory, no autograd graph over the distances. The batch
      against itself scores the upper triangle of its symmetric distances only (half the
      products and look-ups). Not with ``indices_tuple``.
    * ``"sorted"``: the distance matrices with each row's negatives sorted once, binary searches
      and prefix sums (:func:`quadruplet_from_distances`); O(B·K·M + M²) memory.
    * ``"auto"``: "blockwise" without ``indices_tuple``, else "sorted".

    Paper: Chen et al., CVPR 2017. Defaults: margin1=1.0, margin2=0.5, squared Euclidean d².
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    margin1 = check_nonnegative(margin1, "margin1")
    margin2 = check_nonnegative(margin2, "margin2")
    algorithm = check_algorithm(algorithm, ALGORITHMS)
    if algorithm == "blockwise" and indices_tuple is not None:
        raise ValueError(
            "algorithm='blockwise' does not take an indices_tuple; use 'sorted' with a miner"
        )
    if algorithm != "sorted" and indices_tuple is None:
        x = embeddings.to(compute_dtype(embeddings))
        refs = call.refs
        if call.plain:
            loss = symmetric_quadruplet(x, call.labels, margin1, margin2)
        else:
            r = refs.embeddings.to(compute_dtype(refs.embeddings))
            loss = blockwise_quadruplet(
                x, call.labels, r, refs.labels, refs.offset, margin1, margin2
            )
        return loss.to(embeddings.dtype)
    dist = reference_distance(embeddings, call.refs, "squared_euclidean")
    pos, neg = pair_masks_of(call)
    if call.plain:
        return quadruplet_from_distances(dist, pos, neg, dist, neg, margin1, margin2).to(
            embeddings.dtype
        )
    ref_dist = pairwise_distance(call.refs.embeddings, distance="squared_euclidean")
    _, ref_neg = pair_masks(call.refs.labels)
    own = call.labels[:, None] == call.refs.labels[None, :]
    loss = quadruplet_from_distances(dist, pos, neg, ref_dist, ref_neg, margin1, margin2, own)
    return loss.to(embeddings.dtype)


class QuadrupletLoss(Loss):
    """Module form of :func:`quadruplet_loss`; ``forward(anchor, positive, negative1, negative2)``
    with each [N, D]."""

    def __init__(self, margin1: float = 1.0, margin2: float = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin1 = check_nonnegative(margin1, "margin1")
        self.margin2 = check_nonnegative(margin2, "margin2")

    def forward(
        self, anchor: Tensor, positive: Tensor, negative1: Tensor, negative2: Tensor
    ) -> Tensor:
        return quadruplet_loss(
            anchor, positive, negative1, negative2, self.margin1, self.margin2, self.reduction
        )


@register_loss("quadruplet")
class BatchQuadrupletLoss(BatchLoss):
    """Module form of :func:`batch_quadruplet_loss`; ``forward(embeddings, labels,
    indices_tuple=None, ref_embeddings=None, ref_labels=None, ref_offset=None)`` (a scalar: the
    two batch-all averages have no per-sample form, hence no ``reduction`` argument; its
    ``reduction`` attribute is "mean"); ``algorithm`` as in :func:`batch_quadruplet_loss`."""

    functional = staticmethod(batch_quadruplet_loss)

    def __init__(self, margin1: float = 1.0, margin2: float = 0.5, algorithm: str = "auto") -> None:
        super().__init__("mean")
        self.margin1 = check_nonnegative(margin1, "margin1")
        self.margin2 = check_nonnegative(margin2, "margin2")
        self.algorithm = check_algorithm(algorithm, ALGORITHMS)

    def hyper(self) -> tuple[object, ...]:
        return self.margin1, self.margin2

    def keywords(self) -> dict[str, object]:
        return {"algorithm": self.algorithm}
