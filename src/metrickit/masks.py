"""Boolean masks over the pairs of a labelled batch (the lowest layer, with distances)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._validation import check_embeddings, check_int, check_labels


def pair_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` [B, M] boolean masks.

    positive[i, j]: same label and not the same sample (i != j when ``ref_labels`` is None);
    negative[i, j]: different labels. With ``ref_labels`` the columns are a separate reference
    set (cross-batch memory, distributed gathering) and no diagonal is excluded.
    """
    ref = labels if ref_labels is None else ref_labels
    same = labels[:, None] == ref[None, :]
    positive = same
    if ref_labels is None:
        positive = same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return positive, ~same


def upper_triangle(n: int, device: torch.device | None = None) -> Tensor:
    """[n, n] mask of the unordered pairs i < j."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu_(1)


def class_slots(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(members, positives, n_pos)``: each row's class as packed column indices.

    members: [B, K] the columns of row i's class, itself included (K = the largest class);
    positives: [B, K − 1] the same without row i; n_pos: [B] the number of real positives.
    Padding slots hold i itself. O(B log B) from one sort of the labels, and one host read of K
    (free on CPU, a sync elsewhere).
    """
    b = labels.shape[0]
    device = labels.device
    order = torch.argsort(labels, stable=True)
    ranked = labels[order]
    first = torch.ones(b, dtype=torch.bool, device=device)
    first[1:] = ranked[1:] != ranked[:-1]
    group = first.cumsum(0) - 1  # class number at each sorted position
    starts = first.nonzero(as_tuple=True)[0]
    sizes = torch.diff(starts, append=torch.tensor([b], device=device))
    k = int(sizes.max()) if b else 1
    where = torch.empty_like(order)
    where[order] = torch.arange(b, device=device)  # sorted position of each row
    start = starts[group[where]]
    size = sizes[group[where]]
    rank = where - start  # row i's place within its class
    slot = torch.arange(k, device=device)[None, :]
    rows = torch.arange(b, device=device)[:, None]
    column = order[(start[:, None] + slot).clamp_max(b - 1)]
    members = torch.where(slot < size[:, None], column, rows)
    skip = slot[:, : k - 1] + (slot[:, : k - 1] >= rank[:, None]).long()
    positives = torch.where(slot[:, : k - 1] < (size - 1)[:, None], members.gather(1, skip), rows)
    return members, positives, size - 1


# ---------------------------------------------------------------------------------------------
# The batch-loss contract: references and mined index tuples, as masks over [B, M] pairs.
# ---------------------------------------------------------------------------------------------


class References(NamedTuple):
    """The candidates a batch loss scores its anchors against (see :func:`resolve_references`).

    embeddings: [M, D]; labels: [M]; offset: the anchors are rows ``offset .. offset + B − 1``
    of the references (their own columns), or ``None`` when no reference row is an anchor.
    """

    embeddings: Tensor
    labels: Tensor
    offset: int | None


def resolve_references(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
) -> References:
    """Validate a batch loss's optional reference set and return it (the batch itself if none).

    Without ``ref_embeddings`` the references are the batch (offset 0) and ``ref_labels`` /
    ``ref_offset`` must not be given. With them, ``ref_labels`` is required and ``ref_offset``
    says where the anchors sit among the references: an integer ≥ 0 (rows ``ref_offset ..
    ref_offset + B − 1`` are the anchors themselves, as in cross-batch memory and distributed
    gathering) or ``None`` (the references are other samples only).
    Inputs are assumed already checked by the caller (``check_embeddings``/``check_labels``).
    """
    if ref_embeddings is None:
        if ref_labels is not None or ref_offset is not None:
            raise ValueError(
                "ref_labels and ref_offset are only meaningful with ref_embeddings, got "
                f"ref_labels={'a tensor' if ref_labels is not None else None} and "
                f"ref_offset={ref_offset!r} without ref_embeddings"
            )
        return References(embeddings, labels, 0)
    check_embeddings(ref_embeddings, "ref_embeddings")
    if ref_labels is None:
        raise ValueError("ref_labels is required with ref_embeddings, got None")
    ref_labels = check_labels(ref_labels, ref_embeddings.shape[0], "ref_labels")
    if ref_embeddings.shape[1] != embeddings.shape[1]:
        raise ValueError(
            "embeddings and ref_embeddings must have the same embedding size, got "
            f"{embeddings.shape[1]} and {ref_embeddings.shape[1]}"
        )
    if ref_embeddings.device != embeddings.device:
        raise ValueError(
            f"ref_embeddings must be on the device of embeddings ({embeddings.device}), "
            f"got {ref_embeddings.device}"
        )
    if ref_offset is not None:
        ref_offset = check_int(ref_offset, "ref_offset", low=0)
        if ref_offset + embeddings.shape[0] > ref_embeddings.shape[0]:
            raise ValueError(
                f"ref_offset={ref_offset} puts the {embeddings.shape[0]} anchors at rows "
                f"{ref_offset}..{ref_offset + embeddings.shape[0] - 1} of the references, but "
                f"ref_embeddings has {ref_embeddings.shape[0]} rows"
            )
    return References(ref_embeddings, ref_labels, ref_offset)


