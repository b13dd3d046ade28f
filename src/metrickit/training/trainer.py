"""``Trainer``: P×K metric-learning training with atomic checkpoints, resume and evaluation.

    >>> trainer = mk.Trainer(mk.TrainConfig(dataset="digits", loss="triplet", miner="hard"))
    >>> results = trainer.run()          # train, evaluate, write the run directory
    >>> results["trained"]["map_at_r"]
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import distributed as mkd
from ..data import LabelledData, list_datasets, load_dataset, split_dataset
from ..distances import DISTANCES
from ..evaluation import evaluate_embeddings
from ..evaluation.retrieval import DEFAULT_KS
from ..losses import get_loss, get_loss_class, list_losses, resolve_loss_name
from ..losses._base import ProxyLoss
from ..miners import triplet_difficulty
from ..models import build_model
from ..rundir import RunDir, check_new, remove_stale_temporaries
from ..samplers import PKSampler
from . import outputs
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import INPUTS_KEY, TrainConfig, read_config_json

CONFIG_FILE = "config.json"
LAST = Path("checkpoints") / "last.pt"
INITIAL = Path("checkpoints") / "init.pt"
DIFFICULTIES = ("easy", "semihard", "hard")
_SUMMARY_METRICS = ("test_precision_at_1", "test_map_at_r")
_EVAL_BATCH = 1024
DEFAULT_P = 8
RUN_KIND = "train"


class StepResult(NamedTuple):
    """What one optimiser step reports: the loss and, for triplet losses, the batch's triplet
    counts by difficulty at the loss's margin (None otherwise)."""

    loss: float
    easy: float | None = None
    semihard: float | None = None
    hard: float | None = None
    total: float | None = None
PROXY_LR_FACTOR = 100.0  # default loss_lr / lr for proxy losses (see loss_learning_rate)


