"""``Trainer``: P×K metric-learning training with atomic checkpoints, resume and evaluation.

    >>> trainer = mk.Trainer(mk.TrainConfig(dataset="digits", loss="triplet", mining="hard"))
    >>> results = trainer.run()          # train, evaluate, write the run directory
    >>> results["trained"]["map_at_r"]
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .. import distributed as mkd
from .._validation import check_choice
from ..backbones import build_embedder
from ..data import LabelledData
from ..distances import DISTANCES
from ..evaluation import evaluate_embeddings
from ..evaluation.retrieval import DEFAULT_KS
from ..losses import ProxyLoss, get_loss, get_loss_class, list_losses, resolve_loss_name
from ..miners import triplet_difficulty
from ..rundir import RunDir, check_new, remove_stale_temporaries
from ..samplers import PKSampler
from . import outputs
from .best import initial_best, patience_spent, track_best
from .callbacks import CallbackList, TensorBoardLogger
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import INPUTS_KEY, TrainConfig, read_config_json
from .datasets import RunData, config_data
from .loading import batches, class_ids, dataset_labels, embed_batches
from .precision import MixedPrecision
from .schedules import clip_gradients, warmup_schedule

CONFIG_FILE = "config.json"
LAST = Path("checkpoints") / "last.pt"
INITIAL = Path("checkpoints") / "init.pt"
BEST = Path("checkpoints") / "best.pt"
CHECKPOINTS = ("last", "best")
DIFFICULTIES = ("easy", "semihard", "hard")
_SUMMARY_METRICS = ("test_precision_at_1", "test_map_at_r")
_EVAL_BATCH = 1024
_EVAL_BATCH_STREAMED = 128
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

    Built from a config (data, network, loss and optimiser by name), from objects, or both: any
    object given replaces what the config would build, and everything else (P×K, epochs,
    precision, schedule, clipping, evaluation, early stopping, run directory) comes from the
    config. Both go through the same loop.

    Args:
        config: a :class:`TrainConfig` or a mapping of its options; None: the defaults, with
            ``output=None`` (in memory, no run directory) when a ``train`` dataset is given.
        progress: show a tqdm progress bar (running loss, triplet-difficulty shares).
        model: any ``nn.Module`` mapping a batch of inputs to embeddings [B, D].
        train, validation, test: map-style datasets of ``(input, label)`` items (labels are read
            once without touching inputs, see :func:`~metrickit.training.loading.dataset_labels`).
        loss: an ``nn.Module`` called as ``loss(embeddings, labels)``, or a registered loss name
            (built with the config's ``loss_params`` and ``mining``).
        optimizer: a callable taking the parameter groups (the network's, then the loss's if it
            has parameters, at ``loss_lr`` when set) and returning a ``torch.optim.Optimizer``.
        callbacks: objects with ``on_step`` / ``on_epoch`` / ``on_evaluate`` hooks (see
            :mod:`~metrickit.training.callbacks`).
        collate_fn: the DataLoader's collate function for the datasets' items.

    Everything that can fail on bad input is built in the constructor, before anything is
    written to the run directory ``config.output``.
    """

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        progress: bool = True,
        *,
        model: nn.Module | None = None,
        train: Dataset | None = None,
        validation: Dataset | None = None,
        test: Dataset | None = None,
        loss: nn.Module | str | None = None,
        optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None = None,
        callbacks: Iterable[object] = (),
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if config is None:
            config = TrainConfig(output=None) if train is not None else TrainConfig()
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        cfg = self.config
        self.run_dir = None if cfg.output is None else Path(cfg.output)
        self.progress = progress and mkd.is_main_process()
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.amp = MixedPrecision(cfg.precision, self.device)
        self.collate_fn = collate_fn

        if train is None:
            if validation is not None or test is not None:
                raise ValueError("validation and test datasets need a train dataset too")
            data = config_data(cfg)
        else:
            if cfg.validation_size is not None:
                raise ValueError(
                    "validation_size splits the config's dataset; with your own datasets pass "
                    "validation=... instead"
                )
            data = RunData(train, validation, test, type(train).__name__,
                           getattr(train, "image_shape", None))  # fmt: skip
        self.data_name, self.image_shape = data.name, data.image_shape
        self.standardization = data.standardization
        self.train_data, self.validation_data = data.train, data.validation
        self.test_data = data.test
        classes, ids = class_ids(dataset_labels(self.train_data))
        self.y_train = torch.as_tensor(ids)  # training labels as class ids 0..C−1
        self.train_classes = _class_names(self.train_data, classes)
        self.label_map = _label_map(classes, self.device)
        self.p = cfg.p if cfg.p is not None else min(DEFAULT_P, len(self.train_classes))
        _check_trainable(torch.as_tensor(ids), self.train_classes, self.p)
        self._labels: dict[str, Tensor] = {}
        self._classes: dict[str, list[str]] = {}
        for split in ("validation", "test"):
            dataset = self._split(split)
            if dataset is not None:
                split_classes, split_ids = class_ids(dataset_labels(dataset))
                self._labels[split] = torch.as_tensor(split_ids)
                self._classes[split] = _class_names(dataset, split_classes)
                _check_evaluable(self._labels[split], split)
        self.test_classes = self._classes.get("test", [])

        self.input_shape = _input_shape(self.train_data)
        if model is None:
            model = build_embedder(
                cfg.model, self.input_shape, cfg.embedding_dim, cfg.normalize, cfg.weights
            )
            embedding_dim = cfg.embedding_dim
        elif not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        else:
            embedding_dim = None
        if cfg.freeze_epochs and not callable(getattr(model, "freeze_backbone", None)):
            raise ValueError(
                "freeze_epochs needs a backbone model (a model spec with a colon, e.g. "
                "torchvision:resnet50, or a module with a freeze_backbone method)"
            )
        self.model = model.to(self.device)
        self.initial_state = _cpu_copy(self.model.state_dict())
        if loss is None or isinstance(loss, str):
            self.loss_name: str | None = cfg.loss if loss is None else loss
            if embedding_dim is None:
                embedding_dim = _output_dim(self.model, self.train_data, self.device)
            self.loss_fn = build_loss(
                self.loss_name, cfg.loss_params, cfg.mining, len(classes), embedding_dim
            )
        elif isinstance(loss, nn.Module):
            self.loss_name, self.loss_fn = registered_name(loss), loss
        else:
            raise TypeError(f"loss must be an nn.Module or a loss name, got {type(loss).__name__}")
        self.loss_fn = self.loss_fn.to(self.device)
        self.difficulty_options = (
            None if self.loss_name is None else _difficulty_options(self.loss_name, self.loss_fn)
        )
        distance = getattr(self.loss_fn, "distance", "euclidean")
        self.distance = distance if distance in DISTANCES else "euclidean"
        model_params, loss_params = list(self.model.parameters()), list(self.loss_fn.parameters())
        if optimizer is None:
            self.optimizer = _build_optimizer(
                cfg, model_params, loss_params, loss_learning_rate(cfg, self.loss_fn)
            )
        else:  # the factory's own rate, unless loss_lr is set for the loss's parameters
            groups = [{"params": model_params}]
            if loss_params:
                extra = {} if cfg.loss_lr is None else {"lr": cfg.loss_lr}
                groups.append({"params": loss_params, **extra})
            self.optimizer = _call_factory(optimizer)(groups)
        self._parameters = model_params + loss_params
        # under torchrun: P classes per process, one global P·W×K batch per step (see
        # docs/distributed.md); DDP averages exactly to the single-process gradient
        sampler = mkd.DistributedPKSampler if mkd.is_distributed() else PKSampler
        self.sampler = sampler(
            ids, p=self.p, k=cfg.k, num_batches=cfg.batches_per_epoch, seed=cfg.seed
        )
        self.loader = batches(
            self.train_data, self.sampler, cfg.workers, cfg.pin_memory, collate_fn
        )
        self.scheduler = None
        if cfg.schedule != "constant" or cfg.warmup_steps:
            total = len(self.sampler) * cfg.epochs
            self.scheduler = warmup_schedule(
                self.optimizer, total, min(cfg.warmup_steps, total), cfg.schedule
            )
        self.callbacks = CallbackList(callbacks)
        self.train_model, self.train_loss = self.model, mkd.DistributedLoss(self.loss_fn)
        if mkd.is_distributed():
            ids_ = [self.device] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids_)
        self.history: list[dict[str, float]] = []
        self.step_losses: list[float] = []
        self.epoch = 0
        self.best: dict[str, Any] = initial_best()
        self.best_state: dict[str, Any] | None = None
        self.should_stop = False
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

    @property
    def x_test(self) -> Tensor:
        """The test inputs of in-memory data (``LabelledData``)."""
        if not isinstance(self.test_data, LabelledData):
            raise AttributeError("x_test exists for in-memory test data only; use test_data")
        return self.test_data.x

    @property
    def y_test(self) -> Tensor:
        """The test labels as class ids 0..C−1."""
        return self._labels["test"]

    # ----------------------------------------------------------------------------- running
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (or continue with ``resume=True``), evaluate, and write the run directory
        (in memory, ``output=None``: train and evaluate only)."""
        with self._holding_run_dir(resume):
            self.fit(resume=resume)
            results = self.evaluate()
            if self.run_dir is not None:
                self.write_outputs(results)
        return results

    def write_outputs(self, results: Mapping[str, Any]) -> list[str]:
        """metrics.json, history.csv, figures and report.html of ``results`` (main process)."""
        if self.run_dir is None:
            raise ValueError("this trainer has no run directory (output=None); nothing to write")
        notes: list[str] = []
        if mkd.is_main_process():
            notes = outputs.write_run_outputs(self.record(results))
        mkd.barrier()
        return notes

    def record(self, results: Mapping[str, Any]) -> outputs.RunRecord:
        """The plain record of this run that :mod:`~metrickit.training.outputs` writes out."""
        test = self._require_split("test")
        inputs = test.x if isinstance(test, LabelledData) else _LazyInputs(test)
        return outputs.RunRecord(
            run_dir=self.run_dir,
            title=f"metrickit run: {self.loss_name or type(self.loss_fn).__name__} on "
            f"{self.data_name}",
            config=self.config.to_dict(),
            results=results,
            epochs_trained=self.epoch,
            data_name=self.data_name,
            history=self.history,
            step_losses=self.step_losses,
            loss_fn=self.loss_fn,
            distance=self.distance,
            test_inputs=inputs,
            test_labels=self.y_test,
            test_classes=self.test_classes,
            image_shape=self.image_shape,
            embeddings_before=self.embed_dataset(test, self.untrained_model()),
            embeddings_after=self.embed_dataset(test),
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
        """Train up to ``config.epochs`` (fewer when early stopping triggers), saving a
        checkpoint after every epoch when there is a run directory.

        The validation split (if any) is evaluated every ``eval_every`` epochs (every epoch when
        0) into ``val_<metric>`` columns and selects the best weights by ``best_metric``; the
        last epoch (and every ``eval_every``-th) also holds the test metrics as ``test_<metric>``.
        """
        with self._holding_run_dir(resume):
            return self._fit()

    def _fit(self) -> list[dict[str, float]]:
        cfg = self.config
        self.should_stop = False
        if cfg.tensorboard and mkd.is_main_process() and not self._has_tensorboard():
            self.callbacks = CallbackList(
                [*self.callbacks.callbacks, TensorBoardLogger(self.run_dir / "tensorboard")]
            )
        for epoch in range(self.epoch, cfg.epochs):
            row = self._train_epoch(epoch)
            last = epoch + 1 == cfg.epochs
            improved = False
            if self.validation_data is not None and (
                last or (epoch + 1) % max(cfg.eval_every, 1) == 0
            ):
                metrics = self._evaluate_split(self.model, "validation")
                row.update({f"val_{k}": v for k, v in metrics.items()})
                improved = self._track_best(metrics, epoch + 1)
            if self.test_data is not None and (
                last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
            ):
                metrics = self._evaluate_split(self.model, "test")
                row.update({f"test_{k}": v for k, v in metrics.items()})
            self.history.append(row)
            self.epoch = epoch + 1
            if self.run_dir is not None:
                if mkd.is_main_process():
                    self._save()
                    if improved:
                        best = {**self.best_state, "epoch": self.epoch}  # type: ignore[dict-item]
                        save_checkpoint(best, self.run_dir / BEST)
                mkd.barrier()
            if self.progress:
                tqdm.write(_epoch_summary(row, cfg.epochs))
            self.callbacks.on_epoch(self, epoch + 1, row)
            if self.should_stop or patience_spent(self.best, cfg.patience):
                if self.progress:
                    best = self.best["epoch"]
                    tqdm.write(f"early stop after epoch {epoch + 1} (best: epoch {best})")
                break
        return self.history

    def _has_tensorboard(self) -> bool:
        return any(isinstance(cb, TensorBoardLogger) for cb in self.callbacks.callbacks)

    def _track_best(self, metrics: Mapping[str, float], epoch: int) -> bool:
        better = track_best(self.best, self.config.best_metric, metrics, epoch)
        if better:
            self.best_state = {
                "model": _cpu_copy(self.model.state_dict()),
                "loss": _cpu_copy(self.loss_fn.state_dict()),
            }
        return better

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        if cfg.freeze_epochs:
            self.model.freeze_backbone(epoch < cfg.freeze_epochs)  # type: ignore[operator]
        self.model.train()
        self.loss_fn.train()
        self.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss_sum, counts = 0.0, np.zeros(4)
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for step, (x, y) in enumerate(bar, start=1):
            result = self._step(x, y)
            self.step_losses.append(result.loss)
            loss_sum += result.loss
            if self.callbacks:
                self.callbacks.on_step(self, len(self.step_losses), result)
            postfix = {"loss": f"{loss_sum / step:.4f}"}
            if result.total is not None:
                shares = (result.easy, result.semihard, result.hard)
                counts += (*shares, result.total)
                total = max(result.total, 1.0)
                postfix.update(
                    {k: f"{v / total:.0%}" for k, v in zip(DIFFICULTIES, shares, strict=True)}
                )
            if self.progress:
                bar.set_postfix(postfix, refresh=False)
        bar.close()
        row = {"epoch": epoch + 1, "loss": loss_sum / len(self.sampler)}
        if self.difficulty_options is not None:
            total = max(counts[3], 1.0)
            row.update({k: float(c / total) for k, c in zip(DIFFICULTIES, counts[:3], strict=True)})
        if self.scheduler is not None:
            row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row["time"] = time.perf_counter() - start
        return row

    def _step(self, x: Tensor, y: Tensor) -> StepResult:
        """One optimiser step on a batch; its loss and triplet counts fetched with one host
        sync. The network runs under the chosen precision, the loss in float32."""
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        if self.label_map is not None:
            y = self.label_map[y]
        with self.amp.autocast():
            embeddings = self.train_model(x)
        embeddings = embeddings.float()
        loss = self.train_loss(embeddings, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        mkd.all_reduce_mean_([p.grad for p in self.loss_fn.parameters() if p.grad is not None])
        self.amp.step(self.optimizer, self._clip if self.config.grad_clip else None)
        if self.scheduler is not None:
            self.scheduler.step()
        stats = [loss.detach().float()]
        if self.difficulty_options is not None:
            difficulty = triplet_difficulty(embeddings.detach(), y, **self.difficulty_options)
            stats += [difficulty[k].float() for k in (*DIFFICULTIES, "total")]
        return StepResult(*torch.stack(stats).tolist())

    def _clip(self) -> None:
        clip_gradients(self._parameters, self.config.grad_clip)

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self, checkpoint: str = "last") -> dict[str, Any]:
        """Test-split metrics of the trained network (``checkpoint="last"``: the weights after
        the last epoch; ``"best"``: the best validation epoch's), of the untrained one and, for
        in-memory data, of the raw input."""
        check_choice(checkpoint, "checkpoint", CHECKPOINTS)
        test = self._require_split("test")
        model = self.model if checkpoint == "last" else self.best_model()
        results = {
            "trained": self._evaluate_split(model, "test"),
            "untrained": self._metrics(self.untrained_model(), "test"),
        }
        if isinstance(test, LabelledData):
            results["raw"] = evaluate_embeddings(test.x.flatten(1), self.y_test)
        return results

    def best_model(self) -> nn.Module:
        """A copy of the network with the best validation epoch's weights."""
        state = self.best_state
        if state is None and self.run_dir is not None and (self.run_dir / BEST).exists():
            state = load_checkpoint(self.run_dir / BEST, map_location=self.device)
        if state is None:
            raise ValueError(
                "no best checkpoint: the best weights are chosen on a validation split "
                "(validation_size, or validation=...) and none was evaluated"
            )
        model = copy.deepcopy(self.model)
        model.load_state_dict(state["model"])
        return model

    def untrained_model(self) -> nn.Module:
        """The network with the run's initial weights (same seed, before any step)."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.initial_state)
        return model

    def embed(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        """Embeddings (float32, on the CPU) of ``x`` computed in batches without gradients."""
        model = self.model if model is None else model
        loader = (x[i : i + _EVAL_BATCH] for i in range(0, x.shape[0], _EVAL_BATCH))
        return embed_batches(model, ((b, None) for b in loader), self.device)

    def embed_dataset(
        self, dataset: Dataset, model: nn.Module | None = None, start: int = 0,
        stop: int | None = None,
    ) -> Tensor:
        """Embeddings (float32, CPU) of the items ``start:stop`` of ``dataset``, in order."""
        model = self.model if model is None else model
        stop = len(dataset) if stop is None else stop  # type: ignore[arg-type]
        size = _EVAL_BATCH if isinstance(dataset, LabelledData) else _EVAL_BATCH_STREAMED
        chunks = [list(range(i, min(i + size, stop))) for i in range(start, stop, size)]
        loader = batches(dataset, chunks, self.config.workers, False, self.collate_fn)
        return embed_batches(model, loader, self.device)

    def _evaluate_split(self, model: nn.Module, split: str) -> dict[str, float]:
        metrics = self._metrics(model, split)
        self.callbacks.on_evaluate(self, split, metrics)
        return metrics

    def _metrics(self, model: nn.Module, split: str = "test") -> dict[str, float]:
        # under torchrun (called by every process): each embeds a shard, gathered once
        dataset = self._require_split(split)
        rank, world = mkd.get_rank(), mkd.get_world_size()
        n = len(dataset)  # type: ignore[arg-type]
        shard = self.embed_dataset(dataset, model, n * rank // world, n * (rank + 1) // world)
        return evaluate_embeddings(mkd.all_gather(shard.to(self.device)).cpu(), self._labels[split])

    def _split(self, split: str) -> Dataset | None:
        return {"train": self.train_data, "validation": self.validation_data,
                "test": self.test_data}[split]  # fmt: skip

    def _require_split(self, split: str) -> Dataset:
        dataset = self._split(split)
        if dataset is None:
            raise ValueError(
                f"this trainer has no {split} data; pass {split}=... (or a config dataset)"
            )
        return dataset

    # ------------------------------------------------------------------ run dir, checkpoints
    @contextlib.contextmanager
    def _holding_run_dir(self, resume: bool) -> Iterator[None]:
        """Create (or, resuming, open and restore) the run directory and hold its lock."""
        if self._holding or self.run_dir is None:  # already held, or in memory
            if resume and self.run_dir is None:
                raise ValueError("resume needs a run directory (output), got output=None")
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
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            self.amp.load_state_dict(state.get("amp", {}))
            self.best = dict(state.get("best", self.best))
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
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "amp": self.amp.state_dict(),
                "best": self.best,
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
    mining: str | None,
    num_classes: int,
    embedding_dim: int,
) -> nn.Module:
    """A registered batch loss with its parameters; ``mining`` (the config's) sets its own.

    ``num_classes`` and ``embedding_dim`` are filled in for losses that take them (class centres,
    proxies) unless given in ``params``.
    """
    key = resolve_loss_name(name)
    accepted = inspect.signature(get_loss_class(key)).parameters
    params = dict(params)
    if mining is not None:
        if "mining" not in accepted:
            with_mining = [
                n
                for n in list_losses()
                if "mining" in inspect.signature(get_loss_class(n)).parameters
            ]
            raise ValueError(
                f"incompatible loss and mining: loss {name!r} has no mining option (got mining "
                f"{mining!r}); mining applies to: {', '.join(with_mining) or 'no registered loss'}"
            )
        if params.get("mining", mining) != mining:
            raise ValueError(
                f"mining {mining!r} conflicts with loss parameter mining={params['mining']!r}"
            )
        params["mining"] = mining
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


def registered_name(loss: nn.Module) -> str | None:
    """The registry name of a loss module's class, or None for a user's own loss."""
    for name in list_losses():
        if type(loss) is get_loss_class(name):
            return name
    return None


def _call_factory(factory: Callable[[list[dict[str, Any]]], torch.optim.Optimizer]):
    if not callable(factory):
        raise TypeError(f"optimizer must be a callable (a factory), got {type(factory).__name__}")

    def build(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        optimizer = factory(groups)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"the optimizer factory must return a torch.optim.Optimizer, got "
                f"{type(optimizer).__name__}"
            )
        return optimizer

    return build


def _class_names(dataset: Dataset, classes: np.ndarray) -> list[str]:
    """Names of the label values ``classes``: the dataset's ``classes`` list when it has one."""
    names = getattr(dataset, "classes", None)
    if isinstance(names, (list, tuple)) and classes.dtype.kind in "iu" and (
        len(classes) == 0 or (classes.min() >= 0 and classes.max() < len(names))
    ):
        return [str(names[int(c)]) for c in classes]
    return [str(c) for c in classes]


def _label_map(classes: np.ndarray, device: torch.device) -> Tensor | None:
    """A lookup table from label values to class ids 0..C−1; None when they are already those."""
    if classes.dtype.kind not in "iu":
        raise TypeError(
            f"training labels must be integers (class ids), got values of dtype {classes.dtype}"
        )
    if np.array_equal(classes, np.arange(len(classes))):
        return None
    if classes.min() < 0:
        raise ValueError(f"training labels must be >= 0, got {int(classes.min())}")
    table = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    table[torch.as_tensor(classes)] = torch.arange(len(classes))
    return table.to(device)


def _input_shape(dataset: Dataset) -> tuple[int, ...]:
    """The shape of one input: in-memory data's ``input_shape``, else the first item's."""
    if isinstance(dataset, LabelledData):
        return dataset.input_shape
    x = dataset[0][0]
    return tuple(x.shape) if isinstance(x, Tensor) else ()


def _output_dim(model: nn.Module, dataset: Dataset, device: torch.device) -> int:
    """The embedding size of ``model`` on the first training input (one forward, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.as_tensor(dataset[0][0])[None].to(device)
            return int(model(x).shape[-1])
    finally:
        model.train(was_training)


class _LazyInputs:
    """Indexing by a tensor of indices reads those items' inputs (for the retrieval grid)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, index: Tensor) -> Tensor:
        flat = [torch.as_tensor(self.dataset[int(i)][0]) for i in index.reshape(-1)]
        return torch.stack(flat).reshape(*index.shape, *flat[0].shape)


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


def _check_evaluable(
    y_test: Tensor, split: str = "test", ks: tuple[int, ...] = DEFAULT_KS
) -> None:
    """An evaluated split must hold more samples than the largest Recall@k needs
    (leave-one-out)."""
    needed = max(ks) + 1
    if y_test.shape[0] < needed:
        raise ValueError(
            f"the {split} split has {y_test.shape[0]} samples but the evaluation "
            f"(Recall@{max(ks)}, leave-one-out) needs at least {needed}; use a larger "
            f"{split}_size or more data"
        )
