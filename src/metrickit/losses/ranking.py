"""Ranking losses on scores (recommenders, search): pairwise hinge, BPR and WARP.

They take model *scores* (higher = more relevant), not embeddings, and are not trainable from a
labelled batch alone, so they are not in the loss registry.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .._kernels import sort_rows, sum_below
from .._validation import (
    check_bool,
    check_floating,
    check_nonnegative,
    check_positive_int,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
    reduce,
)
from ._base import Loss

_EULER_GAMMA = 0.5772156649015329


def _score_gap(s_pos: Tensor, s_neg: Tensor) -> tuple[Tensor, torch.dtype]:
    """s_neg − s_pos in the compute dtype, broadcast as documented in :func:`pairwise_hinge_loss`,
    and the dtype to return the loss in."""
    check_floating(s_pos, "s_pos")
    check_floating(s_neg, "s_neg")
    if s_neg.dim() == s_pos.dim() + 1 and s_neg.shape[:-1] == s_pos.shape:
        s_pos = s_pos.unsqueeze(-1)  # several negatives per positive, along the last axis
    try:
        torch.broadcast_shapes(s_pos.shape, s_neg.shape)
    except RuntimeError:
        raise ValueError(
            f"s_pos and s_neg must be broadcastable (or s_neg = s_pos's shape plus a trailing "
            f"negatives axis), got s_pos {tuple(s_pos.shape)} and s_neg {tuple(s_neg.shape)}"
        ) from None
    out = torch.promote_types(s_pos.dtype, s_neg.dtype)
    dtype = torch.promote_types(out, torch.float32)
    return s_neg.to(dtype) - s_pos.to(dtype), out


def pairwise_hinge_loss(
    s_pos: Tensor, s_neg: Tensor, margin: float = 1.0, reduction: str = "mean"
) -> Tensor:
    r"""Pairwise hinge (margin ranking) loss on scores.

    .. math:: \ell = \max(0,\ m - s^+ + s^-)

    with s⁺ = score of a relevant item, s⁻ = score of an irrelevant one for the same query (e.g.
    ⟨u, d⁺⟩ and ⟨u, d⁻⟩). Also known as margin ranking loss or hinge loss for search.

    Broadcasting: if ``s_neg`` has exactly one more dimension than ``s_pos`` and its leading
    dimensions equal ``s_pos``'s shape, the last axis holds several negatives for each positive
    (s_pos [N], s_neg [N, S] → [N, S] terms). Otherwise the usual torch broadcasting applies
    (s_pos [N] with s_neg [N], or s_pos [N, 1] with s_neg [N, S]). ``reduction`` acts on the
    broadcast terms.

    Args:
        s_pos, s_neg: floating score tensors.
        margin: m ≥ 0 [1.0].
        reduction: "mean" | "sum" | "none" ["mean"].
    """
    margin = check_nonnegative(margin, "margin")
    check_reduction(reduction)
    gap, out = _score_gap(s_pos, s_neg)
    return reduce((margin + gap).clamp_min(0), reduction).to(out)


def bpr_loss(s_pos: Tensor, s_neg: Tensor, reduction: str = "mean") -> Tensor:
    r"""Bayesian Personalized Ranking loss on scores.

    .. math:: \ell = \log(1 + e^{s^- - s^+}) = \operatorname{softplus}(s^- - s^+)
                   = -\log \sigma(s^+ - s^-)

    the negative log-likelihood that the relevant item outranks the irrelevant one (no margin).
    Computed with ``softplus``: finite for any gap, ≈ gap for large positive gaps and ≈ e^{gap}
    (down to 0) for large negative ones. Broadcasting as in :func:`pairwise_hinge_loss`.

    Paper: S. Rendle, C. Freudenthaler, Z. Gantner, L. Schmidt-Thieme, "BPR: Bayesian Personalized
    Ranking from Implicit Feedback", UAI 2009. Defaults: reduction="mean".
    """
    check_reduction(reduction)
    gap, out = _score_gap(s_pos, s_neg)
    return reduce(F.softplus(gap), reduction).to(out)


def warp_rank_weight(k: Tensor) -> Tensor:
    """WARP's rank weight Φ(k) = Σ_{t=1..k} 1/t = ψ(k + 1) + γ (0 for k = 0), elementwise."""
    return torch.digamma(k + 1) + _EULER_GAMMA


