"""Multi-class N-pair loss (Sohn 2016).

N pairs (anchor a_i, positive p_i) from N distinct classes; the positives of the other N − 1
pairs serve as the negatives of each anchor, so one forward pass gives every anchor N − 1
negatives at the cost of 2N embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import (
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    compute_dtype,
    reduce,
)
from ..masks import References
from ._base import BatchLoss, Loss
from ._pair_rows import _same_label_pairs
from ._pairs import IndicesTuple, batch_call, pair_masks_of
from ._registry import register_loss


def _npair_terms(anchors: Tensor, positives: Tensor, valid: Tensor | None = None) -> Tensor:
    """[N] terms log Σ_j exp(a_i·p_j − a_i·p_i) over the valid columns j (all if ``valid`` is None;
    ``valid`` is [N] for the columns, or [N, N] per entry).

    Written as logsumexp − diagonal (the cross-entropy form), so it never overflows. Rows that
    are not valid get a finite, meaningless value: the caller masks them out.
    """
    logits = anchors @ positives.T
    masked = logits
    if valid is not None:
        valid = valid[None, :] if valid.dim() == 1 else valid
        masked = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    return torch.logsumexp(masked, dim=1) - logits.diagonal()


def _l2_terms(anchors: Tensor, positives: Tensor, l2_reg: float) -> Tensor:
    return l2_reg * ((anchors * anchors).sum(1) + (positives * positives).sum(1))


def npair_loss(
    anchors: Tensor,
    positives: Tensor,
    l2_reg: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-class N-pair loss over N explicit pairs, one per class.

    .. math::
        \ell_i = \log\Big(1 + \sum_{j \ne i} \exp(a_i^\top p_j - a_i^\top p_i)\Big)
                 + \lambda\,(\lVert a_i\rVert^2 + \lVert p_i\rVert^2)

    and ``reduction="mean"`` gives mean_i log(1 + Σ_{j≠i} ...) + λ·mean_i(‖a_i‖² + ‖p_i‖²).
    Similarities are plain dot products: the embeddings are not normalised, and the L2 term
    (λ = ``l2_reg``) is the paper's regulariser that keeps their norms from growing without bound.
    Computed as a softmax cross-entropy over the N×N similarity matrix (stable for any scale).
    One pair has an empty sum over j ≠ i and costs log 1 = 0 (plus its L2 term).

    Paper: K. Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
    NeurIPS 2016.

    Args:
        anchors, positives: [N, D] embeddings; row i of both belongs to class i (distinct classes).
        l2_reg: λ ≥ 0 [0.0].
        reduction: "mean" | "sum" | "none" ["mean"]; "none" gives the N per-pair terms ℓ_i.
    """
    check_embeddings(anchors, "anchors")
    check_embeddings(positives, "positives")
    check_same_shape({"anchors": anchors, "positives": positives})
    l2_reg = check_nonnegative(l2_reg, "l2_reg")
    check_reduction(reduction)
    dtype = compute_dtype(anchors)
    a, p = anchors.to(dtype), positives.to(dtype)
    loss = _npair_terms(a, p) + _l2_terms(a, p, l2_reg)
    return reduce(loss, reduction).to(anchors.dtype)


