"""Mini-batched training of a :class:`~.models.Recommender` on implicit feedback.

One epoch visits every training interaction (u, i⁺) once, in a seeded random order, in batches;
each batch is one vectorised step (no per-interaction Python loop), on the model's device.

=====================  ========================================================================
loss                   step for a batch of B interactions
=====================  ========================================================================
``"bpr"``              ``n_negatives`` sampled negatives j per row: mean softplus(s_uj − s_ui)
                       (:func:`metrickit.losses.ranking.bpr_loss`)
``"pairwise_hinge"``   same, with max(0, m − s_ui + s_uj) (``pairwise_hinge_loss``)
``"warp"``             sampled WARP, see :func:`warp_step`
``"sampled_softmax"``  in-batch negatives: softmax over the batch's items, cross-entropy on the
                       row's own item; other rows' items that are known positives of the user
                       are masked out; logQ correction for the popularity bias of in-batch
                       sampling (Yi et al., RecSys 2019) when ``logq_correction``
=====================  ========================================================================

L2 regularisation adds ``l2 ×`` the batch mean of the squared norms of the user and item vectors
the step used (LightFM's per-row regularisation, not a global weight decay).
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .._validation import check_choice, check_nonnegative, check_positive_int
from ..functional import bpr_loss, pairwise_hinge_loss
from ..losses.ranking import warp_rank_weight as harmonic
from .data import Interactions
from .models import Recommender
from .sampling import STRATEGIES, NegativeSampler

LOSSES = ("warp", "bpr", "pairwise_hinge", "sampled_softmax")
OPTIMIZERS = ("adagrad", "adam")


@dataclass
class FitConfig:
    """Training settings. Adagrad, max_sampled 10 and margin 1 follow LightFM; batch 2048 with
    lr 0.3 (the loss is a batch mean) was tuned on MovieLens-100K for speed to quality."""

    loss: str = "warp"
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 0.3
    optimizer: str = "adagrad"
    l2: float = 0.0
    margin: float = 1.0
    n_negatives: int = 1
    max_sampled: int = 10
    sampler: str = "uniform"
    alpha: float = 1.0
    exclude_positives: bool = True
    temperature: float = 1.0
    logq_correction: bool = True
    seed: int = 0
    progress: bool = True
    threads: int | None = None

    def validate(self) -> FitConfig:
        """Check every field (a clear error naming it); numbers, numpy scalars included, become
        Python ints/floats."""
        check_choice(self.loss, "loss", LOSSES)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.sampler, "sampler", STRATEGIES)
        for name in ("epochs", "batch_size", "n_negatives", "max_sampled"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        for name in ("lr", "l2", "margin", "alpha", "temperature"):
            setattr(self, name, check_nonnegative(getattr(self, name), name))
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)
        for name in ("exclude_positives", "logq_correction", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.threads is not None:
            self.threads = check_positive_int(self.threads, "threads")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


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
    ``pairwise_hinge_loss`` (0 when no violator was drawn).

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


def _pair_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor,
    config: FitConfig, generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor]]:
    n, k = users.shape[0], config.n_negatives
    pu, bu = model.user_repr(users)
    neg = sampler.sample(users, k, generator)
    q, b = model.item_repr(torch.cat([items, neg.reshape(-1)]))
    s_pos = _dot(pu, bu, q[:n], b[:n])
    s_neg = _dot(pu, bu, q[n:].reshape(n, k, -1), b[n:].reshape(n, k))
    if config.loss == "bpr":
        terms = bpr_loss(s_pos, s_neg, reduction="none")
    else:
        terms = pairwise_hinge_loss(s_pos, s_neg, config.margin, reduction="none")
    return terms.mean(1), [pu, q[:n], q[n:]]


def _softmax_step(
    model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor,
    config: FitConfig, log_q: Tensor,
) -> tuple[Tensor, list[Tensor]]:
    pu, _ = model.user_repr(users)
    qi, bi = model.item_repr(items)
    logits = (pu @ qi.T + bi[None, :]) / config.temperature
    if config.logq_correction:
        logits = logits - log_q[items][None, :]
    own = torch.eye(users.shape[0], dtype=torch.bool, device=users.device)
    known = sampler.is_positive(users[:, None], items[None, :]) & ~own
    if not config.exclude_positives:
        known = torch.zeros_like(known)
    logits = logits.masked_fill(known, float("-inf"))
    target = torch.arange(users.shape[0], device=users.device)
    return F.cross_entropy(logits.float(), target, reduction="none"), [pu, qi]


def make_optimizer(model: torch.nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    check_choice(name, "optimizer", OPTIMIZERS)
    if name == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def default_threads() -> int:
    """One torch thread per idle CPU core (cores minus the 1-minute load average), at least 1."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with ``n`` torch intra-op threads (None: :func:`default_threads`), then restore."""
    before = torch.get_num_threads()
    n = default_threads() if n is None else check_positive_int(n, "threads")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _epoch_record(record: dict, extra: object) -> dict:
    if extra is None:
        return record
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"on_epoch must return a mapping of named values (e.g. metrics) or None, got "
            f"{type(extra).__name__}"
        )
    return {**record, **extra}