class Trainer:
    """Train an embedding network with a batch metric-learning loss on P×K batches.

    Everything that can fail on bad input (data, model, loss, miner) is built in the constructor,
    before anything is written to the run directory ``config.output``.

    Args:
        config: a :class:`TrainConfig` or a mapping of its options.
        progress: show a tqdm progress bar (running loss, triplet-difficulty shares).
    """

    def __init__(self, config: TrainConfig | Mapping[str, Any], progress: bool = True) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        cfg = self.config
        self.run_dir = Path(cfg.output)
        self.progress = progress and mkd.is_main_process()
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)

        data = load_config_data(cfg)
        train, test = split_dataset(data, cfg.protocol, cfg.test_size, seed=cfg.seed)
        self.data_name = data.name
        self.image_shape = data.image_shape
        self.x_train, self.y_train, self.train_classes = _as_tensors(train, "training")
        self.x_test, self.y_test, self.test_classes = _as_tensors(test, "test")
        self.p = cfg.p if cfg.p is not None else min(DEFAULT_P, len(self.train_classes))
        _check_trainable(self.y_train, self.train_classes, self.p)
        _check_evaluable(self.y_test)
        self.standardization = None
        if cfg.standardize:
            self.standardization = _standardization(self.x_train, self.image_shape)
            self.x_train = standardize(self.x_train, self.standardization)
            self.x_test = standardize(self.x_test, self.standardization)

        self.input_shape = tuple(self.x_train.shape[1:])
        self.model = self._new_model()
        self.initial_state = _cpu_copy(self.model.state_dict())
        self.loss_fn = build_loss(
            cfg.loss, cfg.loss_params, cfg.miner, len(self.train_classes), cfg.embedding_dim
        ).to(self.device)
        self.difficulty_options = _difficulty_options(cfg.loss, self.loss_fn)
        distance = getattr(self.loss_fn, "distance", "euclidean")
        self.distance = distance if distance in DISTANCES else "euclidean"
        self.optimizer = _build_optimizer(
            cfg, list(self.model.parameters()), list(self.loss_fn.parameters()),
            loss_learning_rate(cfg, self.loss_fn),
        )
        # under torchrun: P classes per process, one global P·W×K batch per step (see
        # docs/distributed.md); DDP averages exactly to the single-process gradient
        sampler = mkd.DistributedPKSampler if mkd.is_distributed() else PKSampler
        self.sampler = sampler(
            self.y_train, p=self.p, k=cfg.k, num_batches=cfg.batches_per_epoch, seed=cfg.seed
        )
        self.train_model, self.train_loss = self.model, mkd.DistributedLoss(self.loss_fn)
        if mkd.is_distributed():
            ids = [self.device] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.history: list[dict[str, float]] = []
        self.step_losses: list[float] = []
        self.epoch = 0
        self._run_dir: RunDir | None = None
        self._holding = False

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        overrides: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> Trainer:
        """A trainer for the run saved in ``run_dir`` (its config, with ``overrides`` applied)."""
        run_dir = Path(run_dir)
        config = TrainConfig.from_dict(read_config_json(run_dir / CONFIG_FILE))
        config = config.merged({**(overrides or {}), "output": str(run_dir)})
        return cls(config, progress=progress)

    # ----------------------------------------------------------------------------- running
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (or continue with ``resume=True``), evaluate, and write the run directory."""
        with self._holding_run_dir(resume):
            self.fit(resume=resume)
            results = self.evaluate()
            self.write_outputs(results)
        return results

    def write_outputs(self, results: Mapping[str, Any]) -> list[str]:
        """metrics.json, history.csv, figures and report.html of ``results`` (main process)."""
        notes: list[str] = []
        if mkd.is_main_process():
            notes = outputs.write_run_outputs(self.record(results))
        mkd.barrier()
        return notes

    def record(self, results: Mapping[str, Any]) -> outputs.RunRecord:
        """The plain record of this run that :mod:`~metrickit.training.outputs` writes out."""
        return outputs.RunRecord(
            run_dir=self.run_dir,
            title=f"metrickit run: {self.config.loss} on {self.data_name}",
            config=self.config.to_dict(),
            results=results,
            epochs_trained=self.epoch,
            data_name=self.data_name,
            history=self.history,
            step_losses=self.step_losses,
            loss_fn=self.loss_fn,
            distance=self.distance,
            test_inputs=self.x_test,
            test_labels=self.y_test,
            test_classes=self.test_classes,
            image_shape=self.image_shape,
            embeddings_before=self.embed(self.x_test, self.untrained_model()),
            embeddings_after=self.embed(self.x_test),
        )

    def run_inputs(self) -> dict[str, Any]:
        """What the saved model needs to embed new data (stored in config.json as ``inputs``)."""
        return {
            "input_shape": list(self.input_shape),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "standardization": self.standardization,
            "distance": self.distance,
            "p": self.p,
        }

    def _config_json(self) -> str:
        import json

        return json.dumps(
            {**self.config.to_dict(), INPUTS_KEY: self.run_inputs()}, indent=2, sort_keys=True
        ) + "\n"

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train up to ``config.epochs``, saving a checkpoint after every epoch.

        The history row of the last epoch (and of every ``eval_every``-th) holds the trained
        network's test metrics as ``test_<metric>``.
        """
        with self._holding_run_dir(resume):
            return self._fit()

    def _fit(self) -> list[dict[str, float]]:
        cfg = self.config
        for epoch in range(self.epoch, cfg.epochs):
            row = self._train_epoch(epoch)
            last = epoch + 1 == cfg.epochs
            if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                metrics = self._metrics(self.model)
                row.update({f"test_{k}": v for k, v in metrics.items()})
            self.history.append(row)
            self.epoch = epoch + 1
            if mkd.is_main_process():
                self._save()
            mkd.barrier()
            if self.progress:
                tqdm.write(_epoch_summary(row, cfg.epochs))
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        self.loss_fn.train()
        self.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss_sum, counts = 0.0, np.zeros(4)
        bar = tqdm(
            self.sampler,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for step, batch in enumerate(bar, start=1):
            result = self._step(torch.as_tensor(batch))
            self.step_losses.append(result.loss)
            loss_sum += result.loss
            postfix = {"loss": f"{loss_sum / step:.4f}"}
            if result.total is not None:
                shares = (result.easy, result.semihard, result.hard)
                counts += (*shares, result.total)
                total = max(result.total, 1.0)
                postfix.update(
                    {k: f"{v / total:.0%}" for k, v in zip(DIFFICULTIES, shares, strict=True)}
                )
            bar.set_postfix(postfix, refresh=False)
        bar.close()
        row = {"epoch": epoch + 1, "loss": loss_sum / len(self.sampler)}
        if self.difficulty_options is not None:
            total = max(counts[3], 1.0)
            row.update({k: float(c / total) for k, c in zip(DIFFICULTIES, counts[:3], strict=True)})
        row["time"] = time.perf_counter() - start
        return row

    def _step(self, batch: Tensor) -> StepResult:
        """One optimiser step; its loss and triplet counts fetched with one host sync."""
        x = self.x_train[batch].to(self.device, non_blocking=True)
        y = self.y_train[batch].to(self.device, non_blocking=True)
        embeddings = self.train_model(x)
        loss = self.train_loss(embeddings, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mkd.all_reduce_mean_([p.grad for p in self.loss_fn.parameters() if p.grad is not None])
        self.optimizer.step()
        stats = [loss.detach().float()]
        if self.difficulty_options is not None:
            difficulty = triplet_difficulty(embeddings.detach(), y, **self.difficulty_options)
            stats += [difficulty[k].float() for k in (*DIFFICULTIES, "total")]
        return StepResult(*torch.stack(stats).tolist())

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, Any]:
        """Test-split metrics of the trained network, the untrained one and the raw input."""
        return {
            "trained": self._metrics(self.model),
            "untrained": self._metrics(self.untrained_model()),
            "raw": evaluate_embeddings(self.x_test.flatten(1), self.y_test),
        }

    def untrained_model(self) -> nn.Module:
        """The network with the run's initial weights (same seed, before any step)."""
        model = self._new_model()
        model.load_state_dict(self.initial_state)
        return model

    def embed(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        """Embeddings (float32, on the CPU) of ``x`` computed in batches without gradients."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            parts = [
                model(x[i : i + _EVAL_BATCH].to(self.device)).float().cpu()
                for i in range(0, x.shape[0], _EVAL_BATCH)
            ]
        model.train(was_training)
        return torch.cat(parts)

    def _metrics(self, model: nn.Module) -> dict[str, float]:
        # under torchrun (called by every process): each embeds a shard, gathered once
        rank, world = mkd.get_rank(), mkd.get_world_size()
        n = self.x_test.shape[0]
        shard = self.embed(self.x_test[n * rank // world : n * (rank + 1) // world], model)
        return evaluate_embeddings(mkd.all_gather(shard.to(self.device)).cpu(), self.y_test)

    def _new_model(self) -> nn.Module:
        cfg = self.config
        model = build_model(
            cfg.model, self.input_shape, embedding_dim=cfg.embedding_dim, normalize=cfg.normalize
        )
        return model.to(self.device)

    # ------------------------------------------------------------------ run dir, checkpoints
    @contextlib.contextmanager
    def _holding_run_dir(self, resume: bool) -> Iterator[None]:
        """Create (or, resuming, open and restore) the run directory and hold its lock."""
        if self._holding:  # fit() inside run(): already held
            yield
            return
        run_dir = self.run_dir
        main = mkd.is_main_process()
        if not resume:
            check_new(run_dir, RUN_KIND, resume_hint="--resume")  # every process, same verdict
            mkd.barrier()
            if main:
                self._run_dir = RunDir.create(run_dir, RUN_KIND, resume_hint="--resume")
                try:
                    save_checkpoint({"model": self.initial_state}, run_dir / INITIAL)
                    self._run_dir.write_text(CONFIG_FILE, self._config_json())
                except BaseException:
                    self._release()
                    raise
        else:
            saved = TrainConfig.from_dict(read_config_json(run_dir / CONFIG_FILE))
            self._check_same_run(saved, f"{run_dir / CONFIG_FILE}")
            if main:
                self._run_dir = RunDir.open(run_dir, RUN_KIND, required=CONFIG_FILE)
            try:
                self.restore(require_checkpoint=False)
                if main:
                    for directory in (run_dir, run_dir / LAST.parent):
                        remove_stale_temporaries(directory)
                    self._run_dir.write_text(CONFIG_FILE, self._config_json())
            except BaseException:
                self._release()
                raise
        mkd.barrier()
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self._release()

    def _release(self) -> None:
        if self._run_dir is not None:
            self._run_dir.close()
            self._run_dir = None

    def _check_same_run(self, saved: TrainConfig, source: str) -> None:
        diffs = self.config.differences(saved)
        if diffs:
            raise ValueError(
                f"cannot resume: the config differs from the run's ({source}) in "
                f"{'; '.join(diffs)} (only epochs may change); nothing was written"
            )

    def restore(self, require_checkpoint: bool = True) -> None:
        """Load the run directory's initial weights and its last checkpoint (if any)."""
        self.initial_state = load_checkpoint(self.run_dir / INITIAL)["model"]
        if require_checkpoint or (self.run_dir / LAST).exists():
            self.load(self.run_dir / LAST)

    def load(self, path: str | Path) -> None:
        """Restore model, loss, optimiser, RNG states, epoch and history from a checkpoint.

        The checkpoint's config must match this trainer's (up to epochs, output and device).
        """
        state = load_checkpoint(path, map_location=self.device)
        try:
            saved = TrainConfig.from_dict(state["config"]).merged({"device": self.config.device})
            self._check_same_run(saved, str(path))
            self.model.load_state_dict(state["model"])
            self.loss_fn.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            self.history = [dict(row) for row in state["history"]]
            self.step_losses = list(state["step_losses"])
            self.epoch = int(state["epoch"])
        except (KeyError, RuntimeError) as exc:
            message = f"checkpoint {str(path)!r} does not fit this run: {exc}"
            raise CheckpointError(message) from None

    def _save(self) -> None:
        save_checkpoint(
            {
                "epoch": self.epoch,
                "model": self.model.state_dict(),
                "loss": self.loss_fn.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                "history": self.history,
                "step_losses": self.step_losses,
                "config": self.config.to_dict(),
            },
            self.run_dir / LAST,
        )


# ------------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use cpu or auto")
    return torch.device(name)


def build_loss(
    name: str,
    params: Mapping[str, Any],
    miner: str | None,
    num_classes: int,
    embedding_dim: int,
) -> nn.Module:
    """A registered batch loss with its parameters; ``miner`` sets its ``mining`` parameter.

    ``num_classes`` and ``embedding_dim`` are filled in for losses that take them (class centres,
    proxies) unless given in ``params``.
    """
    key = resolve_loss_name(name)
    accepted = inspect.signature(get_loss_class(key)).parameters
    params = dict(params)
    if miner is not None:
        if "mining" not in accepted:
            with_mining = [
                n
                for n in list_losses()
                if "mining" in inspect.signature(get_loss_class(n)).parameters
            ]
            raise ValueError(
                f"incompatible loss and miner: loss {name!r} takes no miner (got miner "
                f"{miner!r}); miners apply to: {', '.join(with_mining) or 'no registered loss'}"
            )
        if params.get("mining", miner) != miner:
            raise ValueError(
                f"miner {miner!r} conflicts with loss parameter mining={params['mining']!r}"
            )
        params["mining"] = miner
    for auto, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        if auto in accepted and auto not in params:
            params[auto] = value
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(params) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"loss {name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: "
            f"{', '.join(accepted)}"
        )
    try:
        return get_loss(key, **params)
    except TypeError as exc:
        raise ValueError(f"invalid parameters for loss {name!r}: {exc}") from None


def _cpu_copy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _epoch_summary(row: Mapping[str, float], epochs: int) -> str:
    text = f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}"
    text += "".join(f"  {k} {row[k]:.0%}" for k in DIFFICULTIES if k in row)
    text += "".join(f"  {k[5:]} {row[k]:.4f}" for k in _SUMMARY_METRICS if k in row)
    return text + f"  ({row['time']:.1f} s)"


