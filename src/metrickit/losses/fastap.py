"""FastAP: average precision approximated by histogram binning (Cakir et al., CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_int, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, row_loss
from ._registry import register_loss


def fastap_loss(
    embeddings: Tensor,
    labels: Tensor,
    num_bins: int = 10,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""FastAP loss, per anchor i with positives: 1 − its histogram-approximated AP,

    .. math:: \ell_i = 1 - \frac{1}{|P_i|} \sum_{k=0}^{L} \frac{h^+_k H^+_k}{H_k}

    over the squared Euclidean distances of the unit embeddings, d² ∈ [0, 4], soft-binned into
    L + 1 triangular bins centred at c_k = 4k/L (width Δ = 4/L: each distance is split linearly
    between its two nearest centres, which is the triangular kernel 1 − |d² − c_k|/Δ): h⁺_k and
    h_k are anchor i's positives' / candidates' (positives and negatives) mass in bin k, H⁺ and H
    their cumulative sums; terms with h⁺_k H⁺_k = 0 or H_k = 0 count 0. An anchor without a
    positive has ℓ_i = 0; ``"mean"`` averages over the anchors with one, ``"none"`` returns ℓ [B].

    Paper: F. Cakir, K. He, X. Xia, B. Kulis, S. Sclaroff, "Deep Metric Learning to Rank", CVPR
    2019. Default L = 10 bins (PML's). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    num_bins = check_int(num_bins, "num_bins", low=1)
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    width = 4.0 / num_bins

    def terms(s, pos, neg, _params, _rows):
        t = (2 - 2 * s).clamp(0, 4) / width  # d² in bin widths
        k = t.detach().floor().clamp_(max=num_bins - 1)
        upper = t - k  # share of the upper centre k + 1
        k = k.long()
        pos_f = pos.to(s.dtype)
        cand_f = (pos | neg).to(s.dtype)
        h_pos = _histogram(k, upper, pos_f, num_bins)
        h_all = _histogram(k, upper, cand_f, num_bins)
        prod = h_pos * h_pos.cumsum(1)
        total = h_all.cumsum(1)
        safe = (prod > 0) & (total > 0)
        ap_sum = torch.where(safe, prod / torch.where(safe, total, 1.0), 0.0).sum(1)
        n_pos = pos_f.sum(1)
        has_pos = n_pos > 0
        loss = torch.where(has_pos, 1 - ap_sum / n_pos.clamp_min(1), 0.0)
        return loss, has_pos[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1)
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


def _histogram(k: Tensor, upper: Tensor, weight: Tensor, num_bins: int) -> Tensor:
    """[b, L + 1] soft counts: each entry adds weight·(1 − upper) to bin k, weight·upper to k+1."""
    hist = weight.new_zeros(weight.shape[0], num_bins + 1)
    hist = hist.scatter_add(1, k, weight * (1 - upper))
    return hist.scatter_add(1, k + 1, weight * upper)


@register_loss("fastap", aliases=("fast_ap",))
class FastAPLoss(PairRowsLoss):
    """Module form of :func:`fastap_loss`."""

    functional = staticmethod(fastap_loss)

    def __init__(self, num_bins: int = 10, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.num_bins = check_int(num_bins, "num_bins", low=1)

    def hyper(self) -> tuple[object, ...]:
        return (self.num_bins,)
