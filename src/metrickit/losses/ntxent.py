"""Softmax losses over a labelled batch at a temperature: NT-Xent / InfoNCE and supervised
contrastive (SupCon)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .._validation import check_positive, check_reduction, reduce
from ._pair_rows import (
    PairRowsLoss,
    cosine_pairs,
    row_loss,
    row_sum,
    softmax_over_negatives,
)
from ._registry import register_loss


def ntxent_loss(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float = 0.07,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""NT-Xent (normalised temperature-scaled cross entropy) / InfoNCE over a labelled batch.

    Every positive pair (i, p) is a softmax classification of p among p and anchor i's negatives:

    .. math:: \ell_{ip} = -\log \frac{e^{s_{ip}/\tau}}{e^{s_{ip}/\tau} + \sum_{n \in N_i}
              e^{s_{in}/\tau}}

    with s the cosine similarity and τ the temperature. ``"mean"`` averages ℓ_ip over all
    positive pairs; ``"none"`` returns per anchor the sum of its ℓ_ip [B]. A SimCLR batch is two
    views per sample with the sample's index as label.

    Papers: A. van den Oord, Y. Li, O. Vinyals, "Representation Learning with Contrastive
    Predictive Coding", 2018 (InfoNCE); T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple
    Framework for Contrastive Learning of Visual Representations", ICML 2020 (NT-Xent). Default
    τ = 0.07 (PML's, MoCo's). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    temperature = check_positive(temperature, "temperature")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)

    def terms(s, block, _params, want, _grad_params):
        loss = softmax_over_negatives(
            s, block, 1 / temperature, lambda sp: (sp / temperature, 1 / temperature), want
        )
        return loss, None

    loss, _ = row_loss(pairs, terms, summed=reduction != "none")
    count = pairs.num_positive if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Supervised contrastive loss (SupCon, the "L_out" form), per anchor i with positives:

    .. math:: \ell_i = -\frac{1}{|P_i|} \sum_{p \in P_i} \log \frac{e^{s_{ip}/\tau}}
              {\sum_{a \in P_i \cup N_i} e^{s_{ia}/\tau}}

    with s the cosine similarity and τ the temperature. An anchor without a positive has
    ℓ_i = 0; ``"mean"`` averages over the anchors with one, ``"none"`` returns ℓ [B].

    Paper: P. Khosla, P. Teterwak, C. Wang, A. Sarna, Y. Tian, P. Isola, A. Maschinot, C. Liu,
    D. Krishnan, "Supervised Contrastive Learning", NeurIPS 2020 (Eq. 2). Default τ = 0.1 (the
    paper's and PML's). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    temperature = check_positive(temperature, "temperature")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)

    def terms(s, block, _params, want, _grad_params):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        sp = s[r, c]
        # candidates: the dense negatives and the few positives, one softmax
        block.drop_non_negatives(s, float("-inf"))
        top = s.amax(1).scatter_reduce_(0, r, sp, "amax")
        top = torch.where(torch.isfinite(top), top, 0.0)
        e = s.sub_(top[:, None]).mul_(1 / temperature).exp_()
        e_pos = ((sp - top[r]) * (1 / temperature)).exp()
        total = e.sum(1) + row_sum(e_pos, r, b)
        n_pos = row_sum(torch.ones_like(sp), r, b)
        valid = n_pos > 0
        mean_pos = row_sum(sp, r, b) / n_pos.clamp_min(1)
        lse = top + total.clamp_min(torch.finfo(s.dtype).tiny).log() * temperature
        loss = torch.where(valid, (lse - mean_pos) / temperature, 0.0)
        if want:
            coef = torch.where(valid, 1 / (temperature * total.clamp_min(1e-30)), 0.0)
            e.mul_(coef[:, None])
            e[r, c] = e_pos * coef[r] - 1 / (temperature * n_pos[r])
        return loss, valid[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1, summed=reduction != "none")
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


class _TemperatureSoftmaxLoss(PairRowsLoss):
    """Module form of a softmax loss over cosines at a temperature (its one hyper-parameter)."""

    distance: ClassVar[str] = "cosine"  # scores cosine similarities (read by plots)

    def __init__(self, temperature: float, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")

    def hyper(self) -> tuple[object, ...]:
        return (self.temperature,)


@register_loss("ntxent", aliases=("nt_xent", "infonce", "info_nce"))
class NTXentLoss(_TemperatureSoftmaxLoss):
    """Module form of :func:`ntxent_loss`."""

    functional = staticmethod(ntxent_loss)

    def __init__(self, temperature: float = 0.07, reduction: str = "mean") -> None:
        super().__init__(temperature, reduction)


@register_loss("supcon", aliases=("supervised_contrastive",))
class SupConLoss(_TemperatureSoftmaxLoss):
    """Module form of :func:`supcon_loss`."""

    functional = staticmethod(supcon_loss)

    def __init__(self, temperature: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(temperature, reduction)
