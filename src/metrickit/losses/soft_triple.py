"""SoftTriple loss (Qian et al., ICCV 2019): a softmax over classes with several centres each."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from .._validation import (
    check_int,
    check_nonnegative,
    check_positive,
    check_reduction,
    reduce,
)
from ..distances import unit_rows
from ._proxy import (
    ProxyModule,
    additive_margin_logits,
    check_proxy_inputs,
    cosines,
    cross_entropy_terms,
)
from ._registry import register_loss

# the SoftTriple code's constant under the square root of the centre regulariser
_REG_EPS = 1e-5


def soft_triple_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    centers_per_class: int = 10,
    la: float = 20.0,
    gamma: float = 0.1,
    tau: float = 0.2,
    margin: float = 0.01,
    reduction: str = "mean",
) -> Tensor:
    r"""SoftTriple loss with its centre regulariser.

    .. math:: S_{i,c} = \sum_k \frac{e^{s_{i,c,k} / \gamma}}{\sum_{k'} e^{s_{i,c,k'} / \gamma}}
              s_{i,c,k}, \qquad
              \ell_i = -\log \frac{e^{\lambda (S_{i,y_i} - \delta)}}
              {e^{\lambda (S_{i,y_i} - \delta)} + \sum_{c \ne y_i} e^{\lambda S_{i,c}}}
              + \tau R, \qquad
              R = \frac{\sum_c \sum_{k < k'} \sqrt{2 + \epsilon - 2 \cos(w_{c,k}, w_{c,k'})}}
              {C K (K - 1)}

    with s_{i,c,k} the cosine of x_i and centre k of class c, K = centers_per_class and
    ε = 1e-5 (as the paper's code). R, which pulls a class's centres together so that
    redundant ones merge, is 0 when K = 1; it is part of every sample's term.

    Paper: Q. Qian, L. Shang, B. Sun, J. Hu, H. Li, R. Jin, "SoftTriple Loss: Deep Metric
    Learning Without Triplet Sampling", ICCV 2019. Defaults: K = 10, λ = la = 20, γ = 0.1,
    τ = 0.2, δ = margin = 0.01, mean over samples.

    Args:
        embeddings: [B, D].
        labels: [B] class ids in [0, C).
        proxies: [C·K, D] centres, those of class c in rows c·K … c·K + K − 1.
        centers_per_class: K ≥ 1 [10].
        la: λ > 0, the scale of the class similarities [20].
        gamma: γ > 0, the temperature of the softmax over a class's centres [0.1].
        tau: τ ≥ 0, the weight of the regulariser R [0.2].
        margin: δ ≥ 0 [0.01].
        reduction: "mean" | "sum" | "none" (the [B] terms, each including τR) ["mean"].
    """
    k = check_int(centers_per_class, "centers_per_class", low=1)
    labels, num_classes, dtype = check_proxy_inputs(embeddings, labels, proxies, k)
    la = check_positive(la, "la")
    gamma = check_positive(gamma, "gamma")
    tau = check_nonnegative(tau, "tau")
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    # centre-major columns (centre j of every class together): the softmax over a class's
    # centres runs along dim 1 of [B, K, C], which is ~2× faster than along a last dim of 10
    by_centre = proxies.view(num_classes, k, -1).transpose(0, 1).reshape(k * num_classes, -1)
    sims = cosines(embeddings, by_centre, dtype).view(-1, k, num_classes)
    relaxed = _RelaxedMax.apply(sims, gamma)
    terms = cross_entropy_terms(additive_margin_logits(relaxed, labels, margin, la), labels)
    if tau > 0 and k > 1:
        terms = terms + tau * _centre_spread(proxies.to(dtype), num_classes, k)
    return reduce(terms, reduction).to(embeddings.dtype)


class _RelaxedMax(torch.autograd.Function):
    """S = Σ_k softmax_k(s / γ) s_k over dim 1 of s [B, K, C], with the analytic gradient
    ∂S/∂s_k = p_k (1 + (s_k − S) / γ) (one fused pass instead of autograd's softmax
    backward). Once differentiable."""

    @staticmethod
    def forward(ctx: FunctionCtx, sims: Tensor, gamma: float) -> Tensor:
        prob = torch.softmax(sims / gamma, 1)
        relaxed = (prob * sims).sum(1)
        ctx.save_for_backward(sims, prob, relaxed)
        ctx.gamma = gamma
        return relaxed

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        sims, prob, relaxed = ctx.saved_tensors
        out = (sims - relaxed[:, None]).div_(ctx.gamma).add_(1).mul_(prob)
        return out.mul_(grad[:, None]), None


def _centre_spread(proxies: Tensor, num_classes: int, k: int) -> Tensor:
    """R: the mean distance between two centres of a class (halved, as in the paper's code)."""
    w = unit_rows(proxies).view(num_classes, k, -1)
    sims = (w @ w.transpose(1, 2)).clamp_max(1)
    upper = torch.ones(k, k, dtype=torch.bool, device=w.device).triu(1)
    dist = (2 + _REG_EPS - 2 * sims[:, upper]).sqrt()
    return dist.sum() / (num_classes * k * (k - 1))


@register_loss("soft_triple", aliases=("softtriple",))
class SoftTripleLoss(ProxyModule):
    """Module form of :func:`soft_triple_loss`; ``forward(embeddings, labels)``.

    ``proxies`` [num_classes·centers_per_class, embedding_dim] (the centres of class c in rows
    c·K … c·K + K − 1) is initialised as in the paper's code: U(−1/√(C·K), 1/√(C·K)) (its
    Kaiming-uniform init with a = √5 on the [D, C·K] layout).
    """

    functional = staticmethod(soft_triple_loss)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        centers_per_class: int = 10,
        la: float = 20.0,
        gamma: float = 0.1,
        tau: float = 0.2,
        margin: float = 0.01,
        reduction: str = "mean",
    ) -> None:
        k = check_int(centers_per_class, "centers_per_class", low=1)
        super().__init__(num_classes, embedding_dim, k, _uniform_over_rows, reduction)
        self.centers_per_class = k
        self.la = check_positive(la, "la")
        self.gamma = check_positive(gamma, "gamma")
        self.tau = check_nonnegative(tau, "tau")
        self.margin = check_nonnegative(margin, "margin")

    def hyper(self) -> tuple[object, ...]:
        return self.centers_per_class, self.la, self.gamma, self.tau, self.margin


def _uniform_over_rows(w: Tensor) -> None:
    bound = 1 / math.sqrt(w.shape[0])
    nn.init.uniform_(w, -bound, bound)
