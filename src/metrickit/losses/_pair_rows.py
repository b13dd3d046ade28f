"""Shared machinery of the cosine-similarity pair losses (multi-similarity, circle, margin,
NT-Xent, SupCon, tuplet margin, FastAP).

Each of these losses is a sum of per-anchor terms, and anchor i's term depends only on row i of
the similarity matrix S = x̂ r̂ᵀ (unit rows) and on which of its columns are positives and
negatives. :func:`row_loss` evaluates such a term one cache-sized block of rows at a time: the
block of S by one matrix product, then the term and its closed-form derivative dℓ_i/dS_ij
written in place over the block, which is a block of one [B, M] matrix J. The backward pass is
the two matrix products (J r̂)·g and Jᵀ(x̂·g) with g = grad_output — three B×M×D products in
all, the floor of any loss on the Gram matrix, and O(B·M) memory: no B×M autograd graph, and no
B×B×B or B×B×D intermediate. When the loss is the rows' sum (reduction "mean" or "sum", so g is
the same for every row) the two products are taken block by block in the forward pass instead,
while the block is in cache, and J is never stored: O(block) memory.

The positives are few (a class's other samples), so they are lists of (row, column) pairs,
found from the sorted reference labels in O(B·K + M log M) (K: the samples of a class among the
references), never by a pass over a [B, M] mask. Negatives are every other column: a loss sets
the few same-label columns of its block to a neutral value (−∞ before an exponential) instead
of masking B×M entries. Only a miner's ``indices_tuple`` brings a dense [B, M] mask of the
mined negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._kernels import grad_wanted
from .._validation import check_embeddings, check_labels, compute_dtype
from ..masks import mined_pair_masks, resolve_references
from ._base import BatchLoss

# Elements of one block of similarity rows (16 MiB in float32): few enough blocks that the
# per-block work on the positives and the Python loop stay small beside the B×M passes.
ROW_BLOCK_ELEMENTS = 1 << 22


class CosinePairs(NamedTuple):
    """Unit anchors [B, D] and references [M, D] (in the compute dtype) and their pairs.

    ``same_rows``/``same_cols``: every (anchor, reference) pair with equal labels, sorted by
    row, ``same_ptr`` [B + 1] the host offsets of each row's run; ``positive`` [S] marks those
    that are positive pairs (not the anchor's own column; mined, with ``indices_tuple``).
    ``pos_rows``/``pos_cols``/``pos_ptr``: the positive pairs alone. ``mined_out`` [B, M]: True
    where a different-label pair is NOT a mined negative (None without ``indices_tuple``);
    ``labels``/``ref_labels``: the anchors' and references' labels."""

    anchors: Tensor
    refs: Tensor
    labels: Tensor
    ref_labels: Tensor
    same_rows: Tensor
    same_cols: Tensor
    same_ptr: list[int]
    pos_rows: Tensor
    pos_cols: Tensor
    pos_ptr: list[int]
    mined_out: Tensor | None

    @property
    def num_positive(self) -> Tensor:
        """The number of positive pairs (a 0-d integer tensor)."""
        return torch.tensor(self.pos_rows.numel(), device=self.pos_rows.device)

    def positives_per_row(self) -> Tensor:
        """[B] number of positives of each anchor (in the compute dtype)."""
        return row_sum(torch.ones_like(self.pos_rows, dtype=self.anchors.dtype),
                       self.pos_rows, self.anchors.shape[0])

    def negatives_per_row(self) -> Tensor:
        """[B] number of negatives of each anchor (in the compute dtype)."""
        b, m = self.anchors.shape[0], self.refs.shape[0]
        dtype = self.anchors.dtype
        if self.mined_out is None:
            return m - row_sum(torch.ones_like(self.same_rows, dtype=dtype), self.same_rows, b)
        mined = m - self.mined_out.sum(1, dtype=dtype)  # mined negatives, as masked
        # a miner may name same-label pairs as negatives: they are not
        named = ~self.mined_out[self.same_rows, self.same_cols]
        return mined - row_sum(named.to(dtype), self.same_rows, b)


class RowBlock(NamedTuple):
    """One block of anchor rows: ``rows`` (the slice), the positive pairs (``pos_r`` local row,
    ``pos_c`` column), the same-label pairs (``same_r``, ``same_c``) and the block of
    :attr:`CosinePairs.mined_out`. From :func:`row_loss`: ``work``, a scratch block the shape of
    S's (the same memory for every block, so no block allocates one), and, when a gradient is
    wanted, ``scale`` [rows]: a loss may write there a factor c_i per row, and then leaves
    dℓ_i/dS_ij / c_i in S instead of dℓ_i/dS_ij (the factor is applied to the [B, D] sides of
    the backward products, not to the block: a pass fewer; initially 1)."""

    rows: slice
    pos_r: Tensor
    pos_c: Tensor
    same_r: Tensor
    same_c: Tensor
    mined_out: Tensor | None
    work: Tensor | None = None
    scale: Tensor | None = None

    @property
    def size(self) -> int:
        return self.rows.stop - self.rows.start

    def drop_non_negatives(self, t: Tensor, value: float) -> Tensor:
        """Set every entry of the block ``t`` that is not a negative pair to ``value``, in
        place (the same-label columns, and the pairs a miner left out)."""
        t[self.same_r, self.same_c] = value
        if self.mined_out is not None:
            t.masked_fill_(self.mined_out, value)
        return t


def cosine_pairs(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: tuple[Tensor, ...] | None,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    ref_offset: int | None,
) -> CosinePairs:
    """Validate a batch loss's inputs and return its unit rows and pairs."""
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    refs = resolve_references(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
    b, m = labels.shape[0], refs.labels.shape[0]
    rows, cols, same_ptr = _same_label_pairs(labels.long(), refs.labels.long())
    positive = torch.ones_like(rows, dtype=torch.bool)
    if refs.offset is not None:
        positive &= cols != rows + refs.offset
    mined_out = None
    if indices_tuple is not None:
        mined_pos, mined_neg = mined_pair_masks(indices_tuple, b, m)
        positive &= mined_pos[rows, cols]
        mined_out = ~mined_neg
    pos_rows, pos_cols = rows[positive], cols[positive]
    counts = torch.bincount(pos_rows, minlength=b)
    pos_ptr = [0, *counts.cumsum(0).tolist()]
    x = unit(embeddings)
    r = x if refs.embeddings is embeddings else unit(refs.embeddings)
    return CosinePairs(
        x, r, labels, refs.labels, rows, cols, same_ptr, pos_rows, pos_cols, pos_ptr, mined_out
    )


def _same_label_pairs(labels: Tensor, ref_labels: Tensor) -> tuple[Tensor, Tensor, list[int]]:
    """(rows, cols, ptr): every pair with equal labels, by row then column, from one sort of
    the reference labels; ptr [B + 1] the host offsets of each row's run."""
    order = torch.argsort(ref_labels, stable=True)
    ranked = ref_labels[order]
    lo = torch.searchsorted(ranked, labels)
    count = torch.searchsorted(ranked, labels, right=True) - lo
    ends = count.cumsum(0)
    rows = torch.repeat_interleave(torch.arange(labels.shape[0], device=labels.device), count)
    within = torch.arange(rows.numel(), device=labels.device) - (ends - count)[rows]
    cols = order[lo[rows] + within]
    return rows, cols, [0, *ends.tolist()]


def unit(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm in the compute dtype (as ``F.normalize``; a zero row stays 0).

    Each row is first divided by its largest magnitude (a constant for autograd: the result does
    not depend on it), so rows of norm 1e-20 or 1e20 neither underflow nor overflow."""
    x = x.to(compute_dtype(x))
    top = x.detach().abs().amax(1, keepdim=True)
    return F.normalize(x / torch.where(top > 0, top, 1.0), dim=1)


def exp_negatives(s: Tensor, block: RowBlock, scale: float) -> tuple[Tensor, Tensor]:
    """``(e, top)``, in place over ``s``: e = exp(scale·(S − top_i)) on the negatives and 0
    elsewhere, top_i the row's largest negative S (0 for a row without one); scale > 0, so no
    e exceeds 1."""
    block.drop_non_negatives(s, float("-inf"))
    top = s.amax(1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    return s.sub_(top).mul_(scale).exp_(), top[:, 0]


def row_sum(values: Tensor, rows: Tensor, b: int) -> Tensor:
    """[b] sums of ``values`` grouped by their row index ``rows``."""
    return values.new_zeros(b).index_add_(0, rows, values)


def softmax_over_negatives(
    s: Tensor,
    block: RowBlock,
    kappa: float,
    logit: Callable[[Tensor], tuple[Tensor, Tensor]],
    want: bool,
) -> Tensor:
    """Σ_p log(1 + Σ_n exp(κ s_in − z_ip)) per row, with z_ip, dz_ip/ds_ip = ``logit(s_ip)``;
    with ``want`` leaves its closed-form dℓ/dS in ``s`` (NT-Xent, tuplet margin)."""
    r, c = block.pos_r, block.pos_c
    z, dz = logit(s[r, c])
    e, top = exp_negatives(s, block, kappa)
    total = e.sum(1)
    lse = kappa * top + total.log()  # −inf for a row without negatives
    gap = lse[r] - z
    loss = row_sum(softplus(gap), r, s.shape[0])
    if want:
        weight = torch.sigmoid(gap)
        coef = row_sum(weight, r, s.shape[0]) * kappa / torch.where(total > 0, total, 1.0)
        e.mul_(coef[:, None])
        e[r, c] = -weight * dz
    return loss


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), exact at every x (``F.softplus`` switches to x above a threshold)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


# fn(S_block, block, params_block, want, grad_params_block) -> (loss [b], aux [b, k] | None)
RowFn = Callable[[Tensor, RowBlock, Tensor | None, bool, Tensor | None],
                 tuple[Tensor, Tensor | None]]


def _blocks(pairs: CosinePairs, step: int, work: Tensor | None = None,
            scale: Tensor | None = None):
    b = pairs.anchors.shape[0]
    for start in range(0, b, step):
        stop = min(start + step, b)
        a, z = pairs.same_ptr[start], pairs.same_ptr[stop]
        pa, pz = pairs.pos_ptr[start], pairs.pos_ptr[stop]
        yield RowBlock(
            slice(start, stop),
            pairs.pos_rows[pa:pz] - start, pairs.pos_cols[pa:pz],
            pairs.same_rows[a:z] - start, pairs.same_cols[a:z],
            None if pairs.mined_out is None else pairs.mined_out[start:stop],
            None if work is None else work[: stop - start],
            None if scale is None else scale[start:stop],
        )


class _RowLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, r, params, fn, pairs, aux_width, summed, want):  # type: ignore[override]
        b, m = x.shape[0], r.shape[0]
        out = x.new_zeros(b)
        # summed: each block's J is multiplied out as soon as it is written (J r̂ and Jᵀ x̂,
        # exact for the uniform upstream gradient of a sum) and never stored
        fused = want and summed
        jac = x.new_empty(b if want and not fused else 0, m)
        jac_params = None if params is None else torch.zeros_like(params)
        scale = x.new_ones(b) if want else None
        jr = x.new_zeros(b, x.shape[1]) if fused and ctx.needs_input_grad[0] else None
        jx = r.new_zeros(m, r.shape[1]) if fused and ctx.needs_input_grad[1] else None
        step = max(1, ROW_BLOCK_ELEMENTS // max(m, 1))
        scratch = x.new_empty(min(step, b), m) if jac.numel() == 0 else None
        work = x.new_empty(min(step, b), m)
        aux_blocks: list[Tensor] = []
        for block in _blocks(pairs, step, work, scale) if m else ():
            rows = block.rows
            s = scratch[: block.size] if scratch is not None else jac[rows]
            torch.mm(x[rows], r.T, out=s)
            p = None if params is None else params[rows]
            gp = jac_params[rows] if want and jac_params is not None else None
            loss, aux = fn(s, block, p, want, gp)
            out[rows] = loss
            if aux is not None:
                aux_blocks.append(aux)
            if jr is not None:
                torch.mm(s, r, out=jr[rows])
            if jx is not None:
                jx.addmm_(s.T, x[rows] * block.scale[:, None])
        aux_all = torch.cat(aux_blocks) if aux_blocks else x.new_zeros(b, aux_width)
        ctx.mark_non_differentiable(aux_all)
        ctx.fused = fused
        ctx.save_for_backward(x, r, jac, jac_params, scale, jr, jx)
        return out, aux_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_aux):  # type: ignore[override]
        x, r, jac, jac_params, scale, jr, jx = ctx.saved_tensors
        dx = dr = dp = None
        if ctx.fused:
            g = grad_out[:1].sum()  # 0-d (0 for an empty batch)
            if not bool((grad_out == g).all()):
                raise RuntimeError("row_loss(summed=True) needs the same upstream gradient for "
                                   "every row (the rows' losses must be summed)")
            if jr is not None:  # (out of place: a retained graph may run backward again)
                dx = jr * (scale * g)[:, None]
            if jx is not None:
                dr = jx * g
        else:
            # G = diag(grad_out · scale)·J never formed: scale the [B, D] sides instead
            go = (grad_out * scale)[:, None]
            dx = (jac @ r).mul_(go) if ctx.needs_input_grad[0] else None
            dr = jac.T @ (x * go) if ctx.needs_input_grad[1] else None
        if jac_params is not None and ctx.needs_input_grad[2]:
            dp = jac_params * grad_out.view(-1, *([1] * (jac_params.dim() - 1)))
        return dx, dr, dp, None, None, None, None, None


def row_loss(
    pairs: CosinePairs,
    fn: RowFn,
    params: Tensor | None = None,
    aux_width: int = 0,
    summed: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(loss [B], aux [B, k])``: the per-anchor terms ``fn`` computes on blocks of S rows.

    ``fn(S, block, params, want, grad_params)`` gets a block of rows of S = x̂ r̂ᵀ (its to
    overwrite), the block's pairs (:class:`RowBlock`), the block's rows of ``params`` ([B, …],
    differentiable per-anchor parameters, e.g. a learnable margin) and whether a gradient is
    wanted. It returns the block's loss terms (each depending on its own row only) and optional
    non-differentiable per-row statistics (``aux_width`` counts); with ``want`` it leaves the
    closed-form dℓ_i/dS_ij in S and writes dℓ_i/dparams_i into ``grad_params`` (when given).

    ``summed=True`` (for a caller that only sums the rows' losses, times any constant): the
    two backward products are taken block by block in the forward pass, while each block is
    in cache, and the [B, M] matrix J is never stored (O(block) memory instead of O(B·M)); the
    backward then refuses an upstream gradient that differs between rows.
    """
    want = grad_wanted(pairs.anchors, pairs.refs, params)
    return _RowLoss.apply(pairs.anchors, pairs.refs, params, fn, pairs, aux_width, summed, want)


class PairRowsLoss(BatchLoss):
    """Base of the batch losses computed row by row by :func:`row_loss` (the generic
    ``forward`` is :class:`~metrickit.losses._base.BatchLoss`'s)."""
