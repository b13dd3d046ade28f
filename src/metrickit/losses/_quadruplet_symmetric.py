"""The blockwise quadruplet loss of a batch against itself, over the upper triangle of the
distance matrix only.

The distances are symmetric, so each unordered pair is scored once: panels of rows [a, a + h)
against the columns [a, B). In a panel's leading h×h square every ordered pair is an entry of
its own; beyond it, the entry (i, j) also stands for (j, i). Its coefficient is then the sum of
both ordered coefficients, each counted against its own row's thresholds: i's against the
panel row, j's against the column (one comparison pass each, as in :mod:`._quadruplet_blockwise`).
That halves the distance product, the threshold table look-ups and the rank histogram, and the
backward pass is one B×B×D product's worth (U x and Uᵀ x over the panels).

Entries of a row's own class are set to +∞ before counting: no threshold lies above them, so
they drop out of every count (the rank table puts them above all thresholds), and to 0 after.
Per entry (i, j), U holds

* term 1, e1: the thresholds d_ip + m1 of row i above d_ij (plus those of row j beyond the
  square);
* term 2, G − 2·R_i in the square and 2G − 2·R_i − 2·R_j beyond it, G the number of all term-2
  thresholds above d_ij, R_c those of class c: summed with its transpose, 2·e2 as in
  :mod:`._quadruplet_blockwise`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .._kernels import (
    RankTable,
    count_at_most,
    count_buffers,
    distance_block_into,
    grad_wanted,
    rank_table,
)
from . import _quadruplet_blockwise as qb
from ._pair_rows import _same_label_pairs


class _Layout:
    """The panels: ``height`` rows each, panel p starting at row and column a_p = p·height and
    stored row-major (width B − a_p) at ``offsets[p]`` of a flat buffer of ``size``."""

    def __init__(self, b: int, height: int) -> None:
        self.b, self.height = b, height
        self.starts = list(range(0, b, height))
        sizes = [min(height, b - a) * (b - a) for a in self.starts]
        self.offsets = [sum(sizes[:p]) for p in range(len(sizes))]
        self.size = sum(sizes)

    def panels(self):
        """(start, rows, width, offset) of each panel."""
        for a, off in zip(self.starts, self.offsets, strict=True):
            yield a, min(self.height, self.b - a), self.b - a, off

    def flat(self, i: Tensor, j: Tensor) -> Tensor:
        """Position in the buffer of the entry standing for the pair {i, j} (row min(i, j))."""
        lo, hi = torch.minimum(i, j), torch.maximum(i, j)
        p = lo // self.height
        a = p * self.height
        offsets = torch.tensor(self.offsets, dtype=torch.int64, device=i.device)
        return offsets[p] + (lo - a) * (self.b - a) + (hi - a)


class _Counts:
    """Running counts: ``c1`` [2, P, B] term-1 entries below each (slot, row) threshold, found
    along the row (0) and along the column (1); ``hist`` [T + 1] ordered entries by rank among
    the term-2 thresholds; ``own`` [2, S, B] entries (n1, n2) below the slot's term-2 threshold
    of n1's class (n1 the row), likewise; Σ e1·d and Σ (term-2 coefficient)·d. Counts of at
    most B entries are exact in x's dtype (as are the coefficients, integers up to 2T, in
    float32 while 2T < 2^24)."""

    def __init__(self, p: int, b: int, n_thr: int, n_class: int, x: Tensor) -> None:
        self.c1 = x.new_zeros(2, p, b)
        self.hist = torch.zeros(n_thr + 1, dtype=torch.int64, device=x.device)
        self.own = x.new_zeros(2, n_class, b)
        self.e_d1 = torch.zeros((), dtype=torch.float64, device=x.device)
        self.e_d2 = torch.zeros((), dtype=torch.float64, device=x.device)


def _own_class(labels: Tensor, layout: _Layout, step: int) -> tuple[Tensor, ...]:
    """For each block of ``step`` rows of the panels (block k: rows from k·step), the flat
    positions in its distances [n, B − a] of the columns of its rows' own classes (their own
    column included)."""
    rows, cols, _ = _same_label_pairs(labels, labels)
    a = rows // layout.height * layout.height
    keep = cols >= a
    rows, cols, a = rows[keep], cols[keep], a[keep]
    flat = (rows % step) * (layout.b - a) + (cols - a)
    per_block = torch.bincount(rows // step, minlength=-(-layout.b // step))
    return torch.split(flat, per_block.tolist())


def _row_side(d: Tensor, thr: Tensor, acc: Tensor, weight: int, tmp: Tensor, sums: Tensor,
              init: bool = False) -> None:
    """Add weight·[d < thr[:, k]] to ``acc`` (``init``: overwrite it with their sum, weight 1)
    for every column k of ``thr`` [n, k]; write each one's row sums (the entries below the
    threshold) into ``sums[k]``."""
    if init and thr.shape[1] == 0:
        acc.zero_()
    for k in range(thr.shape[1]):
        hit = acc if init and k == 0 else tmp
        torch.lt(d, thr[:, k : k + 1], out=hit)
        torch.sum(hit, 1, out=sums[k])
        if hit is tmp:
            acc.add_(tmp, alpha=weight)


def _col_side(d: Tensor, thr: Tensor, acc: Tensor, weight: int, tmp: Tensor,
              sums: Tensor) -> None:
    """As :func:`_row_side` with a threshold per column, ``thr`` [k, w]; the column sums are
    added to ``sums[k]``."""
    for k in range(thr.shape[0]):
        torch.lt(d, thr[k : k + 1], out=tmp)
        sums[k] += tmp.sum(0)
        acc.add_(tmp, alpha=weight)


class _Thresholds(NamedTuple):
    """Each row's thresholds: term 1's d_ip + m1 [B, P] and its class's term-2 ones [B, S]
    (−∞ padded), and both transposed (contiguous, for the comparisons along columns)."""

    term1: Tensor
    term1_t: Tensor
    term2: Tensor
    term2_t: Tensor


def _block(d: Tensor, r0: int, a: int, h: int, thr: _Thresholds, ranks: RankTable,
           counts: _Counts, u1: Tensor, u2: Tensor, tmp: Tensor,
           scratch: tuple[Tensor, Tensor]) -> None:
    """Count the rows [r0, r0 + n) of a panel starting at ``a`` with ``h`` rows (``d``: their
    distances to the columns [a, B), own class at +∞): e1 into ``u1``, term 2 into ``u2``
    (``tmp``, ``scratch``: a block of scratch, two for the rank look-up)."""
    n, w = d.shape
    rows = slice(r0, r0 + n)
    n_thr = ranks.sorted.shape[0]
    far = tmp[: n * (w - h)].view(n, w - h)  # scratch beyond the square
    near = tmp[: n * w].view(n, w)
    # term 1: row i's thresholds on its row, row j's on its column
    _row_side(d, thr.term1[rows], u1, 1, near, counts.c1[0, :, rows], init=True)
    _col_side(d[:, h:], thr.term1_t[:, a + h :], u1[:, h:], 1, far, counts.c1[1, :, a + h :])
    # term 2: G from the rank table (twice beyond the square), −2·R of both ends' classes
    rank = count_at_most(ranks, d, *scratch)
    counts.hist += 2 * torch.bincount(rank.view(-1), minlength=n_thr + 1)
    counts.hist -= torch.bincount(rank[:, :h].reshape(-1), minlength=n_thr + 1)
    u2.copy_(rank).mul_(-2).add_(2 * n_thr)  # 2G = 2·(T − rank)
    u2[:, :h].mul_(0.5)
    _row_side(d, thr.term2[rows], u2, -2, near, counts.own[0, :, rows])
    _col_side(d[:, h:], thr.term2_t[:, a + h :], u2[:, h:], -2, far, counts.own[1, :, a + h :])


class _SymmetricQuadruplet(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, labels: Tensor, margin1: float, margin2: float, want: bool
    ) -> Tensor:
        b = x.shape[0]
        x_sq = (x * x).sum(1)
        s = qb._setup(x, x_sq, labels, x, x_sq, labels, 0, True, margin2)
        pos = s.positives
        anchors = torch.arange(b, device=x.device)[:, None].expand_as(pos.cols)
        t1 = qb._pair_distances(x, x_sq, x, x_sq, anchors, pos.cols).add_(margin1)
        t1 = torch.where(pos.ok, t1, float("-inf"))
        thr = _Thresholds(t1, t1.T.contiguous(), s.class_thr, s.class_thr.T.contiguous())
        n_thr = s.thr.shape[0]
        ranks = rank_table(s.thr, qb.LOG2_BUCKETS)
        counts = _Counts(t1.shape[1], b, n_thr, s.class_thr.shape[1], x)
        step = max(1, qb.BLOCK_ELEMENTS // max(b, 1))
        layout = _Layout(b, step * qb.GEMM_BLOCKS)
        store1 = x.new_empty(layout.size if want else 2 * min(step, b) * b)
        store2 = x.new_empty(layout.size if want else 0)
        dist = x.new_empty(min(layout.height, b) * b)
        tmp = x.new_empty(min(step, b) * b)
        scratch = count_buffers(tmp)
        own_class = _own_class(labels.long(), layout, step)
        for a, h, w, off in layout.panels():
            d_panel = dist[: h * w].view(h, w)
            distance_block_into(d_panel, x[a : a + h], x_sq[a : a + h], x[a:], x_sq[a:],
                                "squared_euclidean", None)
            for r0 in range(a, a + h, step):
                n = min(step, a + h - r0)
                d = d_panel[r0 - a : r0 - a + n]
                flat, members = d.view(-1), own_class[r0 // step]
                flat.index_fill_(0, members, float("inf"))
                if want:
                    first = off + (r0 - a) * w
                    u1 = store1[first : first + n * w].view(n, w)
                    u2 = store2[first : first + n * w].view(n, w)
                else:
                    u1 = store1[: n * w].view(n, w)
                    u2 = store1[n * w : 2 * n * w].view(n, w)
                _block(d, r0, a, h, thr, ranks, counts, u1, u2, tmp, scratch)
                flat.index_fill_(0, members, 0)
                counts.e_d1 += torch.dot(u1.view(-1), flat).double()
                counts.e_d2 += torch.dot(u2.view(-1), flat).double()
        c1 = counts.c1.sum(0).long()
        n1 = c1.sum()
        total1 = torch.where(pos.ok, c1.T * t1, 0).sum(dtype=torch.float64) - counts.e_d1
        c2 = torch.empty(n_thr, dtype=torch.int64, device=x.device)
        c2[ranks.order] = counts.hist.cumsum(0)[:n_thr]  # entries below the k-th threshold
        own = torch.zeros(n_thr + 1, dtype=torch.int64, device=x.device)
        own.index_add_(0, s.class_idx.T.reshape(-1), counts.own.sum(0).long().view(-1))
        c2 -= 2 * own[:n_thr]
        n2 = c2.sum()
        total2 = (c2 * s.thr).sum(dtype=torch.float64) - counts.e_d2
        # the square's term-2 entries are true counts only summed with their transposes: when no
        # tuple is active, they would add rounding to a true 0
        total2 = torch.where(n2 > 0, total2, 0.0)
        loss = total1 / n1.clamp_min(1) + total2 / n2.clamp_min(1)
        ctx.layout, ctx.scale = layout, 0.0
        if want:  # U = scale · (the stored matrix): no pass over the buffer just to scale it
            k1, k2 = 1 / max(int(n1), 1), (1 / int(n2) if n2 else 0.0)
            if k2:  # U = −k1·e1 − k2·e2' = −k2·(e2' + (k1/k2)·e1)
                u = store2.add_(store1, alpha=k1 / k2)
                scale = -k2
            else:
                u = store1
                scale = -k1
            u.index_put_((layout.flat(anchors[pos.ok], pos.cols[pos.ok]),),
                         c1.T[pos.ok].to(u.dtype) * (k1 / scale), accumulate=True)
            u.index_put_((layout.flat(s.thr_rows, s.thr_cols),), c2.to(u.dtype) * (k2 / scale),
                         accumulate=True)
            ctx.scale = scale
            ctx.save_for_backward(x, u)
        else:
            ctx.save_for_backward(x, None)
        return loss.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        x, u = ctx.saved_tensors
        # L = Σ U_ij d_ij over the panels' entries, d_ij = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j:
        # ∂L/∂x_i = 2 Σ_j U_ij (x_i − x_j) along rows, ∂L/∂x_j = 2 Σ_i U_ij (x_j − x_i) along
        # columns
        dx = torch.zeros_like(x)
        sums = x.new_zeros(x.shape[0])
        for a, h, w, off in ctx.layout.panels():
            panel = u[off : off + h * w].view(h, w)
            dx[a : a + h].addmm_(panel, x[a:], alpha=-1)
            dx[a:].addmm_(panel.T, x[a : a + h], alpha=-1)
            sums[a : a + h] += panel.sum(1)
            sums[a:] += panel.sum(0)
        dx.addcmul_(x, sums[:, None])
        return dx.mul_(2 * ctx.scale * grad), None, None, None, None


def symmetric_quadruplet(x: Tensor, labels: Tensor, margin1: float, margin2: float) -> Tensor:
    """The batch-all quadruplet loss of the batch ``x`` [B, D] against itself (compute dtype)."""
    return _SymmetricQuadruplet.apply(x, labels, margin1, margin2, grad_wanted(x))
