"""``python -m benchmarks.stream_memory``: peak memory of ``metrickit train`` on image folders of
several sizes, streamed from disk (``--stream``) and loaded into memory, side by side.

MNIST-5k digits are written out as PNG files (one folder per digit; beyond the ~500 digits per
class of MNIST-5k the class's images are written again, cycling), read as RGB and resized to
``--image-size``; each run trains the small residual backbone (``metrickit.models:small_resnet``)
with augmentation for the same number of steps and evaluates on the same number of test images,
so only the number of training images differs. Every run is a fresh process; its peak resident
set size (``ru_maxrss``) is reported. In-memory runs are made up to ``--in-memory-up-to`` images
per class only (they hold every decoded image: 108 KiB each at RGB 96×96 float32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_CHILD = """
import json, resource, sys
from metrickit.cli import main
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"code": code, "peak_mib": peak}))
"""


def write_folder(root: Path, per_class: int) -> int:
    from metrickit.data import load_dataset

    data = load_dataset("mnist5k")
    y = data.y.numpy()
    n = 0
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        members = np.flatnonzero(y == c)
        for j, i in enumerate(np.resize(members, per_class)):  # cycles past the class's size
            pixels = (data.x[i, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / str(c) / f"{j:05d}.png")
            n += 1
    return n


def peak_mib(folder: Path, out: Path, stream: bool, args: argparse.Namespace) -> dict:
    flags = [
        "train", "--dataset", str(folder), "--image-mode", "RGB",
        "--image-size", str(args.image_size), "--augment", "crop_flip",
        "--model", "metrickit.models:small_resnet", "--embedding-dim", "64",
        "-P", "10", "-K", "4", "--batches-per-epoch", str(args.steps), "--epochs", "1",
        "--test-size", str(args.test_images), "--threads", "1", "--quiet", "-o", str(out),
        "--stream" if stream else "--no-stream",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _CHILD, *flags], capture_output=True,
                          text=True, check=False)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"code"')]
    if done.returncode or not lines:
        raise SystemExit(f"run failed: {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500],
                        help="images per class of the folders [100 500]")
    parser.add_argument("--in-memory-up-to", type=int, default=500,
                        help="largest images per class also loaded into memory [500]")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=200)
    args = parser.parse_args()
    print(f"{'images':>7} {'mode':>8} {'peak RSS MiB':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in args.sizes:
            folder = Path(tmp) / f"mnist_{per_class}"
            n = write_folder(folder, per_class)
            for stream in (True, False)[: 1 + (per_class <= args.in_memory_up_to)]:
                out = Path(tmp) / f"run_{per_class}_{stream}"
                result = peak_mib(folder, out, stream, args)
                mode = "stream" if stream else "memory"
                print(f"{n:>7} {mode:>8} {result['peak_mib']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
