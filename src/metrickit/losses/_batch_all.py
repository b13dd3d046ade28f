"""Hinge batch-all triplet loss straight from the embeddings, one block of anchors at a time.

The sum of all batch-all terms is linear in the distances with piecewise-constant coefficients,

    Σ_(a,p,n) max(0, d_ap − d_an + m) = Σ_(a,p) c_ap·(d_ap + m) − Σ_(a,n) e_an·d_an,

with c_ap = #{n: d_an < d_ap + m} (negatives inside the margin of the pair) and
e_an = #{p: d_an < d_ap + m} (positives whose margin n violates). Both counts come from comparing
each block of distance rows with its rows' thresholds d_ap + m: one comparison pass per positive
slot when anchors have few positives, one binary search per entry otherwise; no triplet, no
B×B sort and no B×B autograd graph exists. The gradient is then that of Σ W_ij·d_ij with the
constant coefficients W (c on positives, −e on negatives), written in closed form for the
distance (two matrix products in backward). Memory: one [B, B] coefficient matrix plus a block.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .._kernels import distance_block
from ..masks import class_slots

# Elements of one block of distance rows (4 MiB in float32): cache-sized, so the passes over a
# block run from cache.
BLOCK_ELEMENTS = 1 << 20
# Up to this many positives per anchor, count with one comparison pass per positive slot;
# beyond, with a binary search among the sorted thresholds (O(log k) per entry).
MAX_LOOP_SLOTS = 32
_EUCLIDEAN = ("euclidean", "squared_euclidean")


def _loop_counts(d: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
    """(e [r, M] per-entry count of thresholds above it, c [r, k] per-slot count of entries
    below it), one comparison pass per slot."""
    e = torch.zeros(d.shape, dtype=torch.uint8, device=d.device)
    c = torch.empty(thr.shape, dtype=torch.int32, device=d.device)
    below = torch.empty(d.shape, dtype=torch.bool, device=d.device)
    for j in range(thr.shape[1]):
        torch.lt(d, thr[:, j : j + 1], out=below)
        as_int = below.view(torch.uint8)
        torch.sum(as_int, 1, dtype=torch.int32, out=c[:, j])
        e.add_(as_int)
    return e, c


def _search_counts(d: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
    """The counts of :func:`_loop_counts` by binary search in each row's sorted thresholds."""
    k = thr.shape[1]
    ordered, slot = thr.sort(1)
    at_most = torch.searchsorted(ordered, d, right=True)  # #{thresholds ≤ d}; −inf pads count
    hist = torch.zeros(d.shape[0], k + 1, dtype=torch.int64, device=d.device)
    hist.scatter_add_(1, at_most, torch.ones_like(at_most))
    # entries with d < the j-th smallest threshold are those with at most j thresholds ≤ d
    c = torch.empty_like(thr, dtype=torch.int64).scatter_(1, slot, hist.cumsum(1)[:, :k])
    return (k - at_most).to(torch.int32), c


def _gradient_coefficients(
    w: Tensor, d: Tensor, d_ap: Tensor, c: Tensor, pos: Tensor, ok: Tensor, distance: str
) -> None:
    """Turn ``w`` (holding e) into ∂L/∂d_ij · ∂d_ij/∂(x_i − x_j)-style coefficients in place:
    W = c on positives, −e on negatives; divided by d (Euclidean, 0 where d = 0), doubled
    (squared Euclidean) or as is (dot products)."""
    if distance == "euclidean":
        w.div_(d).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        c_coef = torch.where(d_ap > 0, c / d_ap, 0.0)
    elif distance == "squared_euclidean":
        w.mul_(2)
        c_coef = 2.0 * c
    else:
        c_coef = c.to(w.dtype)
    w.neg_().scatter_(1, pos, torch.where(ok, c_coef.to(w.dtype), 0.0))


class _BatchAllHinge(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        members: Tensor,
        positives: Tensor,
        n_pos: Tensor,
        margin: float,
        distance: str,
    ) -> tuple[Tensor, Tensor]:
        b, k = positives.shape
        sq = (x * x).sum(1) if distance in _EUCLIDEAN else None
        # W / d or W (every row is set); only when a gradient is wanted
        coef = (
            torch.empty(b, b, dtype=x.dtype, device=x.device) if ctx.needs_input_grad[0] else None
        )
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        count = torch.zeros((), dtype=torch.int64, device=x.device)
        slot_ok = torch.arange(k, device=x.device)[None, :] < n_pos[:, None]
        mem_ok = torch.arange(k + 1, device=x.device)[None, :] <= n_pos[:, None]
        count_fn = _loop_counts if k <= MAX_LOOP_SLOTS else _search_counts
        rows = max(1, BLOCK_ELEMENTS // max(b, 1))
        for start in range(0, b, rows):
            stop = min(b, start + rows)
            d = distance_block(
                x[start:stop], None if sq is None else sq[start:stop], x, sq, distance,
                None if distance == "dot" else start,
            )
            mem, pos, ok = members[start:stop], positives[start:stop], slot_ok[start:stop]
            d_ap = d.gather(1, pos)
            thr = torch.where(ok, d_ap + margin, float("-inf"))
            e, c = count_fn(d, thr)
            # The counts ran over every column: take the row's own class (itself included) out.
            d_mem = torch.where(mem_ok[start:stop], d.gather(1, mem), float("inf"))
            c = c - (d_mem[:, None, :] < thr[:, :, None]).sum(2)
            e.scatter_(1, mem, 0)
            w = torch.empty_like(d) if coef is None else coef[start:stop]
            w.copy_(e)
            positive_part = torch.where(ok, c * thr, 0.0).sum()
            total += (positive_part - torch.dot(w.view(-1), d.view(-1))).double()
            count += c.sum()
            if coef is not None:
                _gradient_coefficients(w, d, d_ap, c, pos, ok, distance)
        ctx.euclidean = distance in _EUCLIDEAN
        ctx.save_for_backward(x, coef)
        ctx.mark_non_differentiable(count)
        return total.to(x.dtype), count

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor, grad_count: Tensor) -> tuple:  # type: ignore[override]
        x, coef = ctx.saved_tensors
        # L = Σ W_ij d_ij: Euclidean d gives x_k Σ_j (M_kj + M_jk) − (M + Mᵀ) x with M = coef;
        # dot products give −(W + Wᵀ) x.
        grad = coef @ x + coef.T @ x
        if ctx.euclidean:
            grad = x * (coef.sum(1) + coef.sum(0))[:, None] - grad
        else:
            grad = grad.neg_()
        return grad * grad_total, None, None, None, None, None


def batch_all_hinge_total(
    x: Tensor, labels: Tensor, margin: float, distance: str
) -> tuple[Tensor, Tensor]:
    """(sum of every batch-all hinge term, number of triplets with a loss > 0) of the batch
    ``x`` [B, D] (already in the compute dtype; cosine rows already unit-normalised)."""
    members, positives, n_pos = class_slots(labels)
    return _BatchAllHinge.apply(x, members, positives, n_pos, margin, distance)
