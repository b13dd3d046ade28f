"""Callbacks: plug your own logging (or early exits) into the training loop.

A callback is any object with one or more of these methods; missing ones are skipped and return
values are ignored (returning None is fine)::

    on_step(trainer, step, result)      # after every optimiser step; result.loss is a float
    on_epoch(trainer, epoch, row)       # after every epoch; row is that epoch's history row
    on_evaluate(trainer, split, metrics)  # after an evaluation ("validation" or "test")

``step`` counts optimiser steps from 1 over the whole run, ``epoch`` epochs from 1. Setting
``trainer.should_stop = True`` ends training after the current epoch.

    >>> class Print:
    ...     def on_epoch(self, trainer, epoch, row):
    ...         print(epoch, row["loss"])
    >>> mk.Trainer(config, callbacks=[Print(), TensorBoardLogger("runs/tb")])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HOOKS = ("on_step", "on_epoch", "on_evaluate")


class Callback:
    """A base class with no-op hooks (optional: any object with some of the hooks works)."""

    def on_step(self, trainer: Any, step: int, result: Any) -> None:
        """After every optimiser step."""

    def on_epoch(self, trainer: Any, epoch: int, row: Mapping[str, float]) -> None:
        """After every epoch, with its history row."""

    def on_evaluate(self, trainer: Any, split: str, metrics: Mapping[str, float]) -> None:
        """After an evaluation of the network on ``split``."""


class CallbackList:
    """Calls each hook on every callback that defines it, in order."""

    def __init__(self, callbacks: Iterable[object] = ()) -> None:
        self.callbacks = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
                raise TypeError(
                    f"callbacks[{i}] ({type(cb).__name__}) has none of the hooks "
                    f"{', '.join(HOOKS)}"
                )
        self._hooks = {
            hook: [getattr(cb, hook) for cb in self.callbacks if callable(getattr(cb, hook, None))]
            for hook in HOOKS
        }

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def on_step(self, trainer: Any, step: int, result: Any) -> None:
        for fn in self._hooks["on_step"]:
            fn(trainer, step, result)

    def on_epoch(self, trainer: Any, epoch: int, row: Mapping[str, float]) -> None:
        for fn in self._hooks["on_epoch"]:
            fn(trainer, epoch, row)

    def on_evaluate(self, trainer: Any, split: str, metrics: Mapping[str, float]) -> None:
        for fn in self._hooks["on_evaluate"]:
            fn(trainer, split, metrics)


class TensorBoardLogger(Callback):
    """Write the step loss, the learning rate, the epoch rows and the evaluation metrics as
    TensorBoard scalars under ``log_dir`` (needs the ``tensorboard`` package:
    ``pip install 'metrickit[tensorboard]'``)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except (ImportError, ModuleNotFoundError):
            raise ModuleNotFoundError(
                "TensorBoard logging needs the tensorboard package: pip install tensorboard"
            ) from None
        self.writer = SummaryWriter(str(log_dir))
        self.step = 0

    def on_step(self, trainer: Any, step: int, result: Any) -> None:
        self.step = step
        self.writer.add_scalar("train/loss", float(getattr(result, "loss", result)), step)
        optimizer = getattr(trainer, "optimizer", None)
        if optimizer is not None:
            self.writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)

    def on_epoch(self, trainer: Any, epoch: int, row: Mapping[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()

    def on_evaluate(self, trainer: Any, split: str, metrics: Mapping[str, float]) -> None:
        epoch = int(getattr(trainer, "epoch", 0))
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{split}/{key}", value, epoch)

    def close(self) -> None:
        self.writer.close()
