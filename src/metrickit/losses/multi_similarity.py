"""Multi-similarity loss (Wang et al., CVPR 2019).

Also known as: MS loss. Its pair miner is :class:`metrickit.miners.MultiSimilarityMiner`.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from .._validation import check_positive, check_real, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, exp_negatives, row_loss, row_sum
from ._registry import register_loss


def multi_similarity_loss(
    embeddings: Tensor,
    labels: Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    reduction: str = "mean",
    *,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> Tensor:
    r"""Multi-similarity loss over the pairs of a labelled batch, per anchor i:

    .. math:: \ell_i = \frac1\alpha \log\Big[1 + \sum_{p \in P_i}
              e^{-\alpha (S_{ip} - \lambda)}\Big]
              + \frac1\beta \log\Big[1 + \sum_{n \in N_i} e^{\beta (S_{in} - \lambda)}\Big]

    with S the cosine similarity, P_i / N_i anchor i's positives / negatives (the pairs of
    ``indices_tuple`` only, when given: the paper mines them with
    :class:`~metrickit.miners.MultiSimilarityMiner`) and λ = ``base``. ``"mean"`` averages ℓ_i
    over all B anchors, ``"none"`` returns ℓ [B].

    Paper: X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss with General
    Pair Weighting for Deep Metric Learning", CVPR 2019. Defaults α = 2, β = 50, λ = 0.5 (the
    paper's and PML's). References: see :class:`~metrickit.losses._base.BatchLoss`.
    """
    alpha = check_positive(alpha, "alpha")
    beta = check_positive(beta, "beta")
    base = check_real(base, "base")
    check_reduction(reduction)
    pairs = cosine_pairs(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)

    def terms(s, block, _params, want, _grad_params):
        b = s.shape[0]
        r, c = block.pos_r, block.pos_c
        v = -alpha * (s[r, c] - base)
        # push: (1/β) log(1 + Σ_n exp(β(s_n − λ))) over the dense negatives
        e, top = exp_negatives(s, block, beta)
        shift = beta * (top - base)
        lift = shift.clamp_min(0)
        push_den = (-lift).exp() + (shift - lift).exp() * e.sum(1)
        push = (lift + push_den.log()) / beta
        # pull: (1/α) log(1 + Σ_p exp(−α(s_p − λ))) over the few positives
        top_p = s.new_zeros(b).scatter_reduce_(0, r, v, "amax")  # includes the 1 = e^0
        w = (v - top_p[r]).exp()
        pull_den = (-top_p).exp() + row_sum(w, r, b)
        pull = (top_p + pull_den.log()) / alpha
        if want:
            e.mul_(((shift - lift).exp() / push_den)[:, None])
            e[r, c] = -w / pull_den[r]
        return pull + push, None

    loss, _ = row_loss(pairs, terms, summed=reduction != "none")
    return reduce(loss, reduction).to(embeddings.dtype)


@register_loss("multi_similarity", aliases=("ms", "multisimilarity"))
class MultiSimilarityLoss(PairRowsLoss):
    """Module form of :func:`multi_similarity_loss`."""

    distance: ClassVar[str] = "cosine"  # scores cosine similarities (read by plots)

    functional = staticmethod(multi_similarity_loss)

    def __init__(
        self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.base = check_real(base, "base")

    def hyper(self) -> tuple[object, ...]:
        return (self.alpha, self.beta, self.base)
