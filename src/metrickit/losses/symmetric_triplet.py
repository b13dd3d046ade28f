"""Labelled symmetric triplet loss (from the Chinese blog article "ML基本知识(十六)损失函数",
"ML basics (16): loss functions", on recommender-system losses; it names no paper).

A tuple-form loss on explicit (anchor, positive, negative, label) rows; it is not a batch-form
loss and is not in the loss registry.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_bool,
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from ..distances import rowwise_distance
from ._base import Loss


def _resolve_hinge(soft: object, hinge: object) -> tuple[bool, bool]:
    """``(soft, raw)`` from the flags; ``hinge`` is the deprecated spelling of ``not soft``
    (``hinge=False`` meant the raw, unclamped form, kept for it only)."""
    soft = check_bool(soft, "soft")
    if hinge is None:
        return soft, False
    hinge = check_bool(hinge, "hinge")
    warnings.warn(
        "symmetric_triplet_loss's hinge= is deprecated: hinge=True is the default (soft=False); "
        "hinge=False (the raw, unbounded-below form) will be removed, use soft=True for a "
        "smooth form",
        DeprecationWarning,
        stacklevel=3,
    )
    return soft, not hinge


def symmetric_triplet_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    label: Tensor,
    margin: float = 1.0,
    soft: bool = False,
    reduction: str = "mean",
    *,
    hinge: bool | None = None,
) -> Tensor:
    r"""Symmetric triplet loss with a per-row label saying which pair is the matching one.

    With squared Euclidean distances ‖·‖²:

    * label = 1: x = 2‖p − a‖² − ‖p − n‖² − ‖a − n‖² + m (a and p match; both pushed from n);
    * label = 0: x = 2‖n − a‖² − ‖n − p‖² − ‖a − p‖² + m (a and n match; both pushed from p).

    Each term is the hinge max(0, x), or softplus(x) = ln(1 + eˣ) with ``soft=True`` (like the
    triplet loss's soft margin, but keeping m). The article's own code returns the raw x, which
    is unbounded below; the deprecated ``hinge=False`` still gives it.

    Source: the blog article "ML基本知识(十六)损失函数" ("ML basics (16): loss functions", a
    recommender-systems article that names no paper); defaults margin=1.0, hinge (soft=False).

    Args:
        anchor, positive, negative: [N, D] embeddings.
        label: [N] 1 or 0 per row (bool, int or float).
        margin: m ≥ 0 [1.0]. soft: softplus instead of the hinge [False].
        reduction: "mean" | "sum" | "none" (the [N] terms) ["mean"].
        hinge: deprecated; ``hinge=True`` is ``soft=False``, ``hinge=False`` the raw form.
    """
    soft, raw = _resolve_hinge(soft, hinge)
    return _symmetric_triplet(anchor, positive, negative, label, margin, soft, raw, reduction)


def _symmetric_triplet(
    anchor: Tensor, positive: Tensor, negative: Tensor, label: Tensor, margin: float,
    soft: bool, raw: bool, reduction: str,
) -> Tensor:
    for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        check_embeddings(x, name)
    check_same_shape({"anchor": anchor, "positive": positive, "negative": negative})
    check_tensor(label, "label")
    if label.dim() != 1 or label.shape[0] != anchor.shape[0]:
        raise ValueError(
            f"label must be 1-D with one entry per row ({anchor.shape[0]}), "
            f"got shape {tuple(label.shape)}"
        )
    if label.device.type == "cpu" and not bool(((label == 0) | (label == 1)).all()):
        raise ValueError("label must contain only 0 and 1")
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    d_ap = rowwise_distance(anchor, positive, "squared_euclidean")
    d_an = rowwise_distance(anchor, negative, "squared_euclidean")
    d_pn = rowwise_distance(positive, negative, "squared_euclidean")
    matched = torch.where(label.bool(), 2 * d_ap - d_an, 2 * d_an - d_ap)
    term = matched - d_pn + margin
    if not raw:
        term = F.softplus(term) if soft else term.clamp_min(0)
    return reduce(term, reduction).to(anchor.dtype)


class SymmetricTripletLoss(Loss):
    """Module form of :func:`symmetric_triplet_loss`;
    ``forward(anchor, positive, negative, label)``."""

    def __init__(
        self,
        margin: float = 1.0,
        soft: bool = False,
        reduction: str = "mean",
        *,
        hinge: bool | None = None,
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.soft, self.raw = _resolve_hinge(soft, hinge)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor, label: Tensor) -> Tensor:
        return _symmetric_triplet(
            anchor, positive, negative, label, self.margin, self.soft, self.raw, self.reduction
        )
