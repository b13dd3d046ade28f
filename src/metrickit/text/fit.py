"""A small fit loop for sentence encoders.

AdamW (no weight decay on biases and LayerNorm weights), a linear learning-rate warmup over the
first ``warmup_ratio`` of the steps then a linear decay to 0 (as Hugging Face's
``get_linear_schedule_with_warmup``), gradient-norm clipping, one seed for the batch order and
dropout, float32. Scored pairs are shuffled at random; pairs for in-batch-negatives losses come
from :class:`~metrickit.text.NoDuplicatesBatchSampler`. With ``mini_batch_size`` set, each step
is a :func:`~metrickit.text.cached.cached_backward` (GradCache): exact gradients of the whole
batch with the memory of one mini-batch.

It is self-contained on purpose (the general trainer of :mod:`metrickit.training` works on
labelled tensors); it can move onto an open trainer once there is one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._validation import check_bool, check_int, check_nonnegative, check_positive, check_real
from .cached import cached_backward
from .data import ScoredPairs, TextPairs
from .losses import PAIRS, SCORED, TextLoss, get_text_loss
from .sampler import NoDuplicatesBatchSampler


@dataclass
class FitConfig:
    """Options of :func:`fit` (the defaults of sentence-transformers' trainer where it has one;
    ``lr`` 2e-5 and ``batch_size`` 16 are the usual STS-B fine-tuning values)."""

    loss: str | TextLoss = "cosent"
    loss_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    mini_batch_size: int | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_positive(self.lr, "lr")
        check_real(self.warmup_ratio, "warmup_ratio", low=0.0, high=1.0)
        check_nonnegative(self.weight_decay, "weight_decay")
        check_positive(self.max_grad_norm, "max_grad_norm")
        check_int(self.seed, "seed")
        if self.mini_batch_size is not None:
            check_int(self.mini_batch_size, "mini_batch_size", low=1)
        if self.min_score is not None:
            check_real(self.min_score, "min_score")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["loss"] = getattr(self.loss, "name", self.loss)
        return out


def prepare_data(data: TextPairs | ScoredPairs, loss: TextLoss, min_score: float | None):
    """The data in the form ``loss`` needs: scores in [0, 1] for scored losses; for
    in-batch-negatives losses, scored pairs become the pairs scored at least ``min_score``."""
    if loss.kind == SCORED:
        if not isinstance(data, ScoredPairs):
            raise ValueError(
                f"loss {loss.name!r} needs scored pairs (sentence1, sentence2, score), "
                f"got {type(data).__name__} {data.name!r}"
            )
        return data.normalized()
    if isinstance(data, ScoredPairs):
        if min_score is None:
            raise ValueError(
                f"loss {loss.name!r} trains on (anchor, positive) pairs: give min_score "
                f"(--min-score) to keep the scored pairs scored at least that much"
            )
        return data.positive_pairs(min_score)
    return data


def _batches(data, loss: TextLoss, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    if loss.kind == PAIRS:
        sampler = NoDuplicatesBatchSampler(data.columns(), batch_size, seed=seed)
        sampler.set_epoch(epoch)
        yield from sampler
        return
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    yield from torch.randperm(len(data), generator=g).split(batch_size)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            plain = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
            (no_decay if plain else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def linear_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: 0 → 1 over ``warmup_steps``, then linearly down to 0 at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def train_step(encoder, loss: TextLoss, columns, scores, mini_batch_size: int | None) -> Tensor:
    """Forward and backward of one batch (cached when ``mini_batch_size`` is set)."""
    if mini_batch_size is not None:
        return cached_backward(encoder, columns, loss, scores, mini_batch_size)
    value = loss([encoder.embed(c) for c in columns], scores)
    value.backward()
    return value.detach()


def fit(
    encoder,
    data: TextPairs | ScoredPairs,
    config: FitConfig | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    progress: bool = False,
) -> dict[str, list]:
    """Train ``encoder`` (a :class:`~metrickit.text.SentenceEncoder`) in place.

    ``evaluate(encoder)`` (optional) runs after each epoch. Returns the history: ``step_loss``
    and ``lr`` per step, ``epoch_seconds`` (training only) and ``eval`` per epoch.
    """
    config = config or FitConfig()
    progress = check_bool(progress, "progress")
    loss = config.loss
    if not isinstance(loss, TextLoss):
        loss = get_text_loss(loss, **config.loss_params)
    data = prepare_data(data, loss, config.min_score)
    if len(data) == 0:
        raise ValueError(f"no training data left in {data.name!r}")
    columns = data.columns()
    scores = torch.as_tensor(data.scores, dtype=torch.float32) if loss.kind == SCORED else None
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = _optimizer(encoder, config.lr, config.weight_decay)
    warmup = math.ceil(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(total, warmup))
    torch.manual_seed(config.seed)
    history: dict[str, list] = {"step_loss": [], "lr": [], "epoch_seconds": [], "eval": []}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"fit {loss.name}", disable=not progress)
    encoder.train()
    try:
        for epoch in range(config.epochs):
            start = time.perf_counter()
            for index in _batches(data, loss, config.batch_size, config.seed, epoch):
                ids = index.tolist() if isinstance(index, Tensor) else index
                batch = [[col[i] for i in ids] for col in columns]
                batch_scores = None if scores is None else scores[ids].to(encoder.device)
                optimizer.zero_grad(set_to_none=True)
                value = train_step(encoder, loss, batch, batch_scores, config.mini_batch_size)
                torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.max_grad_norm)
                history["lr"].append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                schedule.step()
                history["step_loss"].append(float(value))
                bar.update()
                bar.set_postfix(loss=f"{float(value):.4f}")
            history["epoch_seconds"].append(time.perf_counter() - start)
            if evaluate is not None:
                history["eval"].append(evaluate(encoder))
                encoder.train()
    finally:
        bar.close()
        encoder.eval()
    return history
