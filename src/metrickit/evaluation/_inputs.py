"""Input conversion for the evaluation layer: torch tensors or NumPy arrays, checked."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._validation import _describe, check_embeddings, check_labels


def as_tensor(x: object, name: str) -> Tensor:
    """``x`` as a tensor (NumPy arrays are wrapped without a copy where possible)."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {_describe(x)}")


def embeddings(x: object, name: str = "embeddings") -> Tensor:
    """A checked [N, D] floating tensor with N >= 1."""
    x = check_embeddings(as_tensor(x, name), name)
    if x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(x.shape)}")
    return x


def labels(y: object, n: int, device: torch.device, name: str = "labels") -> Tensor:
    """Checked 1-D int64 class ids, one per embedding row, on ``device``."""
    return check_labels(as_tensor(y, name), n, name).to(device=device, dtype=torch.int64)
