"""Miners: which (anchor, positive, negative) index tuples a labelled batch offers.

Every function returns int64 index tensors into the rows of the batch (or of the whole data set
for :func:`mine_offline`), on the device of its input. Miners never take part in autograd.

Their tuples are what every pair- or triplet-based loss accepts as ``indices_tuple``: triplets
``(a, p, n)`` or pairs ``(a1, p, a2, n)`` (positive pairs (a1, p), negative pairs (a2, n)).

Triplet difficulty for a margin m (Hermans, Beyer & Leibe 2017; the names as in R. Gómez,
"Understanding Ranking Loss, Contrastive Loss, Margin Loss, Triplet Loss, Hinge Loss and all
those confusing names", 2019): every valid triplet (a ≠ p with the anchor's label, n with
another label) falls in exactly one class:

* hard:      d(a, n) < d(a, p)
* semi-hard: d(a, p) ≤ d(a, n) < d(a, p) + m
* easy:      d(a, n) ≥ d(a, p) + m

so hard + semi-hard are exactly the triplets whose loss max(0, d(a,p) − d(a,n) + m) is > 0.

The counting machinery shared with the losses (rows sorted once with prefix sums, packed
positive thresholds) lives in :mod:`metrickit._kernels`. :func:`select_triplets` mines
batch-hard and semi-hard triplets one block of distance rows at a time (no B×B matrix kept); the
online miners and the blockwise batch-hard / semi-hard losses use it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._kernels import count_below, sort_rows, threshold_counts
from ._offline import offline_triplets
from ._validation import (
    check_bool,
    check_choice,
    check_embeddings,
    check_labels,
    check_nonnegative,
    check_positive_int,
    check_tensor,
    renamed,
)
from .distances import (
    DISTANCES,
    chunked_pairwise,
    pairwise_distance,
    resolve_distance,
)
from .masks import class_slots, pair_masks

MINING = ("semihard", "hard")
# How count_triplets counts (see there); "auto" picks as documented there.
COUNT_ALGORITHMS = ("thresholds", "sorted")
# Elements of one block of distance rows in :func:`select_triplets` (4 MiB in float32).
SELECT_BLOCK_ELEMENTS = 1 << 20
# Up to this many positives per anchor, the semi-hard negatives are found with one pass over the
# block per positive; beyond, with one sort of the block's rows and a binary search per positive.
MAX_SELECT_PASSES = 16


def _labels(labels: object) -> Tensor:
    labels = check_tensor(labels, "labels")
    return check_labels(labels, labels.shape[0] if labels.dim() else -1)


def _batch(embeddings: Tensor, labels: Tensor, distance: str) -> tuple[Tensor, Tensor, Tensor]:
    check_choice(distance, "distance", DISTANCES)
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    pos, neg = pair_masks(labels)
    return pairwise_distance(embeddings.detach(), distance=distance), pos, neg


def all_pairs(labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a1, p, a2, n)``: every ordered positive pair (a1 ≠ p, same label) and every ordered
    negative pair (different labels), each in row-major order."""
    pos, neg = pair_masks(_labels(labels))
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = neg.nonzero(as_tuple=True)
    return a1, p, a2, n


def all_triplets(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)``: every valid triplet, sorted by (a, p, n).

    The output itself is cubic: a P×K batch has P·K·(K−1)·(P·K−K) triplets (O. Moindrot,
    "Triplet Loss and Online Triplet Mining in TensorFlow", 2018), so this is for small batches
    and inspection; the losses never enumerate triplets. Memory beyond the output is O(B²).
    """
    pos, neg = pair_masks(_labels(labels))
    a, p = pos.nonzero(as_tuple=True)
    n_neg = neg.sum(1)
    neg_cols = neg.nonzero(as_tuple=True)[1]  # grouped by anchor, ascending
    first_neg = torch.cumsum(n_neg, 0) - n_neg  # where each anchor's negatives start
    per_pair = n_neg[a]
    pair = torch.repeat_interleave(torch.arange(a.shape[0], device=a.device), per_pair)
    first_of_pair = torch.cumsum(per_pair, 0) - per_pair
    within = torch.arange(pair.shape[0], device=a.device) - first_of_pair[pair]
    return a[pair], p[pair], neg_cols[first_neg[a[pair]] + within]


class Selection(NamedTuple):
    """One triplet per slot of every anchor (row): ``negative[i, s]`` is mined for the positive
    ``positive[i, s]``; ``valid[i, s]`` says whether the slot holds a triplet."""

    positive: Tensor
    negative: Tensor
    valid: Tensor


def _own_class_filled(d: Tensor, members: Tensor, value: float) -> Tensor:
    return d.scatter(1, members, value)


def _last_argmax(x: Tensor) -> Tensor:
    """Per row, the highest column holding the row's maximum."""
    return x.shape[1] - 1 - x.flip(1).argmax(1)


