"""Evaluation of sentence embeddings: semantic textual similarity and retrieval.

* STS (:func:`sts_scores`): the cosine similarity of each pair's embeddings against the gold
  scores, as Spearman's rank and Pearson's linear correlation ×100 (the convention of the STS
  literature, e.g. Reimers & Gurevych 2019).
* Retrieval (:func:`retrieval_scores`): queries ranked against a corpus by cosine similarity,
  each query with a set of relevant corpus entries; ties rank the smaller corpus index first.
  MRR@k (reciprocal rank of the first relevant entry within the top k, else 0), NDCG@k with
  binary relevance (DCG = Σ_i rel_i / log2(i + 1) over the top k, divided by the DCG of the ideal
  ranking), and Recall@k (the fraction of a query's relevant entries within its top k), each
  averaged over the queries, ×100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from .._validation import check_positive_int
from .data import ScoredPairs

DEFAULT_RECALL_KS = (1, 5, 10)
_CHUNK = 1024


def _rows(x: object, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.dim() != 2 or t.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array [N, D] with D >= 1, got {tuple(t.shape)}")
    return torch.nn.functional.normalize(t, dim=1)


def cosine_pairs(emb1: object, emb2: object) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    a, b = _rows(emb1, "emb1"), _rows(emb2, "emb2")
    if a.shape != b.shape:
        raise ValueError(f"emb1 and emb2 must have the same shape, got {a.shape} and {b.shape}")
    return (a * b).sum(1).numpy()


def sts_scores(emb1: object, emb2: object, gold: object) -> dict[str, float]:
    """Spearman and Pearson correlation ×100 of the pairs' cosine similarity with ``gold``."""
    cos = cosine_pairs(emb1, emb2)
    gold = np.asarray(gold, dtype=np.float64)
    if gold.shape != cos.shape or cos.size < 2:
        raise ValueError(f"gold must have one score per pair (>= 2 pairs), got {gold.shape}")
    return {
        "spearman": 100.0 * float(stats.spearmanr(cos, gold).statistic),
        "pearson": 100.0 * float(stats.pearsonr(cos, gold).statistic),
    }


def evaluate_sts(encoder, pairs: ScoredPairs, batch_size: int = 64) -> dict[str, float]:
    """STS scores of ``encoder`` (a :class:`~metrickit.text.SentenceEncoder`) on ``pairs``."""
    emb1 = encoder.encode(pairs.sentences1, batch_size=batch_size)
    emb2 = encoder.encode(pairs.sentences2, batch_size=batch_size)
    return sts_scores(emb1, emb2, pairs.scores)


def retrieval_scores(
    queries: object,
    corpus: object,
    relevant: Sequence[Sequence[int]],
    ks: Sequence[int] = DEFAULT_RECALL_KS,
    at: int = 10,
) -> dict[str, float]:
    """MRR@at, NDCG@at and Recall@k (each k in ``ks``) ×100 of ``queries`` [Q, D] against
    ``corpus`` [N, D]; ``relevant[q]`` lists the corpus indices relevant to query q (non-empty).
    """
    q, c = _rows(queries, "queries"), _rows(corpus, "corpus")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"queries and corpus must have the same width, got {q.shape}, {c.shape}")
    if len(relevant) != q.shape[0]:
        raise ValueError(
            f"relevant must have one entry per query ({q.shape[0]}), got {len(relevant)}"
        )
    ks = tuple(check_positive_int(k, "each of ks") for k in ks)
    at = check_positive_int(at, "at")
    depth = min(max((*ks, at)), c.shape[0])
    rel_sets = []
    for i, r in enumerate(relevant):
        s = {int(j) for j in r}
        if not s or min(s) < 0 or max(s) >= c.shape[0]:
            raise ValueError(f"relevant[{i}] must be non-empty corpus indices, got {sorted(s)}")
        rel_sets.append(s)
    # Stable descending order: equal similarities keep the smaller corpus index first.
    ranked = []
    for start in range(0, q.shape[0], _CHUNK):
        sims = q[start : start + _CHUNK] @ c.T
        ranked.append(torch.sort(-sims, dim=1, stable=True).indices[:, :depth])
    top = torch.cat(ranked).tolist()
    discount = 1.0 / np.log2(np.arange(2, depth + 2))
    sums = {"mrr": 0.0, "ndcg": 0.0} | {k: 0.0 for k in ks}
    for row, rel in zip(top, rel_sets, strict=True):
        hits = np.array([j in rel for j in row], dtype=np.float64)
        first = np.flatnonzero(hits[:at])
        sums["mrr"] += 1.0 / (first[0] + 1) if first.size else 0.0
        ideal = discount[: min(len(rel), at)].sum()
        sums["ndcg"] += float(hits[:at] @ discount[:at]) / ideal
        for k in ks:
            sums[k] += hits[:k].sum() / len(rel)
    n = len(rel_sets)
    out = {f"mrr_at_{at}": 100 * sums["mrr"] / n, f"ndcg_at_{at}": 100 * sums["ndcg"] / n}
    out |= {f"recall_at_{k}": 100 * sums[k] / n for k in ks}
    return out


def pairs_retrieval_task(
    sentences1: Sequence[str], sentences2: Sequence[str]
) -> tuple[list[str], list[str], list[list[int]]]:
    """A retrieval task from matching pairs: each distinct first sentence is a query, the distinct
    second sentences the corpus, relevant = the second sentences it was paired with."""
    corpus = list(dict.fromkeys(sentences2))
    corpus_index = {t: i for i, t in enumerate(corpus)}
    relevant: dict[str, list[int]] = {}
    for a, b in zip(sentences1, sentences2, strict=True):
        relevant.setdefault(a, []).append(corpus_index[b])
    return list(relevant), corpus, list(relevant.values())


def evaluate_retrieval(
    encoder, sentences1: Sequence[str], sentences2: Sequence[str], batch_size: int = 64
) -> dict[str, float]:
    """Retrieval scores of ``encoder`` on the task :func:`pairs_retrieval_task` builds."""
    queries, corpus, relevant = pairs_retrieval_task(sentences1, sentences2)
    q = encoder.encode(queries, batch_size=batch_size)
    c = encoder.encode(corpus, batch_size=batch_size)
    return retrieval_scores(q, c, relevant)
