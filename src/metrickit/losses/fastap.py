"""FastAP: average precision approximated by histogram binning (Cakir et al., CVPR 2019)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_int, check_reduction, reduce
from ._pair_rows import PairRowsLoss, RowBlock, cosine_pairs, row_loss, row_sum
from ._pairs import check_algorithm
from ._registry import register_loss

ALGORITHMS = ("threshold", "scatter")
# "auto" runs "threshold" up to this many bins: it costs three cached passes per bin that a
# row's positives occupy (at most 2·|P_i| and num_bins), "scatter" about twelve whatever the bins
THRESHOLD_MAX_BINS = 12
# Elements of the sub-blocks FastAP bins (2 MiB in float32): its passes over a sub-block run
# from cache, while most of the work on the positives runs once per (larger) row block.
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
    algorithm: str = "auto",
) -> Tensor:
    r"""FastAP loss, per anchor i with positives: 1 − its histogram-approximated AP,

    .. math:: \ell_i = 1 - \frac{1}{|P_i|} \sum_{k=0}^{L} \frac{h^+_k H^+_k}{H_k}

    over the squared Euclidean distances of the unit embeddings, d² ∈ [0, 4], soft-binned into
    L + 1 triangular bins centred at c_k = 4k/L (width Δ = 4/L: each distance is split linearly
    between its two nearest centres, which is the triangular kernel 1 − |d² − c_k|/Δ): h⁺_k and
    h_k are anchor i's positives' / candidates' (positives and negatives) mass in bin k, H⁺ and H
    their cumulative sums; terms with h⁺_k H⁺_k = 0 or H_k = 0 count 0. An anchor without a
    positive has ℓ_i = 0; ``"mean"`` averages over the anchors with one, ``"none"`` returns ℓ [B].

    ``algorithm`` (both exact, equal up to rounding) chooses how the negatives' part of H is
    found from t = d²/Δ: ``"threshold"``: H_k = Σ_j clamp(k + 1 − t_j, 0, 1), one pass over the
    row for each bin k with h⁺_k H⁺_k > 0 (no other H_k is used), so its cost grows with the
    bins a row's positives occupy; ``"scatter"``: each row's whole histogram, by indexed
    accumulation of every column's bin and share, whatever the bins; ``"auto"``: "threshold"
    up to 12 bins, else "scatter".

    Paper: F. Cakir, K. He, X. Xia, B. Kulis, S. Sclaroff, "Deep Metric Learning to Rank", CVPR
    2019. Defaults: L = 10 bins (PML's), algorithm="auto". References: see
    :class:`~metrickit.losses._base.BatchLoss`.
    """
    num_bins = check_int(num_bins, "num_bins", low=1)
    check_reduction(reduction)
    algorithm = check_algorithm(algorithm, ALGORITHMS)
    if algorithm == "auto":
        algorithm = "threshold" if num_bins <= THRESHOLD_MAX_BINS else "scatter"
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    width = 4.0 / num_bins
    scratch: dict[str, Tensor] = {}  # the first row block's buffers, shared by the others

    def buffer(name: str, rows: int, like: Tensor, dtype: torch.dtype) -> Tensor:
        if name not in scratch:
            scratch[name] = like.new_empty(rows, like.shape[1], dtype=dtype)
        return scratch[name][:rows]

    def terms(s, block, _params, want, _grad_params):
        b, m = s.shape
        r, c = block.pos_r, block.pos_c
        s_pos = s[r, c]
        # the positives' soft histogram h⁺ (bin k_p takes 1 − u_p, bin k_p + 1 takes u_p) and
        # its cumulative sum H⁺
        t_pos = (2 - 2 * s_pos).clamp(0, 4) / width
        k_pos = t_pos.floor().clamp_(max=num_bins - 1)
        u_pos = t_pos - k_pos
        k_pos = k_pos.long()
        h_pos = s.new_zeros(b, num_bins + 1)
        h_pos.index_put_((r, k_pos), 1 - u_pos, accumulate=True)
        h_pos.index_put_((r, k_pos + 1), u_pos, accumulate=True)
        cum_pos = h_pos.cumsum(1)
        prod = h_pos * cum_pos
        n_pos = row_sum(torch.ones_like(s_pos), r, b)
        has_pos = n_pos > 0
        inv_n = torch.where(has_pos, 1 / n_pos.clamp_min(1), 0.0)[:, None]

        def table(rows: slice, total: Tensor) -> Tensor:
            # dℓ/dS_ij = −(2/width)·dℓ/dH_k at k = ⌊t_ij⌋ for a negative, by slot: slot L
            # (t = L) is bin L − 1's upper end, the last slot (not a negative) has none
            per_total = _per_total(prod[rows], total, inv_n[rows])[2]
            out = F.pad(per_total[:, :num_bins] * (2 / width), (0, 2))
            out[:, num_bins] = out[:, num_bins - 1]
            return out

        # the candidates' H: the positives' H⁺ plus the negatives' part (their count at k = L)
        total = cum_pos.clone()
        step = max(1, BIN_BLOCK_ELEMENTS // max(m, 1))
        if algorithm == "scatter":
            flat = buffer("flat", b, s, torch.int32)
            total += _scatter_negatives(s, block, flat, num_bins, width, step)
            if want:
                torch.index_select(table(slice(None), total).view(-1), 0, flat.view(-1),
                                   out=s.view(-1))
        else:
            total[:, num_bins] += _negatives_per_row(block, m, s.dtype)
            rows_bins = _row_bins(prod[:, :num_bins] > 0, step)
            tmp = buffer("tmp", min(step, b), s, s.dtype)
            index = buffer("index", min(step, b), s, torch.int32) if want else None
            for (a, z, sub), (bins, nmax) in zip(_sub_blocks(block, step), rows_bins, strict=True):
                t = _to_bins(s[a:z], sub, width, num_bins)
                _add_thresholds(t, bins[:, :nmax], total[a:z], tmp)
                if index is not None:  # t's rows of J: dℓ/dS from their bins' slots
                    k = index[: z - a]
                    _flat_bins(k, t, num_bins + 2)
                    torch.index_select(table(slice(a, z), total[a:z]).view(-1), 0, k.view(-1),
                                       out=t.view(-1))
        safe, safe_total, per_total = _per_total(prod, total, inv_n)
        ap_sum = torch.where(safe, prod / safe_total, 0.0).sum(1)
        loss = torch.where(has_pos, 1 - ap_sum / n_pos.clamp_min(1), 0.0)
        if want:
            # ℓ = 1 − Σ_k q_k / n with q_k = h⁺_k H⁺_k / H_k on the safe bins:
            # dℓ/dH_k = q_k / (n H_k); dℓ/dh⁺_m = −(H⁺_m / H_m + Σ_{k ≥ m} h⁺_k / H_k) / n;
            # dH_k/dt_j = −[⌊t_j⌋ = k]; dh⁺/dt_p = −1 at k_p, +1 at k_p + 1; dt/dS = −2 / width
            ratio = torch.where(safe, h_pos / safe_total, 0.0)
            later = ratio.flip(1).cumsum(1).flip(1)
            per_pos = -(torch.where(safe, cum_pos / safe_total, 0.0) + later) * inv_n
            step_pos = per_pos[r, k_pos + 1] - per_pos[r, k_pos]
            s[r, c] = (step_pos - per_total[r, k_pos]) * (-2 / width)
        return loss, has_pos[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1, summed=reduction != "none")
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


def _per_total(prod: Tensor, total: Tensor, inv_n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(safe, safe_total, dℓ/dH): the bins with h⁺_k H⁺_k > 0 and H_k > 0, H there (1
    elsewhere), and dℓ/dH_k = h⁺_k H⁺_k / (n H_k²) there (0 elsewhere)."""
    safe = (prod > 0) & (total > 0)
    safe_total = torch.where(safe, total, 1.0)
    return safe, safe_total, torch.where(safe, prod / safe_total / safe_total, 0.0) * inv_n


def _sub_blocks(block: RowBlock, step: int) -> Iterator[tuple[int, int, RowBlock]]:
    """``(a, z, sub)``: rows a:z of ``block`` in sub-blocks of ``step`` rows, ``sub`` their
    :class:`RowBlock` (its rows local to the sub-block; without the positives)."""
    b = block.size
    starts = list(range(0, b, step))
    # each sub-block's run of the same-label pairs (sorted by row)
    ends = torch.tensor([*starts, b], device=block.same_r.device)
    cuts = torch.searchsorted(block.same_r, ends).tolist()
    none = block.pos_r[:0]
    for i, a in enumerate(starts):
        z = min(a + step, b)
        yield a, z, RowBlock(
            slice(a, z), none, none, block.same_r[cuts[i] : cuts[i + 1]] - a,
            block.same_c[cuts[i] : cuts[i + 1]],
            None if block.mined_out is None else block.mined_out[a:z],
        )


def _row_bins(needed: Tensor, step: int) -> Iterator[tuple[Tensor, int]]:
    """``(bins, n)`` per sub-block of ``step`` rows: each row's ``needed`` bins ([b, L] mask)
    in its first columns of ``bins`` [rows, ·] (int64), the rest repeating its first (bin 0
    for a row with none), and n the most any of its rows needs."""
    b, num_bins = needed.shape
    key = torch.where(needed, torch.arange(num_bins, device=needed.device), num_bins)
    bins = key.sort(1).values
    bins = torch.where(bins < num_bins, bins, bins[:, :1] % num_bins)
    n_sub = -(-b // step)
    counts = F.pad(needed.sum(1), (0, n_sub * step - b)).view(n_sub, step).amax(1).tolist()
    for i, n in enumerate(counts):
        yield bins[i * step : (i + 1) * step], n


def _to_bins(s: Tensor, block: RowBlock, width: float, num_bins: int) -> Tensor:
    """Overwrite the rows S by t = d² / width = (1 − S)·2 / width, L + 1 where the column is not
    a negative (past every bin). S rounded beyond ±1 gives t beyond [0, L] and keeps dℓ/dS:
    such rows are parallel, and dS/dx̂ vanishes along the other row's direction."""
    half = 2 / width
    torch.add(torch.tensor(half, dtype=s.dtype, device=s.device), s, alpha=-half, out=s)
    return block.drop_non_negatives(s, num_bins + 1)


def _add_thresholds(t: Tensor, bins: Tensor, total: Tensor, tmp: Tensor) -> None:
    """Add to ``total`` [rows, L + 1] at each row's ``bins`` [rows, n] the negatives'
    H_k = Σ_j clamp(k + 1 − t_j, 0, 1) over its row of t (``tmp``: scratch, t's shape or
    more; a repeated bin is computed twice, identically)."""
    rows, n = bins.shape
    if n == 0:
        return
    tmp = tmp[:rows]
    upper = (bins + 1).to(t.dtype)
    sums = t.new_empty(n, rows)
    for q in range(n):
        torch.sum(torch.sub(upper[:, q : q + 1], t, out=tmp).clamp_(0, 1), 1, out=sums[q])
    found = torch.zeros_like(total).scatter_(1, bins, sums.T)
    total.add_(found)


def _flat_bins(k: Tensor, t: Tensor, slots: int, first: int = 0) -> None:
    """Write into ``k`` (int32) each column's flat (row, slot) index row · slots + ⌊t⌋ for t
    in (−1, slots) (t < 0, S rounded above 1, truncates to slot 0); rows count from
    ``first``."""
    k.copy_(t)
    stop = first + k.shape[0]
    k.add_(torch.arange(first * slots, stop * slots, slots, dtype=k.dtype, device=k.device)
           [:, None])


def _negatives_per_row(block: RowBlock, m: int, dtype: torch.dtype) -> Tensor:
    """[b] the number of negatives of each row of ``block`` among its ``m`` columns."""
    b = block.size
    same = row_sum(torch.ones_like(block.same_r, dtype=dtype), block.same_r, b)
    if block.mined_out is None:
        return m - same
    # the columns a miner left out, less the same-label ones among them
    left_out = block.mined_out.sum(1, dtype=dtype)
    same_out = block.mined_out[block.same_r, block.same_c].to(dtype)
    return m - same - left_out + row_sum(same_out, block.same_r, b)


def _scatter_negatives(
    s: Tensor, block: RowBlock, flat: Tensor, num_bins: int, width: float, step: int
) -> Tensor:
    """[b, L + 1]: the negatives' cumulative soft histogram H_k = #{j: k_j ≤ k} − Σ_{k_j = k}
    u_j, from each negative's bin k_j = ⌊t_j⌋ and upper share u_j = t_j − k_j (t = d² / width
    clamped to [0, L]: t = L has its own slot, the columns that are not negatives slot L + 1),
    accumulated by their :func:`_flat_bins` (written into ``flat``) in sub-blocks of ``step``
    rows that run from cache; overwrites S."""
    b = s.shape[0]
    slots = num_bins + 2
    count = s.new_empty(b, slots)
    upper = s.new_zeros(b * slots)
    for a, z, sub in _sub_blocks(block, step):
        t = s[a:z].mul_(-2).add_(2).clamp_(0, 4).div_(width)
        sub.drop_non_negatives(t, num_bins + 1)
        _flat_bins(flat[a:z], t, slots, a)
        index = flat[a:z].view(-1)
        counts = torch.bincount(index, minlength=z * slots)[a * slots : z * slots]
        count[a:z] = counts.view(z - a, slots)
        upper.index_add_(0, index, t.frac_().view(-1))
    return (count.cumsum(1) - upper.view(b, slots))[:, : num_bins + 1]


@register_loss("fastap", aliases=("fast_ap",))
class FastAPLoss(PairRowsLoss):
    """Module form of :func:`fastap_loss`."""

    functional = staticmethod(fastap_loss)

    def __init__(self, num_bins: int = 10, reduction: str = "mean",
                 algorithm: str = "auto") -> None:
        super().__init__(reduction)
        self.num_bins = check_int(num_bins, "num_bins", low=1)
        self.algorithm = check_algorithm(algorithm, ALGORITHMS)

    def hyper(self) -> tuple[object, ...]:
        return (self.num_bins,)

    def keywords(self) -> dict[str, object]:
        return {"reduction": self.reduction, "algorithm": self.algorithm}
