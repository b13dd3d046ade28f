"""Tuplet margin loss (Yu & Tao, ICCV 2019)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .._validation import check_positive, check_real, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, row_loss, softmax_over_negatives
from ._registry import register_loss


def tuplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 5.73,
    scale: float = 64.0,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Tuplet margin loss over a labelled batch, per positive pair (i, p):

    .. math:: \ell_{ip} = \log\Big[1 + \sum_{n \in N_i}
              e^{s\,(\cos\theta_{in} - \cos(\theta_{ip} - \beta))}\Big]

    with θ the angle between the two embeddings, β the margin (in degrees) and s the scale.
    cos(θ − β) is computed as cos θ cos β + sin θ sin β (exact, with a zero derivative of
    sin θ at θ = 0, so identical embeddings give no NaN). ``"mean"`` averages over all positive
    pairs; ``"none"`` returns per anchor the sum of its ℓ_ip [B].

    Paper: B. Yu, D. Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019. Defaults
    β = 5.73° (0.1 rad), s = 64 (the paper's and PML's); the paper's intra-pair variance term is
    not included (as in PML). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    margin = check_real(margin, "margin", low=0.0, high=180.0)
    scale = check_positive(scale, "scale")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    cos_m, sin_m = math.cos(math.radians(margin)), math.sin(math.radians(margin))

    def shifted(sp):  # s·cos(θ − β) and its derivative in cos θ (0 where sin θ = 0)
        c = sp.clamp(-1, 1)
        sin = (1 - c * c).clamp_min(0).sqrt()
        slope = cos_m - torch.where(sin > 0, c / torch.where(sin > 0, sin, 1.0), 0.0) * sin_m
        inside = (sp >= -1) & (sp <= 1)
        return scale * (c * cos_m + sin * sin_m), torch.where(inside, scale * slope, 0.0)

    def terms(s, block, _params, want, _grad_params):
        return softmax_over_negatives(s, block, scale, shifted, want), None

    loss, _ = row_loss(pairs, terms, summed=reduction != "none")
    count = pairs.num_positive if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


@register_loss("tuplet_margin", aliases=("tuplet",))
class TupletMarginLoss(PairRowsLoss):
    """Module form of :func:`tuplet_margin_loss`."""

    distance: ClassVar[str] = "cosine"  # scores cosine similarities (read by plots)

    functional = staticmethod(tuplet_margin_loss)

    def __init__(self, margin: float = 5.73, scale: float = 64.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = check_real(margin, "margin", low=0.0, high=180.0)
        self.scale = check_positive(scale, "scale")

    def hyper(self) -> tuple[object, ...]:
        return (self.margin, self.scale)
