"""Matryoshka representation learning (Kusupati et al. 2022): a loss on nested prefixes.

A generic wrapper: it calls any loss once per prefix length with every embedding argument cut to
its first ``dim`` features, so the leading features of the embedding work on their own.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_bool, check_int, check_nonnegative


def _check_dims_weights(
    dims: Sequence[int], weights: Sequence[float] | None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if isinstance(dims, (numbers.Number, str, Tensor)) or not isinstance(dims, Sequence):
        raise TypeError(f"dims must be a sequence of positive integers, got {dims!r}")
    if len(dims) == 0:
        raise ValueError("dims must name at least one prefix length, got an empty sequence")
    dims = tuple(check_int(d, f"dims[{i}]", low=1) for i, d in enumerate(dims))
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims must be distinct, got {dims}")
    if weights is None:
        weights = (1.0,) * len(dims)
    if isinstance(weights, (numbers.Number, str, Tensor)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of numbers or None, got {weights!r}")
    if len(weights) != len(dims):
        raise ValueError(f"weights must have one entry per dim ({len(dims)}), got {len(weights)}")
    weights = tuple(check_nonnegative(w, f"weights[{i}]") for i, w in enumerate(weights))
    return dims, weights


def _embedding_size(args: tuple, kwargs: dict) -> int:
    for x in (*args, *kwargs.values()):
        if isinstance(x, Tensor) and x.is_floating_point() and x.dim() >= 2:
            return x.shape[-1]
    raise ValueError("matryoshka: no embedding argument (a floating tensor of 2 or more "
                     "dimensions) was passed to the wrapped loss")


def _prefix(x: object, size: int, dim: int, normalize: bool) -> object:
    if isinstance(x, Tensor) and x.is_floating_point() and x.dim() >= 2 and x.shape[-1] == size:
        x = x[..., :dim]
        return F.normalize(x, dim=-1) if normalize else x
    return x


def matryoshka_loss(
    loss: Callable[..., Tensor],
    *args: object,
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
    normalize: bool = False,
    **kwargs: object,
) -> Tensor:
    r"""A loss summed over nested prefixes of the embedding dimensions.

    .. math:: L = \sum_k w_k\, \mathcal{L}(x_{1, :m_k}, x_{2, :m_k}, \dots)

    ``loss(*args, **kwargs)`` is called once per prefix length m_k of ``dims``; every embedding
    argument is cut to its first m_k features and, with ``normalize``, L2-normalised again
    (sentence-transformers' MatryoshkaLoss always renormalises). The embedding arguments are the
    floating tensors of two or more dimensions whose last dimension is the embedding size D (that
    of the first such argument): embeddings, anchors / positives / negatives, reference sets;
    labels, scores and other 1-D arguments pass unchanged. Works with batch-form and tuple-form
    losses alike; with ``reduction="none"`` the per-prefix outputs are summed elementwise.

    Paper: A. Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.

    Args:
        loss: any loss function or module.
        dims: the prefix lengths m_k, distinct, each ≤ D (e.g. ``(768, 512, 256, 128, 64)``;
            include D itself to train the full embedding).
        weights: w_k ≥ 0, one per dim [all 1].
        normalize: L2-normalise each prefix [False].
    """
    dims, weights = _check_dims_weights(dims, weights)
    normalize = check_bool(normalize, "normalize")
    size = _embedding_size(args, kwargs)
    if max(dims) > size:
        raise ValueError(f"dims must not exceed the embedding size {size}, got {dims}")
    total = None
    for dim, weight in zip(dims, weights, strict=True):
        cut_args = tuple(_prefix(x, size, dim, normalize) for x in args)
        cut_kwargs = {k: _prefix(x, size, dim, normalize) for k, x in kwargs.items()}
        term = weight * loss(*cut_args, **cut_kwargs)
        total = term if total is None else total + term
    return total


class MatryoshkaLoss(nn.Module):
    """Module form of :func:`matryoshka_loss`: ``MatryoshkaLoss(loss, dims, weights=None,
    normalize=False)``, called with the wrapped loss's own arguments."""

    def __init__(
        self,
        loss: Callable[..., Tensor],
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be a callable loss (function or module), got {loss!r}")
        self.loss = loss
        self.dims, self.weights = _check_dims_weights(dims, weights)
        self.normalize = check_bool(normalize, "normalize")

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        return matryoshka_loss(self.loss, *args, dims=self.dims, weights=self.weights,
                               normalize=self.normalize, **kwargs)