def _semihard_block(d: Tensor, members: Tensor, d_ap: Tensor, farthest: Tensor) -> Tensor:
    """[r, k] column of the nearest negative with d > d_ap (lowest column on ties), else
    ``farthest``."""
    negatives = _own_class_filled(d, members, float("inf"))
    k = d_ap.shape[1]
    if k <= MAX_SELECT_PASSES:
        chosen = torch.empty(d_ap.shape, dtype=torch.int64, device=d.device)
        nearest = torch.empty(d_ap.shape, dtype=d.dtype, device=d.device)
        beyond = torch.empty_like(negatives)
        inf = negatives.new_tensor(float("inf"))
        for s in range(k):
            torch.where(negatives > d_ap[:, s : s + 1], negatives, inf, out=beyond)
            torch.min(beyond, 1, out=(nearest[:, s], chosen[:, s]))  # first column on ties
        found = nearest < float("inf")
    else:
        keys, order = negatives.sort(dim=1, stable=True)
        first = torch.searchsorted(keys, d_ap.contiguous(), right=True)
        found = first < d.shape[1]
        chosen = order.gather(1, first.clamp_max(d.shape[1] - 1))
        found &= keys.gather(1, first.clamp_max(d.shape[1] - 1)) < float("inf")
    return torch.where(found, chosen, farthest[:, None])


