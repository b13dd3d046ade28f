"""Loss modules (``nn.Module``); their functional forms live in :mod:`metrickit.functional`.

One module per loss family, named after the loss. ``get_loss(name, **params)`` builds any
batch-form loss by its registered name (see :func:`list_losses`).
"""

from ._base import BatchLoss, Loss, ProxyLoss
from ._registry import get_loss, get_loss_class, list_losses, resolve_loss_name
from .arcface import ArcFaceLoss, SubCenterArcFaceLoss
from .circle import CircleLoss
from .contrastive import BatchContrastiveLoss, ContrastiveLoss
from .cosface import CosFaceLoss
from .cross_batch_memory import CrossBatchMemory
from .fastap import FastAPLoss
from .lifted_structure import LiftedStructureLoss
from .margin import MarginLoss
from .matryoshka import MatryoshkaLoss
from .multi_similarity import MultiSimilarityLoss
from .multiple_negatives import BatchMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
from .normalized_softmax import NormalizedSoftmaxLoss
from .npair import BatchNPairLoss, NPairLoss
from .ntxent import NTXentLoss, SupConLoss
from .proxy_anchor import ProxyAnchorLoss
from .proxy_nca import ProxyNCALoss
from .quadruplet import BatchQuadrupletLoss, QuadrupletLoss
from .ranking import BPRLoss, PairwiseHingeLoss, WARPLoss
from .scored_pairs import AnglELoss, CoSENTLoss, CosineSimilarityLoss
from .soft_triple import SoftTripleLoss
from .symmetric_triplet import SymmetricTripletLoss
from .triplet import BatchTripletLoss, TripletMarginLoss
from .triplet_center import TripletCenterLoss
from .tuplet_margin import TupletMarginLoss

__all__ = [
    "Loss",
    "BatchLoss",
    "ProxyLoss",
    "get_loss",
    "get_loss_class",
    "resolve_loss_name",
    "list_losses",
    "ContrastiveLoss",
    "BatchContrastiveLoss",
    "CrossBatchMemory",
    "NPairLoss",
    "BatchNPairLoss",
    "QuadrupletLoss",
    "BatchQuadrupletLoss",
    "LiftedStructureLoss",
    "PairwiseHingeLoss",
    "BPRLoss",
    "WARPLoss",
    "TripletMarginLoss",
    "BatchTripletLoss",
    "SymmetricTripletLoss",
    "TripletCenterLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "NormalizedSoftmaxLoss",
    "CosFaceLoss",
    "ArcFaceLoss",
    "SubCenterArcFaceLoss",
    "MultipleNegativesRankingLoss",
    "BatchMultipleNegativesRankingLoss",
    "CosineSimilarityLoss",
    "CoSENTLoss",
    "AnglELoss",
    "MatryoshkaLoss",
    "SoftTripleLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "NTXentLoss",
    "SupConLoss",
    "TupletMarginLoss",
    "FastAPLoss",
    "MarginLoss",
]
