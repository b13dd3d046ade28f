"""Top-N evaluation over the full catalogue, with each user's training items excluded.

For a user u: R_u = test items (relevant), X_u = train items (excluded: neither relevant nor
candidates), N_u = all other items (negatives). Items are ranked by decreasing score.

Ties are handled pessimistically: a relevant item tied with negatives is ranked *after* them, so
a model earns nothing from ties (a constant scorer gets AUC 0.5 and Precision@k 0). The rank
(1-based) of a relevant item i is ``1 + #{j ∈ N_u: s_j ≥ s_i} + #{relevant ranked above i}``.

=================  ===========================================================================
metric             per user, then averaged over users with at least one test item
=================  ===========================================================================
``auc``            P(s_i > s_j) over i ∈ R_u, j ∈ N_u, ties counting ½ (users with N_u = ∅
                   are left out of this mean)
``precision_at_k``    |hits| / k, hits = relevant items with rank ≤ k
``recall_at_k``       |hits| / |R_u|
``hit_rate_at_k``     1 if any hit
``ndcg_at_k``         Σ_hits 1/log2(1 + rank) / Σ_{t=1..min(|R_u|, k)} 1/log2(1 + t)
``map_at_k``          Σ_hits (hits at rank ≤ rank_i) / rank_i / min(|R_u|, k)
``mrr``            1 / rank of the best-ranked relevant item (no cut-off)
``coverage_at_k``     fraction of the catalogue in at least one evaluated user's top-k list (lists
                   ranked by score, ties by lower item index, excluded items never listed)
=================  ===========================================================================

Users without test items are not evaluated (they would have no defined recall, AUC or MRR).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._validation import check_positive_int
from .data import Interactions, same_ids
from .models import Recommender

PER_USER = ("auc", "precision", "recall", "hit_rate", "ndcg", "map", "mrr")

ScoreFn = Callable[[Tensor], Tensor]


def rank_metrics(scores: Tensor, exclude: Tensor, relevant: Tensor, k: int) -> dict[str, Tensor]:
    """Per-user metrics of :data:`PER_USER` for a [B, I] score block.

    ``exclude`` and ``relevant`` are [B, I] bool masks (an item both excluded and relevant counts
    as excluded). Returns [B] float64 tensors; rows without a relevant item give NaN everywhere,
    and ``auc`` is NaN for rows without a negative.
    """
    k = check_positive_int(k, "k")
    s = scores.to(torch.promote_types(scores.dtype, torch.float32))
    relevant = relevant & ~exclude
    negative = ~(relevant | exclude)
    n_rel = relevant.sum(1)
    n_neg = negative.sum(1)
    t = max(int(n_rel.max()) if n_rel.numel() else 0, 1)
    neg_sorted = s.masked_fill(~negative, float("inf")).sort(dim=1).values
    rel = s.masked_fill(~relevant, float("-inf")).sort(dim=1, descending=True).values[:, :t]
    valid = torch.arange(t, device=s.device)[None, :] < n_rel[:, None]
    rel = torch.where(valid, rel, torch.zeros_like(rel))  # keep padding finite
    below = torch.searchsorted(neg_sorted, rel.contiguous(), side="left")
    not_above = torch.searchsorted(neg_sorted, rel.contiguous(), side="right")
    below = below.clamp_max(n_neg[:, None])
    not_above = not_above.clamp_max(n_neg[:, None])
    rank = torch.arange(1, t + 1, device=s.device)[None, :] + (n_neg[:, None] - below)
    rank = rank.double()
    f = valid.double()
    n_rel_f, n_neg_f = n_rel.double(), n_neg.double()
    wins = ((below + not_above).double() / 2 * f).sum(1)  # below + ½ ties
    hits = f * (rank <= k)
    ideal = torch.cumsum(1 / torch.log2(torch.arange(2, k + 2, device=s.device).double()), 0)
    hit_pos = torch.arange(1, t + 1, device=s.device).double()[None, :]
    out = {
        "auc": wins / (n_rel_f * n_neg_f),
        "precision": hits.sum(1) / k,
        "recall": hits.sum(1) / n_rel_f,
        "hit_rate": (hits.sum(1) > 0).double(),
        "ndcg": (hits / torch.log2(rank + 1)).sum(1) / ideal[(n_rel.clamp(1, k) - 1)],
        "map": (hits * hit_pos / rank).sum(1) / n_rel.clamp_max(k).double(),
        "mrr": 1 / rank[:, 0],
    }
    none = n_rel == 0
    out = {name: v.masked_fill(none, float("nan")) for name, v in out.items()}
    out["auc"] = out["auc"].masked_fill(n_neg == 0, float("nan"))
    return out


def top_k(scores: Tensor, exclude: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """([B, k] item indices, [B, k] bool valid) of the k best non-excluded items per row, by
    decreasing score, ties by lower item index (positions past the candidates are invalid)."""
    masked = scores.masked_fill(exclude, float("-inf"))
    order = masked.sort(dim=1, descending=True, stable=True).indices[:, :k]
    n_cand = (~exclude).sum(1, keepdim=True)
    valid = torch.arange(order.shape[1], device=order.device)[None, :] < n_cand
    return order, valid


def _masks(data: Interactions, rows: Tensor, lookup: Tensor, device: torch.device) -> Tensor:
    """[len(rows), I] bool mask of ``data``'s items for the users of one batch."""
    u = torch.as_tensor(data.user, device=device)
    i = torch.as_tensor(data.item, device=device)
    r = lookup[u]
    keep = r >= 0
    mask = torch.zeros(rows.shape[0], data.n_items, dtype=torch.bool, device=device)
    mask[r[keep], i[keep]] = True
    return mask