def fit(
    model: Recommender,
    train: Interactions,
    config: FitConfig | None = None,
    on_epoch: Callable[[int, Recommender], Mapping[str, float] | None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on ``train`` in place; returns one history record per epoch with the mean
    training loss, the training seconds (excluding ``on_epoch``) and what ``on_epoch(epoch,
    model)`` returned (a mapping, e.g. test metrics, or None). Seeded by ``config.seed``
    (sampling and order; seed the model's initialisation yourself, e.g. ``torch.manual_seed``).
    Runs on ``config.threads`` torch threads (None: one per idle core). The model records
    train's id maps (see :meth:`~.models.Recommender.bind_ids`)."""
    config = (config or FitConfig()).validate()
    if len(train) == 0:
        raise ValueError("train is empty: at least one interaction is needed")
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise ValueError(
            f"model is for {model.n_users} users × {model.n_items} items but train has "
            f"{train.n_users} × {train.n_items}"
        )
    model.bind_ids(train.users, train.items)
    with torch_threads(config.threads):
        return _fit(model, train, config, on_epoch)


def _fit(model: Recommender, train: Interactions, config: FitConfig,
         on_epoch: Callable[[int, Recommender], Mapping[str, float] | None] | None,
         ) -> list[dict[str, float]]:
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    sampler = NegativeSampler(train, config.sampler, config.exclude_positives, config.alpha, device)
    users = torch.as_tensor(train.user, device=device)
    items = torch.as_tensor(train.item, device=device)
    pop = sampler.popularity.float()
    log_q = torch.log(pop.clamp_min(1) / pop.sum())
    optimizer = make_optimizer(model, config.optimizer, config.lr)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator, device=device)
        total = torch.zeros((), device=device)
        batches = range(0, len(train), config.batch_size)
        for lo in tqdm(batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False):
            idx = order[lo : lo + config.batch_size]
            u, i = users[idx], items[idx]
            if config.loss == "warp":
                terms, used = warp_step(
                    model, sampler, u, i, config.margin, config.max_sampled, generator
                )
            elif config.loss == "sampled_softmax":
                terms, used = _softmax_step(model, sampler, u, i, config, log_q)
            else:
                terms, used = _pair_step(model, sampler, u, i, config, generator)
            loss = terms.mean()
            if config.l2:
                loss = loss + config.l2 * sum(v.pow(2).sum(-1).mean() for v in used)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += terms.detach().sum()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "loss": float(total) / len(train), "seconds": seconds}
        if on_epoch is not None:
            model.eval()
            record = _epoch_record(record, on_epoch(epoch, model))
        history.append(record)
    model.eval()
    return history
