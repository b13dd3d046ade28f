"""The data of a config run: the data set, its train / validation / test splits, standardisation
and augmentation, as ``Dataset`` objects the trainer consumes like a user's own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data import (
    LabelledData,
    StreamingImageFolder,
    augmentation,
    list_datasets,
    load_dataset,
    split_dataset,
)
from .config import TrainConfig

_BACKENDS = {"crop_flip": "torch", "torchvision": "torchvision"}


@dataclass
class RunData:
    """The splits of a run and what describes them."""

    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    name: str
    image_shape: tuple[int, ...] | None = None
    standardization: dict[str, list[float]] | None = None


class Transformed(Dataset):
    """``(transform(x), y)`` for every item ``(x, y)`` of an in-memory ``LabelledData``."""

    def __init__(self, data: LabelledData, transform: Callable[[Tensor], Tensor]) -> None:
        self.data, self.transform = data, transform
        self.labels, self.classes = data.y, data.classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.data[i]
        return self.transform(x), y


def config_data(cfg: TrainConfig) -> RunData:
    """Load the config's data set and split it (test, then validation out of the training part)."""
    data = load_run_dataset(cfg)
    train, test = split_dataset(data, cfg.protocol, cfg.test_size, seed=cfg.seed)
    validation = None
    if cfg.validation_size is not None:
        train, validation = split_dataset(train, cfg.protocol, cfg.validation_size, seed=cfg.seed)
        train.name, validation.name = f"{data.name}[train]", f"{data.name}[validation]"
    for split, part in (("training", train), ("test", test), ("validation", validation)):
        if part is not None and len(part) == 0:
            raise ValueError(
                f"the {split} split is empty; use a larger dataset or another test_size / "
                "validation_size"
            )
    stats = None
    if cfg.standardize:
        stats = standardization(train)
        train, test = standardized(train, stats), standardized(test, stats)
        validation = None if validation is None else standardized(validation, stats)
    if cfg.augment != "none":
        train = augmented(train, cfg.augment)
    return RunData(train, validation, test, data.name, data.image_shape, stats)


def load_run_dataset(cfg: TrainConfig) -> LabelledData | StreamingImageFolder:
    """The config's data set: streamed from disk (``stream``, image folders only) or loaded."""
    if not cfg.stream:
        return load_config_data(cfg)
    path = Path(cfg.dataset).expanduser()
    if cfg.dataset in list_datasets() or not path.is_dir():
        raise ValueError(
            f"stream applies to image folders (one sub-folder per class), got dataset "
            f"{cfg.dataset!r}"
        )
    size = cfg.image_size
    return StreamingImageFolder(
        path, mode=cfg.image_mode, image_size=tuple(size) if isinstance(size, list) else size
    )


def augmented(
    data: LabelledData | StreamingImageFolder, augment: str
) -> StreamingImageFolder | Transformed:
    """The training split with random resized crops and flips at its own image size."""
    if data.image_shape is None:
        raise ValueError(f"augment={augment!r} applies to images, not to feature vectors")
    transform = augmentation(tuple(data.image_shape[1:]), backend=_BACKENDS[augment])
    if isinstance(data, StreamingImageFolder):
        return data.with_transform(transform)
    return Transformed(data, transform)


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
        options = {"mode": cfg.image_mode,
                   "image_size": tuple(size) if isinstance(size, list) else size}
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


def standardization(data: Dataset) -> dict[str, list[float]]:
    """Per-feature mean and standard deviation of the training inputs (1 for constant ones)."""
    if not isinstance(data, LabelledData) or data.image_shape is not None or data.x.dim() != 2:
        raise ValueError(
            "standardize applies to feature vectors (CSV, NumPy, flavia), not to images"
        )
    x64 = data.x.double()
    std = x64.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"mean": x64.mean(0).tolist(), "std": std.tolist()}


def standardize(x: Tensor, stats: Mapping[str, list[float]]) -> Tensor:
    """``(x - mean) / std`` with the statistics :meth:`Trainer.run_inputs` records."""
    mean = torch.tensor(stats["mean"], dtype=torch.float64)
    std = torch.tensor(stats["std"], dtype=torch.float64)
    return ((x.double() - mean) / std).float()


def standardized(data: LabelledData, stats: Mapping[str, list[float]]) -> LabelledData:
    return LabelledData(standardize(data.x, stats), data.y, data.classes, data.name)
