"""Lifted structured loss (Song et al. 2016): every positive pair of the batch, without anchor /
positive roles, is pushed away from all negatives of both of its members."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_choice, check_nonnegative, check_reduction, reduce
from ..masks import unordered_pair_mask
from ._base import BatchLoss
from ._lifted_blockwise import lifted_blockwise
from ._pairs import IndicesTuple, batch_call, check_algorithm, pair_masks_of, reference_distance
from ._registry import register_loss

NEGATIVES = ("mean", "sum")
ALGORITHMS = ("blockwise", "dense")


def lifted_structure_from_distances(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    margin: float = 1.0,
    reduction: str = "mean",
    *,
    negatives: str = "mean",
) -> Tensor:
    r"""Core of :func:`lifted_structure_loss` on a precomputed [B, M] distance matrix.

    Rows are anchors, columns references; each True entry (i, j) of ``pos_mask`` is one pair, with
    N(i) = the references in row i of ``neg_mask`` and N(j) = the anchors in column j of it. In a
    batch against itself (symmetric ``dist`` and masks, ``pos_mask`` restricted to i < j) this is
    exactly the paper's loss (with ``negatives="sum"``). Both sums are log-sum-exps over one row /
    one column (O(B·M)), so nothing overflows. A pair whose members have no negative at all is
    skipped (it is neither counted nor differentiated); with no pair left the loss is 0 with zero
    gradients.
    """
    negatives = check_choice(negatives, "negatives", NEGATIVES)
    neg_fill = torch.finfo(dist.dtype).min  # finite, so empty rows keep finite gradients
    x = (margin - dist).masked_fill(~neg_mask, neg_fill)
    lse_rows = torch.logsumexp(x, dim=1)
    lse_cols = torch.logsumexp(x, dim=0)
    j = torch.logaddexp(lse_rows[:, None], lse_cols[None, :]) + dist
    if negatives == "mean":
        count = neg_mask.sum(1, dtype=dist.dtype)[:, None] + neg_mask.sum(0, dtype=dist.dtype)
        j = j - count.clamp_min(1).log()
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
    *,
    indices_tuple: IndicesTuple | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
    negatives: str = "mean",
    algorithm: str = "auto",
) -> Tensor:
    r"""Lifted structured loss over a labelled batch.

    For each positive pair (i, j), i < j, with ``negatives="sum"`` (the paper's form):

    .. math::
        J_{ij} = \log\Big(\sum_{k \in N(i)} e^{m - d_{ik}} + \sum_{l \in N(j)} e^{m - d_{jl}}\Big)
                 + d_{ij},
        \qquad L = \frac{1}{2|P|} \sum_{(i,j) \in P} \max(J_{ij}, 0)^2

    with d the Euclidean distance and N(i) the samples of other classes than i. With
    ``negatives="mean"`` (the default) the log-sum-exp is a log-*mean*-exp: J_ij is lowered by
    log(|N(i)| + |N(j)|). The log-sum-exp, a smooth upper bound of the max over the negatives,
    exceeds it by up to log(|N(i)| + |N(j)|): on L2-normalised embeddings (d ≤ 2) that gives
    J_ij ≥ log(|N(i)| + |N(j)|) + m − 2 + d_ij > 0 for any batch of more than two classes
    (≈ 3 at P×K = 8×4, m = 1), so every positive pair is pulled together for ever, and a ReLU
    network ends up switching off its whole hidden layer for some inputs, which all map to one
    vector (docs/losses.md, "Lifted structure on normalised embeddings"). The log-mean-exp lies
    between the mean and the max of m − d over the negatives, does not grow with the batch, and
    reaches J_ij ≤ 0 (no pull) once the negatives are on average farther than m + d_ij.

    The term of a pair is ½ max(J_ij, 0)², so ``reduction="mean"`` gives L, ``"sum"`` 2|P|·L and
    ``"none"`` the per-pair terms in row-major order of the upper triangle. Pairs whose members
    have no negative (a batch of one class) are skipped; no positive pair gives 0 with zero
    gradients.

    With a reference set (``ref_embeddings``, ``ref_labels``, ``ref_offset``): the pairs are
    (anchor i, reference j ∈ P(i)) with ``ref_offset + i < j`` (all of them when ``ref_offset``
    is None), N(i) runs over the references and N(j) over the *anchors* of column j (see
    :func:`lifted_structure_from_distances`). With a miner's ``indices_tuple`` the pairs are its
    positive pairs (ordered, each once) and N(i) / N(j) its negative pairs.

    ``algorithm`` (both exact, equal up to rounding): ``"blockwise"`` forms no [B, M] autograd
    graph: one sweep over blocks of distance rows gives each row's (and column's) log-sum-exp over
    its negatives, J is evaluated on the positive pairs only and the gradient is closed-form (two
    B×M×D matrix products in the backward pass, one against the batch itself; O(B·M) memory, see
    :mod:`._lifted_blockwise`); it needs no ``indices_tuple``, and uses the dense form where a
    pair's negatives all lie beyond the exponent range of its constant shift (distances above about
    36 in float32). ``"dense"`` builds the [B, M] distances and masks and lets autograd
    differentiate them. ``"auto"`` is blockwise without a miner, else dense.

    Paper: H. O. Song, Y. Xiang, S. Jegelka, S. Savarese, "Deep Metric Learning via Lifted
    Structured Feature Embedding", CVPR 2016. Defaults: margin=1.0 (m), Euclidean distance,
    negatives="mean" (``"sum"``: the paper's loss exactly), algorithm="auto".
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    check_choice(negatives, "negatives", NEGATIVES)
    algorithm = check_algorithm(algorithm, ALGORITHMS)
    if algorithm == "blockwise" and call.indices_tuple is not None:
        raise ValueError(
            "algorithm='blockwise' computes the loss without a miner; use 'dense' (or 'auto') "
            "with indices_tuple"
        )
    if algorithm != "dense" and call.indices_tuple is None:
        terms = lifted_blockwise(embeddings, call, margin, negatives == "mean")
        if terms is not None:
            return reduce(terms, reduction).to(embeddings.dtype)
    dist = reference_distance(embeddings, call.refs, "euclidean")
    pos, neg = pair_masks_of(call)
    if call.indices_tuple is None:
        pos = pos & unordered_pair_mask(*dist.shape, call.refs.offset, dist.device)
    loss = lifted_structure_from_distances(dist, pos, neg, margin, reduction, negatives=negatives)
    return loss.to(embeddings.dtype)


@register_loss("lifted_structure", aliases=("lifted",))
class LiftedStructureLoss(BatchLoss):
    """Module form of :func:`lifted_structure_loss`; ``forward(embeddings, labels,
    indices_tuple=None, ref_embeddings=None, ref_labels=None, ref_offset=None)``."""

    functional = staticmethod(lifted_structure_loss)

    def __init__(
        self,
        margin: float = 1.0,
        reduction: str = "mean",
        negatives: str = "mean",
        algorithm: str = "auto",
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.negatives = check_choice(negatives, "negatives", NEGATIVES)
        self.algorithm = check_algorithm(algorithm, ALGORITHMS)

    def hyper(self) -> tuple[object, ...]:
        return (self.margin,)

    def keywords(self) -> dict[str, object]:
        return {"reduction": self.reduction, "negatives": self.negatives,
                "algorithm": self.algorithm}
