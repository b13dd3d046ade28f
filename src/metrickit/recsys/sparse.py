"""Row-sparse training of :class:`~.models.MatrixFactorization` for the pairwise losses.

For BPR, pairwise hinge, WARP and k-OS WARP a batch's loss is, locally, a sum of terms in the
scores s(u, j) = ⟨p_u, q_j⟩ + b_u + b_j of a few (user, item) pairs per row, so its gradient is
known in closed form: with c_uj = ∂ℓ/∂s(u, j),

    ∂ℓ/∂p_u = Σ_j c_uj q_j,   ∂ℓ/∂q_j = c_uj p_u,   ∂ℓ/∂b_j = c_uj,   ∂ℓ/∂b_u = Σ_j c_uj (= 0).

Each step here computes the c_uj of its rows without autograd (:class:`PairGrad`) and
:class:`RowAdagrad` updates only the rows the batch touched — no dense gradient of the
embedding tables and no pass over untouched rows. The schedule is LightFM's Adagrad (Kula 2015,
``learning_schedule="adagrad"``): accumulators start at 1 and every interaction's squared
gradient is added, so a row that appears k times in a batch moves by lr·Σg / sqrt(acc) (as k
sequential per-interaction steps would, to first order) and a single small gradient moves a row
by about lr·g, not by lr as torch's Adagrad (accumulators from 0, one squared sum per batch)
would. The loss terms, samplers and rank estimates are those of :mod:`.steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..losses.ranking import warp_rank_weight as harmonic
from .models import MatrixFactorization
from .sampling import NegativeSampler
from .steps import kos_positives

SPARSE_LOSSES = ("warp", "warp_kos", "bpr", "pairwise_hinge")


@dataclass
class PairGrad:
    """One batch's loss terms [B] and its gradient in closed form: rows ``users`` [B] with
    ``pu`` [B, C] = (p_u, 1) (C = D + 1 with biases, else (p_u), C = D); items ``items`` [B, K]
    with table rows ``q`` [B, K, C] = (q_j, b_j); ``coef`` [B, K] = ∂ℓ/∂s(u, j) of the summed
    terms; ``reg`` [B, K] the weight of each item's L2 term (the user's is 1)."""

    terms: Tensor
    users: Tensor
    pu: Tensor
    items: Tensor
    q: Tensor
    coef: Tensor
    reg: Tensor


class RowAdagrad:
    """Adagrad on the rows of one table, LightFM's schedule: accumulators start at
    ``initial`` (1), every gradient row's square is added, each row then moves by
    lr·g / sqrt(acc) (duplicates of a row add up)."""

    def __init__(self, table: Tensor, lr: float, initial: float = 1.0) -> None:
        self.table, self.lr = table, lr
        self.acc = torch.full_like(table, initial)

    @torch.no_grad()
    def step(self, rows: Tensor, grads: Tensor) -> None:
        self.acc.index_add_(0, rows, grads * grads)
        self.table.index_add_(0, rows, grads / self.acc.index_select(0, rows).sqrt(),
                              alpha=-self.lr)

    def state_dict(self) -> dict[str, Tensor]:
        return {"acc": self.acc}


def _gather(model: MatrixFactorization, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """(p_u, 1) [B, C] (the user bias cancels in every pairwise term) and the item rows
    (q_j, b_j) [B, K, C] of ``items`` [B, K], so that s(u, j) − b_u = ⟨pu, q⟩ (one bmm)."""
    pu = model.user_weight.detach().index_select(0, users)
    if model.bias:
        pu[:, model.dim] = 1
    q = model.item_weight.detach().index_select(0, items.reshape(-1))
    return pu, q.reshape(*items.shape, -1)


def _scores(pu: Tensor, q: Tensor) -> Tensor:
    return torch.bmm(q, pu[:, :, None]).squeeze(2)


@torch.no_grad()
def warp_grad(
    model: MatrixFactorization, sampler: NegativeSampler, users: Tensor, items: Tensor,
    margin: float, max_sampled: int, generator: torch.Generator | None,
) -> PairGrad:
    """Sampled WARP as :func:`~.steps.warp_step` (Φ(r)·max(0, m − s_ui + s_uj) for the first
    violator j of ``max_sampled`` draws), with its closed-form gradient."""
    cand = sampler.sample(users, max_sampled, generator)
    both = torch.cat([items[:, None], cand], 1)
    pu, q = _gather(model, users, both)
    s = _scores(pu, q)
    violates = s[:, 1:] > (s[:, :1] - margin)
    first = violates.to(torch.uint8).argmax(1)
    found = violates.any(1)
    rank = torch.div(sampler.n_negatives(users), first + 1, rounding_mode="floor")
    weight = torch.where(found, harmonic(rank.clamp_min(1).to(s.dtype)), 0.0)
    pick = torch.stack([torch.zeros_like(first), first + 1], 1)
    s2 = s.gather(1, pick)
    terms = weight * (margin - s2[:, 0] + s2[:, 1]).clamp_min(0)
    coef = torch.stack([-weight, weight], 1)
    reg = torch.stack([torch.ones_like(weight), found.to(weight.dtype)], 1)
    q2 = q.gather(1, pick[..., None].expand(-1, -1, q.shape[-1]))
    return PairGrad(terms, users, pu, both.gather(1, pick), q2, coef, reg)


@torch.no_grad()
def pair_grad(
    model: MatrixFactorization, sampler: NegativeSampler, users: Tensor, items: Tensor,
    loss: str, n_negatives: int, margin: float, generator: torch.Generator | None,
) -> PairGrad:
    """BPR (softplus(s_uj − s_ui)) or pairwise hinge (max(0, m − s_ui + s_uj)) averaged over
    ``n_negatives`` sampled negatives, as :func:`~.steps.pair_step`, with its gradient."""
    k = n_negatives
    both = torch.cat([items[:, None], sampler.sample(users, k, generator)], 1)
    pu, q = _gather(model, users, both)
    s = _scores(pu, q)
    diff = s[:, 1:] - s[:, :1]
    if loss == "bpr":
        terms, slope = torch.nn.functional.softplus(diff), torch.sigmoid(diff)
    else:
        terms, slope = (margin + diff).clamp_min(0), (margin + diff > 0).to(s.dtype)
    slope = slope / k
    coef = torch.cat([-slope.sum(1, keepdim=True), slope], 1)
    reg = torch.cat([torch.ones_like(s[:, :1]), torch.full_like(slope, 1 / k)], 1)
    return PairGrad(terms.mean(1), users, pu, both, q, coef, reg)


def sparse_grad(
    model: MatrixFactorization, sampler: NegativeSampler, users: Tensor, items: Tensor,
    config, generator: torch.Generator | None,
) -> PairGrad:
    """The :class:`PairGrad` of ``config.loss`` (one of :data:`SPARSE_LOSSES`) for a batch."""
    c = config
    if c.loss == "warp_kos":
        items = kos_positives(model, sampler, users, c.kos_k, c.kos_n, generator)
    if c.loss in ("warp", "warp_kos"):
        return warp_grad(model, sampler, users, items, c.margin, c.max_sampled, generator)
    return pair_grad(model, sampler, users, items, c.loss, c.n_negatives, c.margin, generator)


@torch.no_grad()
def row_grads(g: PairGrad, model: MatrixFactorization, l2: float) -> tuple[Tensor, Tensor]:
    """Gradients of the batch's summed terms (plus l2·‖v‖² per used vector, as the autograd
    path's per-row L2) w.r.t. the table rows it used: [B, C] for ``g.users``, [B, K, C] for
    ``g.items`` (duplicates add up)."""
    d = model.dim
    gu = torch.bmm(g.coef[:, None, :], g.q).squeeze(1)
    gq = g.coef[..., None] * g.pu[:, None, :]  # its bias column: c_uj = ∂ℓ/∂b_j
    if model.bias:  # ∂ℓ/∂b_u = Σ_j c_uj (0 for these losses), not Σ_j c_uj b_j
        gu[:, d] = g.coef.sum(1)
    if l2:
        gu[:, :d] += 2 * l2 * g.pu[:, :d]
        gq[..., :d] += (2 * l2) * g.reg[..., None] * g.q[..., :d]
    return gu, gq


def apply(g: PairGrad, model: MatrixFactorization, user_opt: RowAdagrad, item_opt: RowAdagrad,
          l2: float) -> None:
    """One :class:`RowAdagrad` step of :func:`row_grads` on the touched rows of both tables."""
    gu, gq = row_grads(g, model, l2)
    user_opt.step(g.users, gu)
    item_opt.step(g.items.reshape(-1), gq.reshape(-1, gq.shape[-1]))
