"""Learning-rate schedules stepped once per optimiser step, and gradient clipping.

    >>> scheduler = warmup_schedule(optimizer, total_steps=1000, warmup_steps=100, decay="cosine")
    >>> ...; optimizer.step(); scheduler.step()

Linear warmup from 0 to the base rate over ``warmup_steps`` (Goyal et al. 2017, "Accurate, Large
Minibatch SGD"), then cosine (Loshchilov & Hutter 2017, "SGDR") or linear decay to
``min_lr_ratio`` × the base rate at ``total_steps``, or a constant rate. Every parameter group
keeps its own base rate (e.g. a larger one for proxies), scaled by the same factor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from .._validation import check_choice, check_int, check_real

DECAYS = ("constant", "cosine", "linear")


def lr_factor(
    step: int, total_steps: int, warmup_steps: int = 0, decay: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """The multiplier of the base learning rate before optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    decay: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor` (call ``step()`` after each update)."""
    check_int(total_steps, "total_steps", low=1)
    check_int(warmup_steps, "warmup_steps", low=0)
    check_choice(decay, "decay", DECAYS)
    check_real(min_lr_ratio, "min_lr_ratio", low=0.0, high=1.0)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})"
        )
    return LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, decay, min_lr_ratio)
    )


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float | None) -> Tensor | None:
    """Scale the gradients so their joint L2 norm is at most ``max_norm`` (None: do nothing).

    Returns the norm before clipping (a 0-dim tensor, no host sync), or None.
    """
    if max_norm is None:
        return None
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.nn.utils.clip_grad_norm_(grads, check_real(max_norm, "max_norm", low=0.0,
                                                              low_inclusive=False))
