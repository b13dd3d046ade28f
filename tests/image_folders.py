"""Real images on disk for the streaming tests: MNIST-5k digits written out as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metrickit.data import load_dataset


def write_mnist_pngs(root: Path, per_class: int, classes: int = 10, rgb: bool = False) -> Path:
    """``per_class`` MNIST-5k digits of each of the first ``classes`` digits as
    ``root/<digit>/<i>.png`` (8-bit greyscale, or RGB copies with ``rgb=True``)."""
    data = load_dataset("mnist5k")
    y = data.y.numpy()
    for c in range(classes):
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(np.flatnonzero(y == c)[:per_class]):
            pixels = (data.x[i, 0].numpy() * 255).round().astype(np.uint8)
            img = Image.fromarray(pixels, mode="L")
            (img.convert("RGB") if rgb else img).save(folder / f"{j:05d}.png")
    return root
