"""Functional forms of every loss (``metrickit.functional``, alias ``metrickit.F``).

Mirrors ``torch.nn.functional``: each function here has an ``nn.Module`` twin in
:mod:`metrickit.losses`.
"""

from .losses.arcface import arcface_loss, subcenter_arcface_loss
from .losses.circle import circle_loss
from .losses.contrastive import batch_contrastive_loss, contrastive_loss
from .losses.cosface import cosface_loss
from .losses.cross_batch_memory import reference_set_loss
from .losses.fastap import fastap_loss
from .losses.lifted_structure import lifted_structure_from_distances, lifted_structure_loss
from .losses.margin import margin_loss
from .losses.matryoshka import matryoshka_loss
from .losses.multi_similarity import multi_similarity_loss
from .losses.multiple_negatives import (
    batch_multiple_negatives_ranking_loss,
    multiple_negatives_ranking_loss,
)
from .losses.normalized_softmax import normalized_softmax_loss
from .losses.npair import batch_npair_loss, npair_loss
from .losses.ntxent import ntxent_loss, supcon_loss
from .losses.proxy_anchor import proxy_anchor_loss
from .losses.proxy_nca import proxy_nca_loss
from .losses.quadruplet import batch_quadruplet_loss, quadruplet_from_distances, quadruplet_loss
from .losses.ranking import bpr_loss, pairwise_hinge_loss, warp_loss
from .losses.scored_pairs import angle_loss, cosent_loss, cosine_similarity_loss
from .losses.soft_triple import soft_triple_loss
from .losses.symmetric_triplet import symmetric_triplet_loss
from .losses.triplet import batch_triplet_loss, triplet_loss_from_distances, triplet_margin_loss
from .losses.triplet_center import triplet_center_loss
from .losses.tuplet_margin import tuplet_margin_loss

__all__ = [
    "contrastive_loss",
    "batch_contrastive_loss",
    "reference_set_loss",
    "npair_loss",
    "batch_npair_loss",
    "quadruplet_loss",
    "batch_quadruplet_loss",
    "quadruplet_from_distances",
    "lifted_structure_loss",
    "lifted_structure_from_distances",
    "pairwise_hinge_loss",
    "bpr_loss",
    "warp_loss",
    "triplet_margin_loss",
    "batch_triplet_loss",
    "triplet_loss_from_distances",
    "symmetric_triplet_loss",
    "triplet_center_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "normalized_softmax_loss",
    "cosface_loss",
    "arcface_loss",
    "subcenter_arcface_loss",
    "multiple_negatives_ranking_loss",
    "batch_multiple_negatives_ranking_loss",
    "cosine_similarity_loss",
    "cosent_loss",
    "angle_loss",
    "matryoshka_loss",
    "soft_triple_loss",
    "multi_similarity_loss",
    "circle_loss",
    "ntxent_loss",
    "supcon_loss",
    "tuplet_margin_loss",
    "fastap_loss",
    "margin_loss",
]
