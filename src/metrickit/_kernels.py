"""Shared numerical kernels of the distances, miners and losses (private, the lowest layer).

* Distance blocks: the per-row part of a distance (:func:`distance_rows`) and the distances
  between two sets of prepared rows (:func:`distance_block`, the Gram expansion with an exact-zero
  diagonal), used whole by :mod:`metrickit.distances` and one cache-sized block of rows at a time
  by the blockwise batch-all kernel.
* Sorted rows with prefix sums (:class:`SortedRows`): each row's candidates sorted once, so the
  number and the sum of the candidates below any threshold are a binary search and a gather
  (:func:`count_below`, :func:`sum_below`): the batch-all triplet and quadruplet losses, WARP's
  exact rank, the miners' difficulty counts.
* Threshold counts (:func:`threshold_counts`): the same counts for every (row, positive) pair
  without sorting the rows, from the few positive thresholds of each row.
* Rank tables (:class:`RankTable`): how many of T sorted thresholds lie at or below each of
  many values, by one table look-up per value instead of a binary search (the quadruplet loss's
  negative pairs against all its positive-pair thresholds).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

COSINE_EPS = 1e-12


class _SafeSqrt(torch.autograd.Function):
    """sqrt(max(sq, 0)) whose derivative is 0 wherever the result is 0 (or NaN)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, sq: Tensor) -> Tensor:
        d = sq.clamp_min(0).sqrt_()
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (d,) = ctx.saved_tensors
        flat = (d > 0).logical_not_()
        if torch.is_grad_enabled():  # create_graph=True: differentiable, no 0 · inf anywhere
            return (grad / (2 * d.masked_fill(flat, 1))).masked_fill(flat, 0)
        out = d * 2
        return torch.div(grad, out, out=out).masked_fill_(flat, 0)


def safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt with a finite (zero) gradient where the argument is 0.

    ``torch.sqrt`` has an infinite derivative at 0, which turns into NaN when a pair of identical
    embeddings is multiplied by a zero upstream gradient. Here the argument is clamped at 0 and
    the derivative wherever the result is 0 is 0 (elsewhere it is sqrt's, 1 / (2 sqrt(sq))).
    Twice differentiable away from 0.
    """
    return _SafeSqrt.apply(sq)


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` scaled to unit norm (a zero row stays zero), as the cosine distance uses."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)


def distance_rows(x: Tensor, distance: str) -> tuple[Tensor, Tensor | None]:
    """Per-row part of a distance: unit rows for cosine, squared norms for the Euclidean ones."""
    if distance == "cosine":
        return unit_rows(x), None
    if distance == "dot":
        return x, None
    return x, (x * x).sum(1)


def distance_block(
    a: Tensor, a_sq: Tensor | None, b: Tensor, b_sq: Tensor | None, distance: str, diag: int | None
) -> Tensor:
    """Distances between rows of ``a`` and ``b`` (prepared by :func:`distance_rows`); the
    diagonal at offset ``diag`` is set to exactly 0 (before the square root, so its gradient is
    0)."""
    # Every [N, M] intermediate below is fresh, so the in-place ops are autograd-safe; they are
    # bit-identical to the out-of-place expressions x² + y² − 2 x·y, 1 − x̂·ŷ and −x·y.
    if distance == "cosine":
        d = (a @ b.T).neg_().add_(1)
    elif distance == "dot":
        d = (a @ b.T).neg_()
    else:
        assert a_sq is not None and b_sq is not None
        d = (a_sq[:, None] + b_sq[None, :]).sub_(a @ b.T, alpha=2)
        if distance == "squared_euclidean":
            d.clamp_min_(0)
    if diag is not None:
        d.diagonal(diag).zero_()
    return safe_sqrt(d) if distance == "euclidean" else d


def distance_block_into(
    out: Tensor, a: Tensor, a_sq: Tensor | None, b: Tensor, b_sq: Tensor | None, distance: str,
    diag: int | None,
) -> Tensor:
    """:func:`distance_block` written into ``out``, without autograd: the product accumulates
    onto the norms (or the constant) in one ``addmm_``, a pass fewer over the block. Equal up to
    rounding (bit-identical where the BLAS adds the product to the block unfused, as MKL's
    float32 product does)."""
    if distance == "dot":
        torch.mm(a, b.T, out=out).neg_()
    elif distance == "cosine":
        out.fill_(1).addmm_(a, b.T, alpha=-1)
    else:
        assert a_sq is not None and b_sq is not None
        torch.add(a_sq[:, None], b_sq[None, :], out=out).addmm_(a, b.T, alpha=-2)
        out.clamp_min_(0)
    if diag is not None:
        out.diagonal(diag).zero_()
    return out.sqrt_() if distance == "euclidean" else out


class SortedRows(NamedTuple):
    """Each row's candidate values in ascending order (ties keep column order).

    keys: [..., M] sorted candidate values, +inf past ``count`` (detached, for searching).
    values: [..., M] the same values carrying autograd, 0 past ``count``.
    prefix: [..., M + 1] prefix sums of ``values``; ``prefix[..., k]`` = sum of the k smallest.
    count: [...] number of candidates in each row.
    index: [..., M] column each sorted entry comes from.
    """

    keys: Tensor
    values: Tensor
    prefix: Tensor
    count: Tensor
    index: Tensor

    def take(self, rows: Tensor) -> SortedRows:
        """The sorted rows ``rows`` (any index tensor over the first dimension)."""
        return SortedRows(*(t[rows] for t in self))


def sort_rows(dist: Tensor, mask: Tensor) -> SortedRows:
    """Sort the candidates ``mask[..., j]`` of every row of ``dist`` [..., M] once:
    O(M log M) per row."""
    keys = dist.detach().masked_fill(~mask, float("inf"))
    keys, index = keys.sort(dim=-1, stable=True)
    count = mask.sum(-1)
    inside = torch.arange(dist.shape[-1], device=dist.device) < count[..., None]
    values = torch.where(inside, dist.gather(-1, index), 0.0)
    prefix = torch.cat([torch.zeros_like(values[..., :1]), values.cumsum(-1)], dim=-1)
    return SortedRows(keys.contiguous(), values, prefix, count, index)


def count_below(rows: SortedRows, queries: Tensor, inclusive: bool = False) -> Tensor:
    """[..., K] number of candidates of each row with value < ``queries[..., k]`` (≤ if
    inclusive)."""
    q = queries.detach().to(rows.keys.dtype).contiguous()
    return torch.searchsorted(rows.keys, q, right=inclusive)


def sum_below(rows: SortedRows, queries: Tensor) -> tuple[Tensor, Tensor]:
    """Number and (differentiable) sum of each row's candidates strictly below ``queries``."""
    count = count_below(rows, queries)
    return count, rows.prefix.gather(-1, count)


def semihard_positions(rows: SortedRows, dist: Tensor) -> Tensor:
    """[B, M] position, in row i's sorted negatives, of the semi-hard negative for positive j.

    That is the nearest negative with d(i, n) > dist[i, j] (FaceNet's semi-hard choice, as in
    TensorFlow Addons' ``triplet_semihard_loss``); when no negative is farther than the positive,
    the farthest negative. Rows without negatives get 0 (callers mask them out).
    """
    first_above = count_below(rows, dist, inclusive=True)
    return torch.minimum(first_above, (rows.count - 1).clamp_min(0)[:, None])


class ThresholdCounts(NamedTuple):
    """Per-row counts of the triplets inside a margin, with each row's positives packed.

    slot: [B, k] columns of row i's positives in ascending order of d(i, p) (k = the largest
        number of positives in a row; rows with fewer are padded).
    valid: [B, k] whether a slot holds a real positive.
    below: [B, k] for positive p in that slot, #{negatives n: d(i, n) < d(i, p) + margin}.
    above: [B, M] for negative n, #{positives p: d(i, n) < d(i, p) + margin}; 0 elsewhere.
    """

    slot: Tensor
    valid: Tensor
    below: Tensor
    above: Tensor


def threshold_counts(
    dist: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float
) -> ThresholdCounts:
    """The counts of :class:`ThresholdCounts` without sorting any row of ``dist``.

    Each row's positive thresholds d(i, p) + m are packed and sorted with ``topk`` (k of them);
    every negative finds its rank r among them by binary search; then ``above`` = (#positives − r)
    and ``below`` is the prefix sum of the histogram of r. O(B·M log k) time, O(B·M) memory.
    Reading k costs one host read (free on CPU, a device sync on accelerators).
    """
    with torch.no_grad():
        d = dist.detach()
        n_pos = pos_mask.sum(1)
        k = int(n_pos.max()) if n_pos.numel() else 0
        thresholds = (d + margin).masked_fill(~pos_mask, float("inf"))
        sorted_thr, slot = thresholds.topk(k, dim=1, largest=False, sorted=True)
        valid = torch.arange(k, device=d.device)[None, :] < n_pos[:, None]
        rank = torch.searchsorted(sorted_thr.contiguous(), d.contiguous(), right=True)
        hist = torch.zeros(d.shape[0], k + 1, dtype=torch.int64, device=d.device)
        hist.scatter_add_(1, rank, neg_mask.to(torch.int64))
        below = hist.cumsum(1)[:, :k]
        above = torch.where(neg_mask, n_pos[:, None] - rank, 0)
        return ThresholdCounts(slot, valid, below, above)


_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


class RankTable(NamedTuple):
    """Thresholds prepared for :func:`count_at_most` (built by :func:`rank_table`).

    sorted: [T] the thresholds in ascending order (float32 or float64).
    order: [T] the thresholds' indices in that order.
    table: [n + 1] int32: for each bucket of values, the number of thresholds at or below every
        value of the bucket, or −1 when a threshold falls inside the bucket.
    shift, base: a value v falls in bucket clamp((bits(v) >> shift) − base, 0, n), bits(v) its
        IEEE pattern read as an integer (monotone in v for v ≥ 0).
    first: [n + 1] int32: the number of thresholds in the buckets before each bucket.
    width: the most thresholds in one bucket when at most :data:`SCAN_WIDTH` (a value in a
        bucket holding thresholds is then counted by stepping over them), else 0 (a binary
        search).
    """

    sorted: Tensor
    order: Tensor
    table: Tensor
    shift: int
    base: int
    first: Tensor
    width: int


# Buckets holding at most this many thresholds are resolved by stepping over them.
SCAN_WIDTH = 8


def rank_table(thresholds: Tensor, log2_buckets: int = 18) -> RankTable:
    """Bucket the sorted ``thresholds`` (1-D, float32/float64) by the top bits of their IEEE
    patterns: at most min(2^log2_buckets, 16·T) + 2 buckets over the thresholds' range, plus one
    below and one above it. A bucket without a threshold knows the exact count of every value in
    it. O(T log T + buckets).

    The bit pattern of a float ≥ 0 read as an integer increases with the value, so the buckets
    are ordered intervals. Thresholds ≤ 0 share the first bucket with every value ≤ 0, which is
    then resolved exactly (negative values' patterns are not ordered)."""
    ts, order = thresholds.detach().sort()
    ts = ts.contiguous()
    bits = ts.view(_INT_VIEW[ts.dtype]).clamp_min(0)
    if ts.numel() == 0:
        table = torch.zeros(1, dtype=torch.int32, device=ts.device)
        return RankTable(ts, order, table, 0, 0, table, 0)
    lo, hi = int(bits[0]), int(bits[-1])
    log2_buckets = min(log2_buckets, (ts.numel() - 1).bit_length() + 4)
    shift = max(0, (hi - lo).bit_length() - log2_buckets)
    base = (lo >> shift) - 1  # the smallest threshold falls in bucket 1
    n = (hi >> shift) - base + 1  # bucket n: above every threshold
    inside = torch.bincount((bits >> shift) - base, minlength=n + 1)
    below = inside.cumsum(0) - inside  # thresholds in the buckets before
    table = torch.where(inside == 0, below, -1).to(torch.int32)
    if lo == 0:  # a threshold ≤ 0: values ≤ 0 (bucket 0) need the exact search
        table[0] = -1
    width = int(inside.max())  # bucket 0 (negative values) steps over bucket 1's thresholds
    width = width if width <= SCAN_WIDTH else 0
    return RankTable(ts, order, table, shift, base, below.to(torch.int32), width)


def count_buffers(values: Tensor) -> tuple[Tensor, Tensor]:
    """(out, scratch) for :func:`count_at_most` on blocks of at most ``values.numel()``
    values of ``values``' dtype."""
    n = values.numel()
    return (torch.empty(n, dtype=torch.int32, device=values.device),
            torch.empty(n, dtype=_INT_VIEW[values.dtype], device=values.device))


def count_at_most(
    ranks: RankTable, values: Tensor, out: Tensor | None = None, scratch: Tensor | None = None
) -> Tensor:
    """int32 tensor shaped like ``values`` (contiguous, the thresholds' dtype): the number of
    thresholds ≤ each value. One table look-up per value; a binary search only for the values
    whose bucket holds a threshold (few when the table is fine). ``out``, ``scratch``: buffers
    from :func:`count_buffers`, sparing the allocations of a caller that counts block by
    block."""
    v = values.detach()
    n = ranks.table.shape[0] - 1
    bits = v.view(_INT_VIEW[v.dtype]).view(-1)
    q = None if scratch is None else scratch.view(-1)[: bits.numel()]
    q = torch.bitwise_right_shift(bits, ranks.shift, out=q).sub_(ranks.base).clamp_(0, n)
    res = None if out is None else out.view(-1)[: bits.numel()]
    res = torch.index_select(ranks.table, 0, q, out=res)
    todo = (res < 0).nonzero().squeeze(1)
    vals = v.reshape(-1).index_select(0, todo)
    if ranks.width:
        # the thresholds ≤ v in v's bucket are the next ones in sorted order after those before
        # it; the thresholds after the bucket are all above v
        found = ranks.first.index_select(0, q.index_select(0, todo))
        t = ranks.sorted.shape[0]
        for _ in range(ranks.width):
            nxt = ranks.sorted.index_select(0, found.clamp(max=t - 1))
            found += (nxt <= vals) & (found < t)
    else:
        found = torch.searchsorted(ranks.sorted, vals, right=True, out_int32=True)
    return res.index_copy_(0, todo, found).view(v.shape)


def grad_wanted(*tensors: Tensor | None) -> bool:
    """Whether autograd will ask for a gradient of any of ``tensors``: grad mode on and one of
    them requiring grad. Read it before ``Function.apply`` and pass it in: inside ``forward``
    grad mode is always off, and ``ctx.needs_input_grad`` ignores it (under ``torch.no_grad()``
    a custom Function would otherwise still do its gradient work)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
