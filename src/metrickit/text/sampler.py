"""Batches without duplicate texts, for in-batch-negatives losses.

With in-batch negatives every other row's positive is a negative of an anchor; a text that occurs
twice in one batch would be its own negative (a false negative). :class:`NoDuplicatesBatchSampler`
shuffles the examples each epoch and fills each batch greedily in that order, setting aside an
example that shares a text with the batch so far; set-aside examples are tried first for the next
batch. Every example is used exactly once per epoch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import torch

from .._validation import check_bool, check_int, check_positive_int


class NoDuplicatesBatchSampler:
    """Index batches over ``columns`` (equal-length lists of texts) with no text twice in a batch.

    ``seed`` and the epoch (:meth:`set_epoch`) fix the order. With ``drop_last`` a final batch
    smaller than ``batch_size`` is skipped.
    """

    def __init__(
        self,
        columns: Sequence[Sequence[str]],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not columns or len({len(c) for c in columns}) != 1:
            raise ValueError("columns must be one or more text columns of equal length")
        self.texts = [frozenset(row) for row in zip(*columns, strict=True)]
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = check_int(seed, "seed")
        self.drop_last = check_bool(drop_last, "drop_last")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", low=0)

    def __len__(self) -> int:
        n = len(self.texts)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        remaining = deque(torch.randperm(len(self.texts), generator=g).tolist())
        while remaining:
            batch: list[int] = []
            seen: set[str] = set()
            skipped: list[int] = []
            while remaining and len(batch) < self.batch_size:
                index = remaining.popleft()
                if seen.isdisjoint(self.texts[index]):
                    batch.append(index)
                    seen.update(self.texts[index])
                else:
                    skipped.append(index)
            remaining.extendleft(reversed(skipped))
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
            else:
                return
