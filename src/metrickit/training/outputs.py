"""What a finished run writes: history.csv, metrics.json, the metrics table, plots and report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import plots
from ..evaluation import knn
from ..report import format_metrics_table, write_report
from ..rundir import atomic_write_text

COLUMNS = ("raw", "untrained", "trained")
COLUMN_TITLES = {"raw": "raw input", "untrained": "untrained", "trained": "trained"}
_SHARE_KEYS = ("easy", "semihard", "hard")
_METRIC_KEYS = ("test_precision_at_1", "test_map_at_r")
_CURVE_KEYS = (*_SHARE_KEYS, *_METRIC_KEYS)
_MAP_POINTS = 1000
_GRID_QUERIES, _GRID_NEIGHBOURS = 6, 5


@dataclass
class RunRecord:
    """Everything the outputs of a run are drawn from: plain values, no trainer.

    ``results`` maps "raw" / "untrained" / "trained" to metrics; ``embeddings_before`` and
    ``embeddings_after`` are the test embeddings of the untrained and the trained network;
    ``distance`` is the run's distance (the loss's), used for the retrieval grid.
    """

    run_dir: Path
    title: str
    config: Mapping[str, Any]
    results: Mapping[str, Any]
    epochs_trained: int
    data_name: str
    history: Sequence[Mapping[str, float]]
    step_losses: Sequence[float]
    loss_fn: nn.Module
    distance: str
    test_inputs: Tensor
    test_labels: Tensor
    test_classes: Sequence[str]
    image_shape: tuple[int, ...] | None
    embeddings_before: Tensor
    embeddings_after: Tensor


def history_csv(history: Sequence[Mapping[str, float]]) -> str:
    """CSV text of the per-epoch history (columns in first-seen order; missing cells empty)."""
    fields: list[str] = []
    for row in history:
        fields += [key for key in row if key not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields or ["epoch"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


def metric_columns(results: Mapping[str, Mapping[str, float]]) -> dict[str, Mapping[str, float]]:
    """Results keyed by display title, in the order raw input / untrained / trained."""
    return {COLUMN_TITLES[c]: results[c] for c in COLUMNS if c in results}


def format_results_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The metrics table printed after a run: metrics as rows, one column per network."""
    return format_metrics_table(metric_columns(results))


def write_run_outputs(record: RunRecord) -> list[str]:
    """metrics.json, history.csv, the figures and report.html into ``record.run_dir``.

    Every file is written atomically. Returns notes on figures that could not be drawn for this
    run (e.g. a loss with learnable parameters has no loss-versus-distance curve).
    """
    run_dir, results = record.run_dir, record.results
    metrics = {
        **{c: dict(results[c]) for c in COLUMNS if c in results},
        "epochs_trained": record.epochs_trained,
        "dataset": record.data_name,
        "num_test_samples": int(record.test_labels.shape[0]),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(run_dir / "history.csv", history_csv(record.history))
    images, notes = _figures(record)
    write_report(
        run_dir,
        title=record.title,
        config=record.config,
        metrics=metric_columns(results),
        images=images,
        notes="\n".join(notes) or None,
    )
    return notes


def _curves(history: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """Per-epoch series with at least two values: a single point is not a curve."""
    curves = {k: [row.get(k, float("nan")) for row in history] for k in _CURVE_KEYS}
    return {k: v for k, v in curves.items() if sum(x == x for x in v) >= 2}


def _figures(record: RunRecord) -> tuple[list[tuple[Path, str]], list[str]]:
    run_dir, history = record.run_dir, record.history
    images, notes = [], []
    if record.step_losses:
        path = plots.plot_loss_curve(
            record.step_losses, [row["loss"] for row in history], run_dir / "loss_curve.png"
        )
        images.append((path, "training loss against iterations"))
    curves = _curves(history)
    if curves:
        path = plots.plot_curves(curves, run_dir / "learning_curves.png")
        what = " and ".join(
            part for part, keys in (("triplet difficulty shares", _SHARE_KEYS),
                                    ("test metrics", _METRIC_KEYS)) if set(keys) & set(curves)
        )  # fmt: skip
        images.append((path, f"per-epoch {what}"))
    try:
        path = plots.plot_loss_vs_distance(record.loss_fn, run_dir / "loss_vs_distance.png")
        images.append((path, "the loss against distance"))
    except ValueError as exc:
        notes.append(f"no loss-versus-distance figure: {exc}")
    labels, before, after = record.test_labels, record.embeddings_before, record.embeddings_after
    path = plots.plot_distance_histograms(
        *plots.pair_distances(before, labels), *plots.pair_distances(after, labels),
        run_dir / "distance_histograms.png",
    )
    images.append((path, "positive and negative pair distances, before and after training"))
    path = plots.plot_embedding_map(
        after, labels, run_dir / "embedding_map.png", seed=int(record.config.get("seed", 0)),
        method="pca", max_points=_MAP_POINTS, title="test embeddings (PCA)",
    )
    images.append((path, "2-D map of the test embeddings of the trained network"))
    if record.image_shape is not None:
        path, failures = _retrieval_grid(record)
        caption = f"test queries and their nearest neighbours ({record.distance} distance)"
        if failures:
            caption += f"; {failures} of the queries shown have a wrong first neighbour"
        images.append((path, caption))
    return images, notes


def grid_queries(
    embeddings: Tensor, labels: Tensor, distance: str, count: int, seed: int
) -> tuple[Tensor, Tensor, int]:
    """``(queries, neighbours [q, n], failures)`` for the retrieval grid.

    Neighbours are the nearest test samples under ``distance`` (self excluded). Half of the
    queries (or as many as exist) are seeded picks among those whose first neighbour has another
    class, so that mistakes appear in the grid when there are any; the rest are seeded picks
    among the others. ``failures`` counts the queries shown with a wrong first neighbour.
    """
    n = embeddings.shape[0]
    _, neighbours = knn(embeddings, k=min(_GRID_NEIGHBOURS, n - 1), distance=distance)
    wrong = labels[neighbours[:, 0]] != labels
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    failed, passed = order[wrong[order]], order[~wrong[order]]
    count = min(count, n)
    take = min(len(failed), max(count // 2, 1) if len(failed) else 0)
    queries = torch.cat([failed[:take], passed[: count - take]])
    if len(queries) < count:
        queries = torch.cat([queries, failed[take : take + count - len(queries)]])
    return queries, neighbours[queries], int(wrong[queries].sum())


def _retrieval_grid(record: RunRecord) -> tuple[Path, int]:
    labels, classes = record.test_labels, record.test_classes
    queries, neighbours, failures = grid_queries(
        record.embeddings_after, labels, record.distance, _GRID_QUERIES,
        int(record.config.get("seed", 0)),
    )  # fmt: skip
    path = plots.plot_retrieval_grid(
        record.test_inputs[queries],
        record.test_inputs[neighbours],
        labels[neighbours] == labels[queries, None],
        record.run_dir / "retrieval_grid.png",
        query_labels=[classes[i] for i in labels[queries]],
        neighbour_labels=[[classes[i] for i in row] for row in labels[neighbours]],
    )
    return path, failures