def select_triplets(
    embeddings: Tensor,
    labels: Tensor,
    mining: str = "semihard",
    distance: str = "euclidean",
    *,
    strategy: str | None = None,
) -> Selection:
    """The triplets of :func:`batch_hard_triplets` (``"hard"``: one slot per anchor) or
    :func:`semihard_triplets` (``"semihard"``: one slot per positive, in column order) as fixed
    [B, k] index tensors, mined one cache-sized block of distance rows at a time: no B×B matrix
    is kept, no sort for few positives (one pass per positive). One host read of the largest
    class size (free on CPU, a sync elsewhere). ``strategy=`` is the deprecated name of
    ``mining``."""
    mining = renamed(mining, strategy, "mining", "strategy", "select_triplets")
    check_choice(mining, "mining", MINING)
    check_choice(distance, "distance", DISTANCES)
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    with torch.no_grad():
        members, positives, n_pos = class_slots(labels)
        b, k = positives.shape
        has_neg = n_pos + 1 < b
        if mining == "hard":
            positive = torch.empty(b, 1, dtype=torch.int64, device=labels.device)
            valid = ((n_pos > 0) & has_neg)[:, None]
        else:
            positive = positives
            valid = (torch.arange(k, device=labels.device)[None, :] < n_pos[:, None]) & (
                has_neg[:, None]
            )
        negative = torch.zeros_like(positive)
        rows = max(1, SELECT_BLOCK_ELEMENTS // max(b, 1))
        for start, d in chunked_pairwise(embeddings.detach(), distance=distance, chunk_size=rows):
            stop = start + d.shape[0]
            mem = members[start:stop]
            if mining == "hard":
                own = torch.where(mem == torch.arange(start, stop, device=d.device)[:, None],
                                  float("-inf"), d.gather(1, mem))
                positive[start:stop, 0] = mem.gather(1, own.argmax(1, keepdim=True))[:, 0]
                negative[start:stop, 0] = _own_class_filled(d, mem, float("inf")).argmin(1)
            else:
                farthest = _last_argmax(_own_class_filled(d, mem, float("-inf")))
                d_ap = d.gather(1, positives[start:stop])
                negative[start:stop] = _semihard_block(d, mem, d_ap, farthest)
        return Selection(positive, negative, valid)


def batch_hard_triplets(
    embeddings: Tensor, labels: Tensor, distance: str = "euclidean"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)``: for every anchor with a positive and a negative, its farthest positive and
    nearest negative (batch hard, Hermans et al. 2017); ties go to the lowest column."""
    return _flatten(select_triplets(embeddings, labels, "hard", distance))


def semihard_triplets(
    embeddings: Tensor, labels: Tensor, distance: str = "euclidean"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)``: one triplet per positive pair (a, p) whose anchor has a negative, with n
    the nearest negative such that d(a, n) > d(a, p), or the farthest negative if there is none
    (the triplets the semi-hard loss uses; FaceNet, Schroff et al. 2015). Ties among negatives at
    equal distance go to the lowest column for the nearest and the highest for the farthest."""
    return _flatten(select_triplets(embeddings, labels, "semihard", distance))


def _flatten(sel: Selection) -> tuple[Tensor, Tensor, Tensor]:
    a, s = sel.valid.nonzero(as_tuple=True)
    return a, sel.positive[a, s], sel.negative[a, s]


def count_triplets(
    dist: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float, algorithm: str = "auto"
) -> dict[str, Tensor]:
    """Difficulty counts over every valid triplet of a distance matrix (see the module doc).

    Sub-cubic, by ``algorithm``: ``"thresholds"`` runs :func:`~metrickit._kernels.threshold_counts`
    twice (O(B·M log k), k the largest number of positives per anchor; one host read of k);
    ``"sorted"`` sorts each row's negatives once and counts with two ``searchsorted`` calls
    (O(B·M log M), no host sync); ``"auto"``: "thresholds" on CPU, "sorted" elsewhere.
    """
    algorithm = check_choice(algorithm, "algorithm", ("auto", *COUNT_ALGORITHMS))
    if algorithm == "auto":
        algorithm = "thresholds" if dist.device.type == "cpu" else "sorted"
    with torch.no_grad():
        total = (pos_mask.sum(1) * neg_mask.sum(1)).sum()
        if algorithm == "thresholds":
            hard, violating = (
                torch.where(c.valid, c.below, 0).sum()
                for c in (threshold_counts(dist, pos_mask, neg_mask, m) for m in (0.0, margin))
            )
        else:
            rows = sort_rows(dist, neg_mask)
            hard = torch.where(pos_mask, count_below(rows, dist), 0).sum()
            violating = torch.where(pos_mask, count_below(rows, dist + margin), 0).sum()
        easy, semihard = total - violating, violating - hard
        return {"easy": easy, "semihard": semihard, "hard": hard, "total": total}


def triplet_difficulty(
    embeddings: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    distance: str = "euclidean",
    squared: bool = False,
    algorithm: str = "auto",
) -> dict[str, Tensor]:
    """Counts of the "easy", "semihard" and "hard" triplets of a batch and their "total".

    Values are 0-d int64 tensors on the input's device (no host sync with ``"sorted"``).
    ``squared=True`` uses the squared Euclidean distance (only with ``distance="euclidean"``);
    ``algorithm`` as in :func:`count_triplets`.
    """
    margin = check_nonnegative(margin, "margin")
    distance = resolve_distance(distance, check_bool(squared, "squared"))
    dist, pos, neg = _batch(embeddings, labels, distance)
    return count_triplets(dist, pos, neg, margin, algorithm)


def mine_offline(
    embeddings: Tensor,
    labels: Tensor,
    mining: str = "semihard",
    margin: float = 0.2,
    distance: str = "euclidean",
    chunk_size: int = 1024,
    *,
    strategy: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)`` over a whole embedded data set, at most one triplet per anchor.

    Offline mining (as described by O. Moindrot, "Triplet Loss and Online Triplet Mining in
    TensorFlow", 2018). For every anchor with a positive, p is its farthest positive and

    * ``"hard"``: n is its nearest negative (anchors without a negative are skipped);
    * ``"semihard"``: n is its nearest negative with d(a, p) < d(a, n) < d(a, p) + m; anchors
      without such a negative are skipped (with margin 0 none qualifies).

    Ties go to the lowest index. Anchors come out in ascending order.

    Speed and memory, as an exact kNN search: the rows are sorted by label once (each class a
    contiguous range of columns), and tiles of up to 2048 anchors meet the data in [2048, 256]
    blocks of scores, one matrix product each into a reused buffer that stays in cache while it
    is read. A score is the distance up to a per-anchor monotone map (‖x_j‖² − 2 x_i·x_j for the
    Euclidean distance), so the positive is a maximum over the anchor's class slice and the
    negative a minimum over the other columns (semi-hard: after lifting the scores at or below
    the positive's above every score); only the mined triplets are turned into distances (for
    the semi-hard upper bound). Memory: a sorted copy of the embeddings and two 2 MiB blocks,
    whatever N. The blocks are fixed, so the result does not depend on ``chunk_size``, which is
    kept for compatibility and changes nothing. ``strategy=`` is the deprecated name of
    ``mining``.
    """
    mining = renamed(mining, strategy, "mining", "strategy", "mine_offline")
    check_choice(mining, "mining", MINING)
    margin = check_nonnegative(margin, "margin")
    check_positive_int(chunk_size, "chunk_size")
    check_choice(distance, "distance", DISTANCES)
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    with torch.no_grad():
        return offline_triplets(embeddings.detach(), labels, mining, margin, distance)


# ---------------------------------------------------------------------------------------------
# Pair miners of the cosine-similarity losses (multi-similarity, margin).
# ---------------------------------------------------------------------------------------------

from ._validation import check_real  # noqa: E402 - this section is appended to the module
from .masks import reference_pair_masks, resolve_references  # noqa: E402


def _unit_pairs(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    ref_offset: int | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x̂, r̂, positive, negative)``: unit rows (float32 at least) of the anchors and the
    references (default: the batch) and their [B, M] pair masks, without autograd."""
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    refs = resolve_references(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
    pos, neg = reference_pair_masks(labels, refs)
    x = _unit_rows(embeddings)
    return x, x if refs.embeddings is embeddings else _unit_rows(refs.embeddings), pos, neg


def _unit_rows(x: Tensor) -> Tensor:
    """Unit rows (float32 at least), pre-scaled by each row's largest magnitude (no underflow)."""
    x = x.detach().to(torch.promote_types(x.dtype, torch.float32))
    top = x.abs().amax(1, keepdim=True)
    return torch.nn.functional.normalize(x / torch.where(top > 0, top, 1.0), dim=1)


class MultiSimilarityMiner:
    r"""The pair mining step of the multi-similarity loss (Wang et al., CVPR 2019, Eqs. 7–8).

    With S the cosine similarity, anchor i keeps

    * the negatives n with S_in + ε > min_{p ∈ P_i} S_ip (harder than its hardest positive),
    * the positives p with S_ip − ε < max_{n ∈ N_i} S_in (harder than its hardest negative).

    ``miner(embeddings, labels, ref_embeddings=None, ref_labels=None, ref_offset=None)`` returns
    the pairs ``(a1, p, a2, n)`` (anchors index the batch, p/n the references, row-major order)
    for any pair-based loss's ``indices_tuple``. Default ε = 0.1 (the paper's and PML's).
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = check_real(epsilon, "epsilon")

    @torch.no_grad()
    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        ref_offset: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, r, pos, neg = _unit_pairs(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
        s = x @ r.T
        hardest_pos = s.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
        hardest_neg = s.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)
        a1, p = (pos & (s - self.epsilon < hardest_neg)).nonzero(as_tuple=True)
        a2, n = (neg & (s + self.epsilon > hardest_pos)).nonzero(as_tuple=True)
        return a1, p, a2, n


class DistanceWeightedMiner:
    r"""Distance-weighted sampling (Wu et al., "Sampling Matters in Deep Embedding Learning",
    ICCV 2017, Section 4).

    On the unit sphere in D dimensions pairwise distances have the density
    q(d) ∝ d^{D−2} (1 − d²/4)^{(D−3)/2}; negatives are drawn with probability ∝ 1/q(max(d, c))
    (c = ``cutoff``, against the variance of near-duplicates), among the negatives closer than
    ``nonzero_loss_cutoff`` (farther ones give no margin-loss gradient). Every positive pair
    (a, p) of the batch, in row-major order, gets one negative drawn from anchor a's
    distribution; anchors without a sampleable negative are skipped. Returns triplets
    ``(a, p, n)``.

    Draws use ``generator`` (a ``torch.Generator``, default: torch's global one), so a seeded
    generator reproduces the triplets. Defaults c = 0.5, nonzero_loss_cutoff = 1.4 (the paper's
    and PML's).
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.cutoff = check_real(cutoff, "cutoff", low=0.0, high=2.0)
        self.nonzero_loss_cutoff = check_real(
            nonzero_loss_cutoff, "nonzero_loss_cutoff", low=0.0, low_inclusive=False
        )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        self.generator = generator

    def weights(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        ref_offset: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(probabilities [B, M], positive [B, M])``: each anchor's sampling distribution
        over the references (rows sum to 1, or are all 0 without a sampleable negative)."""
        with torch.no_grad():
            x, r, pos, neg = _unit_pairs(
                embeddings, labels, ref_embeddings, ref_labels, ref_offset
            )
            dim = x.shape[1]
            d = (2 - 2 * (x @ r.T)).clamp_min(0).sqrt().clamp_min(self.cutoff)
            room = 1 - d * d / 4
            keep = neg & (d < self.nonzero_loss_cutoff) & (room > 0)
            log_w = (2.0 - dim) * d.log() - (dim - 3) / 2 * room.clamp_min(1e-30).log()
            log_w = log_w.masked_fill(~keep, float("-inf"))
            top = log_w.amax(1, keepdim=True)
            w = (log_w - torch.where(torch.isfinite(top), top, 0.0)).exp()
            total = w.sum(1, keepdim=True)
            return w / torch.where(total > 0, total, 1.0), pos

    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        ref_offset: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        prob, pos = self.weights(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
        pos = pos & (prob.sum(1, keepdim=True) > 0)
        a, p = pos.nonzero(as_tuple=True)
        if a.numel() == 0:
            return a, p, p.clone()
        counts = pos.sum(1)
        rows = (counts > 0).nonzero(as_tuple=True)[0]
        draws = torch.multinomial(
            prob[rows], int(counts.max()), replacement=True, generator=self.generator
        )
        slot_of_row = torch.full_like(counts, -1)
        slot_of_row[rows] = torch.arange(rows.shape[0], device=rows.device)
        rank = pos.cumsum(1)[a, p] - 1  # the j-th positive of its anchor gets draw j
        return a, p, draws[slot_of_row[a], rank]
