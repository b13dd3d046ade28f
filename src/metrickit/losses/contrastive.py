"""Contrastive loss for siamese networks (Hadsell, Chopra & LeCun 2006).

Also known as: pairwise ranking loss, margin loss (pair form), siamese loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._kernels import unit_rows
from .._validation import (
    check_choice,
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
    reduce,
)
from ..distances import DISTANCES, rowwise_distance
from ..masks import unordered_pair_mask
from ._base import BatchLoss, Loss
from ._pair_rows import ROW_BLOCK_ELEMENTS, _same_label_pairs
from ._pairs import Batch, IndicesTuple, batch_call, pair_masks_of, reference_distance
from ._registry import register_loss


def _contrastive_term(d: Tensor, similar: Tensor, margin: float) -> Tensor:
    similar = similar.to(d.dtype)
    return 0.5 * (similar * d.pow(2) + (1 - similar) * (margin - d).clamp_min(0).pow(2))


def contrastive_loss(
    x1: Tensor,
    x2: Tensor,
    y: Tensor,
    margin: float = 1.0,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""Contrastive loss over explicit pairs.

    .. math:: \ell(x_1, x_2, y) = \tfrac12\,[\,y\,d^2 + (1-y)\max(m - d, 0)^2\,]

    with d = d(x1, x2) (Euclidean by default), y = 1 for a similar pair and y = 0 for a
    dissimilar one (the paper's convention is the opposite, y = 0 for similar pairs; this is
    the one of most libraries). ``reduction="mean"`` gives 1/(2N) Σ[...], i.e. the common
    TensorFlow form ``reduce_sum(...) / batch_size / 2``.

    Paper: R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006.

    Args:
        x1, x2: [N, D] embeddings of the two sides of each pair.
        y: [N] pair labels, 1 (similar) or 0 (dissimilar); bool, int or float (anything else,
            NaN included, is a ValueError; checked on CPU tensors).
        margin: m ≥ 0 [1.0]; dissimilar pairs farther apart than m cost nothing.
        distance: one of :data:`metrickit.distances.DISTANCES` ["euclidean"].
        reduction: "mean" | "sum" | "none" ["mean"].
    """
    check_embeddings(x1, "x1")
    check_embeddings(x2, "x2")
    check_same_shape({"x1": x1, "x2": x2})
    check_tensor(y, "y")
    if y.dim() != 1 or y.shape[0] != x1.shape[0]:
        raise ValueError(
            f"y must be 1-D with one entry per pair ({x1.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.device.type == "cpu" and y.numel() and not bool(((y == 0) | (y == 1)).all()):
        bad = y[~((y == 0) | (y == 1))][0].item()
        raise ValueError(f"y must hold only 0 (dissimilar) and 1 (similar), got {bad!r}")
    margin = check_nonnegative(margin, "margin")
    check_choice(distance, "distance", DISTANCES)
    check_reduction(reduction)
    d = rowwise_distance(x1, x2, distance)
    return reduce(_contrastive_term(d, y, margin), reduction).to(x1.dtype)


def batch_contrastive_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 1.0,
    distance: str = "euclidean",
    reduction: str = "mean",
    *,
    indices_tuple: IndicesTuple | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Contrastive loss over every unordered pair i < j of a labelled batch.

    Each pair contributes ½[y_ij d_ij² + (1 − y_ij) max(m − d_ij, 0)²] with y_ij = [labels equal];
    ``reduction="mean"`` divides by the number of pairs B(B−1)/2; ``"none"`` returns the
    per-pair terms in row-major order of the upper triangle. A batch of one sample has no pair and
    gives 0.

    With a reference set (``ref_embeddings``, ``ref_labels``, ``ref_offset``) the pairs are
    (anchor i, reference j) with ``ref_offset + i < j`` (each pair of two anchors once, an
    anchor never with itself; every pair when ``ref_offset`` is None), in row-major order. With
    a miner's ``indices_tuple`` the pairs are exactly its positive and negative pairs (as
    ordered pairs, each once) that are valid for the labels.

    With ``reduction`` "mean" or "sum" and no ``indices_tuple`` the sum is computed one block of
    rows at a time with its closed-form gradient (three B×M×D matrix products, the two of the
    gradient taken block by block in the forward pass; memory O((B + M)·D) plus one block, no
    [B, M] autograd graph; with an offset each block only from the columns its pairs can reach,
    so against itself about half of those products); ``"none"`` and mined pairs use the dense
    per-pair form.

    Paper: Hadsell, Chopra & LeCun, CVPR 2006. Defaults: margin=1.0, Euclidean distance.
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    margin = check_nonnegative(margin, "margin")
    check_choice(distance, "distance", DISTANCES)
    check_reduction(reduction)
    if reduction != "none" and indices_tuple is None:
        total, count = _blockwise_sum(embeddings, call, margin, distance)
        loss = total / count if reduction == "mean" and count else total
        return loss.to(embeddings.dtype)
    d = reference_distance(embeddings, call.refs, distance)
    pos, neg = pair_masks_of(call)
    pairs = pos | neg
    if call.indices_tuple is None:
        b, m = d.shape
        pairs = pairs & unordered_pair_mask(b, m, call.refs.offset, d.device)
    terms = _contrastive_term(d[pairs], pos[pairs], margin)
    return reduce(terms, reduction).to(embeddings.dtype)


