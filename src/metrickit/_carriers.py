"""Data shipped inside registry packages ("carriers"), read as files, never imported."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def carried_path(package: str, relative: str, dataset: str, install: str) -> Path:
    """Path of ``relative`` inside the installed distribution ``package``.

    A missing package raises ModuleNotFoundError and a missing file FileNotFoundError; both
    messages name the dataset and the ``install`` command.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"dataset {dataset!r} is read from the package {package!r}, which is not installed; "
            f"install it with: {install}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {dataset!r}: {path} is missing from the installed {package!r}; "
            f"reinstall with: {install}"
        )
    return path
