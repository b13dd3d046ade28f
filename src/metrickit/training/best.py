"""The best evaluation so far, for best-checkpoint selection and early stopping.

The state is a plain dict ``{"epoch", "value", "bad"}`` (stored in checkpoints): the epoch (or
step) of the best value of one metric so far, that value (None before the first evaluation) and
the number of evaluations since it that did not improve on it (early stopping's patience count).
Whether smaller is better is read off the metric's name (:func:`metrickit.report.lower_is_better`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..report import lower_is_better


def initial_best() -> dict[str, Any]:
    """The state before any evaluation."""
    return {"epoch": 0, "value": None, "bad": 0}


def track_best(best: dict[str, Any], metric: str, metrics: Mapping[str, float], at: int) -> bool:
    """Update ``best`` in place with ``metrics`` evaluated at epoch (or step) ``at``; return
    whether ``metrics[metric]`` improved on the best so far."""
    if metric not in metrics:
        raise ValueError(
            f"best_metric {metric!r} is not an evaluation metric; choose one of "
            f"{', '.join(metrics)}"
        )
    value, previous = float(metrics[metric]), best["value"]
    better = previous is None or (
        value < previous if lower_is_better(metric) else value > previous
    )
    if better:
        best.update(epoch=at, value=value, bad=0)
    else:
        best["bad"] += 1
    return better


def patience_spent(best: Mapping[str, Any], patience: int) -> bool:
    """Whether early stopping should end training (``patience`` 0: never)."""
    return bool(patience) and best["bad"] >= patience
