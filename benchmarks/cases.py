"""What is benchmarked: tasks, implementations of each task, and one case = (task, impl, size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from typing import Any

from . import naive, ours, peers
from .inputs import SCORED_TASKS, TEXT_TASKS

TRIPLET_TASKS = ("batch_all", "batch_hard", "semihard")
# the cosine-similarity pair losses, by registry name, each at its defaults
PAIR_TASKS = ("multi_similarity", "circle", "margin", "ntxent", "supcon", "tuplet_margin", "fastap")
# proxy losses: PROXY_CLASSES classes (labels mod PROXY_CLASSES), class vectors shared by all impls
PROXY_TASKS = ("proxy_anchor", "proxy_nca", "normalized_softmax", "cosface", "arcface",
               "subcenter_arcface", "soft_triple")
# losses over pairs of embeddings (no labels), against sentence-transformers: inputs.text_pairs
LOSS_TASKS = TRIPLET_TASKS + PAIR_TASKS + PROXY_TASKS + TEXT_TASKS
MINER_TASKS = ("miner_hard", "miner_semihard", "miner_difficulty")
EVAL_TASK = "eval"
TASKS = LOSS_TASKS + MINER_TASKS + (EVAL_TASK,)
IMPL_NAMES = ("metrickit", "metrickit-torch", "pml", "st", "torch")
TASK_TITLES = {
    "batch_all": "Batch-all triplet loss, forward + backward",
    "batch_hard": "Batch-hard triplet loss, forward + backward",
    "semihard": "Semi-hard triplet loss, forward + backward",
    "miner_hard": "Batch-hard miner (mining only, no gradient)",
    "miner_semihard": "Semi-hard miner (mining only, no gradient)",
    "miner_difficulty": "Semi-hard triplet count, d(a,p) ≤ d(a,n) < d(a,p) + m (no gradient)",
    "eval": "Retrieval evaluation: P@1, R-Precision, MAP@R (self excluded)",
    "multi_similarity": "Multi-similarity loss (α=2, β=50, λ=0.5), forward + backward",
    "circle": "Circle loss (m=0.25, γ=256), forward + backward",
    "margin": "Margin loss (α=0.2, β=1.2, all triplets), forward + backward",
    "ntxent": "NT-Xent / InfoNCE over a labelled batch (τ=0.07), forward + backward",
    "supcon": "Supervised contrastive loss (τ=0.1), forward + backward",
    "tuplet_margin": "Tuplet margin loss (5.73°, s=64), forward + backward",
    "fastap": "FastAP loss (10 bins), forward + backward",
    **{t: f"{t} loss, 100 classes, forward + backward (embeddings and class vectors)"
       for t in PROXY_TASKS},
    "multiple_negatives_ranking": "Multiple negatives ranking loss (in-batch negatives, scale 20, "
                                  "cosine), B (anchor, positive) pairs, forward + backward",
    "multiple_negatives_symmetric": "Symmetric multiple negatives ranking loss (scale 20, "
                                    "cosine), B pairs, forward + backward",
    **{t: f"{t} loss over B scored pairs (x1, x2, score), forward + backward"
       for t in SCORED_TASKS},
}


@dataclass(frozen=True)
class Impl:
    """One implementation of a task.

    ``build(param)`` returns ``fn(embeddings, labels)``; param is the margin (losses, miners) or
    the thread count (evaluation). ``estimate(B, K)`` is its peak memory in bytes, from its
    algorithm. Implementations with equal ``definition`` must agree on values; None means a
    different definition, explained in ``note``.
    """

    task: str
    name: str
    label: str
    requires: str
    build: Callable[[Any], Callable]
    estimate: Callable[[int, int], float]
    definition: str | None
    note: str = ""

    def available(self) -> bool:
        return find_spec(self.requires) is not None


def _naive(fn: Callable) -> Callable[[float], Callable]:
    return lambda margin: lambda x, y: fn(x, y, margin)


_PML_SEMIHARD_NOTE = (
    "PML's TripletMarginMiner('semihard') keeps every triplet with 0 < d(a,n) − d(a,p) ≤ m and "
    "averages the non-zero losses; TF-Addons/FaceNet semi-hard takes, per positive pair, the "
    "nearest negative farther than the positive. Different definition: values not compared."
)

# (metrickit, ST) peak-memory estimates of the pair tasks: B×B logits, softmax and gradients
# (ST computes the similarities once per direction); the scored pairs are O(B·D)
_TEXT_BYTES = {
    "multiple_negatives_ranking": (peers.logits_bytes(5), peers.logits_bytes(6)),
    "multiple_negatives_symmetric": (peers.logits_bytes(7), peers.logits_bytes(12)),
    **{t: (peers.negligible, peers.negligible) for t in SCORED_TASKS},
}

IMPLS: dict[tuple[str, str], Impl] = {
    (i.task, i.name): i
    for i in (
        Impl("batch_all", "metrickit", "batch_triplet_loss(mining='all')", "metrickit",
             ours.batch_all, peers.dense_pairs_bytes, "batch_all"),
        Impl("batch_all", "pml", "TripletMarginLoss (all triplets, AvgNonZeroReducer)",
             "pytorch_metric_learning", peers.pml_batch_all, peers.pml_all_triplets_bytes,
             "batch_all"),
        Impl("batch_all", "st", "BatchAllTripletLoss", "sentence_transformers",
             peers.st_batch_all, peers.st_batch_all_bytes, "batch_all"),
        Impl("batch_all", "torch", "dense B³ cube", "torch", _naive(naive.batch_all),
             peers.naive_cube_bytes, "batch_all"),
        Impl("batch_hard", "metrickit", "batch_triplet_loss(mining='hard')", "metrickit",
             ours.batch_hard, peers.dense_pairs_bytes, "batch_hard"),
        Impl("batch_hard", "pml", "BatchHardMiner + TripletMarginLoss (MeanReducer)",
             "pytorch_metric_learning", peers.pml_batch_hard, peers.pml_batch_hard_bytes,
             "batch_hard"),
        Impl("batch_hard", "st", "BatchHardTripletLoss", "sentence_transformers",
             peers.st_batch_hard, peers.dense_pairs_bytes, "batch_hard"),
        Impl("batch_hard", "torch", "dense B² masked max/min", "torch", _naive(naive.batch_hard),
             peers.dense_pairs_bytes, "batch_hard"),
        Impl("semihard", "metrickit", "batch_triplet_loss(mining='semihard')", "metrickit",
             ours.semihard, peers.dense_pairs_bytes, "semihard"),
        Impl("semihard", "pml", "TripletMarginMiner('semihard') + TripletMarginLoss",
             "pytorch_metric_learning", peers.pml_semihard, peers.pml_all_triplets_bytes, None,
             _PML_SEMIHARD_NOTE),
        Impl("semihard", "st", "BatchSemiHardTripletLoss", "sentence_transformers",
             peers.st_semihard, peers.st_semihard_bytes, "semihard"),
        Impl("semihard", "torch", "dense B³ cube", "torch", _naive(naive.semihard),
             peers.naive_cube_bytes, "semihard"),
        Impl("miner_hard", "metrickit", "miners.batch_hard_triplets", "metrickit",
             ours.miner_hard, peers.dense_pairs_bytes, "miner_hard"),
        Impl("miner_hard", "pml", "BatchHardMiner", "pytorch_metric_learning",
             peers.pml_miner_hard, peers.pml_batch_hard_bytes, "miner_hard"),
        Impl("miner_semihard", "metrickit", "miners.semihard_triplets", "metrickit",
             ours.miner_semihard, peers.dense_pairs_bytes, "miner_semihard"),
        Impl("miner_semihard", "pml", "TripletMarginMiner('semihard')",
             "pytorch_metric_learning", peers.pml_miner_semihard, peers.pml_all_triplets_bytes,
             None, _PML_SEMIHARD_NOTE),
        Impl("miner_difficulty", "metrickit", "miners.triplet_difficulty()['semihard']",
             "metrickit", ours.miner_difficulty, peers.dense_pairs_bytes, "semihard_band"),
        Impl("miner_difficulty", "pml", "TripletMarginMiner('semihard'), number mined",
             "pytorch_metric_learning", peers.pml_miner_semihard, peers.pml_all_triplets_bytes,
             "semihard_band"),
        *(Impl(t, "metrickit", f"F.{t}_loss (paper defaults)", "metrickit", ours.proxy(t),
               peers.proxy_logits_bytes, t) for t in PROXY_TASKS),
        *(Impl(t, "pml", peers.PML_PROXY[t][0], "pytorch_metric_learning", peers.pml_proxy(t),
               peers.proxy_logits_bytes, t) for t in PROXY_TASKS),
        Impl("eval", "metrickit", "retrieval_metrics (default backend: faiss if installed)",
             "metrickit", ours.evaluation, peers.negligible, "eval"),
        Impl("eval", "metrickit-torch", "retrieval_metrics(backend='torch')", "metrickit",
             ours.evaluation_torch, peers.negligible, "eval"),
        Impl("eval", "pml", "AccuracyCalculator(k='max_bin_count') + faiss IndexFlatL2",
             "pytorch_metric_learning", peers.pml_eval, peers.negligible, "eval"),
    )
}
for _task in TEXT_TASKS:
    IMPLS[(_task, "metrickit")] = Impl(
        _task, "metrickit", "F.{}({})".format(ours.TEXT_LOSSES[_task][0], ", ".join(
            f"{k}={v}" for k, v in ours.TEXT_LOSSES[_task][1].items())), "metrickit",
        ours.text_loss(_task), _TEXT_BYTES[_task][0], _task)
    IMPLS[(_task, "st")] = Impl(
        _task, "st", peers.ST_TEXT[_task][0], "sentence_transformers", peers.st_text_loss(_task),
        _TEXT_BYTES[_task][1], _task)
for _task in PAIR_TASKS:
    IMPLS[(_task, "metrickit")] = Impl(
        _task, "metrickit", f"{_task}_loss (blockwise similarity rows)", "metrickit",
        ours.pair_loss(_task), peers.pair_rows_bytes, _task)
    IMPLS[(_task, "pml")] = Impl(
        _task, "pml", peers.PML_PAIR_LABELS[_task], "pytorch_metric_learning",
        peers.pml_pair_loss(_task), peers.PML_PAIR_BYTES[_task], _task)


@dataclass(frozen=True)
class Case:
    """One measurement: ``batch`` samples (N for evaluation), ``k`` per class, ``dim`` features."""

    task: str
    impl: str
    batch: int
    k: int
    dim: int

    @property
    def spec(self) -> Impl:
        return IMPLS[(self.task, self.impl)]

    @property
    def key(self) -> tuple[str, int, int, int]:
        return (self.task, self.batch, self.k, self.dim)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