def _blockwise_sum(
    embeddings: Tensor, call: Batch, margin: float, distance: str
) -> tuple[Tensor, int]:
    """(Σ of the pair terms, number of pairs) over every unordered pair, one block of rows at a
    time with the closed-form gradient (:class:`_ContrastiveSum`)."""
    x = embeddings.to(compute_dtype(embeddings))
    same = call.refs.embeddings is embeddings
    r = x if same else call.refs.embeddings.to(compute_dtype(call.refs.embeddings))
    if distance == "cosine":
        x = unit_rows(x)
        r = x if same else unit_rows(r)
    rows, cols, ptr = _same_label_pairs(call.labels.long(), call.refs.labels.long())
    b, m, offset = x.shape[0], r.shape[0], call.refs.offset
    if offset is None:
        count = b * m
    else:  # row i pairs with the reference columns after offset + i: Σ_i max(0, c − i)
        c = m - offset - 1
        t = min(b, max(0, c))
        count = t * c - t * (t - 1) // 2
    total = _ContrastiveSum.apply(x, r, rows, cols, ptr, offset, margin, distance)
    return total, count


class _ContrastiveSum(torch.autograd.Function):
    """Σ over the pairs (i, j) (j > offset + i, or all with offset None) of the contrastive term,
    from blocks of rows of the base matrix (x rᵀ for cosine/dot, squared distances for the
    Euclidean ones). With an offset, a block of rows i ∈ [a, z) is computed only from column
    offset + a + 1 on (the columns before pair with none of its rows), so against itself about
    half of B×B is computed. Every pair is first scored as a negative, then the few same-label
    pairs (from the sorted labels) are rescored as positives. With a gradient wanted each block
    is overwritten by dℓ/d(base) (its part of a [B, M] matrix J) and multiplied out at once,
    while in cache: J [r, 1] and Jᵀ [x, 1] are summed block by block in the forward pass (the
    loss is one sum, so the backward only scales them); J is never stored."""

    @staticmethod
    def forward(ctx, x, r, rows, cols, ptr, offset, margin, distance):  # type: ignore[override]
        b, m = x.shape[0], r.shape[0]
        euclid = distance in ("euclidean", "squared_euclidean")
        x_sq = (x * x).sum(1) if euclid else None
        r_sq = (x_sq if r is x else (r * r).sum(1)) if euclid else None
        # Euclidean base ‖x_i‖² + ‖r_j‖² − 2 x_i·r_j: a column of ones gives the row sums of J
        # (and of Jᵀ) in the same products as J r (Jᵀ x)
        x1 = torch.cat([x, x.new_ones(b, 1)], 1) if euclid else x
        r1 = torch.cat([r, r.new_ones(m, 1)], 1) if euclid else r
        jr = x1.new_zeros(x1.shape) if ctx.needs_input_grad[0] else None  # J [r, 1]
        jx = r1.new_zeros(r1.shape) if ctx.needs_input_grad[1] else None  # Jᵀ [x, 1]
        step = max(1, ROW_BLOCK_ELEMENTS // max(m, 1))
        work = x.new_empty(2, min(step, b) * m)  # one block's base and its hinge
        total = x.new_zeros(())
        for start in range(0, b if m else 0, step):
            stop = min(start + step, b)
            first = 0 if offset is None else min(m, offset + start + 1)
            if first == m:  # every later row's pairs lie past the last column too
                break
            n, width = stop - start, m - first
            s, h = work[0, : n * width].view(n, width), work[1, : n * width].view(n, width)
            if euclid:
                torch.addmm(r_sq[None, first:], x[start:stop], r[first:].T, alpha=-2, out=s)
                s.add_(x_sq[start:stop, None]).clamp_min_(0)
            else:
                torch.mm(x[start:stop], r[first:].T, out=s)
            pr, pc = rows[ptr[start]:ptr[stop]] - start, cols[ptr[start]:ptr[stop]]
            if offset is not None:  # the pairs of the block's columns: j > offset + i
                keep = pc >= pr + first
                pr, pc = pr[keep], pc[keep]
            pc = pc - first
            base = s[pr, pc]
            _negative_hinge(s, margin, distance, h)
            h[pr, pc] = 0
            if offset is not None:  # row l pairs with the block's columns l, l + 1, ...
                _drop_lower(h)
            total += torch.dot(h.view(-1), h.view(-1)) / 2 + _positive_term(base, distance).sum()
            if jr is not None or jx is not None:
                _negative_grad(s, h, distance)
                s[pr, pc] = _positive_grad(base, distance)
                if jr is not None:
                    torch.mm(s, r1[first:], out=jr[start:stop])
                if jx is not None:
                    jx[first:].addmm_(s.T, x1[start:stop])
        ctx.euclid = euclid
        ctx.save_for_backward(x, r, jr, jx)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, r, jr, jx = ctx.saved_tensors
        if not ctx.euclid:  # base x rᵀ
            dx = None if jr is None else jr * grad
            dr = None if jx is None else jx * grad
        else:  # d(base)/dx_i = 2 (x_i Σ_j J_ij − Σ_j J_ij r_j), and alike for r
            dx = None if jr is None else (x * jr[:, -1:]).sub_(jr[:, :-1]).mul_(2 * grad)
            dr = None if jx is None else (r * jx[:, -1:]).sub_(jx[:, :-1]).mul_(2 * grad)
        return dx, dr, None, None, None, None, None, None


def _negative_hinge(s: Tensor, margin: float, distance: str, out: Tensor) -> Tensor:
    """± max(m − d, 0) of a block of the base matrix, written into ``out`` (only its square
    counts). Euclidean: min(d, m) − m, with ``s`` overwritten by d (its square root)."""
    if distance == "euclidean":
        return torch.clamp_max(s.sqrt_(), margin, out=out).sub_(margin)
    if distance == "squared_euclidean":
        return torch.neg(s, out=out).add_(margin).clamp_min_(0)
    if distance == "cosine":  # d = 1 − s
        return torch.add(s, margin - 1, out=out).clamp_min_(0)
    return torch.add(s, margin, out=out).clamp_min_(0)  # dot: d = −s


def _drop_lower(h: Tensor) -> None:
    """Zero the entries (l, j) of a block with j < l (pairs counted from the other side, or the
    anchor with itself)."""
    n, m = h.shape
    if n > 1:
        lower = torch.ones(n, min(n, m), dtype=torch.bool, device=h.device).tril_(-1)
        h[:, : min(n, m)].masked_fill_(lower, 0)


def _negative_grad(s: Tensor, h: Tensor, distance: str) -> None:
    """Overwrite the block ``s`` of the base matrix by d(½ h²)/d(base), h = max(m − d, 0)
    (``s`` and ``h`` as :func:`_negative_hinge` left them)."""
    if distance == "euclidean":  # s = d, h = min(d, m) − m: −max(m − d, 0) / (2d), 0 at d = 0
        torch.div(h, s.mul_(2), out=s).nan_to_num_(0.0, 0.0, 0.0)
    elif distance == "squared_euclidean":
        torch.neg(h, out=s)
    else:  # d = 1 − s or −s
        s.copy_(h)


def _positive_term(base: Tensor, distance: str) -> Tensor:
    """½ d² of positive pairs from their base values."""
    if distance == "euclidean":
        return base / 2
    if distance == "squared_euclidean":
        return base * base / 2
    d = 1 - base if distance == "cosine" else base
    return d * d / 2


def _positive_grad(base: Tensor, distance: str) -> Tensor:
    """d(½ d²)/d(base) of positive pairs."""
    if distance == "euclidean":  # d · 1/(2d), 0 at d = 0
        return torch.where(base > 0, 0.5, 0.0).to(base.dtype)
    if distance == "squared_euclidean":
        return base
    return base - 1 if distance == "cosine" else base


class ContrastiveLoss(Loss):
    """Module form of :func:`contrastive_loss`; ``forward(x1, x2, y)``."""

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.distance = check_choice(distance, "distance", DISTANCES)

    def forward(self, x1: Tensor, x2: Tensor, y: Tensor) -> Tensor:
        return contrastive_loss(x1, x2, y, self.margin, self.distance, self.reduction)


@register_loss("contrastive", aliases=("pairwise_ranking", "siamese"))
class BatchContrastiveLoss(BatchLoss):
    """Module form of :func:`batch_contrastive_loss`; ``forward(embeddings, labels,
    indices_tuple=None, ref_embeddings=None, ref_labels=None, ref_offset=None)``."""

    functional = staticmethod(batch_contrastive_loss)

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.distance = check_choice(distance, "distance", DISTANCES)

    def hyper(self) -> tuple[object, ...]:
        return self.margin, self.distance
