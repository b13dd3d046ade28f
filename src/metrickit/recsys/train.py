"""Mini-batched training of a :class:`~.models.Recommender` on implicit feedback.

One epoch visits every training interaction (u, i⁺) once, in a seeded random order, in batches;
each batch is one vectorised step (no per-interaction Python loop), on the model's device.

=====================  ========================================================================
loss                   step for a batch of B interactions (:mod:`.steps`)
=====================  ========================================================================
``"bpr"``              ``n_negatives`` sampled negatives j per row: mean softplus(s_uj − s_ui)
                       (:func:`metrickit.losses.ranking.bpr_loss`)
``"pairwise_hinge"``   same, with max(0, m − s_ui + s_uj) (``pairwise_hinge_loss``)
``"warp"``             sampled WARP, see :func:`~.steps.warp_step`
``"warp_kos"``         k-OS WARP (Weston et al., RecSys 2013; LightFM's ``warp-kos``): WARP on
                       the k-th best of n drawn positives, see :func:`~.steps.warp_kos_step`
``"sampled_softmax"``  softmax over in-batch or sampled negatives with the logQ correction
                       (Yi et al., RecSys 2019), see :func:`~.steps.softmax_step`
=====================  ========================================================================

L2 regularisation adds ``l2 ×`` the batch mean of the squared norms of the user and item vectors
the step used (LightFM's per-row regularisation, not a global weight decay). The "sparse" engine
(:mod:`.sparse`, the default for matrix factorisation with the pairwise losses) takes the same
terms with closed-form gradients and a row-wise Adagrad instead of autograd.
"""

from __future__ import annotations

import importlib.util
import numbers
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._validation import check_choice, check_nonnegative, check_positive_int
from ..threads import idle_cpus
from .data import Interactions
from .models import MatrixFactorization, Recommender
from .sampling import STRATEGIES, NegativeSampler
from .sparse import SPARSE_LOSSES, RowAdagrad, apply, sparse_grad
from .steps import SOFTMAX_NEGATIVES, pair_step, softmax_step, warp_kos_step, warp_step

LOSSES = ("warp", "warp_kos", "bpr", "pairwise_hinge", "sampled_softmax")
OPTIMIZERS = ("adagrad", "adam")
ENGINES = ("auto", "autograd", "sparse", "numba")


