"""Multiple negatives ranking loss (Henderson et al. 2017): in-batch negatives for pairs.

Each anchor is classified among the positives of the whole batch (and any hard negatives): the
other pairs' positives are its negatives for free. Also known as InfoNCE over pairs, in-batch
negatives loss, the loss of SimCSE and of sentence-transformers' MultipleNegativesRankingLoss.
"""

from __future__ import annotations

import math

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
from . import _pair_rows
from ._base import BatchLoss, Loss
from ._pair_rows import (
    CosinePairs,
    RowBlock,
    _blocks,
    _same_label_pairs,
    cosine_pairs,
    row_loss,
    unit,
)
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
            softmax − one-hot in place (three B×N×D matrix products and one [B, N] matrix in
            all, N = B(1 + K) candidates; the symmetric form gets its column sums from the same
            exponentials, see :class:`_SymmetricSoftmax`, or by a second pass where the logits
            span too much for that); "dense" builds the [B, N] logits through autograd (it alone
            supports double backward).
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
    # λ scales the B×D rows, not the logits: one pass less over B×N
    pairs = _id_pairs(scale * a, c, None if ids is None else _same_label_pairs(ids[:b], ids))
    if not symmetric:
        return row_loss(pairs, _softmax_rows(own))[0]
    if b and 2 * _largest_logit(pairs.anchors, c) <= _SPAN[dtype]:
        return _SymmetricSoftmax.apply(pairs.anchors, c, pairs)
    # positive i against every anchor, a_i its match: the rows of λ·P̂ Âᵀ
    same = None if ids is None else _same_label_pairs(ids[:b], ids[:b])
    reverse = row_loss(_id_pairs(scale * c[:b], a, same), _softmax_rows(own))[0]
    return 0.5 * (row_loss(pairs, _softmax_rows(own))[0] + reverse)


def _rows(x: Tensor, similarity: str, dtype: torch.dtype) -> Tensor:
    """x in ``dtype``, its rows scaled to unit norm for the cosine."""
    x = x.to(dtype)
    return unit(x) if similarity == "cosine" else x


def _id_pairs(x: Tensor, r: Tensor, same: tuple[Tensor, Tensor, list[int]] | None) -> CosinePairs:
    """Rows x [B, D] against r [N, D], dropping from row i the columns of the ``same`` pairs
    (rows, cols, host row offsets: equal ids), for :func:`_softmax_rows` and
    :class:`_SymmetricSoftmax`."""
    b = x.shape[0]
    none = torch.empty(0, dtype=torch.long, device=x.device)
    rows, cols, ptr = (none, none, [0] * (b + 1)) if same is None else same
    return CosinePairs(x, r, none, none, rows, cols, ptr, none, none, [0] * (b + 1), None)


def _largest_logit(x: Tensor, r: Tensor) -> float:
    """A bound on |x_i · r_j| (Cauchy–Schwarz, with a margin for rounding)."""
    top = x.detach().norm(dim=1).max() * r.detach().norm(dim=1).max()
    return float(top) * (1 + 1e-3)


# Largest span of logits for one exponential shifted by the row maxima to serve the columns
# too: half the exponent range, so that no factor exp(±span) overflows and what underflows is
# below exp(−span) of every column's sum (see _SymmetricSoftmax)
_SPAN = {dtype: -0.5 * math.log(torch.finfo(dtype).tiny) for dtype in (torch.float32,
                                                                         torch.float64)}


