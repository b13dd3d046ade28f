"""Verification metrics over pairs (siamese use): is this pair the same class or not?

A pair is predicted "same" when its distance is at most a threshold t (or, with
``similarity=True``, when its score is at least t). Sweeping t over every distinct value gives
the ROC operating points (FAR, TAR): FAR = false accepts / different pairs,
TAR = true accepts / same pairs, FRR = 1 − TAR.

* ``roc_auc``: area under the ROC (tied distances count ½, as in Mann–Whitney U);
* ``verification_accuracy`` / ``verification_threshold``: best accuracy over all thresholds
  (including "nothing is same", t = −inf) and the smallest threshold reaching it;
* ``eer``: equal error rate, FAR = FRR, by linear interpolation between the two consecutive
  operating points where FAR − FRR changes sign;
* ``tar_at_far_{f}``: the conservative operating point — the highest TAR among thresholds whose
  FAR does not exceed f (no interpolation; 0 when even the smallest distance exceeds it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_floating, check_positive_int
from ..distances import DISTANCES, rowwise_distance
from . import _inputs

DEFAULT_FARS = (1e-3, 1e-2)
DEFAULT_MAX_PAIRS = 200_000
_PAIR_CHUNK = 1 << 16
_PAIR_ELEMENTS = 1 << 18  # gathered entries per side and chunk (1 MiB in float32)


def far_key(far: float) -> str:
    """Result key of TAR at a FAR: 1e-3 -> ``"tar_at_far_1e-3"``."""
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"tar_at_far_{mantissa}e{int(exponent)}"


def _check_fars(fars: object) -> tuple[float, ...]:
    ok = isinstance(fars, Sequence) and not isinstance(fars, str) and len(fars) > 0
    if not ok or not all(isinstance(f, (int, float)) and 0 < f < 1 for f in fars):
        raise ValueError(f"fars must be a non-empty sequence of numbers in (0, 1), got {fars!r}")
    return tuple(float(f) for f in fars)


@torch.no_grad()
def verification_metrics(
    distances: Tensor,
    same: Tensor,
    *,
    similarity: bool = False,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, float]:
    """ROC AUC, best accuracy and its threshold, EER and TAR at each FAR, over labelled pairs.

    Args:
        distances: [P] pair distances (smaller = more likely same), or similarity scores with
            ``similarity=True`` (larger = more likely same). Tensor or NumPy array.
        same: [P] bool or 0/1: whether each pair is of one class.
        fars: the false-accept rates of the ``tar_at_far_*`` keys (see :func:`far_key`).

    Returns:
        ``roc_auc``, ``verification_accuracy``, ``verification_threshold`` (in the input's
        scale), ``eer``, ``tar_at_far_1e-3``, ``tar_at_far_1e-2`` and ``num_same_pairs``,
        ``num_different_pairs``.
    """
    d = check_floating(_inputs.as_tensor(distances, "distances"), "distances", ndim=1)
    same = _inputs.as_tensor(same, "same")
    if same.dim() != 1 or same.shape[0] != d.shape[0] or same.is_floating_point():
        raise ValueError(
            f"same must be a 1-D bool or integer tensor with one entry per pair ({d.shape[0]}), "
            f"got shape {tuple(same.shape)} and dtype {same.dtype}"
        )
    same = same.to(d.device) != 0
    fars = _check_fars(fars)
    n_pos = int(same.sum())
    n_neg = same.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"same must contain both same and different pairs, got {n_pos} same and "
            f"{n_neg} different"
        )
    d = d.to(torch.float64)
    d = -d if similarity else d
    order = torch.argsort(d, stable=True)
    d, same = d[order], same[order]
    # One operating point per distinct distance (the last pair of each run of ties).
    last = torch.ones_like(same)
    last[:-1] = d[1:] != d[:-1]
    zero = torch.zeros(1, dtype=torch.int64, device=d.device)
    tp = torch.cat([zero, same.cumsum(0)[last]])
    fp = torch.cat([zero, (~same).cumsum(0)[last]])
    thresholds = torch.cat([d.new_full((1,), float("-inf")), d[last]])
    tar, far = tp.to(torch.float64) / n_pos, fp.to(torch.float64) / n_neg

    auc = ((far[1:] - far[:-1]) * (tar[1:] + tar[:-1])).sum() / 2
    best = int(torch.argmax(tp - fp))  # correct = tp + (n_neg − fp); first = smallest t
    gap = far - (1 - tar)  # FAR − FRR: rises from −1 to 1
    j = int(torch.searchsorted(gap, torch.zeros(1, dtype=gap.dtype, device=gap.device)))
    a = -gap[j - 1] / (gap[j] - gap[j - 1])
    eer = far[j - 1] + a * (far[j] - far[j - 1])
    threshold = float(thresholds[best])
    out = {
        "roc_auc": float(auc),
        "verification_accuracy": float(tp[best] + n_neg - fp[best]) / (n_pos + n_neg),
        "verification_threshold": -threshold if similarity else threshold,
        "eer": float(eer),
    }
    for f in fars:
        out[far_key(f)] = float(torch.where(far <= f, tar, torch.zeros_like(tar)).max())
    out["num_same_pairs"] = n_pos
    out["num_different_pairs"] = n_neg
    return out


def _decode(ids: np.ndarray, counts: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pair number → (p, q) where position p owns ``counts[p]`` pairs (p, base[p] + r)."""
    cum = np.cumsum(counts)
    p = np.searchsorted(cum, ids, side="right")
    return p, base[p] + (ids - (cum[p] - counts[p]))


