"""Common base of the loss modules (mirrors ``torch.nn.modules.loss._Loss``)."""

from __future__ import annotations

from torch import nn

from .._validation import check_reduction


class Loss(nn.Module):
    """Stores and validates ``reduction``; subclasses call their functional form in forward."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
