"""User data from files: an image folder (one sub-folder per class), a CSV of feature vectors, or
NumPy ``.npy`` / ``.npz`` arrays. The formats are described in docs/data.md."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .._validation import check_choice
from .dataset import LabelledData, from_arrays

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
IMAGE_MODES = ("L", "RGB")


def _numeric_if_integral(labels: np.ndarray) -> np.ndarray:
    """Integer-valued labels ("3", 3.0) as int64, so class ids follow numeric order."""
    try:
        values = labels.astype(np.float64)
    except ValueError:
        return labels
    if not (values.size and np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        return labels
    ints = values.astype(np.int64)
    if labels.dtype.kind == "U" and not np.array_equal(ints.astype(str), labels):
        return labels  # e.g. "01" and "1" stay two distinct classes
    return ints


def load_image_folder(
    root: Path,
    mode: str = "L",
    image_size: int | tuple[int, int] | None = None,
    check: bool = True,
) -> LabelledData:
    """Images under ``root/<class name>/``; class ids follow the sorted folder names.

    Args:
        mode: ``"L"`` greyscale (1 channel) or ``"RGB"`` (3 channels).
        image_size: resize every image to this side (or (height, width)); None keeps the size,
            which must then be the same for all images.

    Files without an image suffix, hidden files and empty sub-folders are ignored; an image file
    Pillow cannot read raises an error naming it.
    """
    from PIL import Image, UnidentifiedImageError

    check_choice(mode, "mode", IMAGE_MODES)
    size = None
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        size = (int(w), int(h))  # Pillow takes (width, height)
    arrays, labels, first = [], [], None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert(mode)
                    if size is not None and img.size != size:
                        img = img.resize(size, Image.Resampling.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"cannot read image file {file}: {e}") from None
            if first is None:
                first = (file, arr.shape)
            elif arr.shape != first[1]:
                raise ValueError(
                    f"image {file} has size {arr.shape[:2]} but {first[0]} has {first[1][:2]}; "
                    "resize all images to one size with --image-size (config/TrainConfig: "
                    "image_size)"
                )
            arrays.append(arr)
            labels.append(folder.name)
    name = str(root)
    if not arrays:
        raise ValueError(
            f"dataset {name!r} is empty: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "in sub-folders (one per class)"
        )
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return from_arrays(x, np.array(labels), name, tuple(x.shape[1:]), check=check)


def load_csv(path: Path, label_column: str | None = "label", check: bool = True) -> LabelledData:
    """A CSV with a header row: ``label_column`` holds the class (any text), every other column a
    numeric feature. ``label_column=None``: every column is a feature and the data unlabelled
    (one class named ""), for data that is only embedded."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"dataset {str(path)!r} is empty: the CSV file has no header row")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if label_column is not None and label_column not in header:
        raise ValueError(
            f"label column {label_column!r} not found in {path}; columns are: {', '.join(header)} "
            "(choose one with --label-column; config/TrainConfig: label_column)"
        )
    li = header.index(label_column) if label_column is not None else -1
    feats = [i for i in range(len(header)) if i != li]
    if not feats:
        raise ValueError(f"{path} has no feature columns besides {label_column!r}")
    x = np.empty((len(body), len(feats)), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {r + 2}: expected {len(header)} fields, got {len(row)}")
        for j, c in enumerate(feats):
            try:
                x[r, j] = value = float(row[c])
            except ValueError:
                raise ValueError(
                    f"{path}, line {r + 2}: column {header[c]!r} is not a number: {row[c]!r}"
                ) from None
            if not math.isfinite(value):
                raise ValueError(
                    f"{path}, line {r + 2}: column {header[c]!r} is not a finite number: "
                    f"{row[c].strip()!r}"
                )
    labels = np.array([row[li].strip() if li >= 0 else "" for row in body], dtype=str)
    return from_arrays(x, _numeric_if_integral(labels), str(path), check=check)


def load_arrays(path: Path, check: bool = True) -> LabelledData:
    """``.npz`` with arrays ``x`` (or ``X``) and ``y``; or ``.npy`` with one 2-D array whose last
    column is the label. ``x`` of shape [N, D] is feature vectors; [N, H, W] greyscale images;
    [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4) images. uint8 values are scaled /255."""
    if path.suffix.lower() == ".npy":
        table = np.load(path, allow_pickle=False)
        if table.ndim != 2 or table.shape[1] < 2:
            raise ValueError(
                f"{path}: a .npy file must hold a 2-D array [N, D + 1] with the label in the last "
                f"column, got shape {table.shape}"
            )
        x, y = table[:, :-1], table[:, -1]
    else:
        with np.load(path, allow_pickle=False) as arrays:
            keys = set(arrays.files)
            xkey = "x" if "x" in keys else "X" if "X" in keys else None
            if xkey is None or "y" not in keys:
                raise ValueError(
                    f"{path}: a .npz file needs arrays 'x' (or 'X') and 'y', "
                    f"found: {', '.join(sorted(keys)) or 'none'}"
                )
            x, y = arrays[xkey], arrays["y"]
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: y must be 1-D with one label per row of x, got {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{path}: x must be numeric, got dtype {x.dtype}")
    y = _numeric_if_integral(y)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise ValueError(
            f"{path}: x holds a value that is not finite (NaN or inf) at row {bad[0]}, "
            f"feature {bad[1]}"
        )
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    image_shape = None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 2 and x.ndim != 4:
        raise ValueError(f"{path}: x must be [N, D], [N, H, W] or 4-D images, got {x.shape}")
    if x.ndim == 4:
        image_shape = tuple(x.shape[1:])
    return from_arrays(x, y, str(path), image_shape, check=check)


def load_path(path: Path, **options: object) -> LabelledData:
    """Dispatch on what ``path`` is: a directory, ``.csv``, ``.npy`` or ``.npz``."""
    if path.is_dir():
        return load_image_folder(path, **options)  # type: ignore[arg-type]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path, **options)  # type: ignore[arg-type]
    if suffix in (".npy", ".npz"):
        check = bool(options.pop("check", True))
        if options:
            raise TypeError(f"{suffix} files take no options, got {', '.join(options)}")
        return load_arrays(path, check=check)
    raise ValueError(
        f"cannot load {path}: expected a directory of class sub-folders, a .csv, .npy or .npz file"
    )
