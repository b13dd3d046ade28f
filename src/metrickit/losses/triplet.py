"""Triplet loss: explicit triplets and online mining in a labelled batch.

Also known as: triplet ranking loss, margin ranking loss (the names as in R. Gómez,
"Understanding Ranking Loss, Contrastive Loss, Margin Loss, Triplet Loss, Hinge Loss and all
those confusing names", 2019).

The batch form never enumerates triplets. On CPU, hinge batch all ("mean"/"sum") goes straight
from the embeddings through :mod:`._batch_all`: each block of distance rows is compared with its
anchors' thresholds d(a, p) + m, and the loss is written with the resulting exact counts as
coefficients (O(B²·k) or O(B² log k) time for k positives per anchor, one B×B matrix of memory,
closed-form gradient). Elsewhere, and over a precomputed distance matrix, batch all sorts each
anchor's negative distances once and, for every positive, counts the negatives inside the margin
and sums their distances with ``searchsorted`` plus prefix sums: O(B² log B) time and O(B²)
memory, exact values and gradients. Only soft-margin batch all (softplus has no threshold) forms
its (a, p, n) terms, a chunk of anchors at a time, recomputed in the backward pass (bounded
memory); it costs one host sync (the largest number of positives per anchor).

Batch hard and semi-hard on CPU mine first, without autograd, one cache-sized block of distance
rows at a time (:func:`metrickit.miners.select_triplets`: one pass per positive, no sort for up
to 16 positives per anchor), then compute the distances of the mined triplets only, from the
embeddings: no B×B graph exists. Elsewhere (no host sync) and over a precomputed matrix, they
reduce the distance matrix (hard) or search each anchor's sorted negatives (semi-hard).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .._kernels import semihard_positions, sort_rows, sum_below, threshold_counts
from .._validation import (
    check_bool,
    check_choice,
    check_embeddings,
    check_floating,
    check_nonnegative,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
    reduce,
)
from ..distances import (
    gathered_distance,
    pairwise_distance,
    resolve_distance,
    rowwise_distance,
    unit_rows,
)
from ..masks import mined_triplets, reference_pair_masks
from ..miners import Selection, select_triplets
from ._base import BatchLoss, Loss
from ._batch_all import batch_all_hinge_total
from ._pairs import IndicesTuple, batch_call, check_algorithm, pair_masks_of, reference_distance
from ._registry import register_loss

MINING = ("all", "hard", "semihard")
# How the batch form computes (see batch_triplet_loss); "auto" picks as documented there.
ALGORITHMS = ("blockwise", "dense", "sorted")
# Mined batch hard / semi-hard terms: up to this many rows per slot (B ≤ 64·k), their distances
# are gathered from one distance matrix; beyond, computed for the mined pairs only (measured on a
# 2-core CPU: the two cost the same near B = 80·k).
_DENSE_ROWS_PER_SLOT = 64
# Elements of one [chunk, k, M] block of soft-margin batch-all terms (32 MiB in float32).
_SOFT_BLOCK_ELEMENTS = 1 << 23


def _hinge(x: Tensor, soft: bool) -> Tensor:
    return F.softplus(x) if soft else x.clamp_min(0)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 0.2,
    squared: bool = False,
    soft: bool = False,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet loss over explicit triplets (one per row).

    .. math:: \ell(a, p, n) = \max(0,\ d(a, p) - d(a, n) + m)

    ``soft=True`` replaces the hinge by the soft margin ln(1 + exp(d(a, p) − d(a, n))) and
    ignores ``m`` (Hermans, Beyer & Leibe 2017). ``squared=True`` uses d² (squared Euclidean, as in
    FaceNet).

    Papers: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face
    Recognition and Clustering", CVPR 2015; A. Hermans, L. Beyer, B. Leibe, "In Defense of the
    Triplet Loss for Person Re-Identification", 2017.

    Args:
        anchor, positive, negative: [N, D] embeddings.
        margin: m ≥ 0 [0.2].
        squared: use squared Euclidean distances [False]; needs ``distance="euclidean"``.
        soft: soft margin instead of the hinge [False].
        distance: one of :data:`metrickit.distances.DISTANCES` ["euclidean"].
        reduction: "mean" | "sum" | "none" (the [N] terms) ["mean"].
    """
    for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        check_embeddings(x, name)
    check_same_shape({"anchor": anchor, "positive": positive, "negative": negative})
    margin = check_nonnegative(margin, "margin")
    soft = check_bool(soft, "soft")
    check_reduction(reduction)
    distance = resolve_distance(distance, check_bool(squared, "squared"))
    d_ap = rowwise_distance(anchor, positive, distance)
    d_an = rowwise_distance(anchor, negative, distance)
    term = _hinge(d_ap - d_an + (0.0 if soft else margin), soft)
    return reduce(term, reduction).to(anchor.dtype)


