"""The naive baseline: plain dense PyTorch, written the way a user would write it.

Batch-all and semi-hard materialise the full B×B×B triplet cube; batch-hard needs only B×B
masked reductions. Distances use the Gram expansion with an epsilon under the square root.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _distances(x: Tensor) -> Tensor:
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(1e-12).sqrt()


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def batch_all(x: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Mean of max(d(a,p) − d(a,n) + m, 0) over the valid triplets whose loss is > 0."""
    d = _distances(x)
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    loss = (d[:, :, None] - d[:, None, :] + margin).clamp_min(0) * valid
    return loss.sum() / (loss > 0).sum().clamp_min(1)


def batch_hard(x: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Mean over anchors of max(max_p d(a,p) − min_n d(a,n) + m, 0) (Hermans et al. 2017)."""
    d = _distances(x)
    pos, neg = _masks(labels)
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
    return (hardest_pos - hardest_neg + margin).clamp_min(0).mean()


def semihard(x: Tensor, labels: Tensor, margin: float) -> Tensor:
    """TF-Addons ``triplet_semihard_loss``: for each positive pair (a, p) the nearest negative
    farther than p, else the farthest negative; mean over positive pairs of the hinge."""
    d = _distances(x)
    pos, neg = _masks(labels)
    outside = neg[:, None, :] & (d[:, None, :] > d[:, :, None])
    nearest_outside = d[:, None, :].expand_as(outside).masked_fill(~outside, float("inf")).amin(2)
    farthest = d.masked_fill(~neg, float("-inf")).amax(1, keepdim=True).expand_as(d)
    chosen = torch.where(torch.isfinite(nearest_outside), nearest_outside, farthest)
    return (d - chosen + margin).clamp_min(0)[pos].mean()
