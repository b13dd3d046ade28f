"""What every batch loss does first: validate the batch, resolve its references, and build the
[B, M] distances and positive / negative masks of the anchors against them (the contract of
:class:`~metrickit.losses._base.BatchLoss`)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from .._validation import check_choice, check_embeddings, check_labels
from ..distances import pairwise_distance
from ..masks import References, mined_pair_masks, reference_pair_masks, resolve_references

IndicesTuple = tuple[Tensor, ...]


class Batch(NamedTuple):
    """A validated batch-loss call: ``labels`` checked, ``refs`` resolved; ``plain`` when the
    references are the batch itself (offset 0) and no miner chose the pairs, i.e. when the
    loss's own in-batch algorithms apply."""

    labels: Tensor
    refs: References
    indices_tuple: IndicesTuple | None
    plain: bool


def batch_call(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: IndicesTuple | None,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    ref_offset: int | None,
) -> Batch:
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    refs = resolve_references(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
    plain = indices_tuple is None and refs.embeddings is embeddings and refs.offset == 0
    if indices_tuple is not None:
        mined_pair_masks(indices_tuple, embeddings.shape[0], refs.labels.shape[0])  # validates
    return Batch(labels, refs, indices_tuple, plain)


def reference_distance(embeddings: Tensor, refs: References, distance: str) -> Tensor:
    """[B, M] distances of the anchors to the references; an anchor's own column is exactly 0
    (as the diagonal of the in-batch matrix, which this is when the references are the batch)."""
    if refs.embeddings is embeddings and refs.offset == 0:
        return pairwise_distance(embeddings, distance=distance)
    return pairwise_distance(embeddings, refs.embeddings, distance, self_offset=refs.offset)


def pair_masks_of(call: Batch) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` [B, M]: label masks against the references (own column never a
    positive), ANDed with the miner's pairs when an ``indices_tuple`` was given."""
    pos, neg = reference_pair_masks(call.labels, call.refs)
    if call.indices_tuple is not None:
        mined_pos, mined_neg = mined_pair_masks(call.indices_tuple, pos.shape[0], pos.shape[1])
        pos, neg = pos & mined_pos, neg & mined_neg
    return pos, neg


def check_algorithm(algorithm: object, choices: tuple[str, ...]) -> str:
    """``algorithm`` is "auto" or one of ``choices``."""
    return check_choice(algorithm, "algorithm", ("auto", *choices))