@dataclass
class FitConfig:
    """Training settings. Adagrad, max_sampled 10 and margin 1 follow LightFM.

    ``engine``: "sparse" trains a :class:`~.models.MatrixFactorization` with Adagrad on a
    pairwise loss (warp, warp_kos, bpr, pairwise_hinge) by closed-form gradients and LightFM's
    row-wise Adagrad (:mod:`.sparse`; accumulators start at 1, every interaction's squared
    gradient counts, only touched rows are updated); "numba" is the same algorithm as one
    compiled loop per batch (:mod:`.compiled`; needs the ``numba`` package, a model on the CPU;
    its own random stream, one thread); "autograd" runs the step under autograd with torch's
    optimizer on the batch-mean loss (every model, loss and optimizer); "auto" [default] is
    "numba" where it applies and numba is installed, else "sparse" where it applies, else
    "autograd". ``lr=None`` [default] is :func:`auto_lr` for the engine and the model's
    dimension d (sparse, numba: 0.1·min(1, √(10/d))); ``batch_size=None`` [default] is
    :func:`auto_batch_size` for the engine and the number of training rows."""

    loss: str = "warp"
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adagrad"
    l2: float = 0.0
    margin: float = 1.0
    n_negatives: int = 1
    max_sampled: int = 10
    kos_k: int = 5
    kos_n: int = 10
    softmax_negatives: str = "in_batch"
    n_sampled: int = 256
    sampler: str = "uniform"
    alpha: float = 1.0
    exclude_positives: bool = True
    temperature: float = 1.0
    logq_correction: bool = True
    seed: int = 0
    progress: bool = True
    threads: int | None = None
    monitor: str | None = None
    patience: int = 5
    engine: str = "auto"

    def validate(self) -> FitConfig:
        """Check every field (a clear error naming it); numbers, numpy scalars included, become
        Python ints/floats."""
        check_choice(self.loss, "loss", LOSSES)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.sampler, "sampler", STRATEGIES)
        check_choice(self.engine, "engine", ENGINES)
        check_choice(self.softmax_negatives, "softmax_negatives", SOFTMAX_NEGATIVES)
        if self.batch_size is not None:
            self.batch_size = check_positive_int(self.batch_size, "batch_size")
        for name in ("epochs", "n_negatives", "max_sampled", "kos_k", "kos_n",
                     "n_sampled"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        for name in ("lr", "l2", "margin", "alpha", "temperature"):
            if name != "lr" or self.lr is not None:
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
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise TypeError(f"monitor must be the name of a value on_epoch returns, got "
                            f"{self.monitor!r}")
        self.patience = check_positive_int(self.patience, "patience")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _step(model: Recommender, sampler: NegativeSampler, users: Tensor, items: Tensor,
          config: FitConfig, log_q: Tensor, generator: torch.Generator | None,
          ) -> tuple[Tensor, list[Tensor]]:
    c = config
    if c.loss == "warp":
        return warp_step(model, sampler, users, items, c.margin, c.max_sampled, generator)
    if c.loss == "warp_kos":
        return warp_kos_step(model, sampler, users, c.kos_k, c.kos_n, c.margin, c.max_sampled,
                             generator)
    if c.loss == "sampled_softmax":
        return softmax_step(model, sampler, users, items, c.softmax_negatives, c.n_sampled,
                            c.temperature, c.logq_correction, c.exclude_positives, log_q,
                            generator)
    return pair_step(model, sampler, users, items, c.loss, c.n_negatives, c.margin, generator)


def auto_lr(optimizer: str, dim: int, engine: str = "autograd") -> float:
    """The default learning rate for a model of dimension ``dim``.

    ``engine="sparse"`` (LightFM's Adagrad, per-interaction gradients): 0.1·min(1, √(10/d)),
    i.e. 0.1 at d ≤ 10, 0.056 at 32, 0.04 at 64. On MovieLens-100K (10 random test items per
    user, WARP, init std 0.3/d) 0.1 at d = 10 reached best P@10 0.248 (0.05: slower, 0.233 in 27
    epochs), while at d = 32 0.1 peaked early at 0.234 and 0.05 reached 0.250; 0.05 at d = 64:
    0.252. Larger d adds more score noise per step, hence the decay.

    ``engine="autograd"`` (torch's optimizer on the batch-mean loss): Adagrad 0.3·min(1, 10/d),
    Adam 0.01·min(1, 10/d). Adagrad's first steps move every touched coordinate by about lr, so
    the score noise they add grows with d. On MovieLens-100K (temporal leave-last-5-out, WARP)
    a fixed 0.3 gave best P@10 0.061 at d = 32 (3/d: 0.064) and, at batch 512, 0.053 at
    d = 64 (3/d: 0.063). Adam's rate is scaled alike but was not measured."""
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    check_choice(engine, "engine", ENGINES[1:])
    d = check_positive_int(dim, "dim")
    if engine in ("sparse", "numba"):
        return 0.1 * min(1.0, (10 / d) ** 0.5)
    return (0.3 if optimizer == "adagrad" else 0.01) * min(1.0, 10 / d)


def auto_batch_size(n_interactions: int, engine: str = "sparse") -> int:
    """The default batch size for ``n_interactions`` training rows.

    ``engine="autograd"``: 2048. The sparse engine: the largest of 2048, 1024, 512 and 256 that
    still gives an epoch at least 128 steps (ML-100K: 512; ML-1M and larger: 2048). A batch's
    rows are scored with the weights from before the batch, so with few steps per epoch a
    popular item's updates within a step pile up unchecked. On MovieLens-100K (WARP, seed 0,
    best P@10 over 30 epochs) batch 512 instead of 2048 gave 0.254 vs 0.248 at d = 32 (10
    random test items per user) and 0.066 vs 0.065 at d = 10 (leave-last-5-out), at about
    1.3× the epoch time."""
    n = check_positive_int(n_interactions, "n_interactions")
    check_choice(engine, "engine", ENGINES[1:])
    size = 2048
    if engine == "autograd":
        return size
    while size > 256 and n < 128 * size:
        size //= 2
    return size


def make_optimizer(model: torch.nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    check_choice(name, "optimizer", OPTIMIZERS)
    if name == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with ``n`` torch intra-op threads (None: :func:`metrickit.threads.idle_cpus`), then
    restore."""
    before = torch.get_num_threads()
    n = idle_cpus() if n is None else check_positive_int(n, "threads")
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
    train's id maps (see :meth:`~.models.Recommender.bind_ids`).

    Early stopping: with ``config.monitor`` set to a key of what ``on_epoch`` returns (e.g.
    ``"val_precision_at_10"`` from :func:`~.metrics.validation_metrics` on a validation split
    carved from train), training stops after ``config.patience`` epochs without a higher value
    and the model is left with the weights of its best epoch."""
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
    engine = resolve_engine(model, config)
    lr = config.lr if config.lr is not None else auto_lr(config.optimizer, model.dim, engine)
    update = _updater(model, sampler, config, engine, lr, log_q, generator)
    batch = config.batch_size or auto_batch_size(len(train), engine)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Tensor]] | None = None
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator, device=device)
        total = torch.zeros((), device=device)
        batches = range(0, len(train), batch)
        for lo in tqdm(batches, desc=f"epoch {epoch}", disable=not config.progress, leave=False):
            idx = order[lo : lo + batch]
            terms = update(users[idx], items[idx])
            total += terms.detach().sum()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "loss": float(total) / len(train), "seconds": seconds}
        if on_epoch is not None:
            model.eval()
            record = _epoch_record(record, on_epoch(epoch, model))
        history.append(record)
        if config.monitor is not None:
            value = _monitored(record, config.monitor)
            if best is None or value > best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = (value, epoch, state)
            elif epoch - best[1] >= config.patience:
                break
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return history


