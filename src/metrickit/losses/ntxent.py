"""Softmax losses over a labelled batch at a temperature: NT-Xent / InfoNCE and supervised
contrastive (SupCon)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, masked_logsumexp, row_loss, softplus
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

    def terms(s, pos, neg, _params, _rows):
        z = s / temperature
        lse_n, has_n = masked_logsumexp(z, neg)
        per_pair = softplus(lse_n[:, None] - z) * (pos & has_n[:, None])
        return per_pair.sum(1), None

    loss, _ = row_loss(pairs, terms)
    count = pairs.positive.sum() if reduction == "mean" else None
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

    def terms(s, pos, neg, _params, _rows):
        z = s / temperature
        lse, _ = masked_logsumexp(z, pos | neg)
        n_pos = pos.sum(1)
        mean_pos = (z * pos).sum(1) / n_pos.clamp_min(1)
        loss = torch.where(n_pos > 0, lse - mean_pos, 0.0)
        return loss, (n_pos > 0)[:, None].to(s.dtype)

    loss, valid = row_loss(pairs, terms, aux_width=1)
    count = valid.sum() if reduction == "mean" else None
    return reduce(loss, reduction, count).to(embeddings.dtype)


@register_loss("ntxent", aliases=("nt_xent", "infonce", "info_nce"))
class NTXentLoss(PairRowsLoss):
    """Module form of :func:`ntxent_loss`."""

    functional = staticmethod(ntxent_loss)

    def __init__(self, temperature: float = 0.07, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")

    def hyper(self) -> tuple[object, ...]:
        return (self.temperature,)


@register_loss("supcon", aliases=("supervised_contrastive",))
class SupConLoss(PairRowsLoss):
    """Module form of :func:`supcon_loss`."""

    functional = staticmethod(supcon_loss)

    def __init__(self, temperature: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")

    def hyper(self) -> tuple[object, ...]:
        return (self.temperature,)
