"""Functional forms of every loss (``metrickit.functional``, alias ``metrickit.F``).

Mirrors ``torch.nn.functional``: each function here has an ``nn.Module`` twin in
:mod:`metrickit.losses`.
"""

from .losses.contrastive import batch_contrastive_loss, contrastive_loss

__all__ = [
    "contrastive_loss",
    "batch_contrastive_loss",
]
