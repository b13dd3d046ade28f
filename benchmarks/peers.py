"""Adapters for the peer libraries, configured to compute what metrickit computes.

pytorch-metric-learning (PML): Euclidean ``LpDistance(normalize_embeddings=False)`` everywhere
(PML normalises embeddings by default). sentence-transformers (ST): the ``batch_*_triplet_loss``
methods of its ``Batch*TripletLoss`` modules, built with no model. Each builder takes the margin
and returns ``fn(embeddings, labels)``; imports happen only when a builder is called.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
from torch import Tensor

Fn = Callable[[Tensor, Tensor], Any]
INT32_MAX = 2**31 - 1


def version(dist: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _lp() -> Any:
    from pytorch_metric_learning.distances import LpDistance

    return LpDistance(normalize_embeddings=False, p=2, power=1)


def pml_batch_all(margin: float) -> Fn:
    from pytorch_metric_learning.losses import TripletMarginLoss

    loss = TripletMarginLoss(margin=margin, distance=_lp())  # all triplets, AvgNonZeroReducer
    return lambda x, y: loss(x, y)


def pml_batch_hard(margin: float) -> Fn:
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import BatchHardMiner
    from pytorch_metric_learning.reducers import MeanReducer

    miner = BatchHardMiner(distance=_lp())
    loss = TripletMarginLoss(margin=margin, distance=_lp(), reducer=MeanReducer())
    return lambda x, y: loss(x, y, miner(x, y))


def pml_semihard(margin: float) -> Fn:
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

    miner = TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=_lp())
    loss = TripletMarginLoss(margin=margin, distance=_lp())
    return lambda x, y: loss(x, y, miner(x, y))


def pml_miner_hard(margin: float) -> Fn:
    from pytorch_metric_learning.miners import BatchHardMiner

    return BatchHardMiner(distance=_lp())


def pml_miner_semihard(margin: float) -> Fn:
    from pytorch_metric_learning.miners import TripletMarginMiner

    return TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=_lp())


def pml_eval(threads: int) -> Fn:
    import faiss
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    faiss.omp_set_num_threads(threads)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )

    def run(x: Tensor, y: Tensor) -> dict[str, float]:
        out = calc.get_accuracy(x, y)  # reference = query: the query itself is excluded
        return {
            "precision_at_1": out["precision_at_1"],
            "r_precision": out["r_precision"],
            "map_at_r": out["mean_average_precision_at_r"],
        }

    return run


def _st(name: str, method: str, margin: float) -> Fn:
    from sentence_transformers.sentence_transformer import losses

    module = getattr(losses, name)(model=None, margin=margin)
    fn = getattr(module, method)
    return lambda x, y: fn(y, x)  # ST takes (labels, embeddings)


def st_batch_all(margin: float) -> Fn:
    return _st("BatchAllTripletLoss", "batch_all_triplet_loss", margin)


def st_batch_hard(margin: float) -> Fn:
    return _st("BatchHardTripletLoss", "batch_hard_triplet_loss", margin)


def st_semihard(margin: float) -> Fn:
    return _st("BatchSemiHardTripletLoss", "batch_semi_hard_triplet_loss", margin)


# The cosine-similarity pair losses in PML, configured as metrickit's defaults (docs/losses.md).
PML_PAIR_LABELS = {
    "multi_similarity": "MultiSimilarityLoss() (CosineSimilarity, MeanReducer)",
    "circle": "CircleLoss(m=0.25, gamma=256) (AvgNonZeroReducer)",
    "margin": "MarginLoss() (all triplets, DivisorReducer)",
    "ntxent": "NTXentLoss(temperature=0.07)",
    "supcon": "SupConLoss(temperature=0.1) (AvgNonZeroReducer)",
    "tuplet_margin": "TupletMarginLoss(margin=5.73, scale=64)",
    "fastap": "FastAPLoss(num_bins=10, distance=LpDistance(power=2))",
}


def pml_pair_loss(name: str) -> Callable[[float], Fn]:
    """Builder of PML's version of a pair loss (the margin argument unused)."""

    def build(_margin: float) -> Fn:
        from pytorch_metric_learning import distances, losses

        loss = {
            "multi_similarity": lambda: losses.MultiSimilarityLoss(),
            "circle": lambda: losses.CircleLoss(m=0.25, gamma=256),
            "margin": lambda: losses.MarginLoss(),
            "ntxent": lambda: losses.NTXentLoss(temperature=0.07),
            "supcon": lambda: losses.SupConLoss(temperature=0.1),
            "tuplet_margin": lambda: losses.TupletMarginLoss(),
            "fastap": lambda: losses.FastAPLoss(distance=distances.LpDistance(power=2)),
        }[name]()
        return lambda x, y: loss(x, y)

    return build


