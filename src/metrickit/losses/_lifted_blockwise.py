"""The blockwise algorithm of the lifted structured loss (no miner; any reference set).

With x_ik = m − d_ik, pair p = (i, j) has L_p = log(Σ_{k∈N(i)} e^{x_ik} + Σ_{l∈N(j)} e^{x_lj})
= logaddexp(R_i, C_j): only the per-row log-sum-exps R over the negatives (and, unless the
references are the batch itself, where C = R, the per-column ones C) are needed, not a B×M term
per pair. One sweep over blocks of rows of the squared distances (one matrix product each) sums
e^{−d} over each row's and column's negatives (a constant shift: e^{x − m} ≤ 1), with the
same-label entries set to d = ∞ from the sorted-label lists; each pair's J_p then costs O(1).

The gradient is closed-form. With w_p = ∂loss/∂J_p and h_p = w_p e^{m − L_p}, a negative (i, k)
gets ∂loss/∂d_ik = −e^{−d_ik} (c_i + v_k), where c_i sums h_p over the pairs of row i and v_k over
the pairs of column k, and a pair gets ∂loss/∂d_p = w_p. The sweep leaves Q = e^{−d}/d in place
of each block (one [B, M] matrix); the backward pass turns one block of it at a time into
H = −2 ∂loss/∂(d²) (a broadcast product into a scratch block: Q itself stays, for a repeated
backward) and multiplies it into H [r, 1] and Hᵀ [x, 1] (the column of ones gives the row sums
the Euclidean gradient needs). Against itself H is replaced by the symmetric H + Hᵀ
= Q ⊙ (t_i + t_k), t = c + v, and a single product gives the whole gradient.

The constant shift keeps every exponential finite but loses precision when a pair's negatives
all lie farther than about half the dtype's exponent range (36 in float32, 336 in float64):
then :func:`lifted_blockwise` returns None and the caller uses the dense algorithm. A negative
at distance exactly 0 gets gradient 0 (as the dense path's safe square root): its e^{−d}/d is
infinite, and the backward pass, seeing a non-finite product, zeroes the block's non-finite
entries and redoes its products.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._kernels import grad_wanted
from .._validation import compute_dtype
from ._pair_rows import ROW_BLOCK_ELEMENTS, _same_label_pairs
from ._pairs import Batch


class _Pairs(NamedTuple):
    """The positive pairs (``rows``, ``cols``, row-major; ``ptr`` the host offsets of each row's
    run), every same-label pair (``same_rows``, ``same_cols``, ``same_ptr``) and the number of
    negatives of each row (``row_neg`` [B]) and column (``col_neg`` [M])."""

    rows: Tensor
    cols: Tensor
    ptr: list[int]
    same_rows: Tensor
    same_cols: Tensor
    same_ptr: list[int]
    row_neg: Tensor
    col_neg: Tensor


def _pairs(call: Batch, symmetric: bool) -> _Pairs:
    labels, ref_labels, offset = call.labels.long(), call.refs.labels.long(), call.refs.offset
    b, m = labels.shape[0], ref_labels.shape[0]
    rows, cols, same_ptr = _same_label_pairs(labels, ref_labels)
    positive = torch.ones_like(rows, dtype=torch.bool) if offset is None else cols > rows + offset
    pos_rows, pos_cols = rows[positive], cols[positive]
    ptr = [0, *torch.bincount(pos_rows, minlength=b).cumsum(0).tolist()]
    row_neg = m - torch.tensor(same_ptr, device=labels.device).diff()
    if symmetric:
        col_neg = row_neg
    else:
        ranked = labels.sort().values
        same = torch.searchsorted(ranked, ref_labels, right=True)
        col_neg = b - (same - torch.searchsorted(ranked, ref_labels))
    return _Pairs(pos_rows, pos_cols, ptr, rows, cols, same_ptr, row_neg, col_neg)


def exponent_range(dtype: torch.dtype) -> float:
    """How far below e^0 a pair's log-sum-exp may fall for the constant shift to stay exact:
    half the distance from the rounding limit to the smallest normal number, in log units."""
    info = torch.finfo(dtype)
    return (math.log(info.eps) - math.log(info.tiny)) / 2


def lifted_blockwise(embeddings: Tensor, call: Batch, margin: float, mean: bool) -> Tensor | None:
    """The per-pair terms ½ max(J_p, 0)² of :func:`~.lifted_structure.lifted_structure_loss`
    (valid pairs, row-major) in the compute dtype, or None where the constant shift would lose
    precision (see the module docstring)."""
    symmetric = call.refs.embeddings is embeddings and call.refs.offset == 0
    pairs = _pairs(call, symmetric)
    x = embeddings.to(compute_dtype(embeddings))
    r = None if symmetric else call.refs.embeddings.to(compute_dtype(call.refs.embeddings))
    if pairs.rows.numel() == 0:
        zero = 0 * x.sum() if r is None else 0 * (x.sum() + r.sum())
        return x.new_zeros(0) + zero  # no pair: zero terms, zero gradients
    terms, ok = _LiftedSweep.apply(x, r, pairs, margin, mean, grad_wanted(x, r))
    return terms if bool(ok) else None


def _augmented(x: Tensor, left: bool) -> Tensor:
    """[x, ‖x‖², 1] (left) or [−2x, 1, ‖x‖²]: their product is the squared distances."""
    sq = (x * x).sum(1, keepdim=True)
    ones = torch.ones_like(sq)
    return torch.cat([x, sq, ones] if left else [x * -2, ones, sq], 1)


class _LiftedSweep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, r, pairs, margin, mean, want):  # type: ignore[override]
        symmetric = r is None
        ref = x if symmetric else r
        b, m = x.shape[0], ref.shape[0]
        left, right = _augmented(x, True), _augmented(ref, False)
        jac = x.new_empty(b if want else 0, m)
        step = max(1, ROW_BLOCK_ELEMENTS // max(m, 1))
        scratch = None if want else x.new_empty(min(step, b), m)
        tmp = x.new_empty(min(step, b), m)
        rowsum = x.new_empty(b)
        colsum = None if symmetric else x.new_zeros(m)
        sq_pos = x.new_empty(pairs.rows.numel())
        for start in range(0, b, step):
            stop = min(start + step, b)
            s = jac[start:stop] if want else scratch[: stop - start]
            torch.mm(left[start:stop], right.T, out=s)
            pa, pz = pairs.ptr[start], pairs.ptr[stop]
            sq_pos[pa:pz] = s[pairs.rows[pa:pz] - start, pairs.cols[pa:pz]]
            sa, sz = pairs.same_ptr[start], pairs.same_ptr[stop]
            s[pairs.same_rows[sa:sz] - start, pairs.same_cols[sa:sz]] = math.inf
            s.clamp_min_(0).sqrt_()  # d, ∞ at the same-label entries
            e = torch.neg(s, out=tmp[: stop - start]).exp_()
            torch.sum(e, 1, out=rowsum[start:stop])
            if colsum is not None:
                colsum += e.sum(0)
            if want:
                torch.div(e, s, out=s)  # Q = e^{−d}/d (0 off the negatives, ∞ at d = 0)
        d = sq_pos.clamp_min_(0).sqrt_()
        row_lse = rowsum.log_()  # R − m, −∞ for a row without negatives
        col_lse = row_lse if colsum is None else colsum.log_()
        rows, cols = pairs.rows, pairs.cols
        row_neg, col_neg = pairs.row_neg[rows], pairs.col_neg[cols]
        valid = (row_neg > 0) | (col_neg > 0)
        if not bool(valid.all()):
            rows, cols, d, row_neg, col_neg = (t[valid] for t in (rows, cols, d, row_neg, col_neg))
        lse = torch.logaddexp(row_lse[rows], col_lse[cols])  # L − m
        j = (lse + margin) + d
        if mean:
            j = j - (row_neg + col_neg).clamp_min(1).to(j.dtype).log()
        ok = bool((lse >= -exponent_range(x.dtype)).all())
        ctx.symmetric = symmetric
        ctx.save_for_backward(x, ref, jac, rows, cols, j, lse, d)
        ok_flag = torch.tensor(ok)
        ctx.mark_non_differentiable(ok_flag)
        return 0.5 * j.clamp_min(0).square(), ok_flag

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_ok):  # type: ignore[override]
        x, ref, q, rows, cols, j, lse, d = ctx.saved_tensors
        b, m = q.shape
        w = grad * j.clamp_min(0)  # ∂loss/∂J_p
        h = w * torch.exp(-lse)  # w_p e^{m − L_p}
        c = x.new_zeros(b).index_add_(0, rows, h)
        v = x.new_zeros(m).index_add_(0, cols, h)
        pos = torch.where(d > 0, -w / torch.where(d > 0, d, 1), 0)  # −2 ∂loss/∂(d²) = −w/d
        if ctx.symmetric:  # H + Hᵀ: Q symmetric, t = c + v on both sides, pairs both ways
            c = v = c.add_(v)
            rows, cols, pos = torch.cat([rows, cols]), torch.cat([cols, rows]), pos.repeat(2)
            order = torch.argsort(rows, stable=True)
            rows, cols, pos = rows[order], cols[order], pos[order]
        ptr = [0, *torch.bincount(rows, minlength=b).cumsum(0).tolist()]
        x1 = torch.cat([x, x.new_ones(b, 1)], 1)
        r1 = x1 if ctx.symmetric else torch.cat([ref, ref.new_ones(m, 1)], 1)
        hr = x.new_empty(b, r1.shape[1])  # H [r, 1]
        hx = None if ctx.symmetric else x.new_zeros(m, x1.shape[1])  # Hᵀ [x, 1]
        step = max(1, ROW_BLOCK_ELEMENTS // max(m, 1))
        tmp = x.new_empty(min(step, b), m)
        for start in range(0, b, step):
            stop = min(start + step, b)
            blk = torch.add(c[start:stop, None], v, out=tmp[: stop - start]).mul_(q[start:stop])
            pa, pz = ptr[start], ptr[stop]
            blk[rows[pa:pz] - start, cols[pa:pz]] = pos[pa:pz]
            if not _products(blk, x1[start:stop], r1, hr[start:stop], hx):
                # a negative at distance 0: its e^{−d}/d is ∞ (or ∞·0), its gradient 0
                _products(blk.nan_to_num_(0.0, 0.0, 0.0), x1[start:stop], r1, hr[start:stop], hx)
        dx = hr[:, :-1].sub_(x * hr[:, -1:])
        dr = None if hx is None else hx[:, :-1].sub_(ref * hx[:, -1:])
        return dx, dr, None, None, None, None


def _products(h: Tensor, x1: Tensor, r1: Tensor, hr: Tensor, hx: Tensor | None) -> bool:
    """hr = H [r, 1] for a block of rows H; hx += Hᵀ [x, 1] over the block's anchors (unless
    None). False, with ``hx`` untouched, if either product is not finite."""
    torch.mm(h, r1, out=hr)
    if not bool(torch.isfinite(hr).all()):
        return False
    if hx is None:
        return True
    part = h.T @ x1
    if not bool(torch.isfinite(part).all()):
        return False
    hx += part
    return True