def numba_installed() -> bool:
    """Whether the optional ``numba`` package (the "numba" engine) can be imported."""
    return importlib.util.find_spec("numba") is not None


def resolve_engine(model: Recommender, config: FitConfig) -> str:
    """The engine ``config.engine`` names; "auto" is "numba" where the sparse engine applies
    (:class:`~.models.MatrixFactorization`, Adagrad, a loss of ``SPARSE_LOSSES``), the model is
    on the CPU and numba is installed, "sparse" where it applies otherwise, else "autograd"."""
    fits = (isinstance(model, MatrixFactorization) and config.optimizer == "adagrad"
            and config.loss in SPARSE_LOSSES)
    if config.engine in ("sparse", "numba") and not fits:
        raise ValueError(
            f"engine={config.engine!r} needs a MatrixFactorization, optimizer='adagrad' and a "
            f"loss in {SPARSE_LOSSES}; got {type(model).__name__}, {config.optimizer!r}, "
            f"{config.loss!r} (use engine='autograd')"
        )
    on_cpu = fits and model.user_weight.device.type == "cpu"
    if config.engine == "numba" and not on_cpu:
        raise ValueError(f"engine='numba' trains a model on the CPU, got one on "
                         f"{model.user_weight.device} (use engine='sparse')")
    if config.engine == "numba" and not numba_installed():
        raise ValueError("engine='numba' needs the numba package: pip install "
                         "'metrickit[recsys]' (or use engine='sparse')")
    if config.engine == "auto":
        if on_cpu and numba_installed():
            return "numba"
        return "sparse" if fits else "autograd"
    return config.engine


def _updater(model: Recommender, sampler: NegativeSampler, config: FitConfig, engine: str,
             lr: float, log_q: Tensor, generator: torch.Generator | None,
             ) -> Callable[[Tensor, Tensor], Tensor]:
    """A function that trains on one batch (users, items) and returns its [B] loss terms."""
    if engine == "numba":
        from .compiled import CompiledStep

        assert isinstance(model, MatrixFactorization)
        step = CompiledStep(model, sampler, config, lr)

        def compiled_update(u: Tensor, i: Tensor) -> Tensor:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
            return step(u, i, seed)

        return compiled_update
    if engine == "sparse":
        assert isinstance(model, MatrixFactorization)
        user_opt = RowAdagrad(model.user_weight, lr)
        item_opt = RowAdagrad(model.item_weight, lr)

        def sparse_update(u: Tensor, i: Tensor) -> Tensor:
            g = sparse_grad(model, sampler, u, i, config, generator)
            apply(g, model, user_opt, item_opt, config.l2)
            return g.terms

        return sparse_update
    optimizer = make_optimizer(model, config.optimizer, lr)

    def autograd_update(u: Tensor, i: Tensor) -> Tensor:
        terms, used = _step(model, sampler, u, i, config, log_q, generator)
        loss = terms.mean()
        if config.l2:
            loss = loss + config.l2 * sum(v.pow(2).sum(-1).mean() for v in used)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return terms.detach()

    return autograd_update


def _monitored(record: Mapping[str, float], name: str) -> float:
    if name not in record:
        raise ValueError(f"monitor={name!r} is not among the epoch's values {sorted(record)}: "
                         "return it from on_epoch (e.g. recsys.validation_metrics)")
    return float(record[name])
