"""One vectorised training step per loss, for a batch of B interactions (u, i⁺).

Each step returns the [B] loss terms and the vectors it used (for per-row L2). Scores are
s(u, i) = ⟨p_u, q_i⟩ + b_u + b_i; Φ(r) = Σ_{t≤r} 1/t is WARP's rank weight
(:func:`metrickit.losses.ranking.warp_rank_weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional import bpr_loss, pairwise_hinge_loss
from ..losses.ranking import warp_rank_weight as harmonic
from .models import Recommender
from .sampling import NegativeSampler

SOFTMAX_NEGATIVES = ("in_batch", "sampled")


def _dot(pu: Tensor, bu: Tensor, q: Tensor, b: Tensor) -> Tensor:
    if q.dim() == pu.dim() + 1:
        return torch.einsum("bd,bmd->bm", pu, q) + bu[:, None] + b
    return (pu * q).sum(-1) + bu + b


def warp_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor,
    margin: float, max_sampled: int, generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor]]:
    r"""Per-interaction sampled WARP (Weston, Bengio & Usunier, IJCAI 2011), vectorised.

    For each row (u, i⁺): draw ``max_sampled`` negatives of u at once, score them without
    gradient, take the first j with s_uj > s_ui − m (drawn at position N), estimate the rank
    r = max(1, ⌊n_neg(u) / N⌋) and return the term Φ(r)·max(0, m − s_ui + s_uj) through
    ``pairwise_hinge_loss`` (0 when no violator was drawn). Defaults (``FitConfig``): m = 1,
    max_sampled = 10 (LightFM's).

    Why not :func:`metrickit.losses.ranking.warp_loss`: it needs the full [Q, I] score matrix
    and scores all positives of a query; per-interaction training only needs the scores of M
    sampled items per row (B·M·D work instead of B·I·D) and a gradient for one pair. Φ and the
    rank estimate are the same. Returns the [B] terms and the vectors used (for L2).
    """
    pu, bu = model.user_repr(users)
    cand = sampler.sample(users, max_sampled, generator)
    with torch.no_grad():
        qi, bi = model.item_repr(items)
        qc, bc = model.item_repr(cand)
        s_pos = _dot(pu.detach(), bu.detach(), qi, bi)
        violates = _dot(pu.detach(), bu.detach(), qc, bc) > (s_pos - margin)[:, None]
        first = violates.to(torch.uint8).argmax(1)
        found = violates.any(1)
        rank = torch.div(sampler.n_negatives(users), first + 1, rounding_mode="floor")
        weight = torch.where(found, harmonic(rank.clamp_min(1).to(s_pos.dtype)), 0.0)
    neg = cand.gather(1, first[:, None]).squeeze(1)
    q, b = model.item_repr(torch.cat([items, neg]))
    n = users.shape[0]
    s_pos, s_neg = _dot(pu, bu, q[:n], b[:n]), _dot(pu, bu, q[n:], b[n:])
    hinge = pairwise_hinge_loss(s_pos, s_neg, margin, reduction="none")
    return weight * hinge, [pu, q[:n], q[n:] * found[:, None]]


@torch.no_grad()
def kos_positives(
    model: Recommender, sampler: NegativeSampler, users: Tensor, k: int, n: int,
    generator: torch.Generator | None,
) -> Tensor:
    r"""The positive of each row for k-OS WARP: draw m_u = min(n, |P_u|) of the user's
    positives uniformly with replacement, score them, and return the one ranked k-th by
    decreasing score (the min(k, m_u)-th; ties by draw order), as LightFM's ``warp-kos``."""
    drawn, m = sampler.sample_positives(users, n, generator)
    pu, bu = model.user_repr(users)
    q, b = model.item_repr(drawn)
    s = _dot(pu, bu, q, b)
    counts = torch.arange(n, device=s.device)[None, :] < m[:, None]
    order = s.masked_fill(~counts, float("-inf")).sort(dim=1, descending=True, stable=True)
    pick = order.indices.gather(1, (torch.clamp(m, max=k) - 1)[:, None])
    return drawn.gather(1, pick).squeeze(1)


def warp_kos_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, k: int, n: int,
    margin: float, max_sampled: int, generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor]]:
    r"""k-order-statistic WARP (Weston, Yee & Weiss, "Learning to Rank Recommendations with the
    k-Order Statistic Loss", RecSys 2013; LightFM's ``warp-kos``), vectorised.

    For each row's user u: the positive is the k-th best-scored of min(n, |P_u|) positives drawn
    with replacement (:func:`kos_positives`), then the WARP term of :func:`warp_step` for it:
    Φ(r)·max(0, m − s_ui + s_uj). k = 1 pushes up the user's best item (optimising the top of
    the list), large k the worst ones (AUC-like). Defaults (``FitConfig``): k = 5, n = 10
    (LightFM's), m = 1, max_sampled = 10. One step per interaction row, so active users are
    visited more often (LightFM visits each user once per epoch).
    """
    items = kos_positives(model, sampler, users, k, n, generator)
    return warp_step(model, sampler, users, items, margin, max_sampled, generator)


