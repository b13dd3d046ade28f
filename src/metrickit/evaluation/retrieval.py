"""Retrieval metrics of Musgrave, Belongie & Lim 2020, "A Metric Learning Reality Check" (ECCV).

For a query q with label y, R is the number of references of class y other than q itself, and
rel(i) = 1 when the i-th nearest reference has label y:

* ``precision_at_1`` = rel(1);
* ``recall_at_k`` = 1 if any of the top k has label y (the "Recall@K" of the CUB-200, Cars-196
  and Stanford Online Products papers — a hit rate, not recall over all R relevant items);
* ``r_precision`` = (1/R) Σ_{i=1..R} rel(i);
* ``map_at_r`` = (1/R) Σ_{i=1..R} P(i)·rel(i), with P(i) the precision among the top i.

Each is averaged over the queries with R >= 1; queries whose class has no other reference are
excluded and counted. Everything comes from one exact kNN pass with k = max(R_max, max(ks)),
processed per chunk of queries (bounded memory, no Python loop over queries). Tied distances
rank the smaller reference index first (see :mod:`metrickit.evaluation.knn`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_choice, check_positive_int
from ..distances import DISTANCES
from . import _inputs
from .knn import BACKENDS, knn_chunks

DEFAULT_KS = (1, 2, 4, 8)
_METRIC_ELEMENTS = 1 << 22


def _check_ks(ks: object) -> tuple[int, ...]:
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return tuple(check_positive_int(k, "each of ks") for k in ks)


def _class_sizes(ref_labels: Tensor, query_labels: Tensor) -> Tensor:
    """Number of references carrying each query's label (0 when absent)."""
    classes, counts = torch.unique(ref_labels, return_counts=True)
    pos = torch.searchsorted(classes, query_labels).clamp_max(classes.numel() - 1)
    return torch.where(classes[pos] == query_labels, counts[pos], 0)


def _chunk_sums(relevant: Tensor, r: Tensor, ks: tuple[int, ...]) -> Tensor:
    """Per-metric sums over a chunk: [P@1, recall@k for each k, R-precision, MAP@R]."""
    rel = relevant.to(torch.float64)
    rank = torch.arange(1, rel.shape[1] + 1, device=rel.device, dtype=torch.float64)
    in_top_r = rank[None, :] <= r[:, None]
    rel_r = rel * in_top_r
    precision_at_i = rel.cumsum(1) / rank
    rf = r.to(torch.float64)
    sums = [rel[:, 0].sum()]
    sums += [relevant[:, :k].any(1).sum().to(torch.float64) for k in ks]
    sums += [(rel_r.sum(1) / rf).sum(), ((precision_at_i * rel_r).sum(1) / rf).sum()]
    return torch.stack(sums)


@torch.no_grad()
def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    query_embeddings: Tensor | None = None,
    query_labels: Tensor | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    distance: str = "euclidean",
    chunk_size: int | None = None,
    backend: str = "auto",
) -> dict[str, float]:
    """P@1, Recall@k, R-precision and MAP@R (Musgrave et al. 2020) from one exact kNN pass.

    Args:
        embeddings, labels: the reference set [M, D] and its class ids [M]. Without a query
            set, every reference is also a query, with itself excluded (leave-one-out).
        query_embeddings, query_labels: an optional separate query set [Q, D], [Q] (both or
            neither); then no reference is excluded.
        ks: the k of ``recall_at_k`` (default 1, 2, 4, 8).
        distance, chunk_size, backend: as in :func:`metrickit.evaluation.knn`.

    Returns:
        ``precision_at_1``, ``recall_at_{k}`` for each k, ``r_precision``, ``map_at_r`` (floats),
        and ``num_queries`` / ``num_excluded_queries``: queries averaged over, and queries
        left out because no reference shares their class.
    """
    ref = _inputs.embeddings(embeddings, "embeddings")
    ref_labels = _inputs.labels(labels, ref.shape[0], ref.device, "labels")
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together")
    if query_embeddings is None:
        query, q_labels, leave_one_out = ref, ref_labels, True
    else:
        query = _inputs.embeddings(query_embeddings, "query_embeddings")
        if query.shape[1] != ref.shape[1] or query.device != ref.device:
            raise ValueError(
                "query_embeddings must match embeddings in size and device, got "
                f"{tuple(query.shape)} on {query.device} and {tuple(ref.shape)} on {ref.device}"
            )
        q_labels = _inputs.labels(query_labels, query.shape[0], ref.device, "query_labels")
        leave_one_out = False
    ks = _check_ks(ks)
    check_choice(distance, "distance", DISTANCES)
    check_choice(backend, "backend", BACKENDS)
    available = ref.shape[0] - int(leave_one_out)
    if max(ks) > available:
        raise ValueError(
            f"ks must not exceed the number of references per query ({available}), got {ks}"
        )

    r = _class_sizes(ref_labels, q_labels) - int(leave_one_out)
    keep = (r > 0).nonzero().squeeze(1)
    num_queries = keep.numel()
    if num_queries == 0:
        raise ValueError(
            "no query has another reference of its own class, so retrieval metrics are undefined"
        )
    num_excluded = r.numel() - num_queries
    query, q_labels, r = query[keep], q_labels[keep], r[keep]
    k = max(int(r.max()), max(ks))
    totals = torch.zeros(len(ks) + 3, dtype=torch.float64, device=ref.device)
    chunks = knn_chunks(
        query, ref, k, self_index=keep if leave_one_out else None, distance=distance,
        chunk_size=chunk_size, backend=backend,
    )
    rows = max(1, _METRIC_ELEMENTS // k)  # bounds the float64 temporaries of _chunk_sums
    for start, _, idx in chunks:
        for sub in range(0, idx.shape[0], rows):
            lo, hi = start + sub, start + min(sub + rows, idx.shape[0])
            relevant = ref_labels[idx[sub : sub + rows]] == q_labels[lo:hi, None]
            totals += _chunk_sums(relevant, r[lo:hi], ks)
    means = (totals / num_queries).tolist()
    names = ["precision_at_1", *(f"recall_at_{k}" for k in ks), "r_precision", "map_at_r"]
    out: dict[str, float] = dict(zip(names, means, strict=True))
    out["num_queries"] = num_queries
    out["num_excluded_queries"] = num_excluded
    return out
