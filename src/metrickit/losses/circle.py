"""Circle loss, pair-similarity form (Sun et al., CVPR 2020)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .._validation import check_positive, check_real, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, row_loss, row_sum, softplus
from ._registry import register_loss

# Largest γm² for which a row's exponents are shifted by their bound from the largest t alone
# (e^{−30} ≈ 1e-13: no term that matters underflows, even in float32)
_SHIFT_SLACK = 30.0


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

    # the exponents z_n = γ(t² − m²) of a row lie in [−γm², ...]; without the extra pass for
    # the smallest t the row's shift may sit up to γm² above its largest z_n (fine while
    # e^{−γm²} is far from underflow)
    exact_shift = gamma * m * m > _SHIFT_SLACK
    # e^z at or below the smallest normal float costs the CPU 7-50 times a normal exp; such
    # terms are below the rounding of every sum they enter (each row's is ≥ e^{−30}), so they
    # are raised to e times it
    tiny_exponent = math.log(torch.finfo(pairs.anchors.dtype).tiny) + 1

    def terms(s, block, _params, want, _grad_params):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        sp = s[r, c]
        # negatives (dense, 7 passes): α_n = [s_n + m]₊ is a constant, so with t = max(s_n, −m)
        # z_n = γ α_n (s_n − m) = γ (t² − m²) and dz_n/ds_n = γ α_n = γ (t + m). The columns
        # that are not negatives get t = 0 (z = −γm², no row's largest) and e = 0.
        t = block.drop_non_negatives(s.clamp_min_(-m), 0.0)
        top_t = t.amax(1)
        if exact_shift:
            peak = torch.maximum(top_t.square(), t.amin(1).square())
        else:
            peak = top_t.clamp_min(abs(m)).square()
        top_n = gamma * (peak - m * m)  # ≥ every z_n of the row, and = the largest when exact
        low = -gamma * m * m - top_n  # each row's least exponent (at t = 0)
        e = torch.addcmul(low[:, None], t, t, value=gamma, out=block.work)
        if bool(low.min() < tiny_exponent):  # keep exp out of its slow subnormal range
            e.clamp_min_(tiny_exponent)
        e = block.drop_non_negatives(e.exp_(), 0.0)
        total_n = e.sum(1)
        has_n = total_n > 0
        # positives (sparse): z_p = −γ α_p (s_p − 1 + m), α_p = [1 + m − s_p]₊ a constant
        alpha_p = (1 + m - sp).clamp_min(0)
        z_p = -gamma * alpha_p * (sp - 1 + m)
        top_p = s.new_full((b,), float("-inf")).scatter_reduce_(0, r, z_p, "amax")
        has_p = torch.isfinite(top_p)
        top_p = torch.where(has_p, top_p, 0.0)
        w = (z_p - top_p[r]).exp()
        total_p = row_sum(w, r, b)
        valid = has_p & has_n
        joint = top_p + top_n + (total_p * total_n).clamp_min(1e-300).log()
        loss = torch.where(valid, softplus(joint), 0.0)
        if want:
            # dℓ/dS = σ(joint)·γ/total_n · α_n e_n on a negative: the row factor goes to
            # block.scale, α_n e_n stays in S, and each positive's −σ·γ α_p w_p/total_p is
            # divided by the row factor (σ cancels: exact even where it underflows)
            weight = torch.where(valid, torch.sigmoid(joint), 0.0)
            block.scale.copy_(weight * gamma / torch.where(valid, total_n, 1.0))
            t.add_(m).mul_(e)
            ratio = torch.where(valid, total_n / torch.where(valid, total_p, 1.0), 0.0)
            t[r, c] = -ratio[r] * w * alpha_p
        return loss, valid[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1, summed=reduction != "none")
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
