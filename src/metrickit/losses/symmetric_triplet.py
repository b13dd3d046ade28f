"""Labelled symmetric triplet loss (seed 002).

A tuple-form loss on explicit (anchor, positive, negative, label) rows; it is not a batch-form
loss and is not in the loss registry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import (
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from ..distances import rowwise_distance
from ._base import Loss


def symmetric_triplet_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    label: Tensor,
    margin: float = 1.0,
    hinge: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""Symmetric triplet loss with a per-row label saying which pair is the matching one.

    With squared Euclidean distances ‖·‖²:

    * label = 1: 2‖p − a‖² − ‖p − n‖² − ‖a − n‖² + m (a and p match; both pushed from n);
    * label = 0: 2‖n − a‖² − ‖n − p‖² − ‖a − p‖² + m (a and n match; both pushed from p).

    ``hinge=True`` clamps each term at 0; ``hinge=False`` reproduces the seed article's raw
    per-example form, which is unbounded below (the margin keeps it from collapsing every
    embedding to one point, but nothing stops the pushed-away distances from growing).

    Source: seed 002 (a recommender-systems blog article, which names no paper); defaults
    margin=1.0, hinge=True.

    Args:
        anchor, positive, negative: [N, D] embeddings.
        label: [N] 1 or 0 per row (bool, int or float).
        margin: m ≥ 0 [1.0]. hinge: clamp at 0 [True].
        reduction: "mean" | "sum" | "none" (the [N] terms) ["mean"].
    """
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
    if hinge:
        term = term.clamp_min(0)
    return reduce(term, reduction).to(anchor.dtype)


class SymmetricTripletLoss(Loss):
    """Module form of :func:`symmetric_triplet_loss`;
    ``forward(anchor, positive, negative, label)``."""

    def __init__(self, margin: float = 1.0, hinge: bool = True, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.hinge = hinge

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor, label: Tensor) -> Tensor:
        return symmetric_triplet_loss(
            anchor, positive, negative, label, self.margin, self.hinge, self.reduction
        )