def own_columns(b: int, offset: int | None, device: torch.device | None = None) -> Tensor | None:
    """[B] the reference column of each anchor (itself), or ``None`` without one."""
    if offset is None:
        return None
    return offset + torch.arange(b, device=device)


def reference_pair_masks(labels: Tensor, refs: References) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` [B, M] masks of anchors against references.

    positive[i, j]: same label and j is not anchor i's own column; negative[i, j]: different
    labels. With the batch as references this is :func:`pair_masks`.
    """
    same = labels[:, None] == refs.labels[None, :]
    own = own_columns(labels.shape[0], refs.offset, labels.device)
    positive = same
    if own is not None:
        cols = torch.arange(refs.labels.shape[0], device=labels.device)
        positive = same & (cols[None, :] != own[:, None])
    return positive, ~same


def unordered_pair_mask(
    b: int, m: int, offset: int | None, device: torch.device | None = None
) -> Tensor:
    """[B, M] mask keeping each unordered pair once, for losses summed over pairs {i, j}.

    With anchors among the references (``offset`` not None) pair (i, j) is kept when
    ``offset + i < j`` (global index order: over the ranks of a distributed batch each pair is
    counted exactly once, and with the batch itself as references it is the upper triangle).
    Without (``offset`` None) every (anchor, reference) pair is distinct and kept.
    """
    if offset is None:
        return torch.ones(b, m, dtype=torch.bool, device=device)
    cols = torch.arange(m, device=device)
    return cols[None, :] > (offset + torch.arange(b, device=device))[:, None]


def mined_pair_masks(indices_tuple: tuple[Tensor, ...], b: int, m: int) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` [B, M] masks of the pairs a miner selected.

    ``indices_tuple`` is ``(a, p, n)`` (triplets: pairs (a, p) and (a, n)) or ``(a1, p, a2, n)``
    (pairs: positive (a1, p), negative (a2, n)); anchors index the batch, p/n the references.
    A loss ANDs these masks with its label masks, so a mined pair is used only if it is valid.
    """
    a1, p, a2, n = _split_indices(indices_tuple, b, m)
    device = a1.device
    positive = torch.zeros(b, m, dtype=torch.bool, device=device)
    negative = torch.zeros(b, m, dtype=torch.bool, device=device)
    positive[a1, p] = True
    negative[a2, n] = True
    return positive, negative


def mined_triplets(
    indices_tuple: tuple[Tensor, ...], b: int, m: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)`` triplet indices from a miner's triplets or pairs.

    Triplets pass through; pairs ``(a1, p, a2, n)`` become every (a, p, n) with (a, p) a mined
    positive pair and (a, n) a mined negative pair of the same anchor (as PML converts them).
    """
    if len(indices_tuple) == 3:
        a, p, _, n = _split_indices(indices_tuple, b, m)
        return a, p, n
    pos, neg = mined_pair_masks(indices_tuple, b, m)
    a, p = pos.nonzero(as_tuple=True)
    k, n = neg[a].nonzero(as_tuple=True)
    return a[k], p[k], n


def _split_indices(indices_tuple: tuple[Tensor, ...], b: int, m: int) -> tuple[Tensor, ...]:
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise ValueError(
            "indices_tuple must be (anchor, positive, negative) triplets or (anchor, positive, "
            f"anchor2, negative) pairs of index tensors, got {type(indices_tuple).__name__} "
            f"of length {len(indices_tuple) if isinstance(indices_tuple, (tuple, list)) else '?'}"
        )
    parts = []
    for name, t in zip(_index_names(len(indices_tuple)), indices_tuple, strict=True):
        if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dim() != 1:
            raise TypeError(f"indices_tuple's {name} must be a 1-D integer tensor, got {t!r}")
        parts.append(t.long())
    limits = (b, m, m) if len(parts) == 3 else (b, m, b, m)
    for name, t, lim in zip(_index_names(len(parts)), parts, limits, strict=True):
        if t.numel() and t.device.type == "cpu" and (int(t.min()) < 0 or int(t.max()) >= lim):
            raise ValueError(f"indices_tuple's {name} indices must lie in [0, {lim}), got "
                             f"{int(t.min())}..{int(t.max())}")
    if len(parts) == 3:
        a, p, n = parts
        if not (a.shape == p.shape == n.shape):
            raise ValueError("indices_tuple's triplet tensors must have the same length")
        return a, p, a, n
    if parts[0].shape != parts[1].shape or parts[2].shape != parts[3].shape:
        raise ValueError("indices_tuple's (anchor, positive) and (anchor2, negative) must pair up")
    return tuple(parts)


def _index_names(k: int) -> tuple[str, ...]:
    if k == 3:
        return ("anchor", "positive", "negative")
    return ("anchor", "positive", "anchor2", "negative")
