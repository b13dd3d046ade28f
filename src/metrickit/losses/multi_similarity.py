"""Multi-similarity loss (Wang et al., CVPR 2019).

Also known as: MS loss. Its pair miner is :class:`metrickit.miners.MultiSimilarityMiner`.
"""

from __future__ import annotations

from torch import Tensor

from .._validation import check_positive, check_real, check_reduction, reduce
from ._pair_rows import PairRowsLoss, cosine_pairs, masked_logsumexp, row_loss
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

    def terms(s, pos, neg, _params, _rows):
        pull, _ = masked_logsumexp(-alpha * (s - base), pos, add_one=True)
        push, _ = masked_logsumexp(beta * (s - base), neg, add_one=True)
        return pull / alpha + push / beta, None

    loss, _ = row_loss(pairs, terms)
    return reduce(loss, reduction).to(embeddings.dtype)


@register_loss("multi_similarity", aliases=("ms", "multisimilarity"))
class MultiSimilarityLoss(PairRowsLoss):
    """Module form of :func:`multi_similarity_loss`."""

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
