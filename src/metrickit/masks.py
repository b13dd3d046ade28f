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