# PML proxy losses configured as metrickit's defaults (docs/losses.md): class name, attribute
# holding the class vectors, whether it is [D, C·k] (transposed), extra keyword arguments.
PML_PROXY: dict[str, tuple[str, str, bool, dict[str, Any]]] = {
    "proxy_anchor": ("ProxyAnchorLoss", "proxies", False, {}),
    "proxy_nca": ("ProxyNCALoss", "proxies", False, {"softmax_scale": 9}),
    "normalized_softmax": ("NormalizedSoftmaxLoss", "W", True, {}),
    "cosface": ("CosFaceLoss", "W", True, {}),
    "arcface": ("ArcFaceLoss", "W", True, {"margin": 28.64788975654116}),  # 0.5 rad
    "subcenter_arcface": ("SubCenterArcFaceLoss", "W", True, {"margin": 28.64788975654116}),
    "soft_triple": ("SoftTripleLoss", "fc", True, {"weight_reg_weight": 0.2}),
}


def pml_proxy(task: str) -> Callable[[float], Fn]:
    """The PML loss of ``task``, its class vectors set to the shared ones on the first call."""

    def build(margin: float) -> Fn:
        from pytorch_metric_learning import losses, regularizers

        from .inputs import PROXY_CLASSES, proxy_vectors
        from .ours import PROXY_PER_CLASS

        name, attr, transposed, kwargs = PML_PROXY[task]
        per_class = PROXY_PER_CLASS.get(task, 1)
        if task == "soft_triple":
            kwargs = {**kwargs, "weight_regularizer": regularizers.SparseCentersRegularizer(
                num_classes=PROXY_CLASSES, centers_per_class=per_class)}
        state: dict[str, Any] = {}

        def run(x: Tensor, y: Tensor) -> Any:
            if "loss" not in state:
                loss = getattr(losses, name)(
                    num_classes=PROXY_CLASSES, embedding_size=x.shape[1], **kwargs
                ).to(x.device)
                w = proxy_vectors(PROXY_CLASSES * per_class, x.shape[1])
                with torch.no_grad():
                    getattr(loss, attr).copy_(w.T if transposed else w)
                state["loss"] = loss
            return state["loss"](x, y)

        return run

    return build


# Peak-memory estimates in bytes, read off each algorithm (float32 values, int64 indices),
# for B samples in P×K layout; used only to skip cases that would not fit.


def triplet_count(b: int, k: int) -> int:
    """Valid (a, p, n) triplets of a P×K batch: B (K − 1) (B − K)."""
    return b * (k - 1) * (b - k)


def pml_all_triplets_bytes(b: int, k: int) -> float:
    """``get_all_triplets_indices``: a B³ uint8 cube below INT32_MAX elements, else a Python loop
    over anchors; then three int64 index vectors (built twice by the loop's ``cat``) and about
    eight float32 vectors of length T (distances, hinge, filter, gradients)."""
    t = triplet_count(b, k)
    if b**3 < INT32_MAX:
        return b**3 + 24 * t + 32 * t
    return 48 * t + 32 * t


def pml_batch_hard_bytes(b: int, k: int) -> float:
    """All positive and negative pair indices (2 × int64 per pair of the B² grid) plus a few
    B×B float matrices."""
    return 16 * b * b + 6 * 4 * b * b


def st_batch_all_bytes(b: int, k: int) -> float:
    """B (K − 1) anchor-positive rows of length B: about six float32 tensors of that shape."""
    return 6 * 4 * b * (k - 1) * b + 8 * 4 * b * b


def dense_pairs_bytes(b: int, k: int) -> float:
    """Around a dozen B×B float32 matrices (distances, masks, sorting, gradients)."""
    return 12 * 4 * b * b


