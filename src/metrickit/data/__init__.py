"""Datasets for metric learning: built-in real data (no network), user files, and split protocols.

    >>> data = load_dataset("mnist5k")
    >>> train, test = split_dataset(data, "zero_shot")

See docs/data.md for the built-in datasets, the file formats and the protocols.
"""

from __future__ import annotations

from pathlib import Path

from .augment import augmentation
from .builtin import BUILTIN
from .dataset import LabelledData
from .splits import PROTOCOLS, split_dataset
from .stream import StreamingImageFolder, scan_image_folder

__all__ = [
    "LabelledData",
    "PROTOCOLS",
    "StreamingImageFolder",
    "augmentation",
    "list_datasets",
    "load_dataset",
    "scan_image_folder",
    "split_dataset",
]


def list_datasets() -> list[str]:
    """Names of the built-in datasets."""
    return sorted(BUILTIN)


def load_dataset(spec: str | Path, **options: object) -> LabelledData:
    """A built-in dataset by name, or user data from a path.

    Built-in: ``"digits"``, ``"mnist5k"``, ``"flavia"`` (option ``standardize``). A path: a
    directory with one sub-folder of images per class (options ``mode="L"|"RGB"``,
    ``image_size``), a ``.csv`` of feature vectors (option ``label_column="label"``), or ``.npy`` /
    ``.npz`` arrays. Every result has at least two classes and two samples per class, unless
    ``check=False`` (data that is only embedded, e.g. queries; a CSV may then have no label
    column with ``label_column=None``).
    """
    from .files import load_path

    if isinstance(spec, str) and spec in BUILTIN:
        options.pop("check", None)
        return BUILTIN[spec](**options)
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"spec must be a dataset name or a path, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if path.exists():
        return load_path(path, **options)
    if isinstance(spec, Path) or any(ch in spec for ch in "/\\.~"):
        raise FileNotFoundError(f"no such file or directory: {str(spec)!r}")
    raise ValueError(
        f"unknown dataset {spec!r}: not a built-in name ({', '.join(list_datasets())}) "
        "nor an existing path"
    )
