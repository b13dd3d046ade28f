"""Log-log plot of time against batch size, one line per implementation and K."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cases import IMPLS

STYLES = {"metrickit": "C0", "metrickit-torch": "C4", "pml": "C1", "st": "C2", "torch": "C3"}
NAMES = {"metrickit": "metrickit", "metrickit-torch": "metrickit (torch k-NN)", "pml": "PML",
         "st": "sentence-transformers", "torch": "torch"}


def plot_scaling(results: list[dict[str, Any]], path: str | Path, task: str = "batch_all",
                 dim: int | None = None) -> bool:
    """Save the plot of ``task`` at embedding size ``dim`` (default: 128 if measured, else the
    smallest measured); False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = {r["dim"] for r in results if r["task"] == task and r.get("status") == "ok"}
    if dim is None and dims:
        dim = 128 if 128 in dims else min(dims)
    series: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in results:
        if r["task"] == task and r["dim"] == dim and r.get("status") == "ok":
            series.setdefault((r["impl"], r["k"]), []).append((r["batch"], r["time_s"]))
    if not series:
        return False
    k_min = min(k for _, k in series)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (impl, k), pts in sorted(series.items()):
        pts.sort()
        label = f"{NAMES[impl]} ({IMPLS[(task, impl)].label}), K={k}"
        style = "-" if k == k_min else "--"
        sizes, times = [b for b, _ in pts], [t for _, t in pts]
        ax.plot(sizes, times, marker="o", color=STYLES[impl], linestyle=style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="batch size B",
           ylabel="forward + backward time (s)", title=f"{task}, D={dim}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
