"""A flat registry of the batch-form losses by name (what the CLI and Trainer look up).

Batch-form losses take ``(embeddings [B, D], labels [B])``. Tuple-form losses (explicit
anchor/positive/negative tensors) and score-based ranking losses are not trainable from a labelled
batch alone and are not registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

T = TypeVar("T", bound=type[nn.Module])
LOSSES: dict[str, type[nn.Module]] = {}
ALIASES: dict[str, str] = {}


def register_loss(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator: make a batch-form loss available as ``get_loss(name)``."""

    def wrap(cls: T) -> T:
        if name in LOSSES or name in ALIASES:
            raise ValueError(f"loss name {name!r} is registered twice")
        LOSSES[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        return cls

    return wrap


def list_losses() -> list[str]:
    """Registered names (aliases not included), sorted."""
    return sorted(LOSSES)


def resolve_loss_name(name: str) -> str:
    """The registered name behind ``name`` (itself or an alias); unknown names raise ValueError."""
    key = ALIASES.get(name, name)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(list_losses())}")
    return key


def get_loss_class(name: str) -> type[nn.Module]:
    """The class of a registered batch-form loss, by name or alias."""
    return LOSSES[resolve_loss_name(name)]


def get_loss(name: str, **kwargs: object) -> nn.Module:
    """Instantiate a registered batch-form loss by name or alias with its keyword parameters."""
    return get_loss_class(name)(**kwargs)
