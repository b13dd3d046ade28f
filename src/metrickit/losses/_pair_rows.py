"""Shared machinery of the cosine-similarity pair losses (multi-similarity, circle, margin,
NT-Xent, SupCon, tuplet margin, FastAP).

Each of these losses is a sum of per-anchor terms, and anchor i's term depends only on row i of
the similarity matrix S = x̂ r̂ᵀ (unit rows) and on its pair masks. :func:`row_loss` evaluates
such a term one cache-sized block of rows at a time: S_block by one matrix product, the term
and its derivative dℓ_i/dS_ij (in closed form, or by autograd on the block alone), kept as one
[B, M] matrix J. The
backward pass is the two matrix products (J r̂)·g and Jᵀ(x̂·g) with g = grad_output — three
B×M×D products in all, the floor of any loss on the Gram matrix, and O(B·M) memory: no B×M
autograd graph, and no B×B×B or B×B×D intermediate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_embeddings, check_labels, compute_dtype
from ..masks import mined_pair_masks, reference_pair_masks, resolve_references
from ._base import BatchLoss

# Elements of one block of similarity rows (4 MiB in float32).
ROW_BLOCK_ELEMENTS = 1 << 20

# fn(S_block, positive_block, negative_block, params_block, rows) -> (loss [b], aux [b, k] | None)
RowFn = Callable[[Tensor, Tensor, Tensor, Tensor | None, slice], tuple[Tensor, Tensor | None]]


class CosinePairs(NamedTuple):
    """Unit anchors [B, D], unit references [M, D] (in the compute dtype) and the [B, M] pair
    masks, the mined pairs of ``indices_tuple`` (if any) already applied."""

    anchors: Tensor
    refs: Tensor
    positive: Tensor
    negative: Tensor
    ref_labels: Tensor


def cosine_pairs(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: tuple[Tensor, ...] | None,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    ref_offset: int | None,
) -> CosinePairs:
    """Validate a batch loss's inputs and return its unit rows and pair masks."""
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    refs = resolve_references(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
    pos, neg = reference_pair_masks(labels, refs)
    if indices_tuple is not None:
        mined_pos, mined_neg = mined_pair_masks(indices_tuple, labels.shape[0], pos.shape[1])
        pos, neg = pos & mined_pos, neg & mined_neg
    x = unit(embeddings)
    r = x if refs.embeddings is embeddings else unit(refs.embeddings)
    return CosinePairs(x, r, pos, neg, refs.labels)


def unit(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm in the compute dtype (as ``F.normalize``; a zero row stays 0).

    Each row is first divided by its largest magnitude (a constant for autograd: the result does
    not depend on it), so rows of norm 1e-20 or 1e20 neither underflow nor overflow."""
    x = x.to(compute_dtype(x))
    top = x.detach().abs().amax(1, keepdim=True)
    return F.normalize(x / torch.where(top > 0, top, 1.0), dim=1)


def exp_rows(s: Tensor, mask: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``(e, top)``: e = exp(scale·(S − top_i)) on ``mask`` and 0 elsewhere, top_i the row's
    largest kept S (0 for an empty row); scale > 0, so no e exceeds 1."""
    e = torch.where(mask, s, float("-inf"))
    top = e.amax(1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    return e.sub_(top).mul_(scale).exp_(), top[:, 0]


def row_sum(values: Tensor, rows: Tensor, b: int) -> Tensor:
    """[b] sums of ``values`` grouped by their row index ``rows``."""
    return values.new_zeros(b).index_add_(0, rows, values)


def softmax_over_negatives(
    s: Tensor,
    pos: Tensor,
    neg: Tensor,
    kappa: float,
    logit: Callable[[Tensor], tuple[Tensor, Tensor]],
    grad: Tensor | None,
) -> Tensor:
    """Σ_p log(1 + Σ_n exp(κ s_in − z_ip)) per row, with z_ip, dz_ip/ds_ip = ``logit(s_ip)``;
    writes its closed-form dℓ/dS into ``grad`` (NT-Xent, tuplet margin)."""
    e, top = exp_rows(s, neg, kappa)
    total = e.sum(1)
    lse = kappa * top + total.log()  # −inf for a row without negatives
    r, c = pos.nonzero(as_tuple=True)
    z, dz = logit(s[r, c])
    gap = lse[r] - z
    loss = row_sum(softplus(gap), r, s.shape[0])
    if grad is not None:
        weight = torch.sigmoid(gap)
        coef = row_sum(weight, r, s.shape[0]) * kappa / torch.where(total > 0, total, 1.0)
        torch.mul(e, coef[:, None], out=grad)
        grad[r, c] = -weight * dz
    return loss


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), exact at every x (``F.softplus`` switches to x above a threshold)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def _autograd_block(fn, x, r, params, pos, neg, rows, want, jac, jac_params):
    """One block of rows: the terms by ``fn`` and, if wanted, dℓ/dS (and dℓ/dparams) into the
    block's rows of ``jac`` (``jac_params``) by autograd on the block alone."""
    with torch.set_grad_enabled(want):
        s = (x[rows] @ r.T).requires_grad_(want)
        p = None if params is None else params[rows].detach().requires_grad_(want)
        loss, aux = fn(s, pos[rows], neg[rows], p, rows)
        if want:
            inputs = (s,) if p is None else (s, p)
            grads = (
                torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
                if loss.requires_grad else (None, None)
            )
            jac[rows] = 0 if grads[0] is None else grads[0]
            if p is not None and grads[1] is not None:
                jac_params[rows] = grads[1]
    return loss, aux


class _RowLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, r, params, fn, pos, neg, aux_width, manual):  # type: ignore[override]
        b, m = x.shape[0], r.shape[0]
        out = x.new_zeros(b)
        want = any(ctx.needs_input_grad[:3])
        jac = x.new_empty(b if want else 0, m)
        jac_params = None if params is None else torch.zeros_like(params)
        aux_blocks: list[Tensor] = []
        step = max(1, ROW_BLOCK_ELEMENTS // max(m, 1))
        for start in range(0, b if m else 0, step):
            rows = slice(start, min(start + step, b))
            if manual:  # fn writes dℓ/dS into the block of J itself
                with torch.no_grad():
                    s = x[rows] @ r.T
                    loss, aux = fn(s, pos[rows], neg[rows], None, rows, jac[rows] if want else None)
            else:
                loss, aux = _autograd_block(fn, x, r, params, pos, neg, rows, want, jac, jac_params)
            out[rows] = loss.detach()
            if aux is not None:
                aux_blocks.append(aux.detach())
        aux_all = torch.cat(aux_blocks) if aux_blocks else x.new_zeros(b, aux_width)
        ctx.mark_non_differentiable(aux_all)
        ctx.save_for_backward(x, r, jac, jac_params)
        return out, aux_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_aux):  # type: ignore[override]
        x, r, jac, jac_params = ctx.saved_tensors
        # G = J·diag(grad_out) never formed: scale the [B, D] / [B, 1] sides instead
        go = grad_out[:, None]
        dx = (jac @ r).mul_(go) if ctx.needs_input_grad[0] else None
        dr = jac.T @ (x * go) if ctx.needs_input_grad[1] else None
        dp = None
        if jac_params is not None and ctx.needs_input_grad[2]:
            dp = jac_params * grad_out.view(-1, *([1] * (jac_params.dim() - 1)))
        return dx, dr, dp, None, None, None, None, None


def row_loss(
    pairs: CosinePairs,
    fn: RowFn,
    params: Tensor | None = None,
    aux_width: int = 0,
    manual: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(loss [B], aux [B, k])``: the per-anchor terms ``fn`` computes on blocks of S rows.

    ``fn(S, positive, negative, params, rows)`` gets a block of rows of S = x̂ r̂ᵀ, their masks,
    the block's rows of ``params`` ([B, …], differentiable per-anchor parameters, e.g. a learnable
    margin) and the block's slice; it returns the block's loss terms (each depending on its own
    row only) and optional non-differentiable per-row statistics (``aux_width`` counts).
    With ``manual`` there is no autograd: ``fn(S, positive, negative, None, rows, grad)``
    writes the closed-form dℓ_i/dS_ij into ``grad`` (the block of J; None when no gradient is
    wanted) and the loss takes no ``params``.
    """
    return _RowLoss.apply(
        pairs.anchors, pairs.refs, params, fn, pairs.positive, pairs.negative, aux_width, manual
    )


class PairRowsLoss(BatchLoss):
    """Base of the batch losses computed row by row by :func:`row_loss` (the generic
    ``forward`` is :class:`~metrickit.losses._base.BatchLoss`'s)."""
