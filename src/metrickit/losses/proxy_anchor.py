"""Proxy-Anchor loss (Kim et al., CVPR 2020): each proxy is an anchor against the whole batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_nonnegative, check_positive, check_reduction
from ._proxy import ProxyModule, check_proxy_inputs, cosines, log1p_sum_exp
from ._registry import register_loss


def proxy_anchor_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    margin: float = 0.1,
    alpha: float = 32.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Proxy-Anchor loss.

    .. math:: \ell = \frac{1}{|P^+|} \sum_{p \in P^+}
              \log\Bigl(1 + \sum_{x \in X_p^+} e^{-\alpha (s(x, p) - \delta)}\Bigr)
              + \frac{1}{|P|} \sum_{p \in P}
              \log\Bigl(1 + \sum_{x \in X_p^-} e^{\alpha (s(x, p) + \delta)}\Bigr)

    with s the cosine similarity, P the proxies (one per class), P⁺ those with a sample of their
    class in the batch, X_p^± the samples of p's class / of other classes.

    Paper: S. Kim, D. Kim, M. Cho, S. Kwak, "Proxy Anchor Loss for Deep Metric Learning",
    CVPR 2020. Defaults: δ = margin = 0.1, α = 32.

    Args:
        embeddings: [B, D] (normalised inside: only directions count).
        labels: [B] class ids in [0, C).
        proxies: [C, D] class proxies.
        margin: δ ≥ 0 [0.1].
        alpha: scale α > 0 [32].
        reduction: "mean" (the formula above), "sum" (both sums over proxies, undivided) or
            "none" (the [C] per-proxy terms, positive plus negative part) ["mean"].
    """
    labels, num_classes, dtype = check_proxy_inputs(embeddings, labels, proxies)
    margin = check_nonnegative(margin, "margin")
    alpha = check_positive(alpha, "alpha")
    check_reduction(reduction)
    cos = cosines(embeddings, proxies, dtype)
    pos = torch.nn.functional.one_hot(labels, num_classes).bool()
    pos_terms = log1p_sum_exp(-alpha * (cos - margin), pos, 0)
    neg_terms = log1p_sum_exp(alpha * (cos + margin), ~pos, 0)
    if reduction == "none":
        loss = pos_terms + neg_terms
    elif reduction == "sum":
        loss = pos_terms.sum() + neg_terms.sum()
    else:
        with_pos = pos.any(0).sum().clamp_min(1)
        loss = pos_terms.sum() / with_pos + neg_terms.sum() / num_classes
    return loss.to(embeddings.dtype)


@register_loss("proxy_anchor", aliases=("proxyanchor",))
class ProxyAnchorLoss(ProxyModule):
    """Module form of :func:`proxy_anchor_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes, embedding_dim] is initialised as in the paper's code (and PML):
    Kaiming normal with mode "fan_out", i.e. N(0, 2 / num_classes).
    """

    functional = staticmethod(proxy_anchor_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 0.1,
        alpha: float = 32.0,
        reduction: str = "mean",
    ) -> None:
        init = lambda w: nn.init.kaiming_normal_(w, mode="fan_out")  # noqa: E731
        super().__init__(num_classes, embedding_dim, 1, init, reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.alpha = check_positive(alpha, "alpha")

    def hyper(self) -> tuple[object, ...]:
        return self.margin, self.alpha
