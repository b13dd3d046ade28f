"""Sentence embeddings: encoder, pair data, training and evaluation (``metrickit.text``).

Needs the ``text`` extra (``transformers``, ``tokenizers``). Built-in, without download: the
model ``all-minilm-l6-v2`` and the STS-B data set (``load_stsb``), read from registry packages.
"""

from .cached import cached_backward
from .data import ScoredPairs, TextPairs, load_stsb, read_text_file
from .encoder import SentenceEncoder, pool
from .evaluation import (
    evaluate_retrieval,
    evaluate_sts,
    pairs_retrieval_task,
    retrieval_scores,
    sts_scores,
)
from .fit import FitConfig, TextTrainer, fit
from .losses import TEXT_LOSSES, TextLoss, get_text_loss
from .sampler import NoDuplicatesBatchSampler

__all__ = [
    "SentenceEncoder",
    "pool",
    "TextPairs",
    "ScoredPairs",
    "load_stsb",
    "read_text_file",
    "NoDuplicatesBatchSampler",
    "TEXT_LOSSES",
    "TextLoss",
    "get_text_loss",
    "FitConfig",
    "fit",
    "TextTrainer",
    "cached_backward",
    "sts_scores",
    "retrieval_scores",
    "pairs_retrieval_task",
    "evaluate_sts",
    "evaluate_retrieval",
]
