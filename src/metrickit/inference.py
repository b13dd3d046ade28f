"""From a trained run to answers: embed new data, index a gallery, search it.

    >>> embedder = mk.load_run("runs/digits")              # the network + its preprocessing
    >>> emb = embedder.embed("queries.csv")                 # [N, D] float32 NumPy array
    >>> index = mk.inference.build_index(embedder, "gallery.npz")
    >>> index.save("runs/digits-index")
    >>> result = mk.inference.Index.load("runs/digits-index").search("queries.csv", k=10)
    >>> result.ids, result.labels, result.distances            # [Q, k] each

A run's ``config.json`` records what its network needs (``inputs``: input shape, image shape,
the training split's standardisation, the run's distance), so nothing but the run directory and
the new data is read. Data is anything :func:`metrickit.data.load_dataset` reads (a built-in
name, an image folder, a CSV, ``.npy``/``.npz``), read with the run's data options; labels are
optional (a CSV without the label column, a ``.npy`` of inputs only).

An index directory holds ``index.json`` (distance, index kind, the run it was built with),
``embeddings.npy``, ``ids.npy`` and ``labels.npy``: plain arrays read with
``allow_pickle=False``, never a pickle. Search is exact (``kind="flat"``: faiss ``IndexFlat``
when faiss is installed, the chunked torch search otherwise) or approximate with faiss
(``"ivf"``, ``"hnsw"``; see :class:`metrickit.evaluation.ann.ANNIndex`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import LabelledData, load_dataset
from .evaluation.ann import INDEXES, ANNIndex
from .models import build_model
from .rundir import RunDir, check_run
from .training.checkpoint import load_checkpoint
from .training.config import INPUTS_KEY, TrainConfig, read_run_config

INDEX_KIND = "index"
INDEX_FILE = "index.json"
_CONFIG = "config.json"
_LAST = Path("checkpoints") / "last.pt"

Data = str | Path | LabelledData | Tensor | np.ndarray


@dataclass
class Inputs:
    """Inputs to embed with their (optional) labels and ids (row numbers unless given)."""

    x: Tensor
    labels: list[str] | None
    ids: list[str]


class Embedder:
    """A trained network with its preprocessing, ready to embed new data (see :func:`load_run`).

    Attributes: ``model`` (in eval mode), ``config`` (the run's :class:`TrainConfig`),
    ``input_shape``, ``standardization`` (mean/std lists or None), ``distance`` (the run's),
    ``device``.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        input_shape: tuple[int, ...],
        standardization: dict[str, list[float]] | None = None,
        distance: str = "euclidean",
        device: str | torch.device = "cpu",
        run_dir: str | Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.input_shape = tuple(input_shape)
        self.standardization = standardization
        self.distance = distance
        self.run_dir = None if run_dir is None else Path(run_dir)

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.config.model!r}, input_shape={self.input_shape}, "
            f"embedding_dim={self.config.embedding_dim}, distance={self.distance!r})"
        )

    def read(self, data: Data) -> Inputs:
        """The inputs of ``data`` (a path, a built-in name, a LabelledData or an array
        [N, *input_shape]) as the network expects them, preprocessing applied."""
        labels: list[str] | None = None
        if isinstance(data, LabelledData):
            x, labels = data.x, [data.classes[i] for i in data.y.tolist()]
        elif isinstance(data, (Tensor, np.ndarray)):
            x = torch.as_tensor(np.asarray(data) if isinstance(data, np.ndarray) else data)
            x = x.float()
        else:
            x, labels = self._load(data)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"data of shape {tuple(x.shape[1:])} per sample does not fit the run's network, "
                f"which takes {self.input_shape}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("data holds values that are not finite (NaN or inf)")
        if self.standardization is not None:
            from .training.datasets import standardize

            x = standardize(x, self.standardization)
        return Inputs(x, labels, [str(i) for i in range(x.shape[0])])

    def _load(self, spec: str | Path) -> tuple[Tensor, list[str] | None]:
        cfg = self.config
        path = Path(spec).expanduser()
        if path.suffix.lower() == ".npy" and path.is_file():
            array = np.load(path, allow_pickle=False)
            if tuple(array.shape[1:]) == self.input_shape:  # inputs only, no label column
                return _float_inputs(array, path), None
        options: dict[str, Any] = {"check": False}
        if path.is_dir():
            size = cfg.image_size
            options.update(mode=cfg.image_mode, image_size=tuple(size) if size else size)
        elif path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                header = [h.strip() for h in f.readline().split(",")]
            options["label_column"] = cfg.label_column if cfg.label_column in header else None
        data = load_dataset(spec, **options)
        labelled = not (path.suffix.lower() == ".csv" and options.get("label_column") is None)
        return data.x, [data.classes[i] for i in data.y.tolist()] if labelled else None

    def embed(
        self, data: Data, batch_size: int = 1024, progress: bool = False
    ) -> np.ndarray:
        """[N, D] float32 embeddings of ``data``, computed in batches without gradients."""
        return self.embed_inputs(self.read(data), batch_size, progress)

    def embed_inputs(self, inputs: Inputs, batch_size: int = 1024, progress: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        x = inputs.x
        parts = []
        with torch.no_grad():
            for lo in tqdm(range(0, x.shape[0], batch_size), desc="embedding",
                           disable=not progress, leave=False, unit="batch"):  # fmt: skip
                parts.append(self.model(x[lo : lo + batch_size].to(self.device)).float().cpu())
        return torch.cat(parts).numpy()


def _float_inputs(array: np.ndarray, path: Path) -> Tensor:
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: inputs must be numeric, got dtype {array.dtype}")
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.as_tensor(array.astype(np.float32) / scale)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Embedder:
    """The trained network of a ``metrickit train`` run with its preprocessing.

    Reads the run's ``config.json`` and its last checkpoint (``weights_only=True``); no training
    data is loaded.
    """
    run_dir = Path(run_dir)
    check_run(run_dir, "train", _CONFIG)
    saved = read_run_config(run_dir / _CONFIG)
    config = TrainConfig.from_dict(saved)
    inputs = saved.get(INPUTS_KEY)
    if not isinstance(inputs, dict) or "input_shape" not in inputs:
        raise ValueError(
            f"{str(run_dir)!r} was written before runs recorded their input shape; retrain it "
            "with this version of metrickit"
        )
    model = build_model(
        config.model, inputs["input_shape"], embedding_dim=config.embedding_dim,
        normalize=config.normalize,
    )  # fmt: skip
    state = load_checkpoint(run_dir / _LAST)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{run_dir / _LAST} does not fit the run's network: {first}") from None
    return Embedder(
        model, config, tuple(inputs["input_shape"]), inputs.get("standardization"),
        inputs.get("distance", "euclidean"), device, run_dir,
    )  # fmt: skip


@dataclass
class SearchResult:
    """Neighbours of Q queries: gallery ``indices``, ``ids``, ``labels`` (None when the gallery
    has none) and ``distances``, each [Q, k], nearest first."""

    indices: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    distances: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One record per (query, rank): query, rank, id, label, distance."""
        out = []
        for q in range(self.indices.shape[0]):
            for r in range(self.indices.shape[1]):
                out.append({
                    "query": q, "rank": r + 1, "id": str(self.ids[q, r]),
                    "label": None if self.labels is None else str(self.labels[q, r]),
                    "distance": float(self.distances[q, r]),
                })  # fmt: skip
        return out


class Index:
    """Gallery embeddings with their ids and labels, searchable and saved without pickle.

    Args:
        embeddings: [M, D] gallery embeddings.
        ids, labels: one string per row (ids default to row numbers; labels may be None).
        distance: the search distance (a run's index uses the run's).
        kind: "flat" (exact) | "ivf" | "hnsw" (approximate, with faiss).
        run_dir: the run whose network made the embeddings (to embed queries).
    """

    def __init__(
        self,
        embeddings: np.ndarray | Tensor,
        ids: list[str] | np.ndarray | None = None,
        labels: list[str] | np.ndarray | None = None,
        distance: str = "euclidean",
        kind: str = "flat",
        run_dir: str | Path | None = None,
    ) -> None:
        self.embeddings = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0:
            raise ValueError(f"embeddings must be [M, D] with M >= 1, got {self.embeddings.shape}")
        m = len(self.embeddings)
        self.ids = np.asarray([str(i) for i in range(m)] if ids is None else ids, dtype=str)
        self.labels = None if labels is None else np.asarray(labels, dtype=str)
        for name, values in (("ids", self.ids), ("labels", self.labels)):
            if values is not None and values.shape != (m,):
                raise ValueError(f"{name} must hold one entry per embedding ({m}), got "
                                 f"{values.shape}")  # fmt: skip
        self.kind = kind
        self.run_dir = None if run_dir is None else str(run_dir)
        self._ann = ANNIndex(torch.from_numpy(self.embeddings), distance, kind)
        self.distance = distance

    def __len__(self) -> int:
        return len(self.embeddings)

    def search(
        self, queries: Data, k: int = 10, embedder: Embedder | None = None,
        batch_size: int = 1024, progress: bool = False,
    ) -> SearchResult:
        """The ``k`` nearest gallery items of each query: query embeddings [Q, D], or data
        embedded with ``embedder`` (default: the index's run)."""
        if isinstance(queries, (np.ndarray, Tensor)) and np.ndim(queries) == 2 and (
            np.shape(queries)[1] == self.embeddings.shape[1] and embedder is None
        ):
            emb = np.asarray(queries, dtype=np.float32)
        else:
            embedder = embedder or self.embedder()
            emb = embedder.embed(queries, batch_size, progress)
        k = min(int(k), len(self))
        dist, idx = self._ann.search(torch.from_numpy(np.ascontiguousarray(emb)), k=k)
        idx = idx.numpy()
        return SearchResult(
            idx, self.ids[idx], None if self.labels is None else self.labels[idx], dist.numpy()
        )

    def embedder(self) -> Embedder:
        """The network of the run this index was built with."""
        if self.run_dir is None:
            raise ValueError("this index records no run: pass query embeddings or an embedder")
        return load_run(self.run_dir)

    # ----------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the index into a new directory (refused if it holds anything)."""
        with RunDir.create(path, INDEX_KIND) as out:
            out.write(Path("embeddings.npy"), lambda f: np.save(f, self.embeddings))
            out.write(Path("ids.npy"), lambda f: np.save(f, self.ids))
            if self.labels is not None:
                out.write(Path("labels.npy"), lambda f: np.save(f, self.labels))
            out.write_json(INDEX_FILE, {
                "distance": self.distance, "kind": self.kind, "run_dir": self.run_dir,
                "count": len(self), "dim": int(self.embeddings.shape[1]),
                "labels": self.labels is not None,
            })  # fmt: skip
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """An index saved by :meth:`save` (arrays read with ``allow_pickle=False``)."""
        path = Path(path)
        check_run(path, INDEX_KIND, INDEX_FILE)
        try:
            info = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))
            arrays = {
                name: np.load(path / f"{name}.npy", allow_pickle=False)
                for name in ("embeddings", "ids", *(("labels",) if info["labels"] else ()))
            }
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{str(path)!r} is not a readable metrickit index: {exc}") from None
        return cls(arrays["embeddings"], arrays["ids"], arrays.get("labels"),
                   info["distance"], info.get("kind", "flat"), info.get("run_dir"))  # fmt: skip


def build_index(
    embedder: Embedder, gallery: Data, kind: str = "flat", batch_size: int = 1024,
    progress: bool = False,
) -> Index:
    """Embed ``gallery`` with the run's network and index it under the run's distance."""
    if kind not in INDEXES:
        raise ValueError(f"unknown index kind {kind!r}; valid: {', '.join(INDEXES)}")
    inputs = embedder.read(gallery)
    emb = embedder.embed_inputs(inputs, batch_size, progress)
    run = None if embedder.run_dir is None else embedder.run_dir.resolve()
    return Index(emb, inputs.ids, inputs.labels, embedder.distance, kind, run)
