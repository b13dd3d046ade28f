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


# Losses over pairs of embeddings, without class labels: B pairs (anchor, positive) for the
# in-batch-negative losses, B scored pairs (x1, x2, score) for the others.
SCORED_TASKS = ("cosent", "angle", "cosine_similarity")
TEXT_TASKS = ("multiple_negatives_ranking", "multiple_negatives_symmetric", *SCORED_TASKS)
SCORE_LEVELS = 26  # gold scores 0, 0.04, …, 1 (STS-B's 0–5 in steps of 0.2, rescaled)


def text_pairs(task: str, n: int, dim: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x [2n, dim] float32, y [n])``: rows ``x[:n]`` pair with rows ``x[n:]``.

    Anchors are N(0, 1/dim). In-batch-negative tasks: positive = anchor + N(0, 2.5²/dim)
    (cosine about 0.37; at scale 20 a loss of 1.1 at B=512, 1.5 at 1024, 3.3 at 8192), ``y`` =
    the pair index (implied by the row order, used by no implementation). Scored tasks: score
    t ∈ {0, 0.04, …, 1} uniformly, second embedding = t·x1 + (1 − t)·N(0, 1/dim), so the cosine
    grows with t; ``y`` = t.
    """
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, dim, generator=g) / dim**0.5
    noise = torch.randn(n, dim, generator=g) / dim**0.5
    if task not in SCORED_TASKS:
        return torch.cat([x1, x1 + 2.5 * noise]), torch.arange(n)
    t = torch.randint(0, SCORE_LEVELS, (n,), generator=g).float() / (SCORE_LEVELS - 1)
    return torch.cat([x1, t[:, None] * x1 + (1 - t[:, None]) * noise]), t
