"""Shared machinery of the proxy losses: input checks, the class-vector parameter, cosines.

Every proxy loss keeps its class vectors in one ``nn.Parameter`` named ``proxies`` of shape
[C·k, D]: k vectors per class (k = 1 except for sub-centre ArcFace and SoftTriple), the k vectors
of class c in rows c·k … c·k + k − 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn import functional as F

from .._kernels import COSINE_EPS
from .._validation import (
    check_embeddings,
    check_floating,
    check_int,
    check_labels,
    check_reduction,
    check_same_device,
    compute_dtype,
    reduce,
)
from ._base import ProxyLoss


def check_proxy_inputs(
    embeddings: Tensor, labels: Tensor, proxies: Tensor, per_class: int = 1, name: str = "proxies"
) -> tuple[Tensor, int, torch.dtype]:
    """Validate a proxy loss's inputs; returns (labels as int64, number of classes, dtype).

    ``proxies`` (called ``name`` in the messages) must be [C·per_class, D] with D the
    embeddings' width; labels must lie in [0, C) (checked on CPU; on accelerators an
    out-of-range id triggers a device-side indexing error). The dtype is the one the loss is
    computed in: at least float32, and float64 if either input is float64.
    """
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    check_floating(proxies, name, ndim=2)
    rows, dim = proxies.shape
    if dim != embeddings.shape[1] or rows == 0 or rows % per_class:
        what = "num_classes" if per_class == 1 else f"num_classes·{per_class}"
        raise ValueError(
            f"{name} must be [{what} >= {per_class}, {embeddings.shape[1]}] to match "
            f"embeddings, got shape {tuple(proxies.shape)}"
        )
    num_classes = rows // per_class
    if labels.device.type == "cpu" and labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must be class ids in [0, {num_classes}) (the {name} hold "
                f"{num_classes} classes), got values in [{lo}, {hi}]"
            )
    check_same_device({"embeddings": embeddings, "labels": labels, name: proxies})
    dtype = torch.promote_types(compute_dtype(embeddings), proxies.dtype)
    return labels.long(), num_classes, dtype


def cosines(embeddings: Tensor, proxies: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, C·k] cosine similarities (a zero row has cosine 0 with everything, finite gradient)."""
    return _UnitRows.apply(embeddings.to(dtype)) @ _UnitRows.apply(proxies.to(dtype)).T


class _UnitRows(torch.autograd.Function):
    """:func:`~metrickit.distances.unit_rows` (the same values) with the analytic backward
    ∂L/∂x = (g − u (u·g)) / ‖x‖, u = x / ‖x‖: three passes over [N, D] instead of autograd's
    seven (division, norm and clamp backward). A row with ‖x‖ < ε is divided by ε, a constant
    there, so its gradient is g / ε, as autograd's. Once differentiable."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        length = x.norm(dim=1, keepdim=True)
        norm = length.clamp_min(COSINE_EPS)
        unit = x / norm
        ctx.save_for_backward(unit, norm, length >= COSINE_EPS)
        return unit

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        unit, norm, unclamped = ctx.saved_tensors
        along = (unit * grad).sum(1, keepdim=True).mul_(unclamped)
        return (grad - unit * along).div_(norm)


def class_softmax_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    logits: Callable[[Tensor, Tensor], Tensor],
    reduction: str,
    per_class: int = 1,
) -> Tensor:
    """Softmax cross-entropy −log softmax(logits(cos, labels))_y over the classes, reduced.

    cos [B, C] are the cosines of the embeddings with the class vectors (with ``per_class`` = K
    sub-centres per class, with the nearest of them); ``logits`` maps them, and the labels, to
    the [B, C] logits (scale, margin on the own class). A log-sum-exp: no overflow at any scale.
    The hyper-parameters are validated by the caller; this checks the inputs and ``reduction``.
    """
    labels, num_classes, dtype = check_proxy_inputs(embeddings, labels, proxies, per_class)
    check_reduction(reduction)
    cos = cosines(embeddings, proxies, dtype)
    if per_class > 1:  # max with its index: the backward is one scatter (amax's is ~3× slower)
        cos = cos.view(-1, num_classes, per_class).max(2).values
    terms = cross_entropy_terms(logits(cos, labels), labels)
    return reduce(terms, reduction).to(embeddings.dtype)


def cross_entropy_terms(logits: Tensor, labels: Tensor) -> Tensor:
    """[B] softmax cross-entropy −log softmax(logits)_y (log-sum-exp: no overflow at any scale)."""
    return F.cross_entropy(logits, labels, reduction="none")


def additive_margin_logits(cos: Tensor, labels: Tensor, margin: float, scale: float) -> Tensor:
    """s·cos with m subtracted from each sample's own-class entry (CosFace's logits)."""
    own = labels[:, None]
    return scale * cos.scatter_add(1, own, cos.new_full(own.shape, -margin))


def log1p_sum_exp(z: Tensor, keep: Tensor, dim: int) -> Tensor:
    """log(1 + Σ exp(z)) over the kept entries along ``dim`` (0 with a zero gradient if none).

    Computed as a log-sum-exp with an extra zero entry, so it neither overflows at large scales
    nor gives NaN gradients where nothing is kept.
    """
    z = z.masked_fill(~keep, float("-inf"))
    zero = z.new_zeros(z.shape[:dim] + (1,) + z.shape[dim + 1 :])
    return torch.logsumexp(torch.cat([z, zero], dim), dim)


class ProxyModule(ProxyLoss):
    """A proxy loss module: validates the sizes and allocates ``proxies`` [C·k, D].

    ``init`` fills the [C·k, D] tensor in place (each loss states its paper's initialisation).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        per_class: int,
        init: Callable[[Tensor], object],
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.num_classes = check_int(num_classes, "num_classes", low=1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", low=1)
        self.proxies = nn.Parameter(torch.empty(self.num_classes * per_class, self.embedding_dim))
        with torch.no_grad():
            init(self.proxies)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}"
