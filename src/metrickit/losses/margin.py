"""Margin loss with a learnable boundary β (Wu et al., ICCV 2017).

Its sampler, distance-weighted sampling, is :class:`metrickit.miners.DistanceWeightedMiner`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import (
    check_bool,
    check_int,
    check_nonnegative,
    check_real,
    check_reduction,
    check_tensor,
    reduce,
)
from ..masks import mined_triplets
from ._pair_rows import CosinePairs, PairRowsLoss, cosine_pairs, row_loss, row_sum
from ._registry import register_loss


def margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    beta: float | Tensor = 1.2,
    nu: float = 0.0,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Margin loss over the triplets (a, p, n) of a labelled batch:

    .. math:: \ell_{apn} = [d_{ap} - \beta_a + \alpha]_+ + [\beta_a - d_{an} + \alpha]_+

    with d the Euclidean distance of the unit embeddings, α the margin and β_a the boundary
    (``beta``: a number, a [1] tensor, or a [C] tensor of per-class boundaries indexed by the
    anchor's label; pass a learnable tensor to learn it, as :class:`MarginLoss` does). The
    triplets are every valid one of the batch, or those of ``indices_tuple`` (the paper samples
    them with :class:`~metrickit.miners.DistanceWeightedMiner`; pairs (a1, p, a2, n) give every
    (a, p, n) with (a, p) and (a, n) mined); they are never listed: each pair's term is weighted
    by the number of triplets it belongs to, O(B²) memory.

    ``"mean"`` divides the sum of all terms by the number of non-zero terms, ``"sum"`` is the
    sum; both add the boundary regulariser ν·β (one β), or ν Σ_{triplets} β_a (per-class β,
    divided by the same count for "mean"). ``"none"`` returns per anchor the sum of its terms
    [B], without the regulariser.

    Paper: C.-Y. Wu, R. Manmatha, A. J. Smola, P. Krähenbühl, "Sampling Matters in Deep
    Embedding Learning", ICCV 2017. Defaults α = 0.2, β = 1.2 (initial), ν = 0 (the paper's and
    PML's). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    margin = check_nonnegative(margin, "margin")
    nu = check_nonnegative(nu, "nu")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    dtype = pairs.anchors.dtype
    boundary = _anchor_boundary(beta, labels, dtype)
    w_pos, w_neg = _pair_weights(pairs, indices_tuple)
    two = torch.tensor(2.0, dtype=dtype, device=pairs.anchors.device)

    def terms(s, block, bound, want, grad_bound):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        # positives (sparse): [d_ap − β_a + α]₊ with weight w_p
        d_p = (2 - 2 * s[r, c]).clamp_min_(0).sqrt_()
        pull = (d_p - bound[r, 0] + margin).clamp_min_(0)
        wp = w_pos(block, r, c)
        pulled = wp * (pull > 0)
        # negatives (dense, in place over S): [β_a + α − d_an]₊ with weight w_n; the other
        # columns get S = −∞, so d = ∞ and no term
        block.drop_non_negatives(s, float("-inf"))
        d = torch.add(two, s, alpha=-2, out=s).clamp_min_(0).sqrt_()
        push = torch.sub(bound + margin, d, out=block.work).clamp_min_(0)
        wn = w_neg(block)
        if wn.shape[1] == 1:  # one weight per row: it scales the row's sums (and its dℓ/dS)
            push_sum = wn[:, 0] * push.sum(1)
            hit = push.sign_()  # [push > 0]
            pushed = wn[:, 0] * hit.sum(1)
        else:  # one per pair (mined triplets)
            push_sum = (wn * push).sum(1)
            hit = push.sign_().mul_(wn)  # w_n [push > 0]
            pushed = hit.sum(1)
        loss = row_sum(wp * pull, r, b) + push_sum
        if want:
            # dℓ/dS: dd/dS = −1/d, and 0 where d = 0 (as safe_sqrt)
            grad = torch.div(hit, d, out=d).nan_to_num_(nan=0.0, posinf=0.0)
            grad_p = torch.where(d_p > 0, -pulled / d_p, 0.0)
            if wn.shape[1] == 1:  # the row weight goes to block.scale (a row with a positive
                # has a weight ≥ 1)
                block.scale.copy_(wn[:, 0])
                grad_p = grad_p / wn[r, 0]
            grad[r, c] = grad_p
            if grad_bound is not None:  # dℓ/dβ_a
                grad_bound[:, 0] = pushed - row_sum(pulled, r, b)
        active = row_sum(pulled, r, b) + pushed
        return loss, torch.stack([active, row_sum(wp, r, b)], 1)

    loss, aux = row_loss(pairs, terms, boundary, aux_width=2, summed=reduction != "none")
    active, triplets = aux[:, 0].sum(), aux[:, 1]
    out = reduce(loss, reduction, active if reduction == "mean" else None)
    if reduction != "none" and nu > 0 and triplets.numel():
        if _per_class(beta):
            reg = nu * (triplets * boundary[:, 0]).sum()
            out = out + (reg / active.clamp_min(1) if reduction == "mean" else reg)
        else:
            out = out + nu * boundary[0, 0] * (triplets.sum() > 0)
    return out.to(embeddings.dtype)


def _per_class(beta: float | Tensor) -> bool:
    return isinstance(beta, Tensor) and beta.numel() > 1


def _anchor_boundary(beta: float | Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 1] β of each anchor (its class's when ``beta`` has one entry per class)."""
    if not isinstance(beta, Tensor):
        beta = torch.tensor(check_real(beta, "beta"), dtype=dtype, device=labels.device)
    check_tensor(beta, "beta")
    if beta.dim() > 1 or not beta.is_floating_point():
        raise ValueError(f"beta must be a number or a 1-D float tensor, got {beta!r}")
    beta = beta.to(dtype)
    if beta.numel() <= 1:
        return beta.reshape(1, 1).expand(labels.shape[0], 1)
    if labels.numel() and labels.device.type == "cpu" and (
        int(labels.min()) < 0 or int(labels.max()) >= beta.numel()
    ):
        raise ValueError(
            f"labels must lie in [0, {beta.numel()}) with one beta per class, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return beta[labels.long()][:, None]


def _pair_weights(pairs: CosinePairs, indices_tuple: tuple[Tensor, ...] | None):
    """The weights of the positive / negative pair terms, per block: the number of triplets
    each pair belongs to (mined triplets are counted; otherwise every (a, p) pairs with every
    n, so a row's weights are its negatives' / positives' number)."""
    dtype = pairs.anchors.dtype
    if indices_tuple is not None and len(indices_tuple) == 3:
        b, m = pairs.labels.shape[0], pairs.ref_labels.shape[0]
        a, p, n = mined_triplets(indices_tuple, b, m)
        positive = torch.zeros(b, m, dtype=torch.bool, device=a.device)
        positive[pairs.pos_rows, pairs.pos_cols] = True
        negative = (pairs.labels[a] != pairs.ref_labels[n]) & ~pairs.mined_out[a, n]
        keep = (positive[a, p] & negative).to(dtype)
        counts_p = torch.zeros(b, m, dtype=dtype, device=a.device)
        counts_n = torch.zeros(b, m, dtype=dtype, device=a.device)
        counts_p.index_put_((a, p), keep, accumulate=True)
        counts_n.index_put_((a, n), keep, accumulate=True)
        return (
            lambda block, r, c: counts_p[block.rows.start + r, c],
            lambda block: counts_n[block.rows],
        )
    n_pos = pairs.positives_per_row()[:, None]
    n_neg = pairs.negatives_per_row()
    return (
        lambda block, r, _c: n_neg[block.rows.start + r],
        lambda block: n_pos[block.rows],
    )


@register_loss("margin", aliases=("margin_based", "wu_margin"))
class MarginLoss(PairRowsLoss):
    """Module form of :func:`margin_loss` with a learnable boundary ``beta``.

    ``beta`` is an ``nn.Parameter`` of shape [1], or [num_classes] with ``num_classes`` (one
    boundary per class, indexed by the anchor's label); ``learn_beta=False`` freezes it.
    """

    functional = staticmethod(margin_loss)

    def __init__(
        self,
        margin: float = 0.2,
        beta: float = 1.2,
        nu: float = 0.0,
        learn_beta: bool = True,
        num_classes: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.nu = check_nonnegative(nu, "nu")
        init = check_real(beta, "beta")
        learn = check_bool(learn_beta, "learn_beta")
        size = 1 if num_classes is None else check_int(num_classes, "num_classes", low=1)
        self.beta = nn.Parameter(torch.full((size,), init), requires_grad=learn)

    def hyper(self) -> tuple[object, ...]:
        return (self.margin, self.beta if self.beta.numel() > 1 else self.beta[0], self.nu)