def make_verification_pairs(
    labels: Tensor, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs ``(first, second, same)`` of sample indices (first < second) for verification.

    All N(N−1)/2 pairs when there are at most ``max_pairs``; otherwise a seeded sample drawn
    uniformly without replacement: min(#same pairs, max_pairs // 2) same-class pairs and the rest
    of ``max_pairs`` different-class pairs. Pairs are returned sorted by (first, second).
    """
    y = _inputs.as_tensor(labels, "labels")
    y = _inputs.labels(y, y.shape[0] if y.dim() >= 1 else 0, y.device, "labels")
    check_positive_int(max_pairs, "max_pairs")
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2, got {max_pairs}")
    if y.numel() < 2:
        raise ValueError(f"labels must have at least 2 entries to form a pair, got {y.numel()}")
    lab = y.cpu().numpy()
    n = lab.size
    perm = np.argsort(lab, kind="stable")
    _, starts, sizes = np.unique(lab[perm], return_index=True, return_counts=True)
    end = np.repeat(starts + sizes, sizes)  # first sorted position after each one's class
    position = np.arange(n)
    plans = [  # (pairs owned by each sorted position, first partner position)
        (end - position - 1, position + 1),  # same class: later members of its class
        (n - end, end),  # different class: every member of a later class
    ]
    totals = [int(c.sum()) for c, _ in plans]
    if n * (n - 1) // 2 <= max_pairs:
        wanted = totals
    else:
        n_same = min(totals[0], max_pairs // 2)
        wanted = [n_same, min(totals[1], max_pairs - n_same)]
    rng = np.random.default_rng(seed)
    first, second, same = [], [], []
    for is_same, (counts, base), total, want in zip(
        (True, False), plans, totals, wanted, strict=True
    ):
        ids = np.arange(total) if want == total else rng.choice(total, want, replace=False)
        p, q = _decode(ids, counts, base)
        i, j = perm[p], perm[q]
        first.append(np.minimum(i, j))
        second.append(np.maximum(i, j))
        same.append(np.full(want, is_same))
    a, b, s = (np.concatenate(v) for v in (first, second, same))
    order = np.lexsort((b, a))
    first_t, second_t, same_t = (torch.from_numpy(v[order]).to(y.device) for v in (a, b, s))
    return first_t, second_t, same_t


@torch.no_grad()
def pair_verification_metrics(
    embeddings: Tensor,
    labels: Tensor,
    distance: str = "euclidean",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    *,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, float]:
    """:func:`verification_metrics` on pairs from :func:`make_verification_pairs`."""
    x = _inputs.embeddings(embeddings, "embeddings")
    y = _inputs.labels(labels, x.shape[0], x.device, "labels")
    check_choice(distance, "distance", DISTANCES)
    first, second, same = make_verification_pairs(y, max_pairs, seed)
    # pairs per chunk: at most _PAIR_ELEMENTS gathered entries per side, so memory does not
    # grow with the dimension (raw images: D in the tens of thousands)
    chunk = max(1, min(_PAIR_CHUNK, _PAIR_ELEMENTS // max(x.shape[1], 1)))
    parts = [
        rowwise_distance(x[first[s : s + chunk]], x[second[s : s + chunk]], distance)
        for s in range(0, first.numel(), chunk)
    ]
    return verification_metrics(torch.cat(parts), same, fars=fars)
