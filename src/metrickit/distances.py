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


def safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt with a finite (zero) gradient where the argument is 0.

    ``torch.sqrt`` has an infinite derivative at 0, which turns into NaN when a pair of identical
    embeddings is multiplied by a zero upstream gradient. Here the derivative at exactly 0 is 0.
    """
    sq = sq.clamp_min(0)
    zero = sq == 0
    root = torch.sqrt(torch.where(zero, torch.ones_like(sq), sq))
    return torch.where(zero, torch.zeros_like(sq), root)


def _upcast(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x))


def pairwise_distance(x: Tensor, y: Tensor | None = None, distance: str = "euclidean") -> Tensor:
    """[N, M] matrix of distances between the rows of ``x`` [N, D] and of ``y`` [M, D].

    With ``y=None`` the distances within ``x`` are returned and the diagonal is exactly 0.
    Euclidean distances use the Gram-matrix expansion (one matrix product), clamped at 0.
    """
    check_choice(distance, "distance", DISTANCES)
    check_embeddings(x, "x")
    same = y is None
    if y is None:
        y = x
    else:
        check_embeddings(y, "y")
        if y.shape[1] != x.shape[1]:
            raise ValueError(
                f"x and y must have the same embedding size, got {x.shape[1]} and {y.shape[1]}"
            )
    x, y = _upcast(x), _upcast(y)
    if distance == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        yn = xn if same else y / y.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        d = 1 - xn @ yn.T
    elif distance == "dot":
        return -(x @ y.T)
    else:
        x2 = (x * x).sum(1)
        y2 = x2 if same else (y * y).sum(1)
        d = (x2[:, None] + y2[None, :] - 2 * (x @ y.T)).clamp_min(0)
        if same:
            d = _zero_diagonal(d)
        return safe_sqrt(d) if distance == "euclidean" else d
    return _zero_diagonal(d) if same else d


def _zero_diagonal(d: Tensor) -> Tensor:
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    return d.masked_fill(eye, 0)


def rowwise_distance(x: Tensor, y: Tensor, distance: str = "euclidean") -> Tensor:
    """[N] distances between matching rows of ``x`` and ``y`` (both [N, D]).

    Computed from the difference x − y (exact, no cancellation), not from the Gram expansion.
    """
    check_choice(distance, "distance", DISTANCES)
    x, y = _upcast(x), _upcast(y)
    if distance == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        yn = y / y.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        return 1 - (xn * yn).sum(1)
    if distance == "dot":
        return -(x * y).sum(1)
    sq = ((x - y) ** 2).sum(1)
    return safe_sqrt(sq) if distance == "euclidean" else sq


def chunked_pairwise(
    x: Tensor,
    y: Tensor | None = None,
    distance: str = "euclidean",
    chunk_size: int = 4096,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, block)`` with block = distances of rows ``x[start:start+chunk_size]`` to
    all of ``y`` (or of ``x``), so an N×M matrix never exists in memory at once."""
    check_positive_int(chunk_size, "chunk_size")
    other = x if y is None else y
    for start in range(0, x.shape[0], chunk_size):
        block = pairwise_distance(x[start : start + chunk_size], other, distance)
        if y is None:
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, rows + start] = 0
        yield start, block


def get_distance(name: str) -> Callable[[Tensor, Tensor | None], Tensor]:
    """The pairwise-matrix function of a distance by name."""
    check_choice(name, "distance", DISTANCES)
    return lambda x, y=None: pairwise_distance(x, y, name)
