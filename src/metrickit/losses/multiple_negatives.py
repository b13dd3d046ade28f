"""Multiple negatives ranking loss (Henderson et al. 2017): in-batch negatives for pairs.

Each anchor is classified among the positives of the whole batch (and any hard negatives): the
other pairs' positives are its negatives for free. Also known as InfoNCE over pairs, in-batch
negatives loss, the loss of SimCSE and of sentence-transformers' MultipleNegativesRankingLoss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    _describe,
    check_bool,
    check_choice,
    check_embeddings,
    check_floating,
    check_labels,
    check_positive,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
    reduce,
)
from ..masks import (
    References,
    mined_pair_masks,
    own_columns,
    reference_pair_masks,
    resolve_references,
)
from ._base import BatchLoss, Loss
from ._pair_rows import CosinePairs, RowBlock, _same_label_pairs, cosine_pairs, row_loss, unit
from ._pairs import check_algorithm
from ._registry import register_loss

SIMILARITIES = ("cosine", "dot")
# "blockwise": blocks of logit rows with the closed-form gradient (three B×M×D products, O(B·M)
# memory, no autograd graph over B×M); "dense": the [B, M] logits through autograd
ALGORITHMS = ("blockwise", "dense")


def _similarity(x: Tensor, y: Tensor, similarity: str, scale: float = 1.0) -> Tensor:
    """[N, M] λ·cosine similarities or λ·dot products (in the compute dtype of x); λ = ``scale``
    multiplies the N×D rows of x rather than the N×M result."""
    dtype = compute_dtype(x)
    x, y = x.to(dtype), y.to(dtype)
    if similarity == "cosine":
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    return (scale * x) @ y.T


def _cross_entropy_rows(logits: Tensor, target: Tensor, masked: Tensor | None) -> Tensor:
    """[N] −logits[i, target[i]] + log Σ_j exp(logits[i, j]) over the columns not ``masked``."""
    if masked is not None:
        logits = logits.masked_fill(masked, float("-inf"))
    return F.cross_entropy(logits, target, reduction="none")  # fused log-softmax and gather


def _cross_entropy_columns(logits: Tensor, masked: Tensor | None) -> Tensor:
    """[N] −logits[i, i] + log Σ_j exp(logits[j, i]) over the rows not ``masked`` (N×N)."""
    if masked is not None:
        logits = logits.masked_fill(masked, float("-inf"))
    return -F.log_softmax(logits, dim=0).diagonal()


_BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
         torch.float64: torch.int64}
_PRIME = 2**31 - 1


def _exact_ids(rows: Tensor) -> Tensor | None:
    """[N] an id per row, equal for rows that are equal value for value (no gradient); None
    when no two rows are equal.

    Rows are first hashed exactly (their bits, modulo a prime, in int64 arithmetic): equal rows
    have equal hashes, so distinct hashes prove there is no duplicate without sorting the rows.
    """
    if rows.shape[0] < 2:
        return None
    x = rows.detach() + 0.0  # −0.0 becomes 0.0: equal values, equal bits
    bits = x.view(_BITS[x.dtype]).long().remainder(_PRIME)
    weights = torch.randint(1, _PRIME, (x.shape[1],), generator=torch.Generator().manual_seed(0))
    hashes = (bits * weights.to(x.device)).remainder(_PRIME).sum(1)
    if torch.unique(hashes).numel() == hashes.numel():
        return None
    return torch.unique(x, dim=0, return_inverse=True)[1]


def multiple_negatives_ranking_loss(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None = None,
    labels: Tensor | None = None,
    negative_labels: Tensor | None = None,
    scale: float = 20.0,
    similarity: str = "cosine",
    symmetric: bool = False,
    exclude_duplicates: bool = True,
    reduction: str = "mean",
    algorithm: str = "auto",
) -> Tensor:
    r"""Multiple negatives ranking loss: each anchor against every positive of the batch.

    With s(x, y) = λ·cos(x, y) (λ = ``scale``) and the candidates C = the B positives followed
    by the hard negatives of every pair,

    .. math::
        \ell_i = -s(a_i, p_i) + \log \sum_{c \in C \setminus D(i)} e^{s(a_i, c)}

    a cross-entropy of anchor i over the whole batch. ``symmetric=True`` averages it with the
    reverse direction, positive i against all anchors (sentence-transformers'
    MultipleNegativesSymmetricRankingLoss; hard negatives take part in the forward direction
    only): ℓ_i = ½(ℓ_i^{a→p} + ℓ_i^{p→a}).

    Duplicates, D(i): a candidate with the same id as p_i (other than p_i itself) is not a
    negative of anchor i, and in the reverse direction anchor j ≠ i is not a negative of p_i when
    p_j has p_i's id (a_j is a match for it too). Ids come from ``labels`` ([B], e.g. a document
    or class id per pair; hard negatives get ids only from ``negative_labels``, else they are
    always negatives), or, without ``labels`` and with ``exclude_duplicates`` (default), from
    exact equality: candidates bit-for-bit equal to p_i are masked. With no duplicate in the
    batch the loss is sentence-transformers' MultipleNegativesRankingLoss exactly.

    Paper: M. Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply",
    arXiv:1705.00652, 2017 (the softmax over in-batch responses). Defaults as
    sentence-transformers: scale 20 (temperature 0.05), cosine similarity.

    Args:
        anchors, positives: [B, D]; row i of both is pair i.
        negatives: optional hard negatives, [B, D] (one per pair) or [B, K, D]; every one is a
            candidate of every anchor.
        labels: optional [B] integer ids of the pairs' positives.
        negative_labels: optional ids of the hard negatives, [B] or [B, K] (only with labels).
        scale: λ > 0 [20.0] (1 / temperature).
        similarity: "cosine" | "dot" ["cosine"] (use a scale of about 1 with "dot").
        symmetric: also the positives → anchors direction [False].
        exclude_duplicates: mask exact duplicates of p_i when no labels are given [True].
        reduction: "mean" | "sum" | "none" ["mean"]; "none" gives the B terms ℓ_i.
        algorithm: "auto" | "blockwise" | "dense" ["auto" = "blockwise"], equal up to rounding:
            "blockwise" scores 16 MiB blocks of logit rows and writes the closed-form gradient
            λ(softmax − one-hot) in place (three B×N×D matrix products and one [B, N] matrix in
            all, N = B(1 + K) candidates; the symmetric form adds a B×B pass); "dense" builds the
            [B, N] logits through autograd (it alone supports double backward).
    """
    check_embeddings(anchors, "anchors")
    check_embeddings(positives, "positives")
    check_same_shape({"anchors": anchors, "positives": positives})
    b, dim = anchors.shape
    negatives_shape = None
    if negatives is not None:
        check_floating(negatives, "negatives", ndim=(2, 3))
        negatives_shape = negatives.shape
        if negatives.shape[0] != b or negatives.shape[-1] != dim:
            raise ValueError(f"negatives must be [B, D] or [B, K, D] with B={b}, D={dim}, got "
                             f"shape {tuple(negatives.shape)}")
        k = 1 if negatives.dim() == 2 else negatives.shape[1]
        negatives = negatives.reshape(b, k, dim).transpose(0, 1).reshape(b * k, dim)
    if labels is not None:
        labels = check_labels(labels, b).long()
    if negative_labels is not None:
        if labels is None or negatives is None:
            raise ValueError("negative_labels needs labels and negatives, got "
                             f"labels={'a tensor' if labels is not None else None}, negatives="
                             f"{'a tensor' if negatives is not None else None}")
        check_tensor(negative_labels, "negative_labels")
        if negative_labels.shape != negatives_shape[:-1] or negative_labels.is_floating_point():
            raise ValueError("negative_labels must be integer ids of shape "
                             f"{tuple(negatives_shape[:-1])} (one per hard negative), got "
                             f"{_describe(negative_labels)}")
        negative_labels = negative_labels.reshape(b, -1).T.reshape(-1)
    scale = check_positive(scale, "scale")
    check_choice(similarity, "similarity", SIMILARITIES)
    symmetric = check_bool(symmetric, "symmetric")
    exclude_duplicates = check_bool(exclude_duplicates, "exclude_duplicates")
    check_reduction(reduction)

    algorithm = check_algorithm(algorithm, ALGORITHMS)

    candidates = positives if negatives is None else torch.cat([positives, negatives])
    ids = _ids(positives, negatives, labels, negative_labels, exclude_duplicates)
    if ids is not None and torch.unique(ids).numel() == ids.numel():
        ids = None  # no duplicate: nothing to mask
    run = _dense_pairs if algorithm == "dense" else _blockwise_pairs
    loss = run(anchors, candidates, ids, scale, similarity, symmetric)
    return reduce(loss, reduction).to(anchors.dtype)


def _dense_pairs(
    anchors: Tensor, candidates: Tensor, ids: Tensor | None, scale: float, similarity: str,
    symmetric: bool,
) -> Tensor:
    """[B] the terms of :func:`multiple_negatives_ranking_loss` from the dense [B, N] logits."""
    b = anchors.shape[0]
    logits = _similarity(anchors, candidates, similarity, scale)
    own = torch.arange(b, device=anchors.device)
    masked = None
    if ids is not None:
        cols = torch.arange(candidates.shape[0], device=anchors.device)
        masked = (ids[None, :] == ids[:b, None]) & (cols[None, :] != own[:, None])
    loss = _cross_entropy_rows(logits, own, masked)
    if symmetric:
        reverse = _cross_entropy_columns(logits[:, :b], None if masked is None else masked[:, :b])
        loss = 0.5 * (loss + reverse)  # column i of logits[:, :b] holds s(p_i, a_j)
    return loss


def _blockwise_pairs(
    anchors: Tensor, candidates: Tensor, ids: Tensor | None, scale: float, similarity: str,
    symmetric: bool,
) -> Tensor:
    """[B] the terms of :func:`multiple_negatives_ranking_loss` by blocks of logit rows."""
    b = anchors.shape[0]
    dtype = compute_dtype(anchors)
    a, c = _rows(anchors, similarity, dtype), _rows(candidates, similarity, dtype)
    own = torch.arange(b, device=anchors.device)
    same = None if ids is None else _same_label_pairs(ids[:b], ids)
    loss = _target_cross_entropy(a, c, own, same, scale)
    if symmetric:  # positive i against every anchor, a_i its match: rows of λ·P̂ Âᵀ
        same = None if ids is None else _same_label_pairs(ids[:b], ids[:b])
        loss = 0.5 * (loss + _target_cross_entropy(c[:b], a, own, same, scale))
    return loss


def _rows(x: Tensor, similarity: str, dtype: torch.dtype) -> Tensor:
    """x in ``dtype``, its rows scaled to unit norm for the cosine."""
    x = x.to(dtype)
    return unit(x) if similarity == "cosine" else x


def _target_cross_entropy(
    x: Tensor,
    r: Tensor,
    target: Tensor,
    same: tuple[Tensor, Tensor, list[int]] | None,
    scale: float,
) -> Tensor:
    """[B] −λ s_{i,t_i} + log Σ_j exp(λ s_ij) over the rows of S = x rᵀ, the columns j of the
    ``same`` pairs (rows, cols, host row offsets; equal ids) left out except t_i = target[i]."""
    b = x.shape[0]
    none = target.new_empty(0)
    rows, cols, ptr = (none, none, [0] * (b + 1)) if same is None else same
    pairs = CosinePairs(x, r, none, none, rows, cols, ptr, none, none, [0] * (b + 1), None)
    return row_loss(pairs, _softmax_rows(target, scale))[0]


def _softmax_rows(target: Tensor, scale: float):
    """The :func:`~metrickit.losses._pair_rows.row_loss` function of a softmax cross-entropy at
    λ = ``scale`` whose class in row i is column target[i] (−1: no class, a term 0), over the
    columns that are not dropped (the block's same-label pairs and a miner's left-out pairs, the
    target excepted). Its dℓ/dS: λ(softmax − one-hot)."""

    def terms(s: Tensor, block: RowBlock, _params, want: bool, _grad_params):
        rows = torch.arange(block.size, device=s.device)
        t = target[block.rows]
        has = t >= 0
        t = t.clamp_min(0)
        st = s[rows, t]
        block.drop_non_negatives(s, float("-inf"))
        s[rows, t] = st
        top = s.amax(1)
        top = torch.where(torch.isfinite(top), top, 0.0)  # a row with every column dropped
        e = s.sub_(top[:, None]).mul_(scale).exp_()
        total = e.sum(1)  # ≥ 1 in a row with a class: its largest entry gives exp(0)
        loss = torch.where(has, total.log() + scale * (top - st), 0.0)
        if want:
            e.mul_(torch.where(has, scale / total, 0.0)[:, None])
            e[rows, t] -= has.to(e.dtype) * scale
        return loss, None

    return terms


def _ids(
    positives: Tensor,
    negatives: Tensor | None,
    labels: Tensor | None,
    negative_labels: Tensor | None,
    exclude_duplicates: bool,
) -> Tensor | None:
    """[B + B·K] ids of the candidates (positives, then hard negatives), or None (no masking).

    Hard negatives without ids get ids no positive has (they are never masked).
    """
    if labels is None:
        if not exclude_duplicates:
            return None
        return _exact_ids(positives if negatives is None else torch.cat([positives, negatives]))
    if negatives is None:
        return labels
    if negative_labels is None:
        first = int(labels.max()) + 1 if labels.numel() else 0
        return torch.cat([labels, first + torch.arange(negatives.shape[0], device=labels.device)])
    return torch.cat([labels, negative_labels.long()])


def batch_multiple_negatives_ranking_loss(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_offset: int | None = None,
    scale: float = 20.0,
    similarity: str = "cosine",
    reduction: str = "mean",
    algorithm: str = "auto",
) -> Tensor:
    r"""Multiple negatives ranking loss with the pairs formed from a labelled batch.

    Each sample i is paired with one positive, π(i): the next reference of its class after
    itself, in cyclic reference order (its own column excluded; the first of its class when no
    reference is the sample itself). Its candidates are π(i) and every reference of another class;
    the other samples of its class are neither positives nor negatives (the duplicates of
    :func:`multiple_negatives_ranking_loss` with class ids). So

    .. math:: \ell_i = -s_{i\pi(i)} + \log\big(e^{s_{i\pi(i)}} + \sum_{y_j \ne y_i} e^{s_{ij}}\big)

    with s = λ·cos: on a batch where every class has two samples or more this equals
    ``multiple_negatives_ranking_loss(x, x[π], labels=labels)``. Samples with no positive are no
    anchors (they still serve as negatives); ``"mean"`` averages over the anchors and a batch
    without any gives 0. With a miner's ``indices_tuple`` π(i) is chosen among the mined
    positives of i and the negatives are the mined ones. References as in
    :class:`~metrickit.losses._base.BatchLoss`.

    ``algorithm``: as in :func:`multiple_negatives_ranking_loss` (blockwise: a single B×M pass
    with the same-label columns dropped from each block, the pairs from one sort of the labels).

    Paper: Henderson et al. 2017. Defaults: scale 20, cosine similarity.
    """
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    scale = check_positive(scale, "scale")
    check_choice(similarity, "similarity", SIMILARITIES)
    check_reduction(reduction)
    algorithm = check_algorithm(algorithm, ALGORITHMS)
    refs = resolve_references(embeddings, labels, ref_embeddings, ref_labels, ref_offset)
    if refs.embeddings.shape[0] == 0:  # no reference, no anchor: 0 with a graph
        return reduce(embeddings[:0, 0].to(compute_dtype(embeddings)) * 0, reduction).to(
            embeddings.dtype)
    run = _dense_batch if algorithm == "dense" else _blockwise_batch
    loss, is_anchor = run(embeddings, labels, indices_tuple, refs, scale, similarity)
    if reduction == "none":
        return loss[is_anchor].to(embeddings.dtype)
    loss = torch.where(is_anchor, loss, torch.zeros_like(loss))
    return reduce(loss, reduction, weight_count=is_anchor.sum()).to(embeddings.dtype)


def _dense_batch(
    embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None,
    refs: References, scale: float, similarity: str,
) -> tuple[Tensor, Tensor]:
    """([B] terms, [B] is-anchor) of :func:`batch_multiple_negatives_ranking_loss` from the
    dense [B, M] logits and masks."""
    b, m = embeddings.shape[0], refs.embeddings.shape[0]
    positive, negative = reference_pair_masks(labels, refs)
    if indices_tuple is not None:
        mined_pos, mined_neg = mined_pair_masks(indices_tuple, b, m)
        positive, negative = positive & mined_pos, negative & mined_neg
    cols = torch.arange(m, device=embeddings.device)
    own = own_columns(b, refs.offset, embeddings.device)
    order = cols[None, :].expand(b, m) if own is None else (cols[None, :] - own[:, None] - 1) % m
    partner = order.masked_fill(~positive, m).argmin(1)
    rows = torch.arange(b, device=embeddings.device)
    keep = negative.clone()
    keep[rows, partner] = True
    loss = _cross_entropy_rows(_similarity(embeddings, refs.embeddings, similarity, scale),
                               partner, ~keep)
    return loss, positive.any(1)


def _blockwise_batch(
    embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None,
    refs: References, scale: float, similarity: str,
) -> tuple[Tensor, Tensor]:
    """([B] terms, [B] is-anchor) of :func:`batch_multiple_negatives_ranking_loss` by blocks of
    logit rows; π(i) from the sorted-label positive pairs, O(B·K)."""
    pairs = cosine_pairs(embeddings, labels, indices_tuple, refs.embeddings, refs.labels,
                         refs.offset)
    if similarity == "dot":
        dtype = compute_dtype(embeddings)
        x = embeddings.to(dtype)
        pairs = pairs._replace(
            anchors=x, refs=x if refs.embeddings is embeddings else refs.embeddings.to(dtype))
    b, m = embeddings.shape[0], refs.embeddings.shape[0]
    rows, cols = pairs.pos_rows, pairs.pos_cols
    rank = cols if refs.offset is None else (cols - rows - refs.offset - 1) % m  # cyclic order
    first = torch.full((b,), m, dtype=rank.dtype, device=rank.device)
    first.scatter_reduce_(0, rows, rank, "amin")
    is_anchor = first < m
    partner = first if refs.offset is None else (
        first + refs.offset + 1 + torch.arange(b, device=first.device)) % m
    partner = torch.where(is_anchor, partner, -1)
    return row_loss(pairs, _softmax_rows(partner, scale))[0], is_anchor


class MultipleNegativesRankingLoss(Loss):
    """Module form of :func:`multiple_negatives_ranking_loss`;
    ``forward(anchors, positives, negatives=None, labels=None, negative_labels=None)``."""

    def __init__(
        self,
        scale: float = 20.0,
        similarity: str = "cosine",
        symmetric: bool = False,
        exclude_duplicates: bool = True,
        reduction: str = "mean",
        algorithm: str = "auto",
    ) -> None:
        super().__init__(reduction)
        self.scale = check_positive(scale, "scale")
        self.similarity = check_choice(similarity, "similarity", SIMILARITIES)
        self.symmetric = check_bool(symmetric, "symmetric")
        self.exclude_duplicates = check_bool(exclude_duplicates, "exclude_duplicates")
        self.algorithm = check_algorithm(algorithm, ALGORITHMS)

    def forward(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        labels: Tensor | None = None,
        negative_labels: Tensor | None = None,
    ) -> Tensor:
        return multiple_negatives_ranking_loss(
            anchors, positives, negatives, labels, negative_labels, self.scale, self.similarity,
            self.symmetric, self.exclude_duplicates, self.reduction, self.algorithm,
        )


@register_loss("multiple_negatives_ranking", aliases=("mnrl", "infonce_pairs"))
class BatchMultipleNegativesRankingLoss(BatchLoss):
    """Module form of :func:`batch_multiple_negatives_ranking_loss` (the registered batch form)."""

    functional = staticmethod(batch_multiple_negatives_ranking_loss)

    def __init__(
        self,
        scale: float = 20.0,
        similarity: str = "cosine",
        reduction: str = "mean",
        algorithm: str = "auto",
    ) -> None:
        super().__init__(reduction)
        self.scale = check_positive(scale, "scale")
        self.similarity = check_choice(similarity, "similarity", SIMILARITIES)
        self.algorithm = check_algorithm(algorithm, ALGORITHMS)

    @property
    def distance(self) -> str:
        """The :mod:`metrickit.distances` name of the similarity ("cosine" = 1 − cos, "dot")."""
        return self.similarity

    def keywords(self) -> dict[str, object]:
        return {"scale": self.scale, "similarity": self.similarity, "reduction": self.reduction,
                "algorithm": self.algorithm}
