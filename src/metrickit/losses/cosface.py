"""CosFace / large margin cosine loss (Wang et al., CVPR 2018): an additive cosine margin."""

from __future__ import annotations

from torch import Tensor, nn

from .._validation import check_nonnegative, check_positive
from ._proxy import ProxyModule, additive_margin_logits, class_softmax_loss
from ._registry import register_loss


def cosface_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    margin: float = 0.35,
    scale: float = 64.0,
    reduction: str = "mean",
) -> Tensor:
    r"""CosFace (large margin cosine) loss.

    .. math:: \ell_i = -\log \frac{e^{s (\cos\theta_{i,y_i} - m)}}
              {e^{s (\cos\theta_{i,y_i} - m)} + \sum_{c \ne y_i} e^{s \cos\theta_{i,c}}}

    with θ_{i,c} the angle between x_i and the class weight w_c.

    Paper: H. Wang, Y. Wang, Z. Zhou, X. Ji, D. Gong, J. Zhou, Z. Li, W. Liu, "CosFace: Large
    Margin Cosine Loss for Deep Face Recognition", CVPR 2018. Defaults: m = 0.35, s = 64, mean
    over samples. Computed with a log-sum-exp: no overflow at any scale.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C, D] class weights w_c (normalised inside, like the embeddings).
        margin: m ≥ 0 [0.35].
        scale: s > 0 [64].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    margin = check_nonnegative(margin, "margin")
    scale = check_positive(scale, "scale")
    return class_softmax_loss(
        embeddings, labels, proxies,
        lambda cos, y: additive_margin_logits(cos, y, margin, scale), reduction,
    )


@register_loss("cosface", aliases=("large_margin_cosine", "lmcl", "additive_cosine_margin"))
class CosFaceLoss(ProxyModule):
    """Module form of :func:`cosface_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes, embedding_dim] is initialised N(0, 1) (PML's default; only the
    directions enter the loss).
    """

    functional = staticmethod(cosface_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 0.35,
        scale: float = 64.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(num_classes, embedding_dim, 1, nn.init.normal_, reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.scale = check_positive(scale, "scale")

    def hyper(self) -> tuple[object, ...]:
        return self.margin, self.scale
