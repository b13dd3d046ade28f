"""Image augmentation on float tensors [C, H, W]: a small built-in torch version, or torchvision's.

    >>> train_tf = augmentation(224, mean=IMAGENET_MEAN, std=IMAGENET_STD)   # built-in torch
    >>> train_tf = augmentation(224, backend="torchvision")                 # needs torchvision
    >>> eval_tf = Normalize(IMAGENET_MEAN, IMAGENET_STD)

Both backends do the same thing: a random resized crop (Szegedy et al. 2015, "Going deeper with
convolutions": a crop of random area fraction in ``scale`` and aspect ratio in ``ratio``, resized to
``size``), a horizontal flip with probability 1/2, then per-channel normalisation. The built-in one
draws from the torch global generator (seeded per worker by the DataLoader) and needs nothing but
torch; the backend is chosen explicitly, never by what happens to be installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_choice, check_real

BACKENDS = ("torch", "torchvision")
DEFAULT_SCALE = (0.5, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if isinstance(h, bool) or isinstance(w, bool) or min(int(h), int(w)) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(h), int(w)


def _range(
    value: Sequence[float], name: str, low: float, high: float | None
) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    a = check_real(value[0], f"{name}[0]", low=low, high=high, low_inclusive=False)
    b = check_real(value[1], f"{name}[1]", low=low, high=high, low_inclusive=False)
    if a > b:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return a, b


class Compose:
    """Apply callables in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomResizedCrop:
    """A crop of random area fraction in ``scale`` and aspect ratio in ``ratio`` (log-uniform),
    resized bilinearly to ``size``; after 10 failed draws, the largest central crop within
    ``ratio``."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = DEFAULT_SCALE,
        ratio: Sequence[float] = DEFAULT_RATIO,
    ) -> None:
        self.size = _pair(size)
        self.scale = _range(scale, "scale", 0.0, 1.0)
        self.ratio = _range(ratio, "ratio", 0.0, None)

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of one random crop of a height × width image."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(3).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, ()).item())
                left = int(torch.randint(0, width - w + 1, ()).item())
                return top, left, h, w
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: Tensor) -> Tensor:
        top, left, h, w = self.box(x.shape[-2], x.shape[-1])
        crop = x[..., top : top + h, left : left + w]
        batched = crop if crop.dim() == 4 else crop[None]
        out = F.interpolate(batched, size=self.size, mode="bilinear", align_corners=False)
        return out if crop.dim() == 4 else out[0]

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_real(p, "p", low=0.0, high=1.0)

    def __call__(self, x: Tensor) -> Tensor:
        return x.flip(-1) if float(torch.rand(())) < self.p else x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(x - mean) / std`` per channel of a [C, H, W] (or [B, C, H, W]) tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {mean!r}, {std!r}")
        for i, s in enumerate(std):
            check_real(s, f"std[{i}]", low=0.0, low_inclusive=False)
        self.mean = torch.tensor([float(m) for m in mean])[:, None, None]
        self.std = torch.tensor([float(s) for s in std])[:, None, None]

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-3] != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channel(s) but the image has shape "
                f"{tuple(x.shape)}"
            )
        return (x - self.mean.to(x)) / self.std.to(x)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def augmentation(
    size: int | Sequence[int],
    backend: str = "torch",
    scale: Sequence[float] = DEFAULT_SCALE,
    flip: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Tensor], Tensor]:
    """Random resized crop to ``size`` → horizontal flip (``flip``) → normalisation (``mean`` and
    ``std`` given) as one callable on [C, H, W] float tensors.

    ``backend="torch"`` (default) is the built-in version; ``"torchvision"`` builds the same
    pipeline from ``torchvision.transforms.v2`` (antialiased resizing).
    """
    check_choice(backend, "backend", BACKENDS)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std for normalisation, or neither")
    if backend == "torch":
        steps: list[Callable[[Tensor], Tensor]] = [RandomResizedCrop(size, scale)]
        if flip:
            steps.append(RandomHorizontalFlip())
        if mean is not None:
            steps.append(Normalize(mean, std))  # type: ignore[arg-type]
        return Compose(steps)
    try:
        from torchvision.transforms import v2
    except (ImportError, RuntimeError) as exc:
        raise ModuleNotFoundError(
            "augmentation backend 'torchvision' needs the torchvision package built for your "
            f"torch (pip install torchvision); importing it failed: {exc}"
        ) from None
    bounds = _range(scale, "scale", 0.0, 1.0)
    ops = [v2.RandomResizedCrop(_pair(size), scale=bounds, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if mean is not None:
        ops.append(v2.Normalize(list(mean), list(std)))  # type: ignore[arg-type]
    return v2.Compose(ops)
