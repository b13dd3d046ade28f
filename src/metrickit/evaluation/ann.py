"""Nearest-neighbour search over millions of embeddings, for evaluation and offline mining.

``index="flat"`` (default) is exact: :func:`metrickit.evaluation.knn` (faiss ``IndexFlat`` when
faiss is installed, the chunked torch search otherwise). Approximate indexes need faiss
(``pip install faiss-cpu``) and search in float32 on the CPU:

* ``"ivf"``: ``IndexIVFFlat``: k-means into ``nlist`` cells (trained on at most
  ``256 · nlist`` seeded random references), a query scans its ``nprobe`` nearest cells;
* ``"hnsw"``: ``IndexHNSWFlat``: a hierarchical small-world graph with ``hnsw_m`` links per
  node, built with ``ef_construction`` and searched with ``ef_search`` candidates.

Without faiss an approximate index falls back to the exact search with a warning. How much the
approximation loses is measured by :func:`recall_at_k` against the exact neighbours; see
``benchmarks/ann_1m.py`` and docs/distributed.md for figures on 1M × 128 embeddings.

Distances are those of :mod:`metrickit.distances` (smaller is closer); cosine search normalises
the rows and uses inner products. An approximate search that finds fewer than k neighbours
reports index −1 at distance +inf.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_positive_int
from ..distances import _COSINE_EPS, DISTANCES
from . import _inputs
from .knn import faiss_available, knn

INDEXES = ("flat", "ivf", "hnsw")


def _default_nlist(n: int) -> int:
    return max(1, min(n // 39, int(4 * np.sqrt(n))))


class ANNIndex:
    """A searchable index over ``reference`` [M, D] embeddings.

    Args:
        reference: [M, D] tensor or NumPy array.
        distance: "euclidean" | "squared_euclidean" | "cosine" | "dot" ["euclidean"].
        index: "flat" (exact) | "ivf" | "hnsw" ["flat"].
        nlist: IVF cells [min(M // 39, 4 √M)]. nprobe: IVF cells scanned per query [16].
        hnsw_m: HNSW links per node [32]. ef_construction: HNSW build breadth [64].
        ef_search: HNSW search breadth [128] (raised to k when smaller).
        seed: seed of the IVF training sample and k-means [0].
    """

    def __init__(
        self,
        reference: Tensor | np.ndarray,
        distance: str = "euclidean",
        index: str = "flat",
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_construction: int = 64,
        ef_search: int = 128,
        seed: int = 0,
    ) -> None:
        self.reference = _inputs.embeddings(reference, "reference")
        self.distance = check_choice(distance, "distance", DISTANCES)
        self.kind = check_choice(index, "index", INDEXES)
        for name, value in (("nprobe", nprobe), ("hnsw_m", hnsw_m),
                            ("ef_construction", ef_construction), ("ef_search", ef_search)):
            check_positive_int(value, name)
        m = self.reference.shape[0]
        self.nlist = _default_nlist(m) if nlist is None else check_positive_int(nlist, "nlist")
        if self.nlist > m:
            raise ValueError(f"nlist must be at most the number of references ({m}), got {nlist}")
        self.nprobe, self.ef_search = nprobe, ef_search
        self._faiss = None
        if self.kind != "flat":
            if faiss_available():
                self._faiss = self._build(hnsw_m, ef_construction, seed)
            else:
                warnings.warn(
                    f"index={index!r} needs faiss (pip install faiss-cpu); searching exactly "
                    "with the torch backend instead",
                    stacklevel=2,
                )

    @property
    def _inner_product(self) -> bool:
        return self.distance in ("cosine", "dot")

    def _vectors(self, x: Tensor) -> np.ndarray:
        x = x.to(torch.float32)
        if self.distance == "cosine":
            x = x / x.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        return np.ascontiguousarray(x.cpu().numpy())

    def _build(self, hnsw_m: int, ef_construction: int, seed: int):
        import faiss

        data = self._vectors(self.reference)
        dim = data.shape[1]
        metric = faiss.METRIC_INNER_PRODUCT if self._inner_product else faiss.METRIC_L2
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, metric)
            index.hnsw.efConstruction = ef_construction
        else:
            quantizer = faiss.IndexFlatIP(dim) if self._inner_product else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, metric)
            index.cp.seed = seed
            rng = np.random.default_rng(seed)
            sample = min(len(data), 256 * self.nlist)
            rows = np.sort(rng.choice(len(data), size=sample, replace=False))
            index.train(data[rows])
            self._quantizer = quantizer  # the IVF index does not own it
        index.add(data)
        return index

    def search(
        self, query: Tensor | np.ndarray | None = None, *, k: int
    ) -> tuple[Tensor, Tensor]:
        """``(distances [Q, k], indices [Q, k])`` of the k nearest references of each query.

        ``query=None`` searches the references themselves and leaves each one's own row out (by
        index). Exact for ``index="flat"``; rows sorted by distance.
        """
        check_positive_int(k, "k")
        own = query is None
        q = self.reference if own else _inputs.embeddings(query, "query")
        if q.shape[1] != self.reference.shape[1]:
            raise ValueError(
                "query and reference must have the same embedding size, got "
                f"{q.shape[1]} and {self.reference.shape[1]}"
            )
        available = self.reference.shape[0] - own
        if k > available:
            raise ValueError(f"k must be at most the number of candidates ({available}), got {k}")
        if self._faiss is None:
            ref = None if own else self.reference
            return knn(q, ref, k=k, distance=self.distance)
        return self._search_faiss(q, k, own)

    def _search_faiss(self, q: Tensor, k: int, own: bool) -> tuple[Tensor, Tensor]:
        want = k + own
        if self.kind == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, want)
        else:
            self._faiss.nprobe = min(self.nprobe, self.nlist)
        score, idx = self._faiss.search(self._vectors(q), want)
        score, idx = torch.from_numpy(score), torch.from_numpy(idx).to(torch.int64)
        if own:
            # drop each query's own row; if it was not found, drop the last column instead
            keep = idx != torch.arange(q.shape[0])[:, None]
            keep[:, -1] &= ~keep.all(1)
            score, idx = score[keep].view(-1, k), idx[keep].view(-1, k)
        missing = idx < 0
        if self._inner_product:
            dist = 1 - score if self.distance == "cosine" else -score
        else:
            dist = score.clamp_min(0)
            dist = dist.sqrt() if self.distance == "euclidean" else dist
        return dist.masked_fill(missing, float("inf")), idx


def ann_search(
    query: Tensor | np.ndarray | None = None,
    reference: Tensor | np.ndarray | None = None,
    *,
    k: int,
    distance: str = "euclidean",
    index: str = "flat",
    **options: int,
) -> tuple[Tensor, Tensor]:
    """One-shot :class:`ANNIndex` search: ``reference=None`` searches ``query`` against itself
    (own row left out). ``options`` are the index parameters of :class:`ANNIndex`."""
    if reference is None:
        if query is None:
            raise ValueError("give query, reference or both")
        return ANNIndex(query, distance, index, **options).search(k=k)
    return ANNIndex(reference, distance, index, **options).search(query, k=k)


def recall_at_k(found: Tensor, exact: Tensor) -> float:
    """Mean over queries of |found ∩ exact| / k: the share of the exact k nearest neighbours
    an approximate search returned (both [Q, k] index tensors; −1 never matches)."""
    if found.shape != exact.shape or found.dim() != 2:
        raise ValueError(
            "found and exact must be [Q, k] index tensors of one shape, got "
            f"{tuple(found.shape)} and {tuple(exact.shape)}"
        )
    hits = 0
    for start in range(0, found.shape[0], 65536):  # bounded [chunk, k, k] comparison
        f, e = found[start : start + 65536], exact[start : start + 65536]
        hits += int(((f[:, :, None] == e[:, None, :]) & (f[:, :, None] >= 0)).any(2).sum())
    return hits / max(found.numel(), 1)


def hard_negatives(
    embeddings: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    *,
    k: int,
    candidates: int | None = None,
    distance: str = "euclidean",
    index: str = "flat",
    **options: int,
) -> Tensor:
    """Offline mining: [N, k] indices of each sample's nearest neighbours of *another* class.

    The ``candidates`` (default 4k) nearest neighbours of every sample are searched with
    :class:`ANNIndex`; the first k of another class are kept, nearest first; −1 where fewer
    than k are among the candidates.
    """
    emb = _inputs.embeddings(embeddings)
    check_positive_int(k, "k")
    if emb.shape[0] < 2:
        raise ValueError(f"embeddings must have at least 2 rows to mine, got {emb.shape[0]}")
    want = min(4 * k if candidates is None else check_positive_int(candidates, "candidates"),
               emb.shape[0] - 1)
    _, idx = ann_search(emb, k=want, distance=distance, index=index, **options)
    y = _inputs.labels(labels, emb.shape[0], idx.device)
    negative = (idx >= 0) & (y[idx.clamp_min(0)] != y[:, None])
    order = torch.argsort((~negative).to(torch.uint8), dim=1, stable=True)[:, :k]
    picked = idx.gather(1, order)
    picked = picked.masked_fill(~negative.gather(1, order), -1)
    if picked.shape[1] < k:
        picked = torch.nn.functional.pad(picked, (0, k - picked.shape[1]), value=-1)
    return picked