def batch_npair_loss(
    embeddings: Tensor,
    labels: Tensor,
    l2_reg: float = 0.0,
    reduction: str = "mean",
    *,
    indices_tuple: IndicesTuple | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""N-pair loss with the pairs formed from a labelled batch.

    Pairs, deterministically: for every class with at least two samples, its first sample in batch
    order is the anchor and its second the positive; further samples of the class and classes with
    a single sample are not used. The pairs then go through :func:`npair_loss` (same formula,
    λ = ``l2_reg``). With one pair the loss is log 1 = 0 plus the L2 term; with no pair (an empty
    batch included) it is 0 (with a graph, zero gradients). ``reduction="none"`` returns one term
    per pair, ordered by the batch position of the anchors.

    With a reference set (``ref_embeddings``, ``ref_labels``, ``ref_offset``) the anchors are
    still each class's first sample in the batch, and its positive is the first reference of its
    class that is not the anchor itself (with the batch as references: its second sample); the
    negatives of an anchor are the other anchors' positives. With a miner's ``indices_tuple``
    the positive is the first such reference among the mined positive pairs, and another
    anchor's positive is a negative only if the pair is a mined negative pair.

    Without ``indices_tuple`` only the A anchors' rows and positives are scored (one A×A×D
    product, A ≤ B/2 the number of pairs), found from the sorted labels without a B×B mask.

    Paper: Sohn, NeurIPS 2016. Defaults: l2_reg=0.0.
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    labels = call.labels
    l2_reg = check_nonnegative(l2_reg, "l2_reg")
    check_reduction(reduction)
    dtype = compute_dtype(embeddings)
    x, refs = embeddings.to(dtype), call.refs.embeddings.to(dtype)
    if call.indices_tuple is None:  # only the anchors' rows and their positives' columns
        anchors, partner = _anchor_pairs(labels, call.refs)
        a, p = x[anchors], refs[partner]
        loss = _npair_terms(a, p) + _l2_terms(a, p, l2_reg)
        return reduce(loss, reduction).to(embeddings.dtype)
    n = x.shape[0]
    pos, neg = pair_masks_of(call)
    same = labels[:, None] == labels[None, :]
    earlier = torch.ones(n, n, dtype=torch.bool, device=x.device).tril_(-1)
    first = (same & earlier).sum(1) == 0  # the first sample of its class in the batch
    is_anchor = first & pos.any(1)
    if pos.shape[1]:
        partner = pos.to(torch.uint8).argmax(1)  # first positive reference of each row
    else:
        partner = torch.zeros(n, dtype=torch.int64, device=x.device)
    p = refs[partner]
    valid = is_anchor[None, :].expand(n, n)
    if call.indices_tuple is not None:  # another anchor's positive must be a mined negative
        valid = valid & (neg.gather(1, partner[None, :].expand(n, n)) | torch.eye(
            n, dtype=torch.bool, device=x.device))
    loss = _npair_terms(x, p, valid if call.indices_tuple is not None else is_anchor)
    loss = loss + _l2_terms(x, p, l2_reg)
    if reduction == "none":
        return loss[is_anchor].to(embeddings.dtype)
    loss = torch.where(is_anchor, loss, torch.zeros_like(loss))
    return reduce(loss, reduction, weight_count=is_anchor.sum()).to(embeddings.dtype)


def _anchor_pairs(labels: Tensor, refs: References) -> tuple[Tensor, Tensor]:
    """(anchors, partners): the batch positions of the anchors (each class's first sample that
    has a positive reference), ascending, and the first positive reference of each; from the
    sorted labels, in O(B·K + M log M) without a [B, M] mask."""
    labels = labels.long()
    b, m = labels.shape[0], refs.labels.shape[0]
    position = torch.arange(b, device=labels.device)
    _, cls = torch.unique(labels, return_inverse=True)
    first = torch.full((b,), b, device=labels.device).scatter_reduce_(0, cls, position, "amin")
    rows, cols, _ = _same_label_pairs(labels, refs.labels.long())
    ok = first[cls[rows]] == rows
    if refs.offset is not None:
        ok &= cols != rows + refs.offset
    partner = torch.full((b,), m, device=labels.device)
    partner.scatter_reduce_(0, rows[ok], cols[ok], "amin")
    anchors = (partner < m).nonzero()[:, 0]
    return anchors, partner[anchors]


class NPairLoss(Loss):
    """Module form of :func:`npair_loss`; ``forward(anchors, positives)``."""

    def __init__(self, l2_reg: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.l2_reg = check_nonnegative(l2_reg, "l2_reg")

    def forward(self, anchors: Tensor, positives: Tensor) -> Tensor:
        return npair_loss(anchors, positives, self.l2_reg, self.reduction)


@register_loss("npair")
class BatchNPairLoss(BatchLoss):
    """Module form of :func:`batch_npair_loss`; ``forward(embeddings, labels, indices_tuple=None,
    ref_embeddings=None, ref_labels=None, ref_offset=None)``.

    Not ``pair_based``: its pairs are fixed by batch order (one per class), so references after
    the batch (a cross-batch memory) would almost never be used; it still accepts references
    (distributed gathering) and a miner's pairs.
    """

    pair_based = False

    functional = staticmethod(batch_npair_loss)

    def __init__(self, l2_reg: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.l2_reg = check_nonnegative(l2_reg, "l2_reg")

    def hyper(self) -> tuple[object, ...]:
        return (self.l2_reg,)
