"""Common bases of the loss modules (mirror ``torch.nn.modules.loss._Loss``).

The contract every loss follows: a functional form in :mod:`metrickit.functional` and a thin
``nn.Module`` here that validates its hyper-parameters at construction and calls the functional
form in ``forward``; ``reduction`` is "mean" | "sum" | "none" as in torch.

Batch losses (:class:`BatchLoss`) score the samples of a labelled batch against each other, or
against a reference set::

    loss(embeddings, labels, indices_tuple=None,
         ref_embeddings=None, ref_labels=None, ref_offset=None)

* ``embeddings`` [B, D], ``labels`` [B]: the anchors.
* ``indices_tuple``: a miner's output, triplets ``(a, p, n)`` or pairs ``(a1, p, a2, n)``
  (anchors index the batch, p/n the references): the loss then uses only those pairs/triplets
  (see :func:`metrickit.masks.mined_pair_masks` / :func:`~metrickit.masks.mined_triplets`).
* ``ref_embeddings`` [M, D], ``ref_labels`` [M]: the candidates (default: the batch itself);
  ``ref_offset``: the anchors are rows ``ref_offset .. ref_offset + B − 1`` of the references
  (their own columns, never their own positives), or ``None`` when no reference is an anchor
  (see :func:`metrickit.masks.resolve_references`).

With the batch as references every batch loss equals its in-batch form. That is what makes the
wrappers generic: :class:`~metrickit.losses.CrossBatchMemory` calls any batch loss with the
batch followed by a memory of past embeddings (``ref_offset=0``), and
:class:`~metrickit.distributed.DistributedLoss` with the embeddings gathered from every process
(``ref_offset`` = this rank's first row).

Losses over learnable class vectors (:class:`ProxyLoss`: proxies, centres, classifier weights)
compare samples with those vectors, not with each other: ``forward(embeddings, labels)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from .._validation import check_reduction


class Loss(nn.Module):
    """Stores and validates ``reduction``; subclasses call their functional form in forward."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)


class BatchLoss(Loss):
    """Base of the losses over the pairs/triplets of a labelled batch (the contract above).

    ``forward(embeddings, labels, indices_tuple=None, ref_embeddings=None, ref_labels=None,
    ref_offset=None)`` calls the class's functional form ``functional`` with the hyper-parameters
    ``hyper()`` as positional arguments after ``(embeddings, labels)``, the references and the
    keyword arguments ``keywords()`` (by default ``reduction``), all validated by the subclass's
    constructor. ``pair_based`` is True for losses built from sample pairs or triplets (usable
    with a miner and with cross-batch memory).
    """

    pair_based: ClassVar[bool] = True
    functional: ClassVar[Callable[..., Tensor]]

    def hyper(self) -> tuple[object, ...]:
        """The functional form's positional arguments after ``(embeddings, labels)``."""
        return ()

    def keywords(self) -> dict[str, object]:
        """The functional form's keyword arguments besides the references."""
        return {"reduction": self.reduction}

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        ref_offset: int | None = None,
    ) -> Tensor:
        return type(self).functional(
            embeddings, labels, *self.hyper(), indices_tuple=indices_tuple,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_offset=ref_offset,
            **self.keywords(),
        )


class ProxyLoss(Loss):
    """Base of the losses over learnable class vectors: ``forward(embeddings, labels)``.

    Their class vectors are one ``nn.Parameter`` named ``proxies`` ([C·k, D]); trainers may give
    it its own learning rate (proxy losses need a larger one than the network). ``forward``
    calls the class's functional form ``functional(embeddings, labels, proxies, *hyper(),
    reduction)``.
    """

    pair_based: ClassVar[bool] = False
    functional: ClassVar[Callable[..., Tensor]]
    proxies: nn.Parameter

    def hyper(self) -> tuple[object, ...]:
        """The functional form's hyper-parameters, between ``proxies`` and ``reduction``."""
        return ()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return type(self).functional(
            embeddings, labels, self.proxies, *self.hyper(), self.reduction
        )
