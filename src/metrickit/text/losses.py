"""The losses the text path trains with: the loss contract's scored-pair and in-batch-negatives
losses of :mod:`metrickit.functional`, applied to the embedding columns of a batch.

==============  ===========  ==================================================================
name            data         loss
==============  ===========  ==================================================================
``cosent``      scored       :func:`~metrickit.functional.cosent_loss` (scale 20)
``angle``       scored       :func:`~metrickit.functional.angle_loss` (scale 20)
``cosine``      scored       :func:`~metrickit.functional.cosine_similarity_loss` (MSE)
``mnrl``        pairs        :func:`~metrickit.functional.multiple_negatives_ranking_loss`
``mnrl_sym``    pairs        the same with ``symmetric=True`` (positives also rank anchors)
==============  ===========  ==================================================================

Scored losses get the scores mapped to [0, 1]; ``mnrl`` takes (anchor, positive[, negative])
and uses the other rows' positives and negatives as negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .._validation import check_choice

SCORED = "scored"
PAIRS = "pairs"
_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cosent": (SCORED, "cosent_loss", {}),
    "angle": (SCORED, "angle_loss", {}),
    "cosine": (SCORED, "cosine_similarity_loss", {}),
    "mnrl": (PAIRS, "multiple_negatives_ranking_loss", {}),
    "mnrl_sym": (PAIRS, "multiple_negatives_ranking_loss", {"symmetric": True}),
}
TEXT_LOSSES = tuple(_SPECS)


@dataclass(frozen=True)
class TextLoss:
    """A loss of a batch's embedding columns (and scores, for scored losses)."""

    name: str
    kind: str
    function: Callable[..., Tensor]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, columns: list[Tensor], scores: Tensor | None = None) -> Tensor:
        if self.kind == SCORED:
            if scores is None or len(columns) != 2:
                raise ValueError(f"loss {self.name!r} needs two text columns and scores")
            return self.function(columns[0], columns[1], scores, **self.params)
        if len(columns) not in (2, 3):
            raise ValueError(f"loss {self.name!r} needs anchors, positives [, negatives]")
        return self.function(*columns, **self.params)


def get_text_loss(name: str, **params: Any) -> TextLoss:
    """The text loss ``name`` (see the module table) with keyword ``params`` (e.g. ``scale``)."""
    from .. import functional

    name = check_choice(name, "loss", TEXT_LOSSES)
    kind, function_name, fixed = _SPECS[name]
    function = getattr(functional, function_name, None)
    if function is None:
        raise ModuleNotFoundError(
            f"loss {name!r} needs metrickit.functional.{function_name}, "
            "which this metrickit does not have"
        )
    loss = TextLoss(name, kind, function, {**fixed, **params})
    _check_params(loss)
    return loss


def _check_params(loss: TextLoss) -> None:
    """Unknown parameter names fail here, not in the first training step."""
    import inspect

    accepted = inspect.signature(loss.function).parameters
    unknown = sorted(set(loss.params) - set(accepted))
    if unknown:
        raise ValueError(f"loss {loss.name!r} has no parameter(s) {', '.join(unknown)}")
