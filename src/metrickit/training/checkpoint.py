"""Atomic, safely loadable checkpoints.

A checkpoint is written to a temporary file in the target's directory, flushed to disk and moved
over the target with ``os.replace``, so a crash at any moment leaves either the previous
checkpoint or the new one, never a torn file. It holds only tensors and primitive containers and is
read back with ``torch.load(..., weights_only=True)``: a file carrying arbitrary pickled objects is
refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..rundir import atomic_write, atomic_write_text, remove_stale_temporaries

__all__ = [
    "CheckpointError",
    "atomic_write_text",
    "load_checkpoint",
    "remove_stale_temporaries",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "metrickit-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or not written by metrickit."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and primitive containers) to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded safely: {first_line}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a metrickit checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device) as tensors.

    These are the only global generators metrickit draws from (initialisation, dropout);
    :class:`~metrickit.samplers.PKSampler` derives its stream from ``(seed, epoch)`` alone.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
