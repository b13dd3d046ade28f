"""What a finished run writes: history.csv, metrics.json, the metrics table, plots and report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import plots
from ..report import format_metrics_table, write_report
from .checkpoint import atomic_write_text

if TYPE_CHECKING:
    from .trainer import Trainer

COLUMNS = ("raw", "untrained", "trained")
COLUMN_TITLES = {"raw": "raw input", "untrained": "untrained", "trained": "trained"}
_CURVE_KEYS = ("easy", "semihard", "hard", "test_precision_at_1", "test_map_at_r")
_MAP_POINTS = 1000
_GRID_QUERIES, _GRID_NEIGHBOURS = 6, 5


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


def write_run_outputs(trainer: Trainer, results: Mapping[str, Any]) -> list[str]:
    """metrics.json, history.csv, the figures and report.html into the trainer's run directory.

    Returns notes on figures that could not be drawn for this run (e.g. a loss with learnable
    parameters has no loss-versus-distance curve).
    """
    run_dir = trainer.run_dir
    metrics = {
        **{c: dict(results[c]) for c in COLUMNS},
        "epochs_trained": trainer.epoch,
        "dataset": trainer.data_name,
        "num_test_samples": int(trainer.y_test.shape[0]),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(run_dir / "history.csv", history_csv(trainer.history))
    images, notes = _figures(trainer)
    write_report(
        run_dir,
        title=f"metrickit run: {trainer.config.loss} on {trainer.data_name}",
        config=trainer.config.to_dict(),
        metrics=metric_columns(results),
        images=images,
        notes="\n".join(notes) or None,
    )
    return notes


def _figures(trainer: Trainer) -> tuple[list[tuple[Path, str]], list[str]]:
    run_dir, history = trainer.run_dir, trainer.history
    images, notes = [], []
    if trainer.step_losses:
        path = plots.plot_loss_curve(
            trainer.step_losses, [row["loss"] for row in history], run_dir / "loss_curve.png"
        )
        images.append((path, "training loss against iterations"))
    curves = {k: [row.get(k, float("nan")) for row in history] for k in _CURVE_KEYS}
    curves = {k: v for k, v in curves.items() if any(x == x for x in v)}
    if curves:
        path = plots.plot_curves(curves, run_dir / "learning_curves.png")
        images.append((path, "per-epoch triplet difficulty shares and test metrics"))
    try:
        path = plots.plot_loss_vs_distance(trainer.loss_fn, run_dir / "loss_vs_distance.png")
        images.append((path, "the loss against distance"))
    except ValueError as exc:
        notes.append(f"no loss-versus-distance figure: {exc}")
    labels = trainer.y_test
    before = trainer.embed(trainer.x_test, trainer.untrained_model())
    after = trainer.embed(trainer.x_test)
    path = plots.plot_distance_histograms(
        *plots.pair_distances(before, labels), *plots.pair_distances(after, labels),
        run_dir / "distance_histograms.png",
    )
    images.append((path, "positive and negative pair distances, before and after training"))
    path = plots.plot_embedding_map(
        after, labels, run_dir / "embedding_map.png", seed=trainer.config.seed,
        method="pca", max_points=_MAP_POINTS, title="test embeddings (PCA)",
    )
    images.append((path, "2-D map of the test embeddings of the trained network"))
    if trainer.image_shape is not None:
        path = _retrieval_grid(trainer, after)
        images.append((path, "test queries and their nearest neighbours"))
    return images, notes


def _retrieval_grid(trainer: Trainer, embeddings: Tensor) -> Path:
    """Seeded test queries with their top neighbours (self excluded) in the trained embedding."""
    n = embeddings.shape[0]
    g = torch.Generator().manual_seed(trainer.config.seed)
    queries = torch.randperm(n, generator=g)[: min(_GRID_QUERIES, n)]
    d = torch.cdist(embeddings[queries], embeddings)
    d[torch.arange(len(queries)), queries] = float("inf")
    neighbours = d.topk(min(_GRID_NEIGHBOURS, n - 1), largest=False).indices
    labels = trainer.y_test
    return plots.plot_retrieval_grid(
        trainer.x_test[queries],
        trainer.x_test[neighbours],
        labels[neighbours] == labels[queries, None],
        trainer.run_dir / "retrieval_grid.png",
        query_labels=[trainer.test_classes[i] for i in labels[queries]],
        neighbour_labels=[[trainer.test_classes[i] for i in row] for row in labels[neighbours]],
    )
