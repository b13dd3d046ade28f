"""Contrastive loss for siamese networks (Hadsell, Chopra & LeCun 2006).

Also known as: pairwise ranking loss, margin loss (pair form), siamese loss.
"""

from __future__ import annotations

from torch import Tensor

from .._validation import (
    check_choice,
    check_embeddings,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    reduce,
)
from ..distances import DISTANCES, rowwise_distance
from ..masks import unordered_pair_mask
from ._base import BatchLoss, Loss
from ._pairs import IndicesTuple, batch_call, pair_masks_of, reference_distance
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

    Paper: Hadsell, Chopra & LeCun, CVPR 2006. Defaults: margin=1.0, Euclidean distance.
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    margin = check_nonnegative(margin, "margin")
    check_choice(distance, "distance", DISTANCES)
    check_reduction(reduction)
    d = reference_distance(embeddings, call.refs, distance)
    pos, neg = pair_masks_of(call)
    pairs = pos | neg
    if call.indices_tuple is None:
        b, m = d.shape
        pairs = pairs & unordered_pair_mask(b, m, call.refs.offset, d.device)
    terms = _contrastive_term(d[pairs], pos[pairs], margin)
    return reduce(terms, reduction).to(embeddings.dtype)


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
