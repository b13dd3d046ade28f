"""Circle loss, pair-similarity form (Sun et al., CVPR 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .._validation import check_positive, check_real, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, row_loss, row_sum, softplus
from ._registry import register_loss


def circle_loss(
    embeddings: Tensor,
    labels: Tensor,
    m: float = 0.25,
    gamma: float = 256.0,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Circle loss over the pairs of a labelled batch, per anchor i:

    .. math:: \ell_i = \log\Big[1 + \sum_{n \in N_i} e^{\gamma \alpha_n (s_n - \Delta_n)}
              \sum_{p \in P_i} e^{-\gamma \alpha_p (s_p - \Delta_p)}\Big]

    with s the cosine similarities of anchor i, α_p = [1 + m − s_p]₊ and α_n = [s_n + m]₊ (the
    self-paced weights, treated as constants in the gradient, as in the paper's implementation),
    Δ_p = 1 − m and Δ_n = m. An anchor without a positive or without a negative has ℓ_i = 0;
    ``"mean"`` averages over the anchors having both, ``"none"`` returns ℓ [B].

    Paper: Y. Sun, C. Cheng, Y. Zhang, C. Zhang, L. Zheng, Z. Wang, Y. Wei, "Circle Loss: A
    Unified Perspective of Pair Similarity Optimization", CVPR 2020 (Eq. 6). Defaults m = 0.25,
    γ = 256 (the paper's face-recognition setting; PML defaults to m = 0.4, γ = 80, the paper's
    fine-grained retrieval setting). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    m = check_real(m, "m")
    gamma = check_positive(gamma, "gamma")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)

    def terms(s, block, _params, want, _grad_params):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        sp = s[r, c]
        # negatives (dense): z_n = γ α_n (s_n − m), α_n = [s_n + m]₊ a constant
        slope_n = (s + m).clamp_min_(0).mul_(gamma)
        z_n = block.drop_non_negatives(s.sub_(m).mul_(slope_n), float("-inf"))
        top_n = z_n.amax(1)
        has_n = torch.isfinite(top_n)
        top_n = torch.where(has_n, top_n, 0.0)
        e = z_n.sub_(top_n[:, None]).exp_()
        total_n = e.sum(1)
        # positives (sparse): z_p = −γ α_p (s_p − 1 + m), α_p = [1 + m − s_p]₊ a constant
        slope_p = -gamma * (1 + m - sp).clamp_min(0)
        z_p = slope_p * (sp - 1 + m)
        top_p = s.new_full((b,), float("-inf")).scatter_reduce_(0, r, z_p, "amax")
        has_p = torch.isfinite(top_p)
        top_p = torch.where(has_p, top_p, 0.0)
        w = (z_p - top_p[r]).exp()
        total_p = row_sum(w, r, b)
        valid = has_p & has_n
        joint = top_p + top_n + (total_p * total_n).clamp_min(1e-300).log()
        loss = torch.where(valid, softplus(joint), 0.0)
        if want:
            weight = torch.where(valid, torch.sigmoid(joint), 0.0)
            coef = weight / torch.where(valid, total_n, 1.0)
            e.mul_(slope_n.mul_(coef[:, None]))
            e[r, c] = (weight / torch.where(valid, total_p, 1.0))[r] * w * slope_p
        return loss, valid[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1)
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


@register_loss("circle")
class CircleLoss(PairRowsLoss):
    """Module form of :func:`circle_loss`."""

    distance: ClassVar[str] = "cosine"  # scores cosine similarities (read by plots)

    functional = staticmethod(circle_loss)

    def __init__(self, m: float = 0.25, gamma: float = 256.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.m = check_real(m, "m")
        self.gamma = check_positive(gamma, "gamma")

    def hyper(self) -> tuple[object, ...]:
        return (self.m, self.gamma)
