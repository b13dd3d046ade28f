"""FastAP: average precision approximated by histogram binning (Cakir et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_int, check_reduction, reduce
from ._pair_rows import PairRowsLoss, RowBlock, cosine_pairs, row_loss, row_sum
from ._registry import register_loss

# Elements of the sub-blocks FastAP bins (2 MiB in float32): its passes over a sub-block run
# from cache, while the work on the positives runs once per (larger) row block.
BIN_BLOCK_ELEMENTS = 1 << 19


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
    trash = num_bins + 1  # the histogram slot of the columns that are not candidates

    def terms(s, block, _params, want, _grad_params):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        s_pos = s[r, c]
        # the candidates' cumulative soft histogram H_k = Σ_j clamp(k + 1 − t_j, 0, 1), t = d²
        # in bin widths, from each candidate's bin k_j = ⌊t_j⌋ and share u_j = t_j − k_j of the
        # upper centre: H_k = #{j: k_j ≤ k} − Σ_{j: k_j = k} u_j. The dense pass bins every
        # column by its flat index (row, k) into [b, L + 2]: t = L (k = L, u = 0) has its own
        # slot, slot L + 1 holds the columns that are not candidates and the positives (added
        # below)
        slots = num_bins + 2
        count = s.new_empty(b, slots)
        upper = s.new_zeros(b * slots)
        flat = torch.empty(s.shape, dtype=torch.int32, device=s.device)
        _bin_rows(s, block, flat, count, upper, width, trash)
        upper = upper.view(b, slots)
        t_pos = (2 - 2 * s_pos).clamp(0, 4) / width
        k_pos = t_pos.floor().clamp_(max=num_bins - 1)
        u_pos = t_pos - k_pos
        k_pos = k_pos.long()
        count.index_put_((r, k_pos), torch.ones_like(u_pos), accumulate=True)
        upper.index_put_((r, k_pos), u_pos, accumulate=True)
        total = count.cumsum(1).sub_(upper)[:, : num_bins + 1]
        # the positives' soft histogram h⁺ and its cumulative sum H⁺
        h_pos = s.new_zeros(b, num_bins + 1)
        h_pos.index_put_((r, k_pos), 1 - u_pos, accumulate=True)
        h_pos.index_put_((r, k_pos + 1), u_pos, accumulate=True)
        prod = h_pos * h_pos.cumsum(1)
        safe = (prod > 0) & (total > 0)
        safe_total = torch.where(safe, total, 1.0)
        ap_sum = torch.where(safe, prod / safe_total, 0.0).sum(1)
        n_pos = row_sum(torch.ones_like(s_pos), r, b)
        has_pos = n_pos > 0
        loss = torch.where(has_pos, 1 - ap_sum / n_pos.clamp_min(1), 0.0)
        if want:
            # ℓ = 1 − Σ_k q_k / n with q_k = h⁺_k H⁺_k / H_k on the safe bins:
            # dℓ/dH_k = q_k / (n H_k); dℓ/dh⁺_m = −(H⁺_m / H_m + Σ_{k ≥ m} h⁺_k / H_k) / n;
            # dH_k/dt_j = −[k_j = k]; dh⁺/dt_p = −1 at k_p, +1 at k_p + 1; dt/dS = −2 / width
            inv_n = torch.where(has_pos, 1 / n_pos.clamp_min(1), 0.0)[:, None]
            per_total = torch.where(safe, prod / safe_total / safe_total, 0.0) * inv_n
            ratio = torch.where(safe, h_pos / safe_total, 0.0)
            later = ratio.flip(1).cumsum(1).flip(1)
            per_pos = -(torch.where(safe, h_pos.cumsum(1) / safe_total, 0.0) + later) * inv_n
            # slot L (t = L) is bin L − 1's upper end; the trash slot has no gradient
            table = F.pad(per_total[:, :num_bins] * (2 / width), (0, 2))
            table[:, num_bins] = table[:, num_bins - 1]
            grad = torch.index_select(table.view(-1), 0, flat.view(-1), out=s.view(-1))
            grad = grad.view(s.shape)
            step = per_pos[r, k_pos + 1] - per_pos[r, k_pos]
            grad[r, c] = (step - per_total[r, k_pos]) * (-2 / width)
        return loss, has_pos[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1)
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


def _bin_rows(
    s: Tensor, block: RowBlock, flat: Tensor, count: Tensor, upper: Tensor, width: float,
    trash: int,
) -> None:
    """FastAP's dense pass over a block of S, in sub-blocks of :data:`BIN_BLOCK_ELEMENTS` that
    run from cache: overwrite S by t = d² / width (clamped to [0, L]) and write each column's flat
    (row, bin) index into ``flat`` [b, M] (int32; ``trash`` for the columns that are not
    negatives), the columns' count per (row, bin) into ``count`` [b, L + 2] and their upper
    shares' sum into ``upper`` (flat, zeros)."""
    b, m = s.shape
    slots = count.shape[1]
    step = max(1, BIN_BLOCK_ELEMENTS // max(m, 1))
    starts = list(range(0, b, step))
    # each sub-block's run of the same-label pairs (sorted by row)
    cuts = torch.searchsorted(block.same_r, torch.tensor([*starts, b], device=s.device)).tolist()
    for i, a in enumerate(starts):
        z = min(a + step, b)
        # (S rounded beyond ±1 is clamped but keeps dℓ/dS: such rows are parallel, and
        # dS/dx̂ vanishes along the other row's direction)
        t = s[a:z].mul_(-2).add_(2).clamp_(0, 4).div_(width)
        k = flat[a:z]
        k.copy_(t)  # ⌊t⌋ (t ≥ 0)
        sub = RowBlock(
            slice(a, z), block.pos_r, block.pos_c, block.same_r[cuts[i] : cuts[i + 1]] - a,
            block.same_c[cuts[i] : cuts[i + 1]],
            None if block.mined_out is None else block.mined_out[a:z],
        )
        sub.drop_non_negatives(k, trash)
        u = t.frac_()
        k.add_(torch.arange(a * slots, z * slots, slots, dtype=torch.int32,
                            device=s.device)[:, None])
        index = k.view(-1)
        counts = torch.bincount(index, minlength=z * slots)[a * slots : z * slots]
        count[a:z] = counts.view(z - a, slots)
        upper.index_add_(0, index, u.view(-1))


@register_loss("fastap", aliases=("fast_ap",))
class FastAPLoss(PairRowsLoss):
    """Module form of :func:`fastap_loss`."""

    functional = staticmethod(fastap_loss)

    def __init__(self, num_bins: int = 10, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.num_bins = check_int(num_bins, "num_bins", low=1)

    def hyper(self) -> tuple[object, ...]:
        return (self.num_bins,)
