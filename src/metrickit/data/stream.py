"""An image folder streamed from disk: only paths and labels are held, each image is read on access.

    >>> data = StreamingImageFolder("photos/", mode="RGB", image_size=224,
    ...                             transform=augmentation(224, "crop_flip"))
    >>> loader = DataLoader(data, batch_sampler=PKSampler(data.labels, p=8, k=4), num_workers=4)

The layout is the one of :func:`metrickit.data.files.load_image_folder` (one sub-folder per class,
class ids follow the sorted folder names), but memory does not grow with the number of images:
``data[i]`` opens file ``i`` with Pillow, converts it to the colour mode, resizes it, turns it into
a float tensor [C, H, W] in [0, 1] and applies ``transform`` (any callable on that tensor, e.g. a
torchvision transform or :func:`metrickit.data.augment.augmentation`). The labels are known from
the folder names alone (``labels``, also ``targets`` / ``y``), so a :class:`~metrickit.samplers.
PKSampler` is built without reading a single image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._validation import check_choice
from .files import IMAGE_MODES, IMAGE_SUFFIXES

Transform = Callable[[Tensor], Tensor]


def scan_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths under ``root/<class>/``, their class ids and the sorted class names.

    Hidden files and files without an image suffix are skipped; classes without images are
    left out. Nothing is opened.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    paths: list[Path] = []
    names: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [
            f
            for f in sorted(folder.iterdir())
            if not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        ]
        paths += files
        names += [folder.name] * len(files)
    if not paths:
        raise ValueError(
            f"dataset {str(root)!r} is empty: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            "in sub-folders (one per class)"
        )
    classes, ids = np.unique(np.array(names), return_inverse=True)
    return paths, ids.reshape(-1).astype(np.int64), [str(c) for c in classes]


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if isinstance(h, bool) or isinstance(w, bool) or min(int(h), int(w)) < 1:
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return int(h), int(w)


def read_image(path: str | Path, mode: str = "L", size: tuple[int, int] | None = None) -> Tensor:
    """One image file as a float32 tensor [C, H, W] in [0, 1] (``size`` = (height, width))."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from None
    x = torch.from_numpy(arr.copy()).float().div_(255.0)
    return x[None] if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


class StreamingImageFolder(Dataset):
    """Images under ``root/<class name>/`` read from disk one at a time.

    Args:
        root: the folder (one sub-folder of images per class).
        mode: ``"L"`` greyscale (1 channel) or ``"RGB"`` (3 channels).
        image_size: resize every image to this side or (height, width) before ``transform``;
            None keeps each file's size (then ``transform`` must make the sizes equal for
            batching).
        transform: any callable applied to the [C, H, W] float tensor (augmentation,
            normalisation).

    Attributes:
        labels: int64 tensor [N] of class ids (aliases ``targets`` and ``y``).
        classes: class names; ``classes[i]`` is the folder of id i.
        paths: the image files, in the order of ``labels``.
    """

    def __init__(
        self,
        root: str | Path,
        mode: str = "L",
        image_size: int | Sequence[int] | None = None,
        transform: Transform | None = None,
    ) -> None:
        check_choice(mode, "mode", IMAGE_MODES)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        paths, ids, classes = scan_image_folder(root)
        self.name = str(root)
        self.mode, self.size, self.transform = mode, _size(image_size), transform
        self.paths, self.labels, self.classes = paths, torch.as_tensor(ids), classes

    @property
    def targets(self) -> Tensor:
        return self.labels

    @property
    def y(self) -> Tensor:
        return self.labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample before ``transform`` (reads the first image if unsized)."""
        channels = 1 if self.mode == "L" else 3
        if self.size is not None:
            return (channels, *self.size)
        return tuple(read_image(self.paths[0], self.mode).shape)  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample as the network sees it (after ``transform``)."""
        return tuple(self[0][0].shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = read_image(self.paths[i], self.mode, self.size)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]

    def __repr__(self) -> str:
        return (
            f"StreamingImageFolder({self.name!r}, n={len(self)}, classes={self.num_classes}, "
            f"mode={self.mode!r}, image_size={self.size})"
        )

    def subset(
        self,
        indices: Sequence[int] | np.ndarray | Tensor,
        labels: Tensor | None = None,
        classes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> StreamingImageFolder:
        """The samples at ``indices`` (optionally relabelled with ``labels`` / ``classes``)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = object.__new__(StreamingImageFolder)
        out.__dict__.update(self.__dict__)
        out.paths = [self.paths[i] for i in idx]
        out.labels = self.labels[torch.as_tensor(idx)] if labels is None else labels
        out.classes = list(self.classes if classes is None else classes)
        out.name = self.name if name is None else name
        return out

    def with_transform(self, transform: Transform | None) -> StreamingImageFolder:
        """The same files and labels with another ``transform`` (e.g. none for evaluation)."""
        out = self.subset(np.arange(len(self)))
        out.transform = transform
        return out
