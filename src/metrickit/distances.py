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

from ._kernels import COSINE_EPS, safe_sqrt, unit_rows
from ._kernels import distance_block as _block
from ._kernels import distance_rows as _rows
from ._validation import check_choice, check_embeddings, check_positive_int, compute_dtype

DISTANCES = ("euclidean", "squared_euclidean", "cosine", "dot")
_COSINE_EPS = COSINE_EPS  # the norm floor of the cosine distance (also used by evaluation)
__all__ = [
    "DISTANCES", "chunked_pairwise", "gathered_distance", "get_distance", "pairwise_distance",
    "resolve_distance", "rowwise_distance", "safe_sqrt", "unit_rows",
]


def resolve_distance(distance: str, squared: bool = False) -> str:
    """The distance name a loss with a ``squared=`` flag computes: ``squared=True`` turns
    ``"euclidean"`` into ``"squared_euclidean"`` and is refused for any other distance."""
    check_choice(distance, "distance", DISTANCES)
    if not squared:
        return distance
    if distance != "euclidean":
        raise ValueError(f"squared=True needs distance='euclidean', got {distance!r}")
    return "squared_euclidean"


def _upcast(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x))


def pairwise_distance(
    x: Tensor,
    y: Tensor | None = None,
    distance: str = "euclidean",
    *,
    self_offset: int | None = None,
) -> Tensor:
    """[N, M] matrix of distances between the rows of ``x`` [N, D] and of ``y`` [M, D].

    With ``y=None`` the distances within ``x`` are returned and the diagonal is exactly 0
    (except for ``"dot"``, whose self-distance is −‖x‖²). ``self_offset`` says that the rows of
    ``x`` are rows ``self_offset ..`` of ``y`` (a batch among its references): those entries
    (i, self_offset + i) are then exactly 0 too (except for ``"dot"``).
    Euclidean distances use the Gram-matrix expansion (one matrix product), clamped at 0.
    """
    check_choice(distance, "distance", DISTANCES)
    x, y = _checked_pair(x, y)
    a, a_sq = _rows(x, distance)
    if y is None:
        return _block(a, a_sq, a, a_sq, distance, None if distance == "dot" else 0)
    b, b_sq = _rows(y, distance)
    diag = None if distance == "dot" else self_offset
    return _block(a, a_sq, b, b_sq, distance, diag)


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