def pair_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor, loss: str,
    n_negatives: int, margin: float, generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor]]:
    """BPR (Rendle et al., UAI 2009: softplus(s_uj − s_ui)) or pairwise hinge
    (max(0, m − s_ui + s_uj)) averaged over ``n_negatives`` sampled negatives per row."""
    n, k = users.shape[0], n_negatives
    pu, bu = model.user_repr(users)
    neg = sampler.sample(users, k, generator)
    q, b = model.item_repr(torch.cat([items, neg.reshape(-1)]))
    s_pos = _dot(pu, bu, q[:n], b[:n])
    s_neg = _dot(pu, bu, q[n:].reshape(n, k, -1), b[n:].reshape(n, k))
    if loss == "bpr":
        terms = bpr_loss(s_pos, s_neg, reduction="none")
    else:
        terms = pairwise_hinge_loss(s_pos, s_neg, margin, reduction="none")
    return terms.mean(1), [pu, q[:n], q[n:]]


def softmax_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor,
    negatives: str, n_sampled: int, temperature: float, logq_correction: bool,
    mask_positives: bool, in_batch_log_q: Tensor, generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor]]:
    r"""Sampled softmax with the logQ correction (Yi et al., "Sampling-Bias-Corrected Neural
    Modeling for Large Corpus Item Recommendations", RecSys 2019; Bengio & Senécal 2008).

    Row (u, i⁺) with candidate set C (``negatives="in_batch"``: the other rows' items;
    ``"sampled"``: ``n_sampled`` items drawn once per batch from the sampler's proposal Q,
    uniform or popularity^alpha, with replacement), each logit corrected by the log of its
    item's sampling probability:

        ℓ = −log( e^{s'_ui} / (e^{s'_ui} + Σ_{j∈C, j∉P_u} e^{s'_uj}) ),
        s'_uj = (⟨p_u, q_j⟩ + b_j) / T − log Q(j)

    (b_u cancels). In-batch items are drawn by popularity, so there Q(j) = count_j / Σ count.
    Known positives of u among C are masked (``mask_positives``; "accidental hits"), and
    without ``logq_correction`` the log Q terms are left out. Defaults (``FitConfig``): in-batch,
    T = 1, logQ on, masking on, n_sampled = 256.
    """
    pu, _ = model.user_repr(users)
    if negatives == "in_batch":
        cand, log_q = items, in_batch_log_q
    else:
        cand, log_q = sampler.draw(n_sampled, generator), sampler.log_proposal()
    q, b = model.item_repr(torch.cat([items, cand]) if negatives == "sampled" else items)
    n = users.shape[0]
    qi, bi, qc, bc = (q[:n], b[:n], q[n:], b[n:]) if negatives == "sampled" else (q, b, q, b)
    s_pos = ((pu * qi).sum(-1) + bi) / temperature
    s_cand = (pu @ qc.T + bc[None, :]) / temperature
    if logq_correction:
        s_pos = s_pos - log_q[items]
        s_cand = s_cand - log_q[cand][None, :]
    hit = sampler.is_positive(users[:, None], cand[None, :]) if mask_positives else None
    if negatives == "in_batch":
        own = torch.eye(n, dtype=torch.bool, device=users.device)
        hit = own if hit is None else hit | own  # the row's own item is the positive column
    if hit is not None:
        s_cand = s_cand.masked_fill(hit, float("-inf"))
    logits = torch.cat([s_pos[:, None], s_cand], dim=1)
    target = torch.zeros(n, dtype=torch.long, device=users.device)
    used = [pu, qi] if negatives == "in_batch" else [pu, qi, qc]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, target, reduction="none"), used
