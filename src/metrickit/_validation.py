"""Input validation shared by every layer: clear errors naming the argument.

Finiteness checks need the values on the host. They run on CPU tensors (where they cost no
device sync) and, on accelerators, only when ``set_strict_checks(True)`` was called, so the
hot path of a GPU training step never waits on the host.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
_STRICT = False


def set_strict_checks(enabled: bool) -> None:
    """Also check finiteness of inputs on accelerators (costs one host-device sync per call)."""
    global _STRICT
    _STRICT = bool(enabled)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    return x


def check_floating(x: object, name: str, ndim: int | Sequence[int] | None = None) -> Tensor:
    """A floating-point tensor with the given number of dimensions and finite values."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    if (x.device.type == "cpu" or _STRICT) and x.numel() and not _all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _all_finite(x: Tensor) -> bool:
    """Whether every value is finite: one min/max pass, into which a NaN propagates (about 20×
    cheaper on CPU than ``isfinite(x).all()``, which writes a boolean tensor first)."""
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def check_embeddings(x: object, name: str = "embeddings") -> Tensor:
    """A [B, D] floating tensor with B >= 1 and D >= 1."""
    x = check_floating(x, name, ndim=2)
    if x.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one feature column, got shape {tuple(x.shape)}"
        )
    return x


def check_labels(labels: object, n: int, name: str = "labels") -> Tensor:
    """A 1-D integer (or bool) tensor with one label per embedding row."""
    labels = check_tensor(labels, name)
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor of class ids, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per embedding: expected length {n}, got {labels.shape[0]}"
        )
    return labels


def check_same_shape(tensors: dict[str, Tensor]) -> None:
    """All tensors have the same shape; the error lists every shape."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"{' , '.join(shapes)} must have the same shape, got {listed}")


def check_same_device(tensors: dict[str, Tensor]) -> None:
    devices = {k: v.device for k, v in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"all inputs must be on one device, got {listed}")


def check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def renamed(new_value: object, old_value: object, new: str, old: str, where: str) -> object:
    """``new_value``, or ``old_value`` when the deprecated spelling ``old`` of ``new`` was given
    (not None): then with a DeprecationWarning attributed to the caller of ``where``."""
    if old_value is None:
        return new_value
    warnings.warn(f"{where}: {old}= is deprecated, use {new}=", DeprecationWarning, stacklevel=3)
    return old_value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_bool(value: object, name: str) -> bool:
    """A real boolean (``True``/``False`` or a numpy bool); strings and numbers are refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {_describe(value)}")


def check_real(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A finite real number (Python or numpy scalar, not a bool) within optional bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or (value < low if low_inclusive else value <= low)
    if high is not None:
        bad = bad or (value > high if high_inclusive else value >= high)
    if bad:
        lo = "" if low is None else f"{'>=' if low_inclusive else '>'} {low:g}"
        hi = "" if high is None else f"{'<=' if high_inclusive else '<'} {high:g}"
        want = " and ".join(b for b in (lo, hi) if b)
        raise ValueError(f"{name} must be a finite number{' ' + want if want else ''}, "
                         f"got {value!r}")
    return value


def check_nonnegative(value: object, name: str) -> float:
    """A finite real number >= 0 (margins, regularisation weights)."""
    return check_real(value, name, low=0.0)


def check_positive(value: object, name: str) -> float:
    """A finite real number > 0 (temperatures, scales, learning rates)."""
    return check_real(value, name, low=0.0, low_inclusive=False)


def check_int(value: object, name: str, low: int | None = None) -> int:
    """An integer (Python or numpy, not a bool), optionally >= ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """An integer >= 1 (Python or numpy)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype sensitive reductions run in: at least float32 (fp16/bf16 are upcast)."""
    return torch.promote_types(x.dtype, torch.float32)


def reduce(loss: Tensor, reduction: str, weight_count: Tensor | None = None) -> Tensor:
    """Apply a torch-style reduction; ``weight_count`` replaces numel() as the mean's divisor."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight_count is None:
        if loss.numel() == 0:
            return loss.sum()  # 0 with a graph, instead of torch's NaN for an empty mean
        return loss.mean()
    return loss.sum() / weight_count.clamp_min(1)