def popularity_scorer(train: Interactions, device: str | torch.device = "cpu") -> ScoreFn:
    """The popularity baseline: every user gets the items' training interaction counts."""
    counts = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=device)
    return lambda users: counts[None, :].expand(users.shape[0], -1)


def check_same_ids(model: Recommender | ScoreFn, train: Interactions, test: Interactions
                   ) -> None:
    """A ValueError unless train, test and (when it records them) the model share id maps."""
    pairs = [("train", train, "test", test)]
    if isinstance(model, Recommender) and model.user_ids is not None:
        pairs.insert(0, ("the model", model, "train", train))
    for a_name, a, b_name, b in pairs:
        a_maps = (a.user_ids, a.item_ids) if a is model else (a.users, a.items)
        for kind, x, y in (("user", a_maps[0], b.users), ("item", a_maps[1], b.items)):
            if not same_ids(x, y):
                raise ValueError(
                    f"{a_name} and {b_name} have different {kind} id maps ({len(x)} and "
                    f"{len(y)} ids, or another order): index i would mean different {kind}s. "
                    "Encode all parts with one mapping: recsys.make_dataset(train, test), or "
                    "from_arrays(..., user_map=train.users, item_map=train.items)"
                )


def evaluate(
    model: Recommender | ScoreFn,
    train: Interactions,
    test: Interactions,
    k: int = 10,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean metrics (see the module doc) of a model, or of a function users [B] → scores [B, I],
    over the users with test items; train items are excluded from each user's ranking. The
    result also holds ``users`` (how many were evaluated) and ``coverage_at_k``.

    ``train``, ``test`` and the model (once fitted) must share their id maps (see
    :func:`~.dataset.make_dataset`): data encoded separately, whose indices mean other users or
    items, is an error rather than silently wrong numbers."""
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_same_ids(model, train, test)
    if isinstance(model, Recommender):
        device = torch.device(device or model._device())
        score_fn: ScoreFn = model.score_all
        model.eval()
    else:
        device = torch.device(device or "cpu")
        score_fn = model
    users = np.flatnonzero(test.user_counts() > 0)
    sums = {name: 0.0 for name in PER_USER}
    auc_users = 0
    listed = torch.zeros(train.n_items, dtype=torch.bool, device=device)
    for lo in range(0, users.shape[0], batch_size):
        rows = torch.as_tensor(users[lo : lo + batch_size], device=device)
        lookup = torch.full((train.n_users,), -1, dtype=torch.long, device=device)
        lookup[rows] = torch.arange(rows.shape[0], device=device)
        exclude = _masks(train, rows, lookup, device)
        relevant = _masks(test, rows, lookup, device)
        scores = score_fn(rows)
        per_user = rank_metrics(scores, exclude, relevant, k)
        for name, v in per_user.items():
            sums[name] += float(v.nansum())
        auc_users += int((~per_user["auc"].isnan()).sum())
        items, valid = top_k(scores, exclude, k)
        listed[items[valid]] = True
    n = users.shape[0]
    if n == 0:
        raise ValueError("no user has a test item: nothing to evaluate")
    out: dict[str, float] = {}
    for name in PER_USER:
        key = name if name in ("auc", "mrr") else f"{name}_at_{k}"
        denom = auc_users if name == "auc" else n
        out[key] = sums[name] / denom if denom else math.nan
    out[f"coverage_at_{k}"] = float(listed.sum()) / train.n_items
    out["users"] = n
    return out


def validation_metrics(
    train: Interactions, validation: Interactions, k: int = 10, prefix: str = "val_"
) -> Callable[[int, Recommender], dict[str, float]]:
    """An ``on_epoch`` callback for :func:`~.train.fit` returning ``{prefix}precision_at_k``,
    ``{prefix}ndcg_at_k`` and ``{prefix}auc`` of the model on ``validation`` (train items
    excluded); with ``FitConfig(monitor="val_precision_at_10")`` it drives early stopping."""
    k = check_positive_int(k, "k")
    check_same_ids(lambda users: users, train, validation)

    def on_epoch(epoch: int, model: Recommender) -> dict[str, float]:
        r = evaluate(model, train, validation, k=k)
        return {f"{prefix}{name}": r[name] for name in (f"precision_at_{k}", f"ndcg_at_{k}", "auc")}

    return on_epoch