def _relevant_mask(relevant: Tensor | None, positives: Tensor | None) -> Tensor:
    """``relevant``, or the deprecated spelling ``positives`` (a mask, not embeddings as the
    ``positives`` of the other losses)."""
    if positives is not None:
        if relevant is not None:
            raise TypeError("give the relevance mask once: relevant= (positives= is deprecated)")
        warnings.warn(
            "warp_loss's positives= is deprecated, use relevant= (the mask of relevant items)",
            DeprecationWarning,
            stacklevel=3,
        )
        return positives
    if relevant is None:
        raise TypeError("warp_loss needs relevant, the [Q, I] bool mask of relevant items")
    return relevant


def _check_warp_inputs(scores: object, relevant: object) -> None:
    check_floating(scores, "scores", ndim=2)
    relevant = check_tensor(relevant, "relevant")
    if relevant.dtype != torch.bool:
        raise TypeError(f"relevant must be a bool mask, got dtype {relevant.dtype}")
    check_same_shape({"scores": scores, "relevant": relevant})


def _warp_exact(s: Tensor, pos: Tensor, margin: float) -> Tensor:
    """[Q, I] terms Φ(r)/r · Σ_violators (m − s_qi + s_qj) for every entry (q, i)."""
    # Negatives of each row sorted by decreasing score (increasing −s): the violators of (q, i)
    # are a prefix, s_qj > s_qi − m  ⇔  −s_qj < −(s_qi − m).
    r, neg_sum = sum_below(sort_rows(-s, ~pos), -(s - margin))
    violation = r * (margin - s) - neg_sum
    r = r.to(s.dtype)
    return warp_rank_weight(r) / r.clamp_min(1) * violation


def _warp_sampled(
    s: Tensor, pos: Tensor, margin: float, max_sampled: int, generator: torch.Generator | None
) -> Tensor:
    """[T] sampled terms Φ(r)·(m − s_qi + s_qj*), one per True entry of ``pos`` (row-major)."""
    q, i = pos.nonzero(as_tuple=True)  # T terms: the shape of the random block depends on it
    n_neg = (~pos).sum(1)
    neg_items = torch.argsort(pos.to(torch.uint8), dim=1, stable=True)  # negatives first
    draws = (
        torch.randint(0, 2**62, (q.shape[0], max_sampled), generator=generator, device=s.device)
        % n_neg[q].clamp_min(1)[:, None]
    )
    sampled = s[q[:, None], neg_items[q[:, None], draws]]  # [T, max_sampled]
    s_pos = s[q, i]
    violates = (sampled > (s_pos - margin)[:, None]) & (n_neg[q] > 0)[:, None]
    first = violates.to(torch.uint8).argmax(1)  # index of the first violator (0 if none)
    found = violates.any(1)
    r = torch.div(n_neg[q], first + 1, rounding_mode="floor").clamp_min(1).to(s.dtype)
    term = warp_rank_weight(r) * (margin - s_pos + sampled.gather(1, first[:, None]).squeeze(1))
    return torch.where(found, term, torch.zeros_like(term))


