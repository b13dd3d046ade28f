"""ArcFace / additive angular margin loss (Deng et al., CVPR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_int, check_positive, check_real
from ._proxy import ProxyModule, class_softmax_loss
from ._registry import register_loss

# sin θ = sqrt(max(1 − cos²θ, ε)): finite gradients at θ = 0 and π, where d sin θ / d cos θ = ∓∞
_SIN_EPS = 1e-12


def _check_margin(margin: object) -> float:
    return check_real(margin, "margin", low=0.0, high=math.pi, high_inclusive=False)


def angular_margin_logits(cos: Tensor, labels: Tensor, margin: float, scale: float) -> Tensor:
    """s·cos with the own class's cos θ replaced by cos(θ + m), or by cos θ − m·sin m where
    θ > π − m (there cos(θ + m) would grow with θ; the fallback of the ArcFace code and PML).

    cos(θ + m) = cos θ cos m − sin θ sin m is computed without acos, with sin θ clamped away
    from 0, so θ = 0 and θ = π give finite gradients.
    """
    own = labels[:, None]
    c = cos.gather(1, own)
    sin = (1 - c * c).clamp_min(_SIN_EPS).sqrt()
    shifted = c * math.cos(margin) - sin * math.sin(margin)
    target = torch.where(c >= -math.cos(margin), shifted, c - margin * math.sin(margin))
    return (scale * cos).scatter_(1, own, scale * target)  # = scale · (cos, target scattered)


def arcface_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    margin: float = 0.5,
    scale: float = 64.0,
    reduction: str = "mean",
) -> Tensor:
    r"""ArcFace (additive angular margin) loss.

    .. math:: \ell_i = -\log \frac{e^{s \cos(\theta_{i,y_i} + m)}}
              {e^{s \cos(\theta_{i,y_i} + m)} + \sum_{c \ne y_i} e^{s \cos\theta_{i,c}}}

    with θ_{i,c} the angle between x_i and the class weight w_c; where θ > π − m the target
    logit is s (cos θ − m sin m) instead (keeps it decreasing in θ, as the ArcFace code).

    Paper: J. Deng, J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular Margin Loss for
    Deep Face Recognition", CVPR 2019. Defaults: m = 0.5 rad (28.6°), s = 64, mean over
    samples. Log-sum-exp throughout: no overflow at s = 64 in any dtype.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C, D] class weights w_c (normalised inside, like the embeddings).
        margin: m in radians, 0 ≤ m < π [0.5].
        scale: s > 0 [64].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    return subcenter_arcface_loss(embeddings, labels, proxies, 1, margin, scale, reduction)


@register_loss("arcface", aliases=("additive_angular_margin", "arc_face"))
class ArcFaceLoss(ProxyModule):
    """Module form of :func:`arcface_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes, embedding_dim] is initialised N(0, 1) (PML's default; only the
    directions enter the loss).
    """

    functional = staticmethod(arcface_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 0.5,
        scale: float = 64.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(num_classes, embedding_dim, 1, nn.init.normal_, reduction)
        self.margin = _check_margin(margin)
        self.scale = check_positive(scale, "scale")

    def hyper(self) -> tuple[object, ...]:
        return self.margin, self.scale


def subcenter_arcface_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    sub_centers: int = 3,
    margin: float = 0.5,
    scale: float = 64.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Sub-centre ArcFace loss: ArcFace on the nearest of K sub-centres of each class.

    .. math:: \cos\theta_{i,c} = \max_{k} \cos(x_i, w_{c,k}),

    then :func:`arcface_loss`'s formula on these cosines (the gradient goes to the nearest
    sub-centre of each class only; of tied ones, to the first, as ``torch.max`` and PML).

    Paper: J. Deng, J. Guo, T. Liu, M. Gong, S. Zafeiriou, "Sub-center ArcFace: Boosting Face
    Recognition by Large-Scale Noisy Web Faces", ECCV 2020. Defaults: K = sub_centers = 3,
    m = 0.5 rad, s = 64, mean over samples.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C·K, D] sub-centres, those of class c in rows c·K … c·K + K − 1.
        sub_centers: K ≥ 1 [3].
        margin: m in radians, 0 ≤ m < π [0.5].
        scale: s > 0 [64].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    sub_centers = check_int(sub_centers, "sub_centers", low=1)
    margin = _check_margin(margin)
    scale = check_positive(scale, "scale")
    return class_softmax_loss(
        embeddings, labels, proxies,
        lambda cos, y: angular_margin_logits(cos, y, margin, scale), reduction, sub_centers,
    )


@register_loss("subcenter_arcface", aliases=("sub_center_arcface", "subcenter_arc_face"))
class SubCenterArcFaceLoss(ProxyModule):
    """Module form of :func:`subcenter_arcface_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes·sub_centers, embedding_dim] (the sub-centres of class c in rows
    c·K … c·K + K − 1) is initialised N(0, 1) (PML's default).
    """

    functional = staticmethod(subcenter_arcface_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        sub_centers: int = 3,
        margin: float = 0.5,
        scale: float = 64.0,
        reduction: str = "mean",
    ) -> None:
        k = check_int(sub_centers, "sub_centers", low=1)
        super().__init__(num_classes, embedding_dim, k, nn.init.normal_, reduction)
        self.sub_centers = k
        self.margin = _check_margin(margin)
        self.scale = check_positive(scale, "scale")

    def hyper(self) -> tuple[object, ...]:
        return self.sub_centers, self.margin, self.scale
