"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017) with the ProxyNCA++ temperature (Teh et al.)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive, check_reduction, reduce
from ..distances import unit_rows
from ._proxy import ProxyModule, check_proxy_inputs, cross_entropy_terms
from ._registry import register_loss


def proxy_nca_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    temperature: float = 1 / 9,
    reduction: str = "mean",
) -> Tensor:
    r"""ProxyNCA loss with a temperature (ProxyNCA++ form).

    .. math:: \ell_i = -\log \frac{\exp(-d(\hat x_i, \hat p_{y_i}) / T)}
              {\sum_{c} \exp(-d(\hat x_i, \hat p_c) / T)},
              \qquad d(u, v) = \lVert u - v \rVert_2^2

    with x̂, p̂ the L2-normalised embeddings and proxies (one proxy per class). The denominator
    runs over every proxy, the sample's own included, as in ProxyNCA++ (the original ProxyNCA
    left it out).

    Papers: Y. Movshovitz-Attias, A. Toshev, T. Leung, S. Ioffe, S. Singh, "No Fuss Distance
    Metric Learning using Proxies", ICCV 2017; E. W. Teh, T. DeVries, G. W. Taylor,
    "ProxyNCA++: Revisiting and Revitalizing Proxy Neighborhood Component Analysis", ECCV 2020
    (temperature T = 1/9). Defaults: temperature=1/9, mean over samples.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C, D] class proxies.
        temperature: T > 0 [1/9].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    labels, _, dtype = check_proxy_inputs(embeddings, labels, proxies)
    temperature = check_positive(temperature, "temperature")
    check_reduction(reduction)
    x, p = unit_rows(embeddings.to(dtype)), unit_rows(proxies.to(dtype))
    # −‖x̂ − p̂‖² up to the per-row constant ‖x̂‖², which the softmax ignores
    logits = (2 * (x @ p.T) - (p * p).sum(1)) / temperature
    return reduce(cross_entropy_terms(logits, labels), reduction).to(embeddings.dtype)


@register_loss("proxy_nca", aliases=("proxynca", "proxy_nca_pp", "proxynca_pp"))
class ProxyNCALoss(ProxyModule):
    """Module form of :func:`proxy_nca_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes, embedding_dim] is initialised N(0, 1) / 8 as in the ProxyNCA++
    code (proxies of norm about √D / 8; only their directions enter the loss).
    """

    functional = staticmethod(proxy_nca_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        temperature: float = 1 / 9,
        reduction: str = "mean",
    ) -> None:
        super().__init__(num_classes, embedding_dim, 1, _randn_over_8, reduction)
        self.temperature = check_positive(temperature, "temperature")

    def hyper(self) -> tuple[object, ...]:
        return (self.temperature,)


def _randn_over_8(w: Tensor) -> None:
    w.copy_(torch.randn_like(w) / 8)
