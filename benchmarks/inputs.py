"""Deterministic synthetic inputs: P×K batches and clustered retrieval sets."""

from __future__ import annotations

import torch
from torch import Tensor


def clustered(
    n: int, per_class: int, dim: int, seed: int = 0, spread: float = 0.5
) -> tuple[Tensor, Tensor]:
    """``(embeddings [n, dim] float32, labels [n] int64)``: n / per_class classes of per_class
    samples each, shuffled.

    Class centres are N(0, spread²/dim) and samples add N(0, 1/dim) noise, so with spread=0.5 and
    margin 0.2 a P×K batch holds a mix of easy, semi-hard and hard triplets.
    """
    if n % per_class:
        raise ValueError(f"n must be a multiple of per_class, got n={n}, per_class={per_class}")
    g = torch.Generator().manual_seed(seed)
    classes = n // per_class
    centres = torch.randn(classes, dim, generator=g) * (spread / dim**0.5)
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = centres[labels] + torch.randn(n, dim, generator=g) / dim**0.5
    perm = torch.randperm(n, generator=g)
    return x[perm].contiguous(), labels[perm].contiguous()


PROXY_CLASSES = 100


def proxy_vectors(rows: int, dim: int, seed: int = 1) -> Tensor:
    """Deterministic class vectors [rows, dim], N(0, 1), shared by every proxy-loss impl."""
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
