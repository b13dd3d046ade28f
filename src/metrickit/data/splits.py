"""Train/test protocols: a stratified sample split, and the zero-shot class split of deep metric
learning (CUB-200-2011, Cars196, Stanford Online Products: train on the first classes, test
retrieval on unseen ones)."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_choice
from .dataset import LabelledData
from .stream import StreamingImageFolder

PROTOCOLS = ("holdout", "zero_shot")
DEFAULT_TEST_SIZE = {"holdout": 0.2, "zero_shot": 0.5}


def _count(test_size: float | int, total: int, what: str) -> int:
    """``test_size`` as a count out of ``total``: a fraction in (0, 1) or an int count."""
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise TypeError(f"test_size must be a fraction or an int count, got {test_size!r}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size!r}")
        return int(round(test_size * total))
    if test_size < 1:
        raise ValueError(f"test_size as a count of {what} must be >= 1, got {test_size!r}")
    return test_size


def _stratified_counts(sizes: np.ndarray, n_test: int) -> np.ndarray:
    """Test samples per class, each in [1, size − 1] and summing exactly to ``n_test``, as close
    to proportional as possible: the least-squares allocation around the quotas n_test·size/N.

    Starts from the floored quotas and moves one sample at a time to (from) the class furthest
    below (above) its quota, which is optimal for this separable convex objective.
    """
    quota = n_test * sizes / sizes.sum()
    counts = np.clip(np.floor(quota).astype(np.int64), 1, sizes - 1)
    gap = n_test - int(counts.sum())
    while gap:
        if gap > 0:
            c = int(np.argmax(np.where(counts < sizes - 1, quota - counts, -np.inf)))
        else:
            c = int(np.argmax(np.where(counts > 1, counts - quota, -np.inf)))
        step = 1 if gap > 0 else -1
        counts[c] += step
        gap -= step
    return counts


def _holdout(data: LabelledData, test_size: float | int, rng: np.random.Generator):
    y = data.y.numpy()
    sizes = np.bincount(y, minlength=data.num_classes)
    present = np.flatnonzero(sizes)
    n_test = _count(test_size, len(y), "samples")
    low, high = len(present), len(y) - len(present)
    if not low <= n_test <= high:
        raise ValueError(
            f"holdout split of {len(y)} samples in {len(present)} classes needs between {low} and "
            f"{high} test samples (every class on both sides), got {n_test}"
        )
    if np.any(sizes[present] < 2):
        raise ValueError("holdout split needs at least two samples in every class")
    counts = _stratified_counts(sizes[present], n_test)
    test = []
    for c, t in zip(present, counts, strict=True):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[:t])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _relabelled(data: LabelledData, keep: np.ndarray, part: str) -> LabelledData:
    """Samples of the classes ``keep`` (sorted ids), relabelled 0..len(keep)−1, names kept."""
    remap = np.full(data.num_classes, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    y = data.y.numpy()
    idx = np.flatnonzero(remap[y] >= 0)
    if not isinstance(data, LabelledData):  # a streamed folder: paths and labels only
        labels = torch.as_tensor(remap[y[idx]])
        return data.subset(idx, labels, [data.classes[c] for c in keep], f"{data.name}[{part}]")
    return LabelledData(
        data.x[torch.as_tensor(idx)],
        torch.as_tensor(remap[y[idx]]),
        [data.classes[c] for c in keep],
        f"{data.name}[{part}]",
        data.image_shape,
    )


def split_dataset(
    data: LabelledData | StreamingImageFolder,
    protocol: str = "holdout",
    test_size: float | int | None = None,
    seed: int = 0,
    shuffle_classes: bool = False,
) -> tuple[LabelledData, LabelledData]:
    """Split into ``(train, test)``; deterministic for a given seed, no sample on both sides.

    ``"holdout"``: stratified random split of the samples; every class is on both sides and keeps
    its id. ``test_size`` is a fraction of the samples (default 0.2) or an exact count (allocated
    to classes in proportion to their size, largest remainder first).

    ``"zero_shot"``: the classes are split disjointly, as in the CUB-200-2011 / Cars196 / SOP
    protocol: the first classes by sorted id train, the remaining ones test (with
    ``shuffle_classes=True`` a seeded random choice of classes instead). ``test_size`` is a fraction
    of the classes (default 0.5) or a number of classes. Both sides are relabelled 0..C−1 and keep
    the original names in ``classes``.
    """
    check_choice(protocol, "protocol", PROTOCOLS)
    if not isinstance(data, (LabelledData, StreamingImageFolder)):
        raise TypeError(
            f"data must be a LabelledData or StreamingImageFolder, got {type(data).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if test_size is None:
        test_size = DEFAULT_TEST_SIZE[protocol]
    rng = np.random.default_rng(seed)
    if protocol == "holdout":
        train, test = (data.subset(i) for i in _holdout(data, test_size, rng))
        train.name, test.name = f"{data.name}[train]", f"{data.name}[test]"
        return train, test
    present = np.flatnonzero(np.bincount(data.y.numpy(), minlength=data.num_classes))
    n_test = _count(test_size, len(present), "classes")
    if not 1 <= n_test <= len(present) - 1:
        raise ValueError(
            f"zero_shot split of {len(present)} classes needs between 1 and {len(present) - 1} "
            f"test classes, got {n_test} (test_size={test_size!r})"
        )
    order = rng.permutation(present) if shuffle_classes else present
    train_classes = np.sort(order[: len(present) - n_test])
    test_classes = np.sort(order[len(present) - n_test :])
    return _relabelled(data, train_classes, "train"), _relabelled(data, test_classes, "test")
