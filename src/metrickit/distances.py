"""Distances between embeddings: pairwise matrices and row-wise distances.

Every distance here is a *dissimilarity*: smaller means closer.

====================  =====================================  ===============================
name                  d(x, y)                                notes
====================  =====================================  ===============================
``"euclidean"``       ‖x − y‖₂                               gradient at d = 0 is 0, not NaN
``"squared_euclidean"`` ‖x − y‖₂²
``"cosine"``          1 − x·y / (‖x‖ ‖y‖)                    in [0, 2]
``"dot"``             −x·y                                   negated similarity
====================  =====================================  ===============================

Inputs in float16/bfloat16 are computed in float32 and the result is returned in float32;
callers cast back if they need to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ._validation import check_choice, check_embeddings, check_positive_int, compute_dtype

DISTANCES = ("euclidean", "squared_euclidean", "cosine", "dot")
_COSINE_EPS = 1e-12


def resolve_distance(distance: str, squared: bool = False) -> str:
    """The distance name a loss with a ``squared=`` flag computes: ``squared=True`` turns
    ``"euclidean"`` into ``"squared_euclidean"`` and is refused for any other distance."""
    check_choice(distance, "distance", DISTANCES)
    if not squared:
        return distance
    if distance != "euclidean":
        raise ValueError(f"squared=True needs distance='euclidean', got {distance!r}")
    return "squared_euclidean"


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


def _upcast(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x))


def pairwise_distance(x: Tensor, y: Tensor | None = None, distance: str = "euclidean") -> Tensor:
    """[N, M] matrix of distances between the rows of ``x`` [N, D] and of ``y`` [M, D].

    With ``y=None`` the distances within ``x`` are returned and the diagonal is exactly 0
    (except for ``"dot"``, whose self-distance is −‖x‖²).
    Euclidean distances use the Gram-matrix expansion (one matrix product), clamped at 0.
    """
    check_choice(distance, "distance", DISTANCES)
    x, y = _checked_pair(x, y)
    a, a_sq = _rows(x, distance)
    if y is None:
        return _block(a, a_sq, a, a_sq, distance, None if distance == "dot" else 0)
    b, b_sq = _rows(y, distance)
    return _block(a, a_sq, b, b_sq, distance, None)


def _checked_pair(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validated ``x`` and ``y`` (same width), upcast to at least float32."""
    check_embeddings(x, "x")
    if y is None:
        return _upcast(x), None
    check_embeddings(y, "y")
    if y.shape[1] != x.shape[1]:
        raise ValueError(
            f"x and y must have the same embedding size, got {x.shape[1]} and {y.shape[1]}"
        )
    return _upcast(x), _upcast(y)


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` scaled to unit norm (a zero row stays zero), as the cosine distance uses."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)


def _rows(x: Tensor, distance: str) -> tuple[Tensor, Tensor | None]:
    """Per-row part of a distance: unit rows for cosine, squared norms for the Euclidean ones."""
    if distance == "cosine":
        return unit_rows(x), None
    if distance == "dot":
        return x, None
    return x, (x * x).sum(1)


def _block(
    a: Tensor, a_sq: Tensor | None, b: Tensor, b_sq: Tensor | None, distance: str, diag: int | None
) -> Tensor:
    """Distances between rows of ``a`` and ``b`` (prepared by :func:`_rows`); the diagonal at
    offset ``diag`` is set to exactly 0 (before the square root, so its gradient is 0)."""
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


def rowwise_distance(x: Tensor, y: Tensor, distance: str = "euclidean") -> Tensor:
    """[N] distances between matching rows of ``x`` and ``y`` (both [N, D]).

    Computed from the difference x − y (exact, no cancellation), not from the Gram expansion.
    """
    check_choice(distance, "distance", DISTANCES)
    x, y = _upcast(x), _upcast(y)
    if distance == "cosine":
        return 1 - (unit_rows(x) * unit_rows(y)).sum(1)
    if distance == "dot":
        return -(x * y).sum(1)
    sq = ((x - y) ** 2).sum(1)
    return safe_sqrt(sq) if distance == "euclidean" else sq


def gathered_distance(x: Tensor, columns: Tensor, distance: str = "euclidean") -> Tensor:
    """[N, k] distances between row i of ``x`` [N, D] and rows ``columns[i, s]`` of ``x``: the
    entries ``pairwise_distance(x)[i, columns[i, s]]``, the same Gram-expansion formula (and
    exactly 0 where ``columns[i, s] == i``, except for ``"dot"``), without the N×N matrix.

    Costs O(N·k·D); its backward is elementwise over [N, k, D] plus one ``index_add``."""
    check_choice(distance, "distance", DISTANCES)
    x = _upcast(x)
    a, a_sq = _rows(x, distance)
    other = a.index_select(0, columns.flatten()).view(*columns.shape, a.shape[1])
    dots = (other * a[:, None, :]).sum(-1)
    if distance == "dot":
        return dots.neg()
    self_pair = columns == torch.arange(x.shape[0], device=x.device)[:, None]
    if distance == "cosine":
        return torch.where(self_pair, 0.0, 1 - dots)
    assert a_sq is not None
    sq = (a_sq[:, None] + a_sq[columns] - 2 * dots).clamp_min(0)
    sq = torch.where(self_pair, 0.0, sq)
    return safe_sqrt(sq) if distance == "euclidean" else sq


def chunked_pairwise(
    x: Tensor,
    y: Tensor | None = None,
    distance: str = "euclidean",
    chunk_size: int = 4096,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, block)`` with block = distances of rows ``x[start:start+chunk_size]`` to
    all of ``y`` (or of ``x``), so an N×M matrix never exists in memory at once.

    With ``y=None`` each row's distance to itself is exactly 0, for every distance."""
    check_positive_int(chunk_size, "chunk_size")
    check_choice(distance, "distance", DISTANCES)
    x, y = _checked_pair(x, y)
    other = x if y is None else y
    for start in range(0, x.shape[0], chunk_size):
        # the cheap per-row part of `other` is redone per block: each block is its own graph
        a, a_sq = _rows(x[start : start + chunk_size], distance)
        b, b_sq = _rows(other, distance)
        yield start, _block(a, a_sq, b, b_sq, distance, start if y is None else None)


def get_distance(name: str) -> Callable[[Tensor, Tensor | None], Tensor]:
    """The pairwise-matrix function of a distance by name."""
    check_choice(name, "distance", DISTANCES)
    return lambda x, y=None: pairwise_distance(x, y, name)
