"""Triplet-center loss (He et al. 2018): distances to learnable class centres, not to samples."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_nonnegative, check_reduction, reduce
from ..distances import pairwise_distance
from ._proxy import ProxyModule, check_proxy_inputs
from ._registry import register_loss


def triplet_center_loss(
    embeddings: Tensor,
    labels: Tensor,
    centers: Tensor,
    margin: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet-center loss.

    .. math:: \ell_i = \max\bigl(0,\ D(f_i, c_{y_i}) + m - \min_{j \ne y_i} D(f_i, c_j)\bigr),
              \qquad D(f, c) = \tfrac12 \lVert f - c \rVert_2^2

    Paper: X. He, Y. Zhou, Z. Zhou, S. Bai, X. Bai, "Triplet-Center Loss for Multi-View 3D
    Object Retrieval", CVPR 2018. Defaults: margin=1.0, mean over samples.

    With a single centre there is no other class and every term is 0.

    Args:
        embeddings: [B, D] features f_i.
        labels: [B] class ids in [0, C). Checked on CPU; on accelerators an out-of-range id is
            not checked (it triggers a device-side indexing error).
        centers: [C, D] class centres c_j.
        margin: m ≥ 0 [1.0].
        reduction: "mean" | "sum" | "none" (the [B] terms) ["mean"].
    """
    labels, _, dtype = check_proxy_inputs(embeddings, labels, centers, name="centers")
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    dist = 0.5 * pairwise_distance(embeddings.to(dtype), centers.to(dtype), "squared_euclidean")
    own = labels[:, None]
    d_own = dist.gather(1, own).squeeze(1)
    other = torch.ones_like(dist, dtype=torch.bool).scatter_(1, own, False)
    d_other = dist.masked_fill(~other, float("inf")).amin(1)
    term = (d_own + margin - d_other).clamp_min(0)
    return reduce(term, reduction).to(embeddings.dtype)


@register_loss("triplet_center")
class TripletCenterLoss(ProxyModule):
    """Module form of :func:`triplet_center_loss` with learnable centres;
    ``forward(embeddings, labels)``.

    The centres are the :class:`~metrickit.losses._base.ProxyLoss` class vectors ``proxies``, an
    ``nn.Parameter`` [num_classes, embedding_dim] initialised N(0, 1) (``centers`` is the same
    parameter, the paper's name); train it with the model's optimiser (the paper also updates
    centres by gradient descent). State dicts saved with a ``centers`` entry still load.
    """

    functional = staticmethod(triplet_center_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(num_classes, embedding_dim, 1, nn.init.normal_, reduction)
        self.margin = check_nonnegative(margin, "margin")

    @property
    def centers(self) -> nn.Parameter:
        return self.proxies

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        if prefix + "centers" in state_dict and prefix + "proxies" not in state_dict:
            state_dict[prefix + "proxies"] = state_dict.pop(prefix + "centers")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def hyper(self) -> tuple[object, ...]:
        return (self.margin,)
