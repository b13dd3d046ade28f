"""Atomic, safely loadable checkpoints.

A checkpoint is written to a temporary file in the target's directory, flushed to disk and moved
over the target with ``os.replace``, so a crash at any moment leaves either the previous
checkpoint or the new one, never a torn file. It holds only tensors and primitive containers and is
read back with ``torch.load(..., weights_only=True)``: a file carrying arbitrary pickled objects is
refused instead of executed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

FORMAT = "metrickit-checkpoint-v1"
_TMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or not written by metrickit."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and primitive containers) to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: torch.save({"format": FORMAT, **state}, f))


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace the text file ``path`` atomically (same temp-file + ``os.replace`` scheme)."""
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a writer killed mid-save left in ``directory``; return them."""
    stale = sorted(Path(directory).glob(f".*{_TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
