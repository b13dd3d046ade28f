"""Exact k-nearest-neighbour search in chunks of queries, so memory stays bounded.

Per chunk of queries the torch backend computes one distance block with a single matrix product
(into a buffer reused across chunks) and keeps the ``k`` smallest with ``torch.topk``. The faiss
backend (``pip install faiss-cpu``) runs ``IndexFlatL2``/``IndexFlatIP`` instead. Both are exact
and return the same neighbours in the same order:

* ties are broken by the smaller reference index;
* with ``reference=None`` each query's own row is excluded by *index* (leave-one-out), so
  duplicates of a query still count as neighbours at distance 0.

Embeddings are scaled by one exact power of two before the matrix product (so huge or tiny
values neither overflow nor underflow) and distances are scaled back afterwards. Euclidean
neighbours are ranked on the squared distance; the square root is taken of the ``k`` kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .._validation import check_choice, check_positive_int, compute_dtype
from ..distances import _COSINE_EPS, DISTANCES
from . import _inputs

BACKENDS = ("auto", "torch", "faiss")
# Distance-block budget per chunk: 2**27 elements = 512 MiB in float32.
_BLOCK_ELEMENTS = 1 << 27


def faiss_available() -> bool:
    """Whether the optional faiss package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def default_chunk_size(num_references: int) -> int:
    """Queries per chunk so that one distance block holds about 2**27 entries."""
    return max(1, _BLOCK_ELEMENTS // max(num_references, 1))


def _power_of_two_exponent(top: Tensor, dtype: torch.dtype) -> int:
    """e with top · 2**-e in [0.5, 1), clamped so that 2**±e is a normal number of dtype."""
    bound = math.frexp(torch.finfo(dtype).max)[1] - 2
    return max(-bound, min(bound, math.frexp(float(top))[1]))


class _Prepared:
    """Query and reference sets scaled, normalised (cosine) and upcast once for all chunks."""

    def __init__(self, query: Tensor, reference: Tensor, distance: str) -> None:
        dtype = compute_dtype(query)
        same = reference is query
        top = torch.stack([query.abs().amax(), reference.abs().amax()]).amax()
        exponent = _power_of_two_exponent(top, dtype)
        self.unscale = math.ldexp(1.0, exponent)
        query = query.to(dtype) * math.ldexp(1.0, -exponent)  # exact: a power of two
        if distance == "cosine":
            query = query / query.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        if same:
            reference = query
        else:
            reference = reference.to(dtype) * math.ldexp(1.0, -exponent)
            if distance == "cosine":
                reference = reference / reference.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
        self.query, self.reference, self.distance = query, reference, distance
        self.euclidean = distance in ("euclidean", "squared_euclidean")

    def to_distance(self, score: Tensor, query_sq: Tensor | None) -> Tensor:
        """Distances in the caller's scale from ranking scores of the scaled embeddings.

        Euclidean scores are squared distances (``query_sq`` None) or squared distances less
        ‖q‖² (``query_sq`` given); cosine and dot scores are similarities.
        """
        if self.euclidean:
            sq = score if query_sq is None else score + query_sq[:, None]
            sq = sq.clamp_min(0)
            if self.distance == "squared_euclidean":
                return sq * self.unscale * self.unscale
            return sq.sqrt() * self.unscale
        if self.distance == "cosine":
            return 1 - score
        return -score * self.unscale * self.unscale


def _canonical(dist: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by (distance, index): ties listed smaller index first."""
    idx, perm = idx.sort(dim=1)
    dist = dist.gather(1, perm)
    dist, perm = dist.sort(dim=1, stable=True)
    return dist, idx.gather(1, perm)


def _block_sizes(query_rows: int, num_references: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return min(query_rows, default_chunk_size(num_references))
    return check_positive_int(chunk_size, "chunk_size")


class _TorchSearch:
    """Matrix-product distance blocks + ``torch.topk``, with exact index tie-breaking."""

    def __init__(self, prep: _Prepared, chunk_size: int) -> None:
        self.prep = prep
        ref = prep.reference
        self.largest = not prep.euclidean  # similarities: larger is closer
        self.ref_sq = (ref * ref).sum(1) if prep.euclidean else None
        self.buffer = torch.empty(chunk_size, ref.shape[0], dtype=ref.dtype, device=ref.device)

    def scores(self, q: Tensor) -> Tensor:
        """[n, M] ranking scores into the reused buffer: ‖r‖² − 2 q·r, or q·r."""
        out = self.buffer[: q.shape[0]]
        if self.ref_sq is None:
            return torch.mm(q, self.prep.reference.T, out=out)
        return torch.addmm(self.ref_sq, q, self.prep.reference.T, beta=1, alpha=-2, out=out)

    def search(self, q: Tensor, k: int, self_index: Tensor | None) -> tuple[Tensor, Tensor]:
        block = self.scores(q)
        if self_index is not None:
            fill = float("-inf") if self.largest else float("inf")
            block[torch.arange(q.shape[0], device=q.device), self_index] = fill
        m = block.shape[1]
        vals, idx = torch.topk(block, min(k + 1, m), dim=1, largest=self.largest, sorted=True)
        if vals.shape[1] > k:
            # The k-th and (k+1)-th scores tie: topk may have kept any of the tied indices, so
            # those (rare) rows are redone with a stable full sort (smaller index first).
            ambiguous = (vals[:, k - 1] == vals[:, k]).nonzero().squeeze(1)
            vals, idx = vals[:, :k], idx[:, :k]
            if ambiguous.numel():
                sv, si = torch.sort(block[ambiguous], dim=1, descending=self.largest, stable=True)
                vals[ambiguous], idx[ambiguous] = sv[:, :k], si[:, :k]
        query_sq = (q * q).sum(1) if self.prep.euclidean else None
        return _canonical(self.prep.to_distance(vals, query_sq), idx)


class _FaissSearch:
    """faiss ``IndexFlatL2`` / ``IndexFlatIP``; tied boundaries are redone by the torch search."""

    def __init__(self, prep: _Prepared, chunk_size: int) -> None:
        import faiss

        self.prep, self.chunk_size = prep, chunk_size
        ref = prep.reference.to(torch.float32).contiguous()
        dim = ref.shape[1]
        self.index = faiss.IndexFlatL2(dim) if prep.euclidean else faiss.IndexFlatIP(dim)
        self.index.add(ref.numpy())
        self.fallback: _TorchSearch | None = None

    def search(self, q: Tensor, k: int, self_index: Tensor | None) -> tuple[Tensor, Tensor]:
        n, m = q.shape[0], self.index.ntotal
        want = min(k + 1 + (self_index is not None), m)
        q32 = q.to(torch.float32).contiguous().numpy()
        score_np, idx_np = self.index.search(q32, want)
        score, idx = torch.from_numpy(score_np), torch.from_numpy(idx_np).to(torch.int64)
        if self_index is not None:
            # Drop the query's own row; if faiss did not return it, drop the last column.
            keep = idx != self_index[:, None]
            keep[:, -1] &= ~keep.all(1)
            score, idx = score[keep].view(n, want - 1), idx[keep].view(n, want - 1)
        dist = self.prep.to_distance(score, None)
        if score.shape[1] > k:
            ambiguous = (score[:, k - 1] == score[:, k]).nonzero().squeeze(1)
        else:
            ambiguous = torch.empty(0, dtype=torch.int64)
        dist, idx = _canonical(dist[:, :k], idx[:, :k])
        if ambiguous.numel():
            if self.fallback is None:
                self.fallback = _TorchSearch(self.prep, self.chunk_size)
            own = None if self_index is None else self_index[ambiguous]
            dist[ambiguous], idx[ambiguous] = self.fallback.search(q[ambiguous], k, own)
        return dist, idx


def _resolve_backend(backend: str, query: Tensor) -> str:
    check_choice(backend, "backend", BACKENDS)
    if backend == "faiss":
        if not faiss_available():
            raise ImportError("backend='faiss' needs the faiss package: pip install faiss-cpu")
        if query.device.type != "cpu":
            raise ValueError(
                f"backend='faiss' needs CPU tensors, got query on {query.device}; use 'torch'"
            )
    if backend == "auto":
        usable = query.device.type == "cpu" and query.dtype != torch.float64
        return "faiss" if usable and faiss_available() else "torch"
    return backend


def knn_chunks(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    self_index: Tensor | None = None,
    distance: str = "euclidean",
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(start, distances, indices)`` for consecutive chunks of already checked queries.

    ``self_index[i]``, if given, is the reference row excluded from query ``i``'s neighbours.
    The caller guarantees ``k`` does not exceed the number of candidates.
    """
    chunk = _block_sizes(query.shape[0], reference.shape[0], chunk_size)
    prep = _Prepared(query, reference, distance)
    engine_cls = _FaissSearch if _resolve_backend(backend, query) == "faiss" else _TorchSearch
    engine = engine_cls(prep, min(chunk, query.shape[0]))
    for start in range(0, query.shape[0], chunk):
        stop = start + chunk
        own = None if self_index is None else self_index[start:stop]
        dist, idx = engine.search(prep.query[start:stop], k, own)
        yield start, dist, idx


@torch.no_grad()
def knn(
    query: Tensor,
    reference: Tensor | None = None,
    *,
    k: int,
    distance: str = "euclidean",
    chunk_size: int | None = None,
    exclude_self: bool = True,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Exact ``k`` nearest references of each query: ``(distances [Q, k], indices [Q, k])``.

    Args:
        query: [Q, D] embeddings (tensor or NumPy array).
        reference: [M, D] embeddings searched; ``None`` searches the query set itself.
        k: neighbours per query (keyword-only); at most M, or M − 1 when the query's own row
            is excluded.
        distance: ``"euclidean"``, ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``
            (as in :mod:`metrickit.distances`; smaller is closer).
        chunk_size: queries per distance block; default: about 2**27 block entries
            (512 MiB in float32).
        exclude_self: with ``reference=None``, drop each query's own row (by index, so
            duplicates still count). Ignored when a reference set is given.
        backend: ``"torch"``, ``"faiss"`` (``pip install faiss-cpu``; computes in float32 on
            the CPU) or ``"auto"``: faiss when installed and the query is a float32/16 CPU
            tensor, torch otherwise.

    Rows are sorted by distance; equal distances list the smaller index first. Distances are
    returned in the compute dtype (float32 for half-precision inputs), on the query's device.
    """
    query = _inputs.embeddings(query, "query")
    check_choice(distance, "distance", DISTANCES)
    check_choice(backend, "backend", BACKENDS)
    self_index = None
    if reference is None:
        reference = query
        if exclude_self:
            self_index = torch.arange(query.shape[0], device=query.device)
    else:
        reference = _inputs.embeddings(reference, "reference")
        if reference.shape[1] != query.shape[1]:
            raise ValueError(
                "query and reference must have the same embedding size, got "
                f"{query.shape[1]} and {reference.shape[1]}"
            )
        if reference.device != query.device:
            raise ValueError(
                f"query and reference must be on one device, got {query.device} and "
                f"{reference.device}"
            )
    check_positive_int(k, "k")
    available = reference.shape[0] - (self_index is not None)
    if k > available:
        what = "references other than the query itself" if self_index is not None else "references"
        raise ValueError(f"k must be at most the number of {what} ({available}), got {k}")
    parts = list(
        knn_chunks(
            query, reference, k, self_index=self_index, distance=distance,
            chunk_size=chunk_size, backend=backend,
        )
    )
    return torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
