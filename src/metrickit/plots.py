"""Pictures of a run: loss curves, the loss-versus-distance curve of a loss, pair-distance
histograms, 2-D embedding maps, retrieval grids and generic learning curves.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot global state, works
headless), writes a PNG to ``path`` and returns it as a :class:`~pathlib.Path`. Arrays may be
NumPy arrays or torch tensors (on any device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from ._validation import check_choice, check_positive_int
from .distances import rowwise_distance
from .losses import get_loss
from .rundir import atomic_write

ArrayLike = Any  # numpy array, torch tensor or nested sequence of numbers

_RIGHT, _WRONG, _QUERY = "#2ca02c", "#d62728", "#1f77b4"
_EUCLIDEAN_FAMILY = ("euclidean", "squared_euclidean")
_PROBES = ("auto", "pair", "triplet")
_DPI = 110


def _numpy(x: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() and x.dtype != torch.float64 else x
        x = x.numpy()
    arr = np.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def _floats(x: ArrayLike, name: str, ndim: int = 1) -> np.ndarray:
    arr = _numpy(x, name, ndim)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _save(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG atomically (temporary file + rename)."""
    return atomic_write(
        path, lambda f: fig.savefig(f, format="png", dpi=_DPI, bbox_inches="tight")
    )


# ---------------------------------------------------------------------------------------------
# training loss


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores NaNs (the first points average what exists)."""
    ok = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(y) + 1)
    lo = np.maximum(hi - window, 0)
    cnt = ccnt[hi] - ccnt[lo]
    return np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)


def _use_log_scale(*series: np.ndarray) -> bool:
    values = np.concatenate([s[np.isfinite(s)] for s in series])
    return values.size > 1 and values.min() > 0 and values.max() / values.min() > 100


def plot_loss_curve(
    step_losses: ArrayLike,
    epoch_losses: ArrayLike,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Training loss against iterations: every step (thin line), a moving average (when there
    are ≥ 10 steps) and the mean loss of each epoch (markers at the epoch's last step, with an
    epoch axis on top). Epochs are assumed to have equal numbers of steps. The y axis is
    logarithmic when the positive losses span more than two decades."""
    steps = _floats(step_losses, "step_losses")
    epochs = _floats(epoch_losses, "epoch_losses")
    if steps.size == 0 and epochs.size == 0:
        raise ValueError("step_losses and epoch_losses are both empty: nothing to plot")
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    if steps.size:
        x = np.arange(1, steps.size + 1)
        ax.plot(x, steps, lw=0.6, alpha=0.45, color="C0", label="step")
        if steps.size >= 10:
            window = max(2, steps.size // 50)
            ax.plot(x, _smooth(steps, window), lw=1.6, color="C0", label=f"moving avg ({window})")
        per_epoch = steps.size / max(epochs.size, 1)
        ax.set_xlabel("step")
    else:
        per_epoch = 1.0
        ax.set_xlabel("epoch")
    if epochs.size:
        ex = np.arange(1, epochs.size + 1) * per_epoch
        ax.plot(ex, epochs, "o-", color="C1", ms=5, lw=1.2, label="epoch mean")
        if steps.size:
            sec = ax.secondary_xaxis(
                "top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch)
            )
            sec.set_xlabel("epoch")
    if _use_log_scale(steps, epochs):
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "training loss")
    return _save(fig, path)


