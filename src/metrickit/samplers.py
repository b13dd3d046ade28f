"""P×K batch sampling for online triplet mining (Hermans, Beyer & Leibe 2017, "In Defense of the
Triplet Loss for Person Re-Identification"; the "P classes × K samples" batches of FaceNet).

    >>> loader = DataLoader(dataset, batch_sampler=PKSampler(dataset.y, p=8, k=4))

Every batch holds P distinct classes with K samples each, so every anchor has K − 1 positives and
(P − 1)·K negatives.

Fair coverage within an epoch:

* classes are drawn *uniformly*: the sampler walks through a shuffled list of all classes, P at a
  time, and reshuffles when the list runs out, so over an epoch every class appears the same number
  of times (±1), whatever its size;
* samples are drawn from a shuffled per-class list, K at a time, reshuffled when it runs out, so
  every sample of a class is used before any is reused. A class with fewer than K samples gives all
  its samples and fills the rest of its K slots by drawing with replacement; a class with at least
  K samples never repeats a sample within a batch.

Randomness comes from a NumPy generator seeded with ``(seed, epoch)``; the torch global RNG is never
touched. As with ``torch.utils.data.DistributedSampler``, call ``set_epoch(epoch)`` before each
epoch to get a new stream; without it every pass yields the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ._validation import check_positive_int


def _as_label_array(labels: object) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class label per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels is empty: the sampler needs at least one labelled sample")
    return arr


class _Cycle:
    """Endless shuffled walk through ``items``; a take of m ≤ len(items) never repeats an item."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator) -> None:
        self.items = items
        self.rng = rng
        self.order = rng.permutation(items)
        self.pos = 0

    def take(self, m: int) -> np.ndarray:
        if self.pos + m <= len(self.order):
            out = self.order[self.pos : self.pos + m]
            self.pos += m
            return out
        rest = self.order[self.pos :]
        fresh = self.rng.permutation(self.items)
        # Items left over from the last pass go to the end of the new pass: no repeat in this take.
        fresh = np.concatenate([fresh[~np.isin(fresh, rest)], fresh[np.isin(fresh, rest)]])
        need = m - len(rest)
        self.order, self.pos = fresh, need
        return np.concatenate([rest, fresh[:need]])


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding lists of P·K dataset indices: P distinct classes × K samples each.

    Args:
        labels: class label of every sample (list, NumPy array or tensor; any hashable values).
        p: classes per batch (>= 2, so every batch has negatives).
        k: samples per class (>= 1; K >= 2 is needed for positives).
        num_batches: batches per epoch; default ``len(labels) // (p * k)``, at least 1.
        seed: base seed; the batches of an epoch depend only on ``(seed, epoch)``.
    """

    def __init__(
        self,
        labels: Sequence[object] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        arr = _as_label_array(labels)
        if isinstance(p, bool) or not isinstance(p, int) or p < 2:
            raise ValueError(f"p (classes per batch) must be an integer >= 2, got {p!r}")
        check_positive_int(k, "k")
        classes, inverse = np.unique(arr, return_inverse=True)
        if len(classes) < p:
            raise ValueError(
                f"p={p} classes per batch requested but labels contain only {len(classes)} "
                f"distinct class(es); lower p to at most {len(classes)}"
            )
        if num_batches is None:
            num_batches = max(1, len(arr) // (p * k))
        check_positive_int(num_batches, "num_batches")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        self._members = np.split(order, bounds)
        self.p, self.k, self.num_batches, self.seed = p, k, num_batches, seed
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    @property
    def num_classes(self) -> int:
        return len(self._members)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) batch stream the next iteration yields."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        class_cycle = _Cycle(np.arange(self.num_classes), rng)
        members = [_Cycle(m, rng) if len(m) >= self.k else None for m in self._members]
        for _ in range(self.num_batches):
            batch = []
            for c in class_cycle.take(self.p):
                cycle = members[c]
                if cycle is not None:
                    batch.append(cycle.take(self.k))
                else:  # small class: all its samples, the remaining slots drawn with replacement
                    pool = self._members[c]
                    extra = rng.choice(pool, size=self.k - len(pool), replace=True)
                    batch.append(rng.permutation(np.concatenate([pool, extra])))
            yield np.concatenate(batch).tolist()
