"""Batch losses against a separate reference set, and cross-batch memory (Wang et al. 2020).

Every :class:`~metrickit.losses._base.BatchLoss` scores the anchors of the current batch against
any reference set through its own ``forward(..., ref_embeddings=, ref_labels=, ref_offset=)``: a
memory of past embeddings here, or the embeddings gathered from every process
(:mod:`metrickit.distributed`). When the anchors are a contiguous block of the references,
``references[offset : offset + B]``, the pair of an anchor with its own column is known by
*index* (duplicated embeddings still count as pairs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import (
    check_embeddings,
    check_int,
    check_labels,
    check_positive_int,
    compute_dtype,
)
from ._base import BatchLoss


def _check_batch_loss(loss: object, pair_based: bool = False) -> BatchLoss:
    if not isinstance(loss, BatchLoss) or (pair_based and not loss.pair_based):
        kind = "a pair-based BatchLoss" if pair_based else "a BatchLoss"
        raise TypeError(f"loss must be {kind} of metrickit.losses, got {type(loss).__name__}")
    return loss


def reference_set_loss(
    loss: nn.Module,
    embeddings: Tensor,
    labels: Tensor,
    references: Tensor,
    ref_labels: Tensor,
    offset: int | None = 0,
) -> Tensor:
    """``loss(embeddings, labels, ref_embeddings=references, ref_labels=ref_labels,
    ref_offset=offset)``: the batch loss ``loss`` with anchors = ``embeddings`` and candidates =
    ``references`` (kept for compatibility; call the loss directly).

    Anchor i is reference column ``offset + i`` (its own sample): that column is never its
    positive, and losses over unordered pairs keep (i, j) only when ``offset + i < j``. Each
    loss's docstring says what its reference-set form computes; with ``references =
    embeddings`` and ``offset = 0`` every batch loss equals its in-batch form.

    Args:
        loss: any :class:`~metrickit.losses._base.BatchLoss` (configured as wanted).
        embeddings: [B, D] anchors. labels: [B] class ids.
        references: [M, D]; rows ``offset .. offset + B − 1`` are the anchors themselves.
        ref_labels: [M] class ids of the references.
        offset: index of the first anchor among the references, or None if none is [0].
    """
    loss = _check_batch_loss(loss)
    out = loss(embeddings, labels, ref_embeddings=references, ref_labels=ref_labels,
               ref_offset=offset)
    return out.to(embeddings.dtype)


class CrossBatchMemory(nn.Module):
    r"""Cross-batch memory (XBM): a FIFO queue of past embeddings used as extra references.

    Each call scores the current batch (anchors) against references = current batch (with
    gradients) followed by the memory (detached embeddings and labels of the most recent
    ``memory_size`` samples of *earlier* calls): ``loss(batch, labels, ref_embeddings=[batch;
    memory], ref_labels=..., ref_offset=0)``; then, in training mode, the batch is enqueued
    (the oldest entries are overwritten).
    The current batch is never in the memory when its loss is computed, so no sample is its
    own positive. Memory pairs contribute only through the anchors: the memory gets no gradient.
    Memory columns follow the batch (index ≥ B), so contrastive and lifted-structure pairs
    (anchor, memory sample) are all kept. In evaluation mode the memory is used but not updated.

    The paper's observation: embeddings drift slowly once the model has warmed up, so stale
    embeddings from earlier iterations are still informative negatives; ``start_step`` leaves
    the memory out (but still fills it) for the first calls, like the paper's warm-up.

    Paper: X. Wang, H. Zhang, W. Huang, M. R. Scott, "Cross-Batch Memory for Embedding
    Learning", CVPR 2020.

    Args:
        loss: any pair-based :class:`~metrickit.losses._base.BatchLoss`.
        embedding_dim: D of the embeddings stored.
        memory_size: number of past samples kept [1024].
        start_step: training calls before the memory is used as references [0].

    ``forward(embeddings, labels)`` returns the loss in the dtype of ``embeddings``. The memory
    (buffers, float32 or wider) and its fill state are part of ``state_dict()``; call
    :meth:`reset` to empty it.
    """

    def __init__(
        self, loss: nn.Module, embedding_dim: int, memory_size: int = 1024, start_step: int = 0
    ) -> None:
        super().__init__()
        self.loss = _check_batch_loss(loss, pair_based=True)
        embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        memory_size = check_positive_int(memory_size, "memory_size")
        start_step = check_int(start_step, "start_step", low=0)
        self.embedding_dim, self.memory_size = embedding_dim, memory_size
        self.start_step = start_step
        self.register_buffer("memory_embeddings", torch.zeros(memory_size, embedding_dim))
        self.register_buffer("memory_labels", torch.zeros(memory_size, dtype=torch.int64))
        # Host-side fill state, derived from batch shapes only: no device sync per step.
        self.filled, self.position, self.steps = 0, 0, 0

    def reset(self) -> None:
        """Empty the memory (the stored values are kept but no longer used)."""
        self.filled, self.position, self.steps = 0, 0, 0

    def get_extra_state(self) -> dict[str, int]:
        return {"filled": self.filled, "position": self.position, "steps": self.steps}

    def set_extra_state(self, state: Any) -> None:
        self.filled, self.position, self.steps = state["filled"], state["position"], state["steps"]

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_embeddings(embeddings)
        labels = check_labels(labels, embeddings.shape[0])
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings must have embedding_dim={self.embedding_dim} columns, "
                f"got shape {tuple(embeddings.shape)}"
            )
        use_memory = self.filled > 0 and (not self.training or self.steps >= self.start_step)
        if use_memory:
            dtype = torch.promote_types(compute_dtype(embeddings), self.memory_embeddings.dtype)
            refs = torch.cat(
                [embeddings.to(dtype), self.memory_embeddings[: self.filled].to(dtype)]
            )
            ref_labels = torch.cat([labels.to(torch.int64), self.memory_labels[: self.filled]])
            out = self.loss(embeddings.to(dtype), labels, ref_embeddings=refs,
                            ref_labels=ref_labels, ref_offset=0)
        else:
            out = self.loss(embeddings, labels)
        if self.training:
            self._enqueue(embeddings.detach(), labels)
            self.steps += 1
        return out.to(embeddings.dtype)

    @torch.no_grad()
    def _enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        n = min(embeddings.shape[0], self.memory_size)
        embeddings, labels = embeddings[-n:], labels[-n:]
        device = self.memory_embeddings.device
        slots = (self.position + torch.arange(n, device=device)) % self.memory_size
        self.memory_embeddings[slots] = embeddings.to(device, self.memory_embeddings.dtype)
        self.memory_labels[slots] = labels.to(device, torch.int64)
        self.position = (self.position + n) % self.memory_size
        self.filled = min(self.filled + n, self.memory_size)
