"""Adapters for metrickit's own implementations (same calling convention as the peers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

Fn = Callable[[Tensor, Tensor], Any]


def _triplet(mining: str, margin: float) -> Fn:
    import metrickit as mk

    loss = mk.F.batch_triplet_loss
    return lambda x, y: loss(x, y, margin=margin, mining=mining)


def batch_all(margin: float) -> Fn:
    return _triplet("all", margin)


def batch_hard(margin: float) -> Fn:
    return _triplet("hard", margin)


def semihard(margin: float) -> Fn:
    return _triplet("semihard", margin)


def pair_loss(name: str) -> Callable[[float], Fn]:
    """Builder of a cosine-similarity pair loss at its defaults (the margin argument unused)."""

    def build(_margin: float) -> Fn:
        import metrickit as mk

        return getattr(mk.F, f"{name}_loss")

    return build


def miner_hard(margin: float) -> Fn:
    from metrickit.miners import batch_hard_triplets

    return lambda x, y: batch_hard_triplets(x, y)


def miner_semihard(margin: float) -> Fn:
    from metrickit.miners import semihard_triplets

    return lambda x, y: semihard_triplets(x, y)


def miner_difficulty(margin: float) -> Fn:
    """Number of semi-hard triplets, d(a,p) ≤ d(a,n) < d(a,p) + m, without listing them."""
    from metrickit.miners import triplet_difficulty

    return lambda x, y: triplet_difficulty(x, y, margin=margin)["semihard"]


def _evaluation(threads: int, backend: str) -> Fn:
    from metrickit.evaluation import retrieval_metrics

    if backend != "torch":
        import faiss

        faiss.omp_set_num_threads(threads)

    def run(x: Tensor, y: Tensor) -> dict[str, float]:
        out = retrieval_metrics(x, y, backend=backend)
        return {k: float(out[k]) for k in ("precision_at_1", "r_precision", "map_at_r")}

    return run


def evaluation(threads: int) -> Fn:
    """``retrieval_metrics`` with its default backend (faiss when installed)."""
    return _evaluation(threads, "auto")


def evaluation_torch(threads: int) -> Fn:
    """``retrieval_metrics`` on the pure-torch k-NN backend."""
    return _evaluation(threads, "torch")


def proxy(task: str) -> Callable[[float], Fn]:
    """``F.<task>_loss`` at its defaults, with the shared class vectors (a leaf with a gradient)."""

    def build(margin: float) -> Fn:
        import metrickit as mk

        from .inputs import PROXY_CLASSES, proxy_vectors

        loss = getattr(mk.F, f"{task}_loss")
        state: dict[str, Tensor] = {}

        def run(x: Tensor, y: Tensor) -> Any:
            if "w" not in state:
                w = proxy_vectors(PROXY_CLASSES * PROXY_PER_CLASS.get(task, 1), x.shape[1])
                state["w"] = w.to(x.device, x.dtype).requires_grad_()
            return loss(x, y, state["w"])

        return run

    return build


PROXY_PER_CLASS = {"subcenter_arcface": 3, "soft_triple": 10}  # the defaults of those losses


TEXT_LOSSES = {  # task -> functional name and keyword arguments (defaults otherwise)
    "multiple_negatives_ranking": ("multiple_negatives_ranking_loss", {}),
    "multiple_negatives_symmetric": ("multiple_negatives_ranking_loss", {"symmetric": True}),
    "cosent": ("cosent_loss", {}),
    "angle": ("angle_loss", {}),
    "cosine_similarity": ("cosine_similarity_loss", {}),
}


def text_loss(task: str) -> Callable[[float], Fn]:
    """Builder of a loss over pairs: ``fn(x, y)`` with x = the two sides stacked ([2B, D], see
    :func:`benchmarks.inputs.text_pairs`) and y the scores (scored tasks) or unused."""

    def build(_margin: float) -> Fn:
        import metrickit as mk

        from .inputs import SCORED_TASKS

        name, kwargs = TEXT_LOSSES[task]
        loss = getattr(mk.F, name)
        if task in SCORED_TASKS:
            return lambda x, score: loss(*x.chunk(2), score, **kwargs)
        return lambda x, _pairs: loss(*x.chunk(2), **kwargs)

    return build
