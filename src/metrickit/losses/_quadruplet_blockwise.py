"""Batch-all quadruplet loss straight from the embeddings, one block of distance rows at a time,
for anchors against a reference set (the batch against itself: :mod:`._quadruplet_symmetric`,
which shares its setup).

Both terms are sums of hinges [t − d]_+ of a threshold t = d_ap + m over distances d, so each is
linear in the distances with piecewise-constant integer coefficients (as batch-all triplet, see
:mod:`._batch_all`):

    Σ [t − d]_+ = Σ_t c_t·t − Σ_d e_d·d,   c_t = #{d < t},  e_d = #{t > d}.

Term 1 is batch-all triplet on the anchor rows: each row's few positive thresholds
d_ap + m1 against its negatives. Term 2 compares every positive pair's threshold d_ap + m2 with
every negative pair (n1, n2) of two other classes: for the entry d = d(n1, n2),

    e = #{all thresholds > d} − #{those of class y_n1} − #{those of class y_n2},

the first by one look-up in a table over the sorted thresholds (:func:`.._kernels.count_at_most`),
the class parts by comparing each row with its own class's few thresholds. d is symmetric, so
the class y_n2 part of entry (n1, n2) is the class y_n1 part of entry (n2, n1): counting the
row's class twice gives the same sums and gradient. Per threshold, c = #{entries below it}
(a histogram of the entries' ranks) − 2·#{entries in a row of its class below it}.

The negative pairs run over ordered (n1, n2); in the batch against itself the positive pairs run
over unordered {a, p}. Either only repeats every tuple a fixed number of times, which the
averages do not see. No quadruplet, no B×B sort and no B×B autograd graph: one [B, M]
coefficient matrix per distance matrix (plus a byte matrix), the backward pass two matrix
products per matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .._kernels import RankTable, count_at_most, grad_wanted, rank_table
from . import _batch_all
from ._pair_rows import _same_label_pairs

# Elements of one block of distance rows (2 MiB in float32): the nine or so passes over a block
# (one per threshold of its rows) run from cache.
BLOCK_ELEMENTS = 1 << 19
# The threshold table of term 2 has about 2^LOG2_BUCKETS buckets (1 MiB of int32): few enough to
# stay in cache, enough that few distances fall in a bucket holding a threshold.
LOG2_BUCKETS = 18
# Blocks computed by one matrix product.
GEMM_BLOCKS = 4


class _Slots(NamedTuple):
    """Each row's columns packed: ``cols`` [n, k] (padding: the row's first column, or 0 for
    a row without any), ``ok`` [n, k] which are real, ``has`` [n] whether the row has any."""

    cols: Tensor
    ok: Tensor
    has: Tensor


def _pack(rows: Tensor, cols: Tensor, n: int) -> _Slots:
    """Pack (row, column) pairs sorted by row into :class:`_Slots`."""
    count = torch.bincount(rows, minlength=n)
    k = int(count.max()) if rows.numel() else 0
    within = torch.arange(rows.numel(), device=rows.device) - (count.cumsum(0) - count)[rows]
    first = torch.zeros(n, dtype=cols.dtype, device=cols.device)
    first[rows[within == 0]] = cols[within == 0]
    slots = first[:, None].repeat(1, k)
    slots[rows, within] = cols
    ok = torch.zeros(n, k, dtype=torch.bool, device=rows.device)
    ok[rows, within] = True
    return _Slots(slots, ok, count > 0)


def _counts(d: Tensor, thr: Tensor, members: _Slots, e: Tensor, tmp: Tensor) -> Tensor:
    """Write into ``e`` (d's dtype) each entry's number of thresholds above it and return c
    [r, k] (int64), each threshold's number of entries below it, the rows' members left out of
    c; ``thr`` is −inf padded, ``tmp`` a scratch block."""
    loop = thr.shape[1] <= _batch_all.MAX_LOOP_SLOTS
    c = (_batch_all._loop_counts if loop else _batch_all._search_counts)(d, thr, e, tmp)
    d_mem = torch.where(members.ok, d.gather(1, members.cols), float("inf"))
    return c.long() - (d_mem[:, None, :] < thr[:, :, None]).sum(2)


def _zero_members(t: Tensor, members: _Slots) -> None:
    """Zero the members' columns of the block ``t`` in place (padding writes back its value)."""
    keep = ~(members.ok | members.has[:, None])
    src = torch.where(keep, t.gather(1, members.cols), 0)
    t.scatter_(1, members.cols, src)


def _sq_block(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared Euclidean distances ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j, clamped at 0."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2).add_(a_sq[:, None]).clamp_min_(0)


def _pair_distances(x: Tensor, x_sq: Tensor, r: Tensor, r_sq: Tensor, rows: Tensor,
                    cols: Tensor) -> Tensor:
    """Squared distances of the pairs (x[rows], r[cols]), pair by pair (any index shape)."""
    dot = (x[rows] * r[cols]).sum(-1)
    return (x_sq[rows] + r_sq[cols]).sub_(dot, alpha=2).clamp_min_(0)


class _Setup(NamedTuple):
    """Everything the blocks need besides the embeddings (see :func:`_setup`)."""

    anchor_members: _Slots  # [B, ·] each anchor's class among the references (its own column too)
    positives: _Slots  # [B, P] each anchor's positives among the references
    ref_members: _Slots  # [M, ·] each reference's class among the references
    thr_rows: Tensor  # [T] anchor of each term-2 threshold
    thr_cols: Tensor  # [T] positive (reference) of each term-2 threshold
    thr: Tensor  # [T] d_ap + m2
    class_thr: Tensor  # [M, S] the thresholds of each reference's class (−inf padded)
    class_idx: Tensor  # [M, S] their indices (T for padding)


def _setup(x, x_sq, labels, r, r_sq, ref_labels, offset, plain, margin2) -> _Setup:
    """The pairs from the sorted labels (O(B·K + M log M)) and the term-2 thresholds d_ap + m2,
    computed row by row: unordered {a, p} for the batch against itself, else every (a, p)."""
    labels, ref_labels = labels.long(), ref_labels.long()
    b, m = labels.shape[0], ref_labels.shape[0]
    rows, cols, _ = _same_label_pairs(labels, ref_labels)
    anchor_members = _pack(rows, cols, b)
    keep = torch.ones_like(rows, dtype=torch.bool) if offset is None else cols != rows + offset
    positives = _pack(rows[keep], cols[keep], b)
    if plain:
        ref_members = anchor_members
        keep = keep & (rows < cols)  # unordered positive pairs
    else:
        ref_rows, ref_cols, _ = _same_label_pairs(ref_labels, ref_labels)
        ref_members = _pack(ref_rows, ref_cols, m)
    ta, tp = rows[keep], cols[keep]
    thr = _pair_distances(x, x_sq, r, r_sq, ta, tp).add_(margin2)
    ci, ct, _ = _same_label_pairs(ref_labels, labels[ta])
    cls = _pack(ci, ct, m)
    class_thr = torch.where(cls.ok, thr[cls.cols], float("-inf"))
    class_idx = torch.where(cls.ok, cls.cols, thr.shape[0])
    return _Setup(anchor_members, positives, ref_members, ta, tp, thr, class_thr, class_idx)


def _term1_block(d: Tensor, rows: slice, s: _Setup, margin1: float, out: Tensor, tmp: Tensor,
                 c1: Tensor, t1: Tensor) -> Tensor:
    """Term 1 of the anchor rows ``rows`` (block ``d`` against the references): e into ``out``,
    the slot counts and thresholds d_ap + m1 into ``c1``, ``t1``; returns Σ e·d."""
    pos, mem = _take(s.positives, rows), _take(s.anchor_members, rows)
    thr = torch.where(pos.ok, d.gather(1, pos.cols) + margin1, float("-inf"))
    c1[rows] = _counts(d, thr, mem, out, tmp)
    t1[rows] = thr
    _zero_members(out, mem)
    return torch.dot(out.view(-1), d.view(-1))


def _take(slots: _Slots, rows: slice) -> _Slots:
    return _Slots(slots.cols[rows], slots.ok[rows], slots.has[rows])


def _term2_block(d: Tensor, rows: slice, s: _Setup, ranks: RankTable, hist: Tensor,
                 own: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """Term 2 of the reference rows ``rows`` (block ``d`` against the references): −e into
    ``out``, the entries' rank histogram into ``hist``, the own-class counts into ``own``;
    returns −Σ e·d."""
    n_thr = s.thr.shape[0]
    mem = _take(s.ref_members, rows)
    rank = count_at_most(ranks, d)  # #thresholds ≤ d = n_thr − #{all thresholds > d}
    hist += torch.bincount(rank.view(-1), minlength=n_thr + 1)
    hist -= torch.bincount(rank.gather(1, mem.cols)[mem.ok], minlength=n_thr + 1)
    c = _counts(d, s.class_thr[rows], mem, out, tmp)  # R: the row's class's thresholds
    own.index_add_(0, s.class_idx[rows].reshape(-1), c.reshape(-1))
    torch.add(rank.sub_(n_thr), out, alpha=2, out=out)  # −(G − 2R)
    _zero_members(out, mem)
    return torch.dot(out.view(-1), d.view(-1))


def _blocks(a: Tensor, a_sq: Tensor, r: Tensor, r_sq: Tensor):
    """(rows, d): the squared distances of ``a`` to ``r`` by blocks of rows. Each matrix product
    makes GEMM_BLOCKS blocks at once (larger products run faster), then the blocks are handed
    out one at a time (each is passed over several times, from cache)."""
    n, m = a.shape[0], r.shape[0]
    step = max(1, BLOCK_ELEMENTS // max(m, 1))
    outer = step * GEMM_BLOCKS
    for first in range(0, n if m else 0, outer):
        last = min(n, first + outer)
        dist = _sq_block(a[first:last], a_sq[first:last], r, r_sq)
        for start in range(first, last, step):
            stop = min(last, start + step)
            yield slice(start, stop), dist[start - first : stop - first]


class _Quadruplet(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, r: Tensor, labels: Tensor, ref_labels: Tensor,
        offset: int | None, margin1: float, margin2: float, want: bool,
    ) -> Tensor:
        b, m = x.shape[0], r.shape[0]
        x_sq = (x * x).sum(1)
        r_sq = (r * r).sum(1)
        s = _setup(x, x_sq, labels, r, r_sq, ref_labels, offset, False, margin2)
        n_thr = s.thr.shape[0]
        ranks = rank_table(s.thr, LOG2_BUCKETS)
        hist = torch.zeros(n_thr + 1, dtype=torch.int64, device=x.device)
        own = torch.zeros(n_thr + 1, dtype=torch.int64, device=x.device)
        c1 = torch.zeros(s.positives.cols.shape, dtype=torch.int64, device=x.device)
        t1 = torch.empty(s.positives.cols.shape, dtype=x.dtype, device=x.device)
        e_d1 = torch.zeros((), dtype=torch.float64, device=x.device)  # Σ e·d of term 1
        e_d2 = torch.zeros((), dtype=torch.float64, device=x.device)  # −Σ e·d of term 2
        # e of term 1 (anchor rows) and −e of term 2 (reference rows), or one block of scratch
        w1 = x.new_empty(b if want else 0, m)
        w2 = x.new_empty(m if want else 0, m)
        step = min(max(b, m), max(1, BLOCK_ELEMENTS // max(m, 1)))
        scratch = x.new_empty(0 if want else step, m)
        tmp = x.new_empty(step, m)
        for rows, d in _blocks(x, x_sq, r, r_sq):
            n = d.shape[0]
            out = w1[rows] if want else scratch[:n]
            e_d1 += _term1_block(d, rows, s, margin1, out, tmp[:n], c1, t1).double()
        for rows, d in _blocks(r, r_sq, r, r_sq):
            n = d.shape[0]
            out = w2[rows] if want else scratch[:n]
            e_d2 += _term2_block(d, rows, s, ranks, hist, own, out, tmp[:n]).double()
        n1 = c1.sum()
        total1 = torch.where(s.positives.ok, c1 * t1, 0).sum(dtype=torch.float64) - e_d1
        by_rank = hist.cumsum(0)[:n_thr]  # entries below the k-th smallest threshold
        c2 = torch.empty_like(by_rank)
        c2[ranks.order] = by_rank
        c2 -= 2 * own[:n_thr]
        n2 = c2.sum()
        total2 = (c2 * s.thr).sum(dtype=torch.float64) + e_d2
        # Term 2's entries carry G − 2·R_row, equal to the true counts only summed with their
        # transposed entries; when no tuple is active, they would add rounding to a true 0.
        total2 = torch.where(n2 > 0, total2, 0.0)
        loss = total1 / n1.clamp_min(1) + total2 / n2.clamp_min(1)
        ctx.scales = (0.0, 0.0)
        if want:  # W = scale · (the stored matrix): no pass over a B×M matrix just to scale it
            k1, k2 = 1 / max(int(n1), 1), (1 / int(n2) if n2 else 0.0)
            scale = -k1
            slots = torch.arange(b, device=x.device)[:, None].expand_as(c1)
            w1.index_put_((slots, s.positives.cols), c1.to(w1.dtype) * (k1 / scale),
                          accumulate=True)
            w1.index_put_((s.thr_rows, s.thr_cols), c2.to(w1.dtype) * (k2 / scale),
                          accumulate=True)
            ctx.scales = (scale, k2)
        ctx.save_for_backward(x, r, w1, w2)
        return loss.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        x, r, w1, w2 = ctx.saved_tensors
        s1, s2 = ctx.scales
        # L = Σ W_ij d_ij with d_ij = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j gives
        # ∂L/∂a_i = 2(a_i Σ_j W_ij − Σ_j W_ij b_j) and ∂L/∂b_j = 2(b_j Σ_i W_ij − Σ_i W_ij a_i).
        dx = (x * w1.sum(1)[:, None]).sub_(w1 @ r).mul_(2 * s1 * grad)
        dr = (r * w1.sum(0)[:, None]).sub_(w1.T @ x).mul_(s1)
        if s2:
            dr2 = (r * (w2.sum(1) + w2.sum(0))[:, None]).sub_(w2 @ r).sub_(w2.T @ r)
            dr.add_(dr2, alpha=s2)
        return dx, dr.mul_(2 * grad), None, None, None, None, None, None


def blockwise_quadruplet(
    x: Tensor, labels: Tensor, r: Tensor, ref_labels: Tensor, offset: int | None,
    margin1: float, margin2: float,
) -> Tensor:
    """The batch-all quadruplet loss of anchors ``x`` [B, D] against a reference set ``r``
    [M, D] (the batch against itself: :mod:`._quadruplet_symmetric`), in the compute dtype."""
    return _Quadruplet.apply(x, r, labels, ref_labels, offset, margin1, margin2,
                             grad_wanted(x, r))
