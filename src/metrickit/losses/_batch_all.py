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

from .._kernels import distance_block_into
from ..masks import class_slots

# Elements of one block of distance rows (2 MiB in float32): cache-sized, so the passes over a
# block run from cache.
BLOCK_ELEMENTS = 1 << 19
# Elements of one block of distance rows computed by one matrix product (16 MiB in float32).
PRODUCT_ELEMENTS = 1 << 22
# Up to this many positives per anchor, count with one comparison pass per positive slot;
# beyond, with a binary search among the sorted thresholds (O(log k) per entry).
MAX_LOOP_SLOTS = 32
_EUCLIDEAN = ("euclidean", "squared_euclidean")


def _loop_counts(d: Tensor, thr: Tensor, e: Tensor, tmp: Tensor) -> Tensor:
    """Write into ``e`` [r, M] each entry's number of thresholds above it and return c [r, k],
    each slot's number of entries below it (both in d's dtype, exact integers), with one
    comparison pass per slot (``tmp``: a scratch block)."""
    k = thr.shape[1]
    c = d.new_empty(k, d.shape[0])
    if k == 0:
        e.zero_()
    for j in range(k):
        hit = e if j == 0 else tmp
        torch.lt(d, thr[:, j : j + 1], out=hit)  # 0 / 1 in d's dtype: no bool pass
        torch.sum(hit, 1, out=c[j])
        if j:
            e.add_(hit)
    return c.T


def _search_counts(d: Tensor, thr: Tensor, e: Tensor, _tmp: Tensor) -> Tensor:
    """The counts of :func:`_loop_counts` by binary search in each row's sorted thresholds."""
    k = thr.shape[1]
    ordered, slot = thr.sort(1)
    at_most = torch.searchsorted(ordered, d, right=True)  # #{thresholds ≤ d}; −inf pads count
    hist = torch.zeros(d.shape[0], k + 1, dtype=torch.int64, device=d.device)
    hist.scatter_add_(1, at_most, torch.ones_like(at_most))
    e.copy_(at_most.neg_().add_(k))
    # entries with d < the j-th smallest threshold are those with at most j thresholds ≤ d
    return torch.empty_like(thr).scatter_(1, slot, hist.cumsum(1)[:, :k].to(d.dtype))


def _gradient_coefficients(
    d: Tensor, e: Tensor, d_ap: Tensor, c: Tensor, pos: Tensor, ok: Tensor, distance: str,
    diag: int | None,
) -> None:
    """Overwrite the distances ``d`` by −∂L/∂d_ij · ∂d_ij/∂(x_i − x_j)-style coefficients: −W
    with W = c on positives, −e on negatives; divided by d (Euclidean: 0 on the diagonal, 0/0 or
    e/0 elsewhere are left for :func:`_row_sums` to find), doubled (squared Euclidean) or as is
    (dot products)."""
    if distance == "euclidean":
        torch.div(e, d, out=d).diagonal(diag).zero_()
        c_coef = torch.where(d_ap > 0, c / d_ap, 0.0)
    elif distance == "squared_euclidean":
        torch.mul(e, 2, out=d)
        c_coef = 2.0 * c
    else:
        d.copy_(e)
        c_coef = c
    d.scatter_(1, pos, torch.where(ok, -c_coef, 0.0))


def _row_sums(w: Tensor, out: Tensor) -> None:
    """Row sums of the coefficient block ``w`` into ``out``; a non-finite sum means an e/0 or a
    0/0 (identical embeddings of two classes), set to 0 as the derivative of the safe square root
    is, and then the sums are taken again (no pass over the block otherwise)."""
    torch.sum(w, 1, out=out)
    if not bool(torch.isfinite(out).all()):
        w.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        torch.sum(w, 1, out=out)


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
        euclidean = distance in _EUCLIDEAN
        sq = (x * x).sum(1) if euclidean else None
        rows = max(1, BLOCK_ELEMENTS // max(b, 1))
        # the distances come in blocks of several row blocks: one product per block of x rows
        # repacks all of x, so fewer, larger products are faster
        prod_rows = rows * max(1, PRODUCT_ELEMENTS // (rows * max(b, 1)))
        # −W / d or −W (every row is set), when a gradient is wanted; else one scratch block
        grad = ctx.needs_input_grad[0]
        coef = x.new_empty(b if grad else min(prod_rows, b), b)
        # Euclidean backward needs −W's row and column sums: taken per block, from cache
        sums = x.new_zeros(2, b) if grad and euclidean else None
        e_block, tmp = x.new_empty(min(rows, b), b), x.new_empty(min(rows, b) if k > 1 else 0, b)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        count = torch.zeros((), dtype=torch.int64, device=x.device)
        slot_ok = torch.arange(k, device=x.device)[None, :] < n_pos[:, None]
        mem_ok = torch.arange(k + 1, device=x.device)[None, :] <= n_pos[:, None]
        count_fn = _loop_counts if k <= MAX_LOOP_SLOTS else _search_counts
        for first in range(0, b, prod_rows):
            last = min(b, first + prod_rows)
            block = coef[first:last] if grad else coef[: last - first]
            distance_block_into(
                block, x[first:last], None if sq is None else sq[first:last], x, sq, distance,
                None if distance == "dot" else first,
            )
            for start in range(first, last, rows):
                stop = min(last, start + rows)
                d = block[start - first : stop - first]
                e = e_block[: stop - start]
                mem, pos, ok = members[start:stop], positives[start:stop], slot_ok[start:stop]
                d_ap = d.gather(1, pos)
                thr = torch.where(ok, d_ap + margin, float("-inf"))
                c = count_fn(d, thr, e, tmp[: stop - start])
                # The counts ran over every column: take the row's own class (itself included)
                # out.
                d_mem = torch.where(mem_ok[start:stop], d.gather(1, mem), float("inf"))
                c = c - (d_mem[:, None, :] < thr[:, :, None]).sum(2)
                e.scatter_(1, mem, 0)
                positive_part = torch.where(ok, c * thr, 0.0).sum()
                total += (positive_part - torch.dot(e.view(-1), d.view(-1))).double()
                count += c.to(torch.int64).sum()
                if grad:
                    _gradient_coefficients(d, e, d_ap, c, pos, ok, distance, start)
                    if sums is not None:
                        _row_sums(d, sums[0, start:stop])
                        sums[1] += d.sum(0)
        ctx.sums = sums
        ctx.save_for_backward(x, coef if grad else None)
        ctx.mark_non_differentiable(count)
        return total.to(x.dtype), count

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor, grad_count: Tensor) -> tuple:  # type: ignore[override]
        x, coef = ctx.saved_tensors
        # L = Σ W_ij d_ij with coef = −W (−W / d, −2W): dot products give (coef + coefᵀ) x, the
        # Euclidean distances that minus x_k Σ_j (coef_kj + coef_jk) (the sums taken in forward)
        grad = torch.mm(coef, x).addmm_(coef.T, x)
        if ctx.sums is not None:
            grad.sub_(x * ctx.sums.sum(0)[:, None])
        return grad.mul_(grad_total), None, None, None, None, None


def batch_all_hinge_total(
    x: Tensor, labels: Tensor, margin: float, distance: str
) -> tuple[Tensor, Tensor]:
    """(sum of every batch-all hinge term, number of triplets with a loss > 0) of the batch
    ``x`` [B, D] (already in the compute dtype; cosine rows already unit-normalised)."""
    members, positives, n_pos = class_slots(labels)
    return _BatchAllHinge.apply(x, members, positives, n_pos, margin, distance)
