"""Batch losses against a separate reference set, and cross-batch memory (Wang et al. 2020).

A batch loss with a distance-matrix core (rows = anchors, columns = references) can score the
anchors of the current batch against any reference set: a memory of past embeddings, or the
embeddings gathered from every process (:mod:`metrickit.distributed`). The anchors must be a
contiguous block of the references, ``references[offset : offset + B]``, so that the pair of an
anchor with its own column is known by *index* (duplicated embeddings still count as pairs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import (
    check_embeddings,
    check_labels,
    check_positive_int,
    check_reduction,
    compute_dtype,
    reduce,
)
from ..distances import pairwise_distance, resolve_distance
from ..masks import pair_masks
from .contrastive import BatchContrastiveLoss, _contrastive_term
from .lifted_structure import LiftedStructureLoss, lifted_structure_from_distances
from .quadruplet import BatchQuadrupletLoss, quadruplet_from_distances
from .triplet import BatchTripletLoss, triplet_loss_from_distances

REFERENCE_LOSSES = (
    BatchTripletLoss, BatchContrastiveLoss, LiftedStructureLoss, BatchQuadrupletLoss
)


def _check_reference_inputs(
    embeddings: Tensor, labels: Tensor, references: Tensor, ref_labels: Tensor, offset: int
) -> None:
    check_embeddings(embeddings)
    check_labels(labels, embeddings.shape[0])
    check_embeddings(references, "references")
    check_labels(ref_labels, references.shape[0], "ref_labels")
    if references.shape[1] != embeddings.shape[1]:
        raise ValueError(
            "embeddings and references must have the same embedding size, got "
            f"{embeddings.shape[1]} and {references.shape[1]}"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
    if offset + embeddings.shape[0] > references.shape[0]:
        raise ValueError(
            f"the anchors must be rows {offset}..{offset + embeddings.shape[0] - 1} (offset .. "
            f"offset + B - 1) of the references, but references has {references.shape[0]} rows"
        )


def reference_set_loss(
    loss: nn.Module,
    embeddings: Tensor,
    labels: Tensor,
    references: Tensor,
    ref_labels: Tensor,
    offset: int = 0,
) -> Tensor:
    """The batch loss ``loss`` with anchors = ``embeddings`` and references = ``references``.

    Anchor i is reference column ``offset + i`` (its own sample): that column is never its
    positive. Losses over *unordered* pairs (contrastive, lifted structure) keep the pair
    (anchor i, column j) only when ``offset + i < j``, so a pair of two anchors is counted once and
    a pair of an anchor with a reference that is not an anchor (``j ≥ offset + B`` or ``j <
    offset``, see below) follows the same index rule.

    What each supported loss computes, with P(i) = columns j ≠ offset+i of i's class and N(i) =
    columns of other classes:

    * :class:`BatchTripletLoss`: :func:`triplet_loss_from_distances` over the [B, M] distances
      with these masks (all its mining modes, margins, reductions);
    * :class:`BatchContrastiveLoss`: ½[y d² + (1 − y) max(m − d, 0)²] over the pairs
      (i, j), offset + i < j, averaged over their number ("none": row-major order);
    * :class:`LiftedStructureLoss`: :func:`lifted_structure_from_distances` with the positive
      pairs (i, j ∈ P(i), offset + i < j); N(j) runs over the *anchors* of column j;
    * :class:`BatchQuadrupletLoss`: :func:`quadruplet_from_distances`; positives from P(i),
      n1 from N(i), negative pairs {n1, n2} from all references.

    With ``references = embeddings`` and ``offset = 0`` each loss equals its in-batch form.

    Args:
        loss: one of :data:`REFERENCE_LOSSES` (its hyper-parameters are used as configured).
        embeddings: [B, D] anchors. labels: [B] class ids.
        references: [M, D]; rows ``offset .. offset + B − 1`` are the anchors themselves.
        ref_labels: [M] class ids of the references.
        offset: index of the first anchor among the references [0].
    """
    _check_reference_inputs(embeddings, labels, references, ref_labels, offset)
    if not isinstance(loss, REFERENCE_LOSSES):
        names = ", ".join(cls.__name__ for cls in REFERENCE_LOSSES)
        raise TypeError(
            f"loss must be a loss with a distance-matrix core ({names}), got {type(loss).__name__}"
        )
    b, m = embeddings.shape[0], references.shape[0]
    device = embeddings.device
    own = offset + torch.arange(b, device=device)
    cols = torch.arange(m, device=device)
    pos, neg = pair_masks(labels, ref_labels)
    pos = pos & (cols[None, :] != own[:, None])
    after = cols[None, :] > own[:, None]  # unordered pairs: each once
    if isinstance(loss, BatchTripletLoss):
        distance = resolve_distance(loss.distance, loss.squared)
        dist = pairwise_distance(embeddings, references, distance)
        out = triplet_loss_from_distances(
            dist, pos, neg, loss.margin, loss.mining, loss.soft, loss.reduction
        )
    elif isinstance(loss, BatchContrastiveLoss):
        dist = pairwise_distance(embeddings, references, loss.distance)
        pairs = after & (pos | neg)
        terms = _contrastive_term(dist[pairs], pos[pairs], loss.margin)
        out = reduce(terms, check_reduction(loss.reduction))
    elif isinstance(loss, LiftedStructureLoss):
        dist = pairwise_distance(embeddings, references)
        out = lifted_structure_from_distances(dist, pos & after, neg, loss.margin, loss.reduction)
    else:
        dist = pairwise_distance(embeddings, references, "squared_euclidean")
        ref_dist = pairwise_distance(references, distance="squared_euclidean")
        _, ref_neg = pair_masks(ref_labels)
        margins = loss.margin1, loss.margin2
        out = quadruplet_from_distances(dist, pos, neg, ref_dist, ref_neg, *margins)
    return out.to(embeddings.dtype)


class CrossBatchMemory(nn.Module):
    r"""Cross-batch memory (XBM): a FIFO queue of past embeddings used as extra references.

    Each call scores the current batch (anchors) against references = current batch (with
    gradients) followed by the memory (detached embeddings and labels of the most recent
    ``memory_size`` samples of *earlier* calls), through :func:`reference_set_loss` with
    offset 0; then, in training mode, the batch is enqueued (the oldest entries are overwritten).
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
        loss: a batch loss with a distance-matrix core (see :func:`reference_set_loss`).
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
        if not isinstance(loss, REFERENCE_LOSSES):
            names = ", ".join(cls.__name__ for cls in REFERENCE_LOSSES)
            raise TypeError(
                f"loss must be a loss with a distance-matrix core ({names}), "
                f"got {type(loss).__name__}"
            )
        check_positive_int(embedding_dim, "embedding_dim")
        check_positive_int(memory_size, "memory_size")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
        self.loss = loss
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
            out = reference_set_loss(self.loss, embeddings.to(dtype), labels, refs, ref_labels)
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