def _difficulty_options(name: str, loss_fn: nn.Module) -> dict[str, Any] | None:
    """``triplet_difficulty`` options matching a triplet loss's margin and distance, else None."""
    if resolve_loss_name(name) != "triplet":  # shares at the margin of a triplet loss only
        return None
    options = {"margin": float(getattr(loss_fn, "margin", 0.2))}
    distance = getattr(loss_fn, "distance", "euclidean")
    if isinstance(distance, str):
        options["distance"] = distance
        options["squared"] = distance == "euclidean" and bool(getattr(loss_fn, "squared", False))
    return options


def loss_learning_rate(cfg: TrainConfig, loss_fn: nn.Module) -> float:
    """The learning rate of the loss's own parameters (proxies, centres).

    ``cfg.loss_lr`` when given; otherwise ``PROXY_LR_FACTOR`` × ``cfg.lr`` for a
    :class:`~metrickit.losses.ProxyLoss` (Kim et al., CVPR 2020, train the proxies 100× faster
    than the network; Teh et al., ECCV 2020, also find fast-moving proxies essential: a proxy
    sees each class only through a few samples per batch) and ``cfg.lr`` for any other loss.
    """
    if cfg.loss_lr is not None:
        return cfg.loss_lr
    return cfg.lr * PROXY_LR_FACTOR if isinstance(loss_fn, ProxyLoss) else cfg.lr