def plot_eval_curve(
    step_losses: ArrayLike,
    eval_steps: ArrayLike,
    scores: Mapping[str, ArrayLike],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Two panels over the optimiser steps: the training loss of every step (and its moving
    average when there are ≥ 10 steps) above, and each named evaluation score (e.g. the dev
    Spearman) at ``eval_steps`` below (step 0: before training), its highest value labelled."""
    losses = _floats(step_losses, "step_losses")
    at = _floats(eval_steps, "eval_steps")
    if not scores:
        raise ValueError("scores is empty: nothing to plot (use plot_loss_curve for the loss)")
    series = {name: _floats(v, f"scores[{name!r}]") for name, v in scores.items()}
    for name, values in series.items():
        if values.size != at.size:
            raise ValueError(
                f"scores[{name!r}] has {values.size} values for {at.size} eval_steps"
            )
    fig = Figure(figsize=(7.0, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(1, losses.size + 1)
    top.plot(x, losses, lw=0.6, alpha=0.45, color="C0", label="step")
    if losses.size >= 10:
        window = max(2, losses.size // 50)
        top.plot(x, _smooth(losses, window), lw=1.6, color="C0", label=f"moving avg ({window})")
    if losses.size and _use_log_scale(losses):
        top.set_yscale("log")
    top.set_ylabel("training loss")
    top.legend(loc="upper right", fontsize=8)
    for k, (name, values) in enumerate(series.items()):
        bottom.plot(at, values, "o-", ms=4, color=f"C{(k + 1) % 10}", label=name)
        if values.size:
            best = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
            bottom.annotate(f"{values[best]:.2f}", (at[best], values[best]), fontsize=8,
                            textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
    bottom.set_ylabel("evaluation")
    bottom.set_xlabel("step")
    bottom.legend(loc="lower right", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "learning curve")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# loss against distance


@dataclass(frozen=True)
class LossCurve:
    """One curve of :func:`loss_distance_curves`: loss values ``y`` at distances ``x``."""

    x: np.ndarray
    y: np.ndarray
    label: str


def _resolve_loss(
    loss: str | nn.Module, margin: float | None, loss_params: dict[str, object]
) -> tuple[nn.Module, str, float | None]:
    if isinstance(loss, str):
        params = dict(loss_params)
        if margin is not None:
            params["margin"] = margin
        module, name = get_loss(loss, **params), loss
    elif isinstance(loss, nn.Module):
        if margin is not None or loss_params:
            raise ValueError(
                "margin and loss parameters apply only when loss is a registered name; "
                f"got a {type(loss).__name__} module, set them when building it"
            )
        module, name = loss, type(loss).__name__
    else:
        raise TypeError(f"loss must be a registered loss name or an nn.Module, got {loss!r}")
    if any(True for _ in module.parameters()):
        raise ValueError(
            f"cannot draw {name}: it has learnable parameters (centres, proxies, ...), so its "
            "value at a distance depends on their learned state"
        )
    distance = getattr(module, "distance", "euclidean")
    if distance not in _EUCLIDEAN_FAMILY:
        raise ValueError(
            f"cannot draw {name}: curves are drawn against Euclidean distance, but the loss uses "
            f"distance={distance!r}"
        )
    m = getattr(module, "margin", None)
    return module, name, float(m) if isinstance(m, (int, float)) else None


def _evaluate(module: nn.Module, points: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Loss of each batch ``points[i]`` [n, D] with ``labels`` (mean of per-element outputs)."""
    with torch.no_grad():
        return np.array([float(module(p, labels).double().mean()) for p in points])


def _pair_points(d: np.ndarray) -> torch.Tensor:
    pts = np.zeros((d.size, 2, 2))
    pts[:, 1, 0] = d
    return torch.from_numpy(pts)


def _triplet_points(d_ap: np.ndarray, d_an: np.ndarray) -> torch.Tensor:
    """a and p symmetric about n's axis, so n is at d_an from both (needs d_an ≥ d_ap / 2)."""
    pts = np.zeros((d_ap.size, 3, 2))
    pts[:, 0, 0], pts[:, 1, 0] = -d_ap / 2, d_ap / 2
    pts[:, 2, 1] = np.sqrt(np.maximum(d_an**2 - d_ap**2 / 4, 0.0))
    return torch.from_numpy(pts)


def _informative(curves: dict[str, LossCurve]) -> bool:
    ys = [c.y for c in curves.values()]
    return all(np.isfinite(y).all() for y in ys) and any(np.ptp(y) > 1e-12 for y in ys)


def _pair_curves(module: nn.Module, d: np.ndarray) -> dict[str, LossCurve]:
    pts = _pair_points(d)
    return {
        "similar": LossCurve(d, _evaluate(module, pts, torch.tensor([0, 0])), "similar pair"),
        "dissimilar": LossCurve(d, _evaluate(module, pts, torch.tensor([0, 1])), "dissimilar pair"),
    }


def _triplet_curves(module: nn.Module, d: np.ndarray, scale: float) -> dict[str, LossCurve]:
    labels = torch.tensor([0, 0, 1])
    top = float(d[-1])
    fixed_an = top / 2  # lets d(a, p) run over the whole range
    fixed_ap = min(scale / 2, top / 2)
    d_an = np.linspace(fixed_ap / 2, top, d.size)
    return {
        "anchor_positive": LossCurve(
            d,
            _evaluate(module, _triplet_points(d, np.full_like(d, fixed_an)), labels),
            f"against d(a,p), d(a,n) = {fixed_an:.3g} fixed",
        ),
        "anchor_negative": LossCurve(
            d_an,
            _evaluate(module, _triplet_points(np.full_like(d_an, fixed_ap), d_an), labels),
            f"against d(a,n), d(a,p) = {fixed_ap:.3g} fixed",
        ),
    }


def _curves(
    module: nn.Module, name: str, m: float | None, max_distance: float | None, num: int, probe: str
) -> dict[str, LossCurve]:
    check_choice(probe, "probe", _PROBES)
    num = check_positive_int(num, "num")
    scale = m if m else 1.0
    top = 2.5 * scale if max_distance is None else max_distance
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top < float("inf"):
        raise ValueError(f"max_distance must be a finite number > 0, got {max_distance!r}")
    d = np.linspace(0.0, float(top), num)
    errors = []
    for kind in ("pair", "triplet") if probe == "auto" else (probe,):
        try:
            if kind == "pair":
                curves = _pair_curves(module, d)
            else:
                curves = _triplet_curves(module, d, scale)
        except (ValueError, RuntimeError) as err:
            errors.append(f"{kind} batch: {err}")
            continue
        if probe != "auto" or _informative(curves):
            return curves
        errors.append(f"{kind} batch: loss is constant or not finite")
    raise ValueError(f"cannot draw loss {name!r} against distance ({'; '.join(errors)})")


def loss_distance_curves(
    loss: str | nn.Module,
    margin: float | None = None,
    max_distance: float | None = None,
    num: int = 101,
    probe: str = "auto",
    **loss_params: object,
) -> dict[str, LossCurve]:
    """Loss value against Euclidean distance, computed by calling the loss itself.

    ``loss`` is a registered batch-loss name (built with ``margin`` and ``loss_params``) or a
    module called as ``loss(embeddings, labels)``. Distances run over [0, max_distance]
    (default 2.5 × margin, or 2.5 without a margin), on ``num`` points. A loss returning
    per-element values (``reduction="none"``) is averaged.

    Probes (``probe="auto"`` tries "pair", then "triplet"):

    * ``"pair"``: a batch of two points at distance d, same class (key ``"similar"``) and
      different classes (key ``"dissimilar"``) — the contrastive-loss figure of Hadsell et al.
    * ``"triplet"``: a batch {a, p, n} (a, p one class, n another) with n equidistant from a and
      p, so every anchor sees the same triplet. Key ``"anchor_positive"``: loss against d(a, p)
      with d(a, n) fixed at max_distance / 2; key ``"anchor_negative"``: loss against d(a, n)
      (from d(a, p) / 2, the smallest value the geometry allows) with d(a, p) fixed at
      min(margin, max_distance) / 2.

    "auto" keeps the first probe whose curves are finite and not all constant. A ValueError
    naming the loss is raised when neither probe is, and up front for losses with learnable
    parameters or that use a distance other than (squared) Euclidean.
    """
    module, name, m = _resolve_loss(loss, margin, loss_params)
    return _curves(module, name, m, max_distance, num, probe)


def plot_loss_vs_distance(
    loss: str | nn.Module,
    path: str | Path,
    margin: float | None = None,
    max_distance: float | None = None,
    probe: str = "auto",
    **loss_params: object,
) -> Path:
    """Plot :func:`loss_distance_curves`: similar/dissimilar pairs with the margin marked, or the
    two triplet curves; ``loss_params`` build the loss when it is given by name."""
    module, name, m = _resolve_loss(loss, margin, loss_params)
    curves = _curves(module, name, m, max_distance, 101, probe)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for c, curve in zip(("C0", "C3"), curves.values(), strict=True):
        ax.plot(curve.x, curve.y, lw=2, color=c, label=curve.label)
    pair = "similar" in curves
    if pair and m is not None:
        ax.axvline(m, color="0.4", ls="--", lw=1, label=f"margin m = {m:g}")
    ax.set_xlabel("Euclidean distance d" if pair else "Euclidean distance d(a,p) or d(a,n)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    setting = "" if pair else " on a triplet (a, p, n)"
    setting += "" if pair or m is None else f", m = {m:g}"
    ax.set_title(f"{name}: loss against distance{setting}")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# pair distances


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.double()
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    return t


def _chunked_rowwise(
    x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, distance: str
) -> np.ndarray:
    """Distances of the row pairs (i[k], j[k]), 65536 pairs at a time."""
    out = [
        rowwise_distance(x[i[s : s + 65536]], x[j[s : s + 65536]], distance)
        for s in range(0, i.numel(), 65536)
    ]
    return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def pair_distances(
    embeddings: ArrayLike,
    labels: ArrayLike,
    max_pairs: int = 100_000,
    seed: int = 0,
    distance: str = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, neg)``: distances of positive (same-class) and negative pairs, i ≠ j.

    When the set has at most ``max_pairs`` unordered pairs, all of them are used; otherwise
    ``max_pairs`` positive and ``max_pairs`` negative pairs are drawn uniformly (with
    replacement, seeded), so memory stays O(max_pairs) whatever the set size.
    """
    x = _as_tensor(embeddings, "embeddings")
    y = torch.as_tensor(_numpy(labels, "labels", ndim=1)).to(x.device)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"labels must have one entry per embedding: expected {n}, got {len(y)}")
    max_pairs = check_positive_int(max_pairs, "max_pairs")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, 1, device=x.device)
        same = y[i] == y[j]
        return (
            _chunked_rowwise(x, i[same], j[same], distance),
            _chunked_rowwise(x, i[~same], j[~same], distance),
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(y.cpu(), stable=True)
    sorted_y = y.cpu()[order]
    _, counts = torch.unique_consecutive(sorted_y, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    start_of = torch.repeat_interleave(starts, counts)  # per sorted position
    count_of = torch.repeat_interleave(counts, counts)
    pos, neg = np.zeros(0), np.zeros(0)
    has_pos = torch.nonzero(count_of > 1).flatten()
    if has_pos.numel():
        a = has_pos[torch.randint(has_pos.numel(), (max_pairs,), generator=g)]
        off = (torch.rand(max_pairs, generator=g) * (count_of[a] - 1)).long()
        b = start_of[a] + off
        b = b + (b >= a).long()  # skip a itself within its class block
        pos = _chunked_rowwise(x, order[a].to(x.device), order[b].to(x.device), distance)
    has_neg = torch.nonzero(count_of < n).flatten()
    if has_neg.numel():
        a = has_neg[torch.randint(has_neg.numel(), (max_pairs,), generator=g)]
        r = (torch.rand(max_pairs, generator=g) * (n - count_of[a])).long()
        b = r + (r >= start_of[a]).long() * count_of[a]  # skip a's class block
        neg = _chunked_rowwise(x, order[a].to(x.device), order[b].to(x.device), distance)
    return pos, neg


def plot_distance_histograms(
    pos_before: ArrayLike,
    neg_before: ArrayLike,
    pos_after: ArrayLike,
    neg_after: ArrayLike,
    path: str | Path,
) -> Path:
    """Two panels (before / after training), each with density histograms of positive- and
    negative-pair distances on shared bins; a good embedding separates the two."""
    fig = Figure(figsize=(10.0, 3.8))
    axes = fig.subplots(1, 2)
    panels = (("before training", pos_before, neg_before), ("after training", pos_after, neg_after))
    for ax, (name, pos, neg) in zip(axes, panels, strict=True):
        pos = _floats(pos, f"pos ({name})")
        neg = _floats(neg, f"neg ({name})")
        pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
        both = np.concatenate([pos, neg])
        if both.size == 0:
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        else:
            bins = np.histogram_bin_edges(both, bins=min(50, max(5, int(np.sqrt(both.size)))))
            for values, label, color in ((pos, "positive", "C2"), (neg, "negative", "C3")):
                if values.size:
                    ax.hist(
                        values,
                        bins=bins,
                        density=True,
                        alpha=0.55,
                        color=color,
                        label=f"{label} pairs (n={values.size}, mean {values.mean():.3g})",
                    )
                else:
                    ax.plot([], [], color=color, label=f"no {label} pairs")
            ax.legend(fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("distance")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# embedding map


def _project_2d(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates and the name of the projection actually used."""
    n, dim = x.shape
    if dim <= 2 or n < 3:
        out = np.zeros((n, 2))
        out[:, : min(dim, 2)] = x[:, :2]
        return out, "raw coordinates"
    if method == "tsne" and n >= 5:
        from sklearn.manifold import TSNE

        tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
        return tsne.fit_transform(x), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(x), "PCA"


def _class_name(label: object, class_names: Sequence[str] | Mapping[Any, str] | None) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    idx = int(label)  # type: ignore[call-overload]
    return str(class_names[idx]) if 0 <= idx < len(class_names) else str(label)


def plot_embedding_map(
    embeddings: ArrayLike,
    labels: ArrayLike,
    path: str | Path,
    method: str = "tsne",
    seed: int = 0,
    max_points: int = 3000,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    title: str | None = None,
) -> Path:
    """2-D map (t-SNE or PCA, seeded) of at most ``max_points`` embeddings (a seeded random
    subset), coloured by class, with a legend when there are ≤ 20 classes. Embeddings with ≤ 2
    dimensions are drawn as they are; t-SNE on fewer than 5 points falls back to PCA."""
    check_choice(method, "method", ("tsne", "pca"))
    max_points = check_positive_int(max_points, "max_points")
    x = _floats(embeddings, "embeddings", ndim=2)
    y = _numpy(labels, "labels", ndim=1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must have one entry per embedding: expected {x.shape[0]}, got {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError("embeddings is empty: nothing to plot")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contains NaN or infinite values")
    if x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x, y = x[keep], y[keep]
    xy, used = _project_2d(x, method, seed)
    classes = np.unique(y)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    cmap = "tab10" if classes.size <= 10 else "tab20"
    for k, c in enumerate(classes):
        sel = y == c
        ax.scatter(
            xy[sel, 0],
            xy[sel, 1],
            s=10,
            alpha=0.8,
            color=_cmap_color(cmap, k),
            label=_class_name(c, class_names),
        )
    if classes.size <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="best", ncols=1 + classes.size // 11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"embeddings ({used}, {x.shape[0]} points, {classes.size} classes)")
    return _save(fig, path)


def _cmap_color(name: str, k: int) -> tuple[float, ...]:
    cmap = colormaps[name]
    return cmap(k % cmap.N)


# ---------------------------------------------------------------------------------------------
# retrieval grid


def _image(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """[C, H, W] in [0, 1] → an array imshow takes, and the colormap for 1 channel."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.transpose(img[:3], (1, 2, 0)), None


def _frame(ax: Any, color: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def plot_retrieval_grid(
    query_images: ArrayLike,
    neighbour_images: ArrayLike,
    correct: ArrayLike,
    path: str | Path,
    query_labels: ArrayLike | None = None,
    neighbour_labels: ArrayLike | None = None,
) -> Path:
    """One row per query: the query (blue frame) then its top-k neighbours, framed green when
    ``correct`` (same class) and red otherwise. Images are [Q, C, H, W] and [Q, k, C, H, W] in
    [0, 1] with C = 1 (grey) or 3 (RGB); ``correct`` is [Q, k]; labels, if given, are titles."""
    q = _floats(query_images, "query_images", ndim=4)
    nb = _floats(neighbour_images, "neighbour_images", ndim=5)
    ok = _numpy(correct, "correct", ndim=2).astype(bool)
    if q.shape[0] == 0:
        raise ValueError("query_images is empty: nothing to plot")
    if q.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got query_images of shape {q.shape}")
    if nb.shape[0] != q.shape[0] or nb.shape[2:] != q.shape[1:]:
        raise ValueError(
            f"neighbour_images must be [Q, k, C, H, W] = [{q.shape[0]}, k, "
            f"{', '.join(map(str, q.shape[1:]))}], got shape {nb.shape}"
        )
    if ok.shape != nb.shape[:2]:
        raise ValueError(f"correct must have shape {nb.shape[:2]} (Q, k), got {ok.shape}")
    ql = None if query_labels is None else _numpy(query_labels, "query_labels", ndim=1)
    nl = None if neighbour_labels is None else _numpy(neighbour_labels, "neighbour_labels", 2)
    n_q, k = ok.shape
    fig = Figure(figsize=(1.25 * (k + 1), 1.35 * n_q + 0.3))
    axes = np.array(fig.subplots(n_q, k + 1, squeeze=False))
    for r in range(n_q):
        img, cmap = _image(q[r])
        axes[r, 0].imshow(img, cmap=cmap, vmin=0, vmax=1)
        _frame(axes[r, 0], _QUERY, 3)
        axes[r, 0].set_title("query" + ("" if ql is None else f" {ql[r]}"), fontsize=7)
        for c in range(k):
            img, cmap = _image(nb[r, c])
            ax = axes[r, c + 1]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            _frame(ax, _RIGHT if ok[r, c] else _WRONG, 3)
            ax.set_title(f"#{c + 1}" + ("" if nl is None else f" {nl[r, c]}"), fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# generic learning curves


def plot_curves(
    curves: Mapping[str, ArrayLike],
    path: str | Path,
    xlabel: str = "epoch",
    title: str | None = None,
) -> Path:
    """One stacked subplot per named curve (each with its own y scale), x = 1, 2, ..."""
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig = Figure(figsize=(6.5, 2.2 * len(curves) + 0.4))
    axes = np.atleast_1d(fig.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0])
    for k, (ax, (name, values)) in enumerate(zip(axes, curves.items(), strict=True)):
        y = _floats(values, f"curves[{name!r}]")
        ax.plot(
            np.arange(1, y.size + 1), y, "o-" if y.size <= 50 else "-", ms=3, color=f"C{k % 10}"
        )
        if y.size == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
