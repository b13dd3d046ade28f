"""Data plumbing of the trainer: labels without touching inputs, P×K loaders, batched embedding.

Any map-style dataset whose items are ``(input, label)`` pairs works. Its labels are read once,
without loading any input, from a ``labels``, ``targets`` or ``y`` attribute (``LabelledData``,
:class:`~metrickit.data.StreamingImageFolder`, torchvision's ``ImageFolder``), from the second
tensor of a ``TensorDataset``, or through a ``Subset``; only a dataset with none of these is read
item by item, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from ..data import LabelledData

_LABEL_ATTRIBUTES = ("labels", "targets", "y")


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The label of every item of ``dataset`` as a 1-D array, read without loading inputs."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 2:
            raise ValueError("a TensorDataset for training needs (inputs, labels) tensors")
        return _as_array(dataset.tensors[1], "TensorDataset labels")
    for name in _LABEL_ATTRIBUTES:
        value = getattr(dataset, name, None)
        if value is not None and not callable(value):
            labels = _as_array(value, f"dataset.{name}")
            if len(labels) == len(dataset):  # type: ignore[arg-type]
                return labels
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"the dataset ({type(dataset).__name__}) must be map-style (with __len__ and "
            "__getitem__)"
        ) from None
    return _as_array([_label_of(dataset[i], i) for i in range(n)], "dataset labels")


def _label_of(item: object, i: int) -> object:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(
            f"dataset item {i} must be an (input, label) pair, got {type(item).__name__}"
        )
    label = item[1]
    return label.item() if isinstance(label, Tensor) else label


def _as_array(values: object, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per item), got shape {arr.shape}")
    return arr


def class_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, ids)``: the sorted distinct labels and each item's index among them."""
    classes, ids = np.unique(labels, return_inverse=True)
    return classes, ids.reshape(-1).astype(np.int64)


class TensorBatches:
    """The batches of a batch sampler over in-memory tensors, fetched by indexing (no per-item
    calls): ``(x[batch], y[batch])``, the same values a DataLoader would collate."""

    def __init__(self, x: Tensor, y: Tensor, batch_sampler: Sampler[list[int]]) -> None:
        self.x, self.y, self.batch_sampler = x, y, batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.batch_sampler:
            idx = torch.as_tensor(batch)
            yield self.x[idx], self.y[idx]


def batches(
    dataset: Dataset,
    batch_sampler: Sampler[list[int]] | Sequence[Sequence[int]],
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> TensorBatches | DataLoader:
    """Batches of ``dataset`` for the index lists of ``batch_sampler``: direct tensor indexing
    for in-memory data with the default collation, else a ``DataLoader`` with workers,
    ``pin_memory`` and ``collate_fn``."""
    if isinstance(dataset, LabelledData) and num_workers == 0 and collate_fn is None:
        return TensorBatches(dataset.x, dataset.y, batch_sampler)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )


def sequential_batches(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> TensorBatches | DataLoader:
    """The whole dataset in order, ``batch_size`` items at a time (for embedding)."""
    n = len(dataset)  # type: ignore[arg-type]
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return batches(dataset, chunks, num_workers, False, collate_fn)


def embed_batches(
    model: nn.Module,
    loader: TensorBatches | DataLoader,
    device: torch.device,
) -> Tensor:
    """Embeddings (float32, CPU) of the inputs of every ``(input, label)`` batch of ``loader``,
    in float32 and without gradients."""
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for x, _ in loader:
                parts.append(model(x.to(device, non_blocking=True)).float().cpu())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("cannot embed an empty dataset")
    return torch.cat(parts)
