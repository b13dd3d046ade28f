"""The in-memory labelled dataset every loader returns, and the checks metric learning needs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class LabelledData(Dataset):
    """Samples ``x`` with contiguous integer class ids ``y``, held in memory.

    Attributes:
        x: float32 tensor [N, ...]; images are [N, C, H, W] with values in [0, 1].
        y: int64 tensor [N] of class ids in 0..num_classes−1.
        classes: class names; ``classes[i]`` is the name of id i.
        name: a short description of the source.
        image_shape: (C, H, W) for images, None for feature vectors.

    ``data[i]`` is ``(x[i], y[i])``, so it plugs into a ``DataLoader`` (with a ``PKSampler``).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        classes: Sequence[str],
        name: str,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if not isinstance(x, Tensor) or x.dtype != torch.float32 or x.dim() < 2:
            raise TypeError(f"x must be a float32 tensor [N, ...], got {_describe(x)}")
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            raise TypeError(f"y must be an int64 tensor [N], got {_describe(y)}")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        classes = [str(c) for c in classes]
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(
                f"y must hold class ids in 0..{len(classes) - 1} (one per class name), "
                f"got values in {int(y.min())}..{int(y.max())}"
            )
        if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"image_shape {image_shape} does not match x of shape {tuple(x.shape)}"
            )
        self.x, self.y, self.classes, self.name = x, y, classes, name
        self.image_shape = None if image_shape is None else tuple(image_shape)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        shape = self.image_shape or tuple(self.x.shape[1:])
        return (
            f"LabelledData({self.name!r}, n={len(self)}, classes={self.num_classes}, "
            f"sample_shape={shape})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: what :func:`metrickit.models.build_model` takes."""
        return tuple(self.x.shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> LabelledData:
        """The samples at ``indices``, keeping the class ids and names unchanged."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        return LabelledData(self.x[idx], self.y[idx], self.classes, self.name, self.image_shape)


def _describe(v: object) -> str:
    if isinstance(v, Tensor):
        return f"a tensor of shape {tuple(v.shape)} and dtype {v.dtype}"
    return type(v).__name__


def from_arrays(
    x: np.ndarray,
    labels: np.ndarray,
    name: str,
    image_shape: tuple[int, int, int] | None = None,
    check: bool = True,
) -> LabelledData:
    """Build a dataset from features and arbitrary labels; ids follow the sorted labels.

    ``check=True`` applies :func:`check_metric_data` (what training needs); data that is only
    embedded (queries, a gallery) may hold any number of classes and samples.
    """
    names, y = np.unique(np.asarray(labels), return_inverse=True)
    data = LabelledData(
        torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)),
        torch.as_tensor(y.reshape(-1).astype(np.int64)),
        [str(c) for c in names],
        name,
        image_shape,
    )
    if check:
        check_metric_data(data)
    elif len(data) == 0:
        raise ValueError(f"dataset {name!r} is empty: no samples were found")
    return data


def check_metric_data(data: LabelledData) -> None:
    """What metric learning needs: some samples, two classes or more, two samples per class."""
    if len(data) == 0:
        raise ValueError(f"dataset {data.name!r} is empty: no samples were found")
    counts = np.bincount(data.y.numpy(), minlength=data.num_classes)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = data.classes[int(present[0])]
        raise ValueError(
            f"dataset {data.name!r} has only one class ({only!r}); metric learning needs "
            "at least two classes"
        )
    single = [data.classes[i] for i in np.flatnonzero(counts == 1)]
    if single:
        listed = ", ".join(repr(c) for c in single[:10]) + (" ..." if len(single) > 10 else "")
        raise ValueError(
            f"dataset {data.name!r}: class(es) {listed} have a single sample; metric learning "
            "needs at least two samples per class (a positive pair)"
        )