def _build_optimizer(
    cfg: TrainConfig, model_params: list[nn.Parameter], loss_params: list[nn.Parameter],
    loss_lr: float,
) -> torch.optim.Optimizer:
    groups = [{"params": model_params}]
    if loss_params:
        groups.append({"params": loss_params, "lr": loss_lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def load_config_data(cfg: TrainConfig) -> LabelledData:
    """The data set of a config, loaded with the data options that apply to its kind."""
    spec = cfg.dataset
    path = Path(spec).expanduser()
    defaults = TrainConfig()
    given = {
        name for name in ("label_column", "image_size", "image_mode")
        if getattr(cfg, name) != getattr(defaults, name)
    }  # fmt: skip
    options: dict[str, Any] = {}
    if spec not in list_datasets() and path.is_dir():
        size = cfg.image_size
        options = {"mode": cfg.image_mode, "image_size": tuple(size) if size else size}
        applies = {"image_size", "image_mode"}
    elif spec not in list_datasets() and path.suffix.lower() == ".csv":
        options, applies = {"label_column": cfg.label_column}, {"label_column"}
    else:
        applies = set()
    if given - applies:
        raise ValueError(
            f"option(s) {', '.join(sorted(given - applies))} do not apply to dataset {spec!r} "
            "(label_column: CSV files; image_size, image_mode: image folders)"
        )
    return load_dataset(spec, **options)


def _standardization(x: Tensor, image_shape: tuple[int, ...] | None) -> dict[str, list[float]]:
    """Per-feature mean and standard deviation of the training inputs (1 for constant ones)."""
    if image_shape is not None or x.dim() != 2:
        raise ValueError(
            "standardize applies to feature vectors (CSV, NumPy, flavia), not to images"
        )
    x64 = x.double()
    std = x64.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"mean": x64.mean(0).tolist(), "std": std.tolist()}


def standardize(x: Tensor, stats: Mapping[str, list[float]]) -> Tensor:
    """``(x - mean) / std`` with the statistics :meth:`Trainer.run_inputs` records."""
    mean = torch.tensor(stats["mean"], dtype=torch.float64)
    std = torch.tensor(stats["std"], dtype=torch.float64)
    return ((x.double() - mean) / std).float()


def _as_tensors(data: LabelledData, split: str) -> tuple[Tensor, Tensor, list[str]]:
    """Inputs, labels remapped to 0..C-1 over the classes present, and those classes' names."""
    if len(data) == 0:
        raise ValueError(f"the {split} split is empty; use a larger dataset or another test_size")
    ids, inverse = np.unique(data.y.numpy(), return_inverse=True)
    labels = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
    return data.x, labels, [data.classes[i] for i in ids]


def _check_trainable(y: Tensor, classes: list[str], p: int) -> None:
    counts = torch.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise ValueError(
            f"the training split has {len(classes)} class; metric learning needs at least 2"
        )
    single = [c for c, n in zip(classes, counts.tolist(), strict=True) if n < 2]
    if single:
        raise ValueError(
            f"{len(single)} class(es) of the training split have a single sample (e.g. class "
            f"{single[0]!r}); every class needs at least 2 samples to form a positive pair"
        )
    if p > len(classes):
        raise ValueError(
            f"p={p} is larger than the {len(classes)} classes of the training split; choose "
            f"-P {len(classes)} or fewer, or leave -P out to use min({DEFAULT_P}, classes)"
        )


def _check_evaluable(y_test: Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> None:
    """The test split must hold more samples than the largest Recall@k needs (leave-one-out)."""
    needed = max(ks) + 1
    if y_test.shape[0] < needed:
        raise ValueError(
            f"the test split has {y_test.shape[0]} samples but the evaluation (Recall@{max(ks)}, "
            f"leave-one-out) needs at least {needed}; use a larger test_size or more data"
        )