def warp_loss(
    scores: Tensor,
    relevant: Tensor | None = None,
    margin: float = 1.0,
    max_sampled: int = 100,
    exact: bool = False,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    *,
    positives: Tensor | None = None,
) -> Tensor:
    r"""WARP (Weighted Approximate-Rank Pairwise) loss on a query × item score matrix.

    Each True entry (q, i) of ``relevant`` is one term; the negatives of q are the False entries
    of its row, a negative j *violates* if s_qj > s_qi − m. With Φ(k) = Σ_{t=1..k} 1/t:

    * sampled (default, the paper's algorithm, a stochastic estimate): draw up to ``max_sampled``
      negatives of q uniformly with replacement (one [T, max_sampled] block for all terms, from
      ``generator``) and take the first violator j; if it came at draw N, the rank estimate is
      r = max(1, ⌊|neg(q)| / N⌋) (a drawn violator proves r ≥ 1) and the term is
      Φ(r)·(m − s_qi + s_qj). If none was drawn the term is 0. Gradients flow to s_qi and s_qj.
    * ``exact=True`` (deterministic, for small catalogues): r = #violators and the term is
      Φ(r)/r · Σ_{violators j}(m − s_qi + s_qj) (0 if r = 0); O(Q·I log I).

    A query without negatives contributes terms of 0 (they count in the mean). ``reduction``:
    "mean" over the terms, "sum", or "none" for the terms in row-major order of ``relevant``.

    Paper: J. Weston, S. Bengio, N. Usunier, "WSABIE: Scaling Up To Large Vocabulary Image
    Annotation", IJCAI 2011.

    Args:
        scores: [Q, I] floating scores.
        relevant: [Q, I] bool mask of relevant items (``positives=`` is its deprecated name).
        margin: m ≥ 0 [1.0].
        max_sampled: draws per term in sampled mode [100].
        exact: use the exact rank instead of sampling [False].
        generator: ``torch.Generator`` on the scores' device, for reproducible sampling [None].
        reduction: "mean" | "sum" | "none" ["mean"].
    """
    mask = _relevant_mask(relevant, positives)
    _check_warp_inputs(scores, mask)
    margin = check_nonnegative(margin, "margin")
    check_positive_int(max_sampled, "max_sampled")
    exact = check_bool(exact, "exact")
    if generator is not None and not isinstance(generator, torch.Generator):
        kind = type(generator).__name__
        raise TypeError(f"generator must be a torch.Generator or None, got {kind}")
    check_reduction(reduction)
    s = scores.to(compute_dtype(scores))
    if not exact:
        terms = _warp_sampled(s, mask, margin, max_sampled, generator)
        return reduce(terms, reduction).to(scores.dtype)
    terms = _warp_exact(s, mask, margin)
    if reduction == "none":
        return terms[mask].to(scores.dtype)
    terms = torch.where(mask, terms, torch.zeros_like(terms))
    return reduce(terms, reduction, weight_count=mask.sum()).to(scores.dtype)


class PairwiseHingeLoss(Loss):
    """Module form of :func:`pairwise_hinge_loss`; ``forward(s_pos, s_neg)``."""

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")

    def forward(self, s_pos: Tensor, s_neg: Tensor) -> Tensor:
        return pairwise_hinge_loss(s_pos, s_neg, self.margin, self.reduction)


class BPRLoss(Loss):
    """Module form of :func:`bpr_loss`; ``forward(s_pos, s_neg)``."""

    def forward(self, s_pos: Tensor, s_neg: Tensor) -> Tensor:
        return bpr_loss(s_pos, s_neg, self.reduction)


class WARPLoss(Loss):
    """Module form of :func:`warp_loss`; ``forward(scores, relevant, generator=None)``."""

    def __init__(
        self,
        margin: float = 1.0,
        max_sampled: int = 100,
        exact: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.max_sampled = check_positive_int(max_sampled, "max_sampled")
        self.exact = check_bool(exact, "exact")

    def forward(
        self,
        scores: Tensor,
        relevant: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        positives: Tensor | None = None,
    ) -> Tensor:
        return warp_loss(
            scores, _relevant_mask(relevant, positives), self.margin, self.max_sampled,
            self.exact, generator, self.reduction,
        )
