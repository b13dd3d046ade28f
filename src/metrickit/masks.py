"""Boolean masks over the pairs of a labelled batch (the lowest layer, with distances)."""

from __future__ import annotations

import torch
from torch import Tensor


def pair_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` [B, M] boolean masks.

    positive[i, j]: same label and not the same sample (i != j when ``ref_labels`` is None);
    negative[i, j]: different labels. With ``ref_labels`` the columns are a separate reference
    set (cross-batch memory, distributed gathering) and no diagonal is excluded.
    """
    ref = labels if ref_labels is None else ref_labels
    same = labels[:, None] == ref[None, :]
    positive = same
    if ref_labels is None:
        positive = same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return positive, ~same


def upper_triangle(n: int, device: torch.device | None = None) -> Tensor:
    """[n, n] mask of the unordered pairs i < j."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu_(1)


def class_slots(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(members, positives, n_pos)``: each row's class as packed column indices.

    members: [B, K] the columns of row i's class, itself included (K = the largest class);
    positives: [B, K − 1] the same without row i; n_pos: [B] the number of real positives.
    Padding slots hold i itself. O(B log B) from one sort of the labels, and one host read of K
    (free on CPU, a sync elsewhere).
    """
    b = labels.shape[0]
    device = labels.device
    order = torch.argsort(labels, stable=True)
    ranked = labels[order]
    first = torch.ones(b, dtype=torch.bool, device=device)
    first[1:] = ranked[1:] != ranked[:-1]
    group = first.cumsum(0) - 1  # class number at each sorted position
    starts = first.nonzero(as_tuple=True)[0]
    sizes = torch.diff(starts, append=torch.tensor([b], device=device))
    k = int(sizes.max()) if b else 1
    where = torch.empty_like(order)
    where[order] = torch.arange(b, device=device)  # sorted position of each row
    start = starts[group[where]]
    size = sizes[group[where]]
    rank = where - start  # row i's place within its class
    slot = torch.arange(k, device=device)[None, :]
    rows = torch.arange(b, device=device)[:, None]
    column = order[(start[:, None] + slot).clamp_max(b - 1)]
    members = torch.where(slot < size[:, None], column, rows)
    skip = slot[:, : k - 1] + (slot[:, : k - 1] >= rank[:, None]).long()
    positives = torch.where(slot[:, : k - 1] < (size - 1)[:, None], members.gather(1, skip), rows)
    return members, positives, size - 1