class _SymmetricSoftmax(torch.autograd.Function):
    r"""[B] ½(ℓ^{a→p}_i + ℓ^{p→a}_i) of L = x cᵀ (λ-scaled anchors x [B, D], candidates c
    [N, D], the first B the positives) from one exponential per logit.

    E_ij = exp(L_ij − m_i) (m_i the row maximum) gives the row sums T_i; with a shift M ≥ every
    logit and u_j = exp(m_j − M), the column sums exp(−M) Σ_j exp(L_ji) are C_i = Σ_j u_j E_ji
    (a matrix-vector product), so ℓ^{p→a}_i = M + log C_i − L_ii. Exact up to rounding when the
    logits span at most :data:`_SPAN` (the caller checks 2·max|L| against it). With g the
    upstream gradient, dℓ/dL_ji = E_ji(½g_j / T_j + u_j·½g_i / C_i) − g_j·[i = j] (the second
    term only over the first B columns); it is formed one block of rows at a time in the
    backward, for the two products J c and Jᵀ x.
    """

    @staticmethod
    def forward(ctx, x, c, pairs):  # type: ignore[override]
        b, n = x.shape[0], c.shape[0]
        shift = _largest_logit(x, c)
        e = x.new_empty(b, n)
        diag, top, total = x.new_empty(b), x.new_empty(b), x.new_empty(b)
        col = x.new_zeros(b)
        own = torch.arange(b, device=x.device)
        step = max(1, _pair_rows.ROW_BLOCK_ELEMENTS // n)
        for block in _blocks(pairs, step):
            rows, local = block.rows, own[: block.size]
            s = e[rows]
            torch.mm(x[rows], c.T, out=s)
            diag[rows] = s[local, own[rows]]
            block.drop_non_negatives(s, float("-inf"))
            s[local, own[rows]] = diag[rows]
            m = s.amax(1)  # finite: the own column is never dropped
            top[rows] = m
            total[rows] = s.sub_(m[:, None]).exp_().sum(1)
            col.addmv_(s[:, :b].T, (m - shift).exp_())
        u = (top - shift).exp_()
        ctx.save_for_backward(x, c, e, u, total, col)
        ctx.step = step
        forward_terms = total.log() + top - diag
        reverse_terms = col.log() + shift - diag
        return 0.5 * (forward_terms + reverse_terms)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, c, e, u, total, col = ctx.saved_tensors
        b, step = x.shape[0], ctx.step
        row_w, col_w = 0.5 * grad / total, 0.5 * grad / col
        dx, dc = torch.empty_like(x), torch.zeros_like(c)
        scratch = e.new_empty(min(step, b), e.shape[1])
        own = torch.arange(b, device=x.device)
        for start in range(0, b, step):
            rows = slice(start, min(start + step, b))
            j = scratch[: rows.stop - start]
            torch.addcmul(row_w[rows, None], u[rows, None], col_w[None, :], out=j[:, :b])
            j[:, :b].mul_(e[rows, :b])
            torch.mul(e[rows, b:], row_w[rows, None], out=j[:, b:])
            j[own[: j.shape[0]], own[rows]] -= grad[rows]
            torch.mm(j, c, out=dx[rows])
            dc.addmm_(j.T, x[rows])
        return dx, dc, None


def _softmax_rows(target: Tensor):
    """The :func:`~metrickit.losses._pair_rows.row_loss` function of a softmax cross-entropy
    over the rows of S (the logits) whose class in row i is column target[i] (−1: no class, a
    term 0), over the columns that are not dropped (the block's same-label pairs and a miner's
    left-out pairs, the target excepted). Its dℓ/dS: softmax − one-hot."""

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
        e = s.sub_(top[:, None]).exp_()
        total = e.sum(1)  # ≥ 1 in a row with a class: its largest entry gives exp(0)
        loss = torch.where(has, total.log() + (top - st), 0.0)
        if want:
            e.mul_(torch.where(has, 1 / total, 0.0)[:, None])
            e[rows, t] -= has.to(e.dtype)
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
    pairs = pairs._replace(anchors=scale * pairs.anchors)  # the logits λ·S from the product
    b, m = embeddings.shape[0], refs.embeddings.shape[0]
    rows, cols = pairs.pos_rows, pairs.pos_cols
    rank = cols if refs.offset is None else (cols - rows - refs.offset - 1) % m  # cyclic order
    first = torch.full((b,), m, dtype=rank.dtype, device=rank.device)
    first.scatter_reduce_(0, rows, rank, "amin")
    is_anchor = first < m
    partner = first if refs.offset is None else (
        first + refs.offset + 1 + torch.arange(b, device=first.device)) % m
    partner = torch.where(is_anchor, partner, -1)
    return row_loss(pairs, _softmax_rows(partner))[0], is_anchor


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
