"""Normalised softmax loss (Zhai & Wu, BMVC 2019): cross-entropy over scaled cosines."""

from __future__ import annotations

from torch import Tensor, nn

from .._validation import check_positive
from ._proxy import ProxyModule, class_softmax_loss
from ._registry import register_loss


def normalized_softmax_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    temperature: float = 0.05,
    reduction: str = "mean",
) -> Tensor:
    r"""Normalised softmax loss (cosine softmax, NormSoftmax).

    .. math:: \ell_i = -\log \frac{\exp(\cos(x_i, w_{y_i}) / T)}{\sum_c \exp(\cos(x_i, w_c) / T)}

    Paper: A. Zhai, H.-Y. Wu, "Classification is a Strong Baseline for Deep Metric Learning",
    BMVC 2019. Defaults: temperature T = 0.05, mean over samples.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C, D] class weights w_c (normalised inside, like the embeddings).
        temperature: T > 0 [0.05].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    temperature = check_positive(temperature, "temperature")
    return class_softmax_loss(
        embeddings, labels, proxies, lambda cos, _: cos / temperature, reduction
    )


@register_loss("normalized_softmax", aliases=("norm_softmax", "normsoftmax", "cosine_softmax"))
class NormalizedSoftmaxLoss(ProxyModule):
    """Module form of :func:`normalized_softmax_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes, embedding_dim] is initialised N(0, 1) (PML's default; only the
    directions enter the loss).
    """

    functional = staticmethod(normalized_softmax_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        temperature: float = 0.05,
        reduction: str = "mean",
    ) -> None:
        super().__init__(num_classes, embedding_dim, 1, nn.init.normal_, reduction)
        self.temperature = check_positive(temperature, "temperature")

    def hyper(self) -> tuple[object, ...]:
        return (self.temperature,)