def st_semihard_bytes(b: int, k: int) -> float:
    """Sort, searchsorted positions (int64), gathers and their gradients over B×B: about 80
    bytes per pair (4.5 GiB measured at B=8192)."""
    return 80 * b * b


def naive_cube_bytes(b: int, k: int) -> float:
    """Five B³ float32 cubes and two boolean ones (difference, hinge, product, gradients)."""
    return 22 * b**3


def negligible(b: int, k: int) -> float:
    return 0.0


def pair_rows_bytes(b: int, k: int) -> float:
    """metrickit's pair losses: the [B, B] derivative, the two boolean masks, their temporaries
    and one block of rows: about 10 bytes per pair."""
    return 10 * b * b


def pml_pair_matrix_bytes(b: int, k: int) -> float:
    """PML's matrix-based pair losses: all pair indices (int64) plus about six B×B float
    matrices (similarities, masks, masked copies, gradients)."""
    return 16 * b * b + 6 * 4 * b * b


def pml_pair_list_bytes(b: int, k: int) -> float:
    """PML's NT-Xent / tuplet margin: a [positive pairs, negative pairs] float matrix, about five
    copies (mask, masked logits, exp, gradients): cubic in B (PML issue #547)."""
    return 5 * 4 * (b * (k - 1)) * (b * (b - k)) + pml_pair_matrix_bytes(b, k)


def pml_fastap_bytes(b: int, k: int) -> float:
    """PML's FastAP: (bins + 1) × B × B pulse tensors (two masked products, their gradients)."""
    return 4 * 11 * 4 * b * b + pml_pair_matrix_bytes(b, k)


def pml_margin_bytes(b: int, k: int) -> float:
    """PML's margin loss over all triplets: the triplet indices plus a few float vectors each."""
    return pml_all_triplets_bytes(b, k) + 16 * triplet_count(b, k)


PML_PAIR_BYTES = {
    "multi_similarity": pml_pair_matrix_bytes,
    "circle": pml_pair_matrix_bytes,
    "margin": pml_margin_bytes,
    "ntxent": pml_pair_list_bytes,
    "supcon": pml_pair_matrix_bytes,
    "tuplet_margin": pml_pair_list_bytes,
    "fastap": pml_fastap_bytes,
}
def proxy_logits_bytes(b: int, k: int) -> float:
    """A few [B, 100·10] float32 matrices (cosines, logits, softmax, gradients)."""
    return 8 * 4 * b * 100 * 10


# sentence-transformers' losses over pairs, built with no model and called on the embeddings
# (``compute_loss_from_embeddings``), as metrickit's defaults (docs/losses.md): scale 20, cosine.
_SYMMETRIC = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
ST_TEXT: dict[str, tuple[str, str, dict[str, Any]]] = {  # task -> label, class, kwargs
    "multiple_negatives_ranking": ("MultipleNegativesRankingLoss(scale=20, cos_sim)",
                                   "MultipleNegativesRankingLoss", {}),
    "multiple_negatives_symmetric": (
        "MultipleNegativesRankingLoss(directions=(query_to_doc, doc_to_query), "
        "partition_mode='per_direction') = MultipleNegativesSymmetricRankingLoss",
        "MultipleNegativesRankingLoss", _SYMMETRIC),
    "cosent": ("CoSENTLoss(scale=20)", "CoSENTLoss", {}),
    "angle": ("AnglELoss(scale=20)", "AnglELoss", {}),
    "cosine_similarity": ("CosineSimilarityLoss (MSE)", "CosineSimilarityLoss", {}),
}


def st_text_loss(task: str) -> Callable[[float], Fn]:
    """Builder of ST's loss over pairs, ``fn(x, y)`` as :func:`benchmarks.ours.text_loss`."""

    def build(_margin: float) -> Fn:
        from sentence_transformers.sentence_transformer import losses

        from .inputs import SCORED_TASKS

        _, name, kwargs = ST_TEXT[task]
        loss = getattr(losses, name)(model=None, **kwargs)
        scored = task in SCORED_TASKS
        return lambda x, y: loss.compute_loss_from_embeddings(list(x.chunk(2)),
                                                              y if scored else None)

    return build


def logits_bytes(copies: int) -> Callable[[int, int], float]:
    """``copies`` B×B float32 matrices (similarities, softmax, their gradients)."""
    return lambda b, k: copies * 4 * b * b

