"""Contrastive loss for siamese networks (Hadsell, Chopra & LeCun 2006).

Also known as: pairwise ranking loss, margin loss (pair form), siamese loss.
"""

from __future__ import annotations

from torch import Tensor

from .._validation import (
    check_embeddings,
    check_labels,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from ..distances import pairwise_distance, rowwise_distance
from ..masks import upper_triangle
from ._base import Loss
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
    dissimilar one (the convention of seed 000). ``reduction="mean"`` gives
    1/(2N) Σ[...], i.e. the seed's ``sum / batch_size / 2``.

    Paper: R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006.

    Args:
        x1, x2: [N, D] embeddings of the two sides of each pair.
        y: [N] pair labels, 1 (similar) or 0 (dissimilar); bool, int or float.
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
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    d = rowwise_distance(x1, x2, distance)
    return reduce(_contrastive_term(d, y, margin), reduction).to(x1.dtype)


def batch_contrastive_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 1.0,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""Contrastive loss over every unordered pair i < j of a labelled batch.

    Each pair contributes ½[y_ij d_ij² + (1 − y_ij) max(m − d_ij, 0)²] with y_ij = [labels equal];
    ``reduction="mean"`` divides by the number of pairs B(B−1)/2; ``"none"`` returns the
    per-pair terms in row-major order of the upper triangle. A batch of one sample has no pair and
    gives 0.

    Paper: Hadsell, Chopra & LeCun, CVPR 2006. Defaults: margin=1.0, Euclidean distance.
    """
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    d = pairwise_distance(embeddings, distance=distance)
    iu = upper_triangle(embeddings.shape[0], embeddings.device)
    similar = (labels[:, None] == labels[None, :])[iu]
    return reduce(_contrastive_term(d[iu], similar, margin), reduction).to(embeddings.dtype)


class ContrastiveLoss(Loss):
    """Module form of :func:`contrastive_loss`; ``forward(x1, x2, y)``."""

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.distance = distance

    def forward(self, x1: Tensor, x2: Tensor, y: Tensor) -> Tensor:
        return contrastive_loss(x1, x2, y, self.margin, self.distance, self.reduction)


@register_loss("contrastive", aliases=("pairwise_ranking", "siamese"))
class BatchContrastiveLoss(Loss):
    """Module form of :func:`batch_contrastive_loss`; ``forward(embeddings, labels)``."""

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.distance = distance

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return batch_contrastive_loss(
            embeddings, labels, self.margin, self.distance, self.reduction
        )
