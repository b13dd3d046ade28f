"""metrickit: deep metric learning and learning to rank on PyTorch.

    >>> import metrickit as mk
    >>> loss = mk.F.batch_triplet_loss(embeddings, labels, margin=0.2, mining="hard")

Sub-modules are imported lazily, so ``import metrickit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "functional",
    "losses",
    "miners",
    "samplers",
    "models",
    "distances",
    "masks",
    "evaluation",
    "data",
    "training",
    "plots",
    "report",
    "recsys",
    "distributed",
    "cli",
    "inference",
    "rundir",
    "threads",
}
_ALIASES = {"F": "functional"}
_ATTRIBUTES = {"Trainer": "training", "TrainConfig": "training", "load_run": "inference",
               "set_strict_checks": "_validation"}

__all__ = sorted(_SUBMODULES | set(_ALIASES) | set(_ATTRIBUTES) | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _ALIASES:
        return importlib.import_module(f".{_ALIASES[name]}", __name__)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    raise AttributeError(f"module 'metrickit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