def _soft_block(d_ap: Tensor, valid: Tensor, dist: Tensor, neg: Tensor) -> Tensor:
    x = F.softplus(d_ap[:, :, None] - dist[:, None, :])  # [chunk, positive slot, reference]
    x = torch.where(neg[:, None, :], x, 0.0).sum(2)
    return torch.where(valid, x, 0.0)


def _soft_all_pair_sums(dist: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """[B, M] Σ_n softplus(d(a, p) − d(a, n)) at the positive entries (a, p), 0 elsewhere.

    Each row's positives are packed into k = max positives per row slots (one host sync), and
    anchors are processed in chunks whose [chunk, k, M] block is recomputed in backward, so the
    memory stays O(B·M + chunk·k·M) while the time is O(B·k·M).
    """
    k = int(pos.sum(1).max()) if pos.numel() else 0
    if k == 0:
        return dist * 0.0
    slots = torch.argsort(pos.to(torch.uint8), dim=1, descending=True, stable=True)[:, :k]
    valid = pos.gather(1, slots)
    d_ap = dist.gather(1, slots)
    chunk = max(1, _SOFT_BLOCK_ELEMENTS // (k * dist.shape[1]))
    recompute = torch.is_grad_enabled() and dist.requires_grad
    parts = [
        checkpoint(_soft_block, *args, use_reentrant=False) if recompute else _soft_block(*args)
        for args in zip(
            d_ap.split(chunk), valid.split(chunk), dist.split(chunk), neg.split(chunk), strict=True
        )
    ]
    return torch.zeros_like(dist).scatter(1, slots, torch.cat(parts))


def _batch_all(
    dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool
) -> tuple[Tensor, Tensor]:
    """Per (anchor, positive) sums over the anchor's negatives, and the number of terms to
    average over (triplets with a loss > 0; with the soft margin, every valid triplet)."""
    if soft:
        return _soft_all_pair_sums(dist, pos, neg), (pos.sum(1) * neg.sum(1)).sum()
    threshold = dist + margin
    c, below = sum_below(sort_rows(dist, neg), threshold)  # negatives with d(a, n) < d(a, p) + m
    total = c.to(dist.dtype) * threshold - below
    return torch.where(pos, total, 0.0), torch.where(pos, c, 0).sum()


def _batch_all_total(
    dist: Tensor, pos: Tensor, neg: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """Sum of all hinge batch-all terms and the number of triplets with a loss > 0.

    The sum is linear in the distances with piecewise-constant coefficients:
    Σ_(a,p) c_ap·(d_ap + m) − Σ_(a,n) e_an·d_an, with c_ap the negatives inside the margin of
    (a, p) and e_an the positives whose margin n violates (see
    :func:`~metrickit._kernels.threshold_counts`), so value and gradient are exact without sorting
    or gathering B×M tensors through autograd.
    """
    counts = threshold_counts(dist, pos, neg, margin)
    below = torch.where(counts.valid, counts.below, 0)
    d_ap = dist.gather(1, counts.slot)
    positive_part = (below.to(dist.dtype) * (d_ap + margin)).sum()
    return positive_part - (counts.above.to(dist.dtype) * dist).sum(), below.sum()


def _batch_semihard(
    dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool
) -> tuple[Tensor, Tensor]:
    rows = sort_rows(dist, neg)
    d_an = rows.values.gather(1, semihard_positions(rows, dist))
    selected = pos & (rows.count > 0)[:, None]
    term = _hinge(dist - d_an + (0.0 if soft else margin), soft)
    return torch.where(selected, term, 0.0), selected


def _batch_hard(
    dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool
) -> tuple[Tensor, Tensor]:
    selected = pos.any(1) & neg.any(1)
    if dist.shape[1] == 0:  # an empty reference set (e.g. a memory bank not yet filled)
        return dist.sum(1), selected
    d_ap = torch.where(selected, dist.masked_fill(~pos, float("-inf")).amax(1), 0.0)
    d_an = torch.where(selected, dist.masked_fill(~neg, float("inf")).amin(1), 0.0)
    term = _hinge(d_ap - d_an + (0.0 if soft else margin), soft)
    return torch.where(selected, term, 0.0), selected


def _selected_terms(x: Tensor, sel: Selection, margin: float, soft: bool, distance: str) -> Tensor:
    """[B, k] terms of the mined triplets (0 where a slot holds none). Their distances are
    computed for those pairs only (O(B·k·D), no B×B graph) when B is large against k; for small
    batches one distance matrix (a matrix product) is cheaper, and is gathered from."""
    if x.shape[0] <= _DENSE_ROWS_PER_SLOT * sel.positive.shape[1]:
        dist = pairwise_distance(x, distance=distance)
        d_ap, d_an = dist.gather(1, sel.positive), dist.gather(1, sel.negative)
    else:
        d_ap = gathered_distance(x, sel.positive, distance)
        d_an = gathered_distance(x, sel.negative, distance)
    term = _hinge(d_ap - d_an + (0.0 if soft else margin), soft)
    return torch.where(sel.valid, term, 0.0)


def triplet_loss_from_distances(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    margin: float = 0.2,
    mining: str = "all",
    soft: bool = False,
    reduction: str = "mean",
    algorithm: str = "auto",
) -> Tensor:
    """Core of :func:`batch_triplet_loss` over a distance matrix: rows are anchors, columns are
    references (the batch itself, a memory bank, gathered embeddings).

    Args:
        dist: [B, M] distances d(anchor i, reference j).
        pos_mask, neg_mask: [B, M] bool; which references are positives / negatives of anchor i.
        margin, mining, soft, reduction: as in :func:`batch_triplet_loss`.
        algorithm: "auto" | "dense" | "sorted", as in :func:`batch_triplet_loss` ["auto"].

    Returns the loss in ``dist``'s dtype (computed in at least float32).
    """
    check_floating(dist, "dist", ndim=2)
    for name, m in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
        check_tensor(m, name)
        if m.dtype != torch.bool or m.shape != dist.shape:
            raise ValueError(
                f"{name} must be a bool tensor of the shape of dist {tuple(dist.shape)}, "
                f"got shape {tuple(m.shape)} and dtype {m.dtype}"
            )
    margin = check_nonnegative(margin, "margin")
    check_choice(mining, "mining", MINING)
    soft = check_bool(soft, "soft")
    check_reduction(reduction)
    algorithm = check_choice(algorithm, "algorithm", ("auto", "dense", "sorted"))
    if algorithm == "auto":
        algorithm = "dense" if dist.device.type == "cpu" else "sorted"
    d = dist.to(compute_dtype(dist))
    if mining == "all" and not soft and reduction != "none" and algorithm == "dense":
        total, count = _batch_all_total(d, pos_mask, neg_mask, margin)
        return (total if reduction == "sum" else total / count.clamp_min(1)).to(dist.dtype)
    if mining == "all":
        terms, count = _batch_all(d, pos_mask, neg_mask, margin, soft)
        selected = pos_mask & neg_mask.any(1, keepdim=True)
    else:
        core = _batch_hard if mining == "hard" else _batch_semihard
        terms, selected = core(d, pos_mask, neg_mask, margin, soft)
        count = selected.sum()
    out = terms[selected] if reduction == "none" else reduce(terms, reduction, count)
    return out.to(dist.dtype)


def _blockwise_applies(mining: str, soft: bool, reduction: str) -> bool:
    """Whether the blockwise algorithm computes this configuration (batch all: hinge sums)."""
    return mining != "all" or (not soft and reduction != "none")


def _check_triplet_algorithm(algorithm: object, mining: str, soft: bool, reduction: str) -> str:
    algorithm = check_algorithm(algorithm, ALGORITHMS)
    if algorithm == "blockwise" and not _blockwise_applies(mining, soft, reduction):
        raise ValueError(
            "algorithm='blockwise' computes batch all only with the hinge and reduction 'mean' "
            f"or 'sum', got soft={soft} and reduction={reduction!r}; use 'dense' or 'sorted'"
        )
    return algorithm


def _mined_triplet_terms(
    dist: Tensor, pos: Tensor, neg: Tensor, triplets: tuple[Tensor, Tensor, Tensor],
    margin: float, soft: bool,
) -> tuple[Tensor, Tensor]:
    """Terms of a miner's (a, p, n) triplets that are valid for the labels, and the number to
    average over (with a loss > 0; every triplet with the soft margin)."""
    a, p, n = triplets
    ok = pos[a, p] & neg[a, n]
    a, p, n = a[ok], p[ok], n[ok]
    terms = _hinge(dist[a, p] - dist[a, n] + (0.0 if soft else margin), soft)
    return terms, (torch.ones_like(a).sum() if soft else (terms > 0).sum())


def batch_triplet_loss(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    mining: str = "all",
    squared: bool = False,
    soft: bool = False,
    distance: str = "euclidean",
    reduction: str = "mean",
    *,
    indices_tuple: IndicesTuple | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
    algorithm: str = "auto",
) -> Tensor:
    r"""Triplet loss with online mining over a labelled batch.

    Each triplet term is max(0, d(a, p) − d(a, n) + m) (or softplus(d(a, p) − d(a, n)) with
    ``soft=True``, which ignores m), over anchors a, positives p ≠ a with the anchor's label and
    negatives n with another label.

    ``mining``:

    * ``"all"`` (batch all, Hermans et al. 2017): every valid triplet. "mean" is the sum over
      the triplets divided by the number of triplets with a loss > 0 (d(a, n) < d(a, p) + m;
      with ``soft=True`` all valid triplets); "none" gives, for every positive pair (a, p) whose
      anchor has a negative, Σ_n of its triplet terms, in row-major (a, p) order.
    * ``"hard"`` (batch hard, Hermans et al. 2017): per anchor, its farthest positive and nearest
      negative; averaged over the anchors having both; "none" gives one term per such anchor, in
      anchor order.
    * ``"semihard"`` (FaceNet, Schroff et al. 2015, as TensorFlow Addons'
      ``triplet_semihard_loss``): per positive pair (a, p), the nearest negative with
      d(a, n) > d(a, p), or the farthest negative if none is farther than p; averaged over the
      positive pairs whose anchor has a negative; "none" gives one term per such pair, row-major.

    "sum" always equals the sum of "none". "none" has a data-dependent length (one host sync);
    "mean" and "sum" need none, except soft batch all (one). With nothing to average over (no
    positive pair, one class, B = 1) the loss is 0 with a graph and zero gradients.

    The batch-loss contract (:class:`~metrickit.losses._base.BatchLoss`): ``ref_embeddings`` /
    ``ref_labels`` / ``ref_offset`` replace the candidates p and n by a reference set (the
    anchors stay the batch). ``indices_tuple`` from a miner: with ``mining="all"`` the loss runs
    over exactly the mined triplets (pairs ``(a1, p, a2, n)`` are combined per anchor, see
    :func:`metrickit.masks.mined_triplets`) that are valid for the labels, averaged as batch
    all, "none" giving one term per such triplet in the given order; with ``"hard"`` /
    ``"semihard"`` the mining picks among the mined pairs only.

    ``algorithm`` (all exact, equal up to rounding):

    * ``"blockwise"``: from the embeddings, one cache-sized block of distance rows at a time,
      without a B×B autograd graph (batch all: exact counts as coefficients of a closed-form
      gradient; hard / semi-hard: mined without autograd, then the distances of the mined
      triplets only). Only for the batch as its own references without ``indices_tuple``, and
      for batch all only with the hinge and "mean" / "sum".
    * ``"dense"``: the [B, M] distance matrix; hinge batch all counts each positive's negatives
      inside the margin with the row's few positive thresholds (one host sync).
    * ``"sorted"``: the [B, M] distance matrix with each row's negatives sorted once (binary
      searches and prefix sums, no host sync): what accelerators use.
    * ``"auto"``: on CPU "blockwise" where it applies, else "dense"; elsewhere "sorted".

    Defaults: margin=0.2, mining="all", Euclidean (not squared) distance, hinge (not soft).

    Args:
        embeddings: [B, D]. labels: [B] integer class ids.
        margin: m ≥ 0 [0.2]. squared: squared Euclidean distances [False].
        mining: "all" | "hard" | "semihard" ["all"]. soft: soft margin [False].
        distance: one of :data:`metrickit.distances.DISTANCES` ["euclidean"].
        reduction: "mean" | "sum" | "none" ["mean"].
        indices_tuple, ref_embeddings, ref_labels, ref_offset: the batch-loss contract [None].
        algorithm: "auto" | "blockwise" | "dense" | "sorted" ["auto"].
    """
    call = batch_call(embeddings, labels, indices_tuple, ref_embeddings, ref_labels, ref_offset)
    margin = check_nonnegative(margin, "margin")
    check_choice(mining, "mining", MINING)
    soft = check_bool(soft, "soft")
    check_reduction(reduction)
    distance = resolve_distance(distance, check_bool(squared, "squared"))
    algorithm = _check_triplet_algorithm(algorithm, mining, soft, reduction)
    if algorithm == "blockwise" and not call.plain:
        raise ValueError(
            "algorithm='blockwise' needs the batch as its own references and no indices_tuple; "
            "use 'dense' or 'sorted' with ref_embeddings or indices_tuple"
        )
    if algorithm == "auto":
        on_cpu = embeddings.device.type == "cpu"
        blockwise = call.plain and _blockwise_applies(mining, soft, reduction)
        algorithm = ("blockwise" if blockwise else "dense") if on_cpu else "sorted"
    if algorithm == "blockwise":
        return _blockwise(embeddings, call.labels, margin, mining, soft, distance, reduction)
    dist = reference_distance(embeddings, call.refs, distance)
    if call.indices_tuple is not None and mining == "all":
        pos, neg = reference_pair_masks(call.labels, call.refs)
        triplets = mined_triplets(call.indices_tuple, *dist.shape)
        d = dist.to(compute_dtype(dist))
        terms, count = _mined_triplet_terms(d, pos, neg, triplets, margin, soft)
        out = terms if reduction == "none" else reduce(terms, reduction, count)
        return out.to(embeddings.dtype)
    pos, neg = pair_masks_of(call)
    loss = triplet_loss_from_distances(dist, pos, neg, margin, mining, soft, reduction, algorithm)
    return loss.to(embeddings.dtype)


def _blockwise(
    embeddings: Tensor, labels: Tensor, margin: float, mining: str, soft: bool, distance: str,
    reduction: str,
) -> Tensor:
    """The blockwise algorithm of :func:`batch_triplet_loss` (the batch against itself)."""
    x = embeddings.to(compute_dtype(embeddings))
    if mining == "all":
        total, count = batch_all_hinge_total(
            unit_rows(x) if distance == "cosine" else x, labels, margin, distance
        )
        loss = total if reduction == "sum" else total / count.clamp_min(1)
        return loss.to(embeddings.dtype)
    sel = select_triplets(embeddings, labels, mining, distance)
    terms = _selected_terms(x, sel, margin, soft, distance)
    ok = sel.valid
    out = terms[ok] if reduction == "none" else reduce(terms, reduction, ok.sum())
    return out.to(embeddings.dtype)


class TripletMarginLoss(Loss):
    """Module form of :func:`triplet_margin_loss`; ``forward(anchor, positive, negative)``."""

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = False,
        soft: bool = False,
        distance: str = "euclidean",
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.squared, self.soft = check_bool(squared, "squared"), check_bool(soft, "soft")
        resolve_distance(distance, self.squared)  # validates the combination
        self.distance = distance

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(
            anchor, positive, negative, self.margin, self.squared, self.soft, self.distance,
            self.reduction,
        )


@register_loss("triplet", aliases=("batch_triplet", "triplet_margin"))
class BatchTripletLoss(BatchLoss):
    """Module form of :func:`batch_triplet_loss`; ``forward(embeddings, labels, indices_tuple=None,
    ref_embeddings=None, ref_labels=None, ref_offset=None)``."""

    functional = staticmethod(batch_triplet_loss)

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "all",
        squared: bool = False,
        soft: bool = False,
        distance: str = "euclidean",
        reduction: str = "mean",
        algorithm: str = "auto",
    ) -> None:
        super().__init__(reduction)
        self.margin = check_nonnegative(margin, "margin")
        self.mining = check_choice(mining, "mining", MINING)
        self.squared, self.soft = check_bool(squared, "squared"), check_bool(soft, "soft")
        resolve_distance(distance, self.squared)  # validates the combination
        self.distance = distance
        self.algorithm = _check_triplet_algorithm(algorithm, mining, self.soft, self.reduction)

    def hyper(self) -> tuple[object, ...]:
        return self.margin, self.mining, self.squared, self.soft, self.distance

    def keywords(self) -> dict[str, object]:
        return {"reduction": self.reduction, "algorithm": self.algorithm}
