"""The training configuration: one flat, validated record of every option of a run.

A config can come from defaults, a YAML/TOML/JSON file and command-line flags (later sources
override earlier ones); the resolved config is saved with the run as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._validation import renamed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
PROTOCOLS = ("holdout", "zero_shot")
MINING = ("all", "hard", "semihard")
IMAGE_MODES = ("L", "RGB")
AUGMENTATIONS = ("none", "crop_flip", "torchvision")
PRECISIONS = ("32", "bf16", "fp16")
SCHEDULES = ("constant", "cosine", "linear")
# Options that may change when a run is resumed: more epochs, a moved run directory, or how
# the data is loaded (workers, pinned memory), which leaves the batches as they were.
RESUMABLE_CHANGES = ("epochs", "output", "workers", "pin_memory")
# config.json also records what a saved model needs to embed new data (see Trainer.run_inputs)
INPUTS_KEY = "inputs"


@dataclass
class TrainConfig:
    """Every option of a training run (see docs/training.md).

    Defaults: digits data, MLP with 64-D L2-normalised embeddings, triplet loss with its own
    defaults (``mining=None`` keeps the loss's own ``mining``; ``miner`` is its deprecated name),
    P×K batches with K = 4 and P = 8 or the number of training classes when fewer
    (``p=None``), Adam at 1e-3 (the loss's own parameters at ``loss_lr``; None: 100× lr for proxy
    losses, lr otherwise),
    10 epochs, seed 0, hold-out split with the protocol's default test size (``test_size=None``:
    20% of the samples for "holdout", half of the classes for "zero_shot"), evaluation once at
    the end (``eval_every=0``).

    Data options: ``label_column`` (CSV files), ``image_size`` (image folders: resize to this
    side, or ``[height, width]``), ``image_mode`` ("L" greyscale or "RGB", image folders) and
    ``standardize`` (z-score every feature with the training split's mean and standard
    deviation; feature vectors only, applied again when the run's model embeds new data).

    Open-trainer options (docs/training.md): ``stream`` (read an image folder from disk on access
    instead of loading it), ``augment`` ("none", "crop_flip": built-in random resized crop and
    flip, "torchvision": the same with torchvision), ``weights`` (local weights file for a backbone
    ``model`` spec), ``freeze_epochs`` (train only the head of a backbone for the first epochs),
    ``precision`` ("32", "bf16", "fp16"), ``schedule`` ("constant", "cosine", "linear" decay per
    step) after ``warmup_steps`` of linear warmup, ``grad_clip`` (max gradient norm),
    ``validation_size`` (held out of the training split with the same protocol; evaluated every
    ``eval_every`` epochs, every epoch when 0), ``best_metric`` (validation metric that selects
    ``checkpoints/best.pt``), ``patience`` (stop after that many validations without
    improvement; 0: never), ``workers`` and ``pin_memory`` (DataLoader), ``tensorboard`` (log to
    ``<output>/tensorboard``). ``output=None`` trains in memory: no run directory.
    """

    dataset: str = "digits"
    model: str = "mlp"
    embedding_dim: int = 64
    normalize: bool = True
    loss: str = "triplet"
    loss_params: dict[str, Any] = field(default_factory=dict)
    mining: str | None = None
    p: int | None = None
    k: int = 4
    batches_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    loss_lr: float | None = None
    weight_decay: float = 0.0
    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    protocol: str = "holdout"
    test_size: float | int | None = None
    eval_every: int = 0
    output: str | None = "runs/train"
    label_column: str = "label"
    image_size: int | list[int] | None = None
    image_mode: str = "L"
    standardize: bool = False
    stream: bool = False
    augment: str = "none"
    weights: str | None = None
    freeze_epochs: int = 0
    precision: str = "32"
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    validation_size: float | int | None = None
    best_metric: str = "map_at_r"
    patience: int = 0
    workers: int = 0
    pin_memory: bool = False
    tensorboard: bool = False
    miner: InitVar[str | None] = None  # deprecated name of mining

    def __post_init__(self, miner: str | None = None) -> None:
        self.mining = renamed(self.mining, miner, "mining", "miner", "TrainConfig")
        _check_str(self.dataset, "dataset")
        _check_str(self.model, "model")
        _check_str(self.loss, "loss")
        if self.output is not None:
            _check_str(self.output, "output")
        self._check_open_trainer_options()
        for name in ("embedding_dim", "k", "epochs"):
            _check_int(getattr(self, name), name, minimum=1)
        if self.p is not None:
            _check_int(self.p, "p", minimum=1)
        _check_str(self.label_column, "label_column")
        _check_choice(self.image_mode, "image_mode", IMAGE_MODES)
        if isinstance(self.image_size, tuple):
            self.image_size = list(self.image_size)
        size = self.image_size
        if isinstance(size, list) and len(size) == 1:
            size = self.image_size = size[0]
        if size is not None and not (
            isinstance(size, list) and len(size) == 2 or isinstance(size, int)
        ):
            raise ValueError(f"image_size must be an integer or [height, width], got {size!r}")
        for side in size if isinstance(size, list) else [] if size is None else [size]:
            _check_int(side, "image_size", minimum=1)
        _check_int(self.seed, "seed", minimum=0)
        _check_int(self.eval_every, "eval_every", minimum=0)
        if self.batches_per_epoch is not None:
            _check_int(self.batches_per_epoch, "batches_per_epoch", minimum=1)
        for name in ("normalize", "standardize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.loss_params, Mapping) or not all(
            isinstance(key, str) for key in self.loss_params
        ):
            raise ValueError(
                f"loss_params must be a mapping of parameter names to values, "
                f"got {self.loss_params!r}"
            )
        self.loss_params = dict(self.loss_params)
        _check_choice(self.mining, "mining", MINING, allow_none=True)
        _check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        _check_choice(self.device, "device", DEVICES)
        _check_choice(self.protocol, "protocol", PROTOCOLS)
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if self.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        if self.loss_lr is not None:
            value = self.loss_lr
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"loss_lr must be a number > 0 or null (automatic), got {value!r}")
            self.loss_lr = float(value)
        size = self.test_size
        valid_fraction = isinstance(size, float) and 0 < size < 1
        valid_count = isinstance(size, int) and not isinstance(size, bool) and size >= 1
        if size is not None and not (valid_fraction or valid_count):
            raise ValueError(
                f"test_size must be a fraction in (0, 1) or a number of samples >= 1, got {size!r}"
            )

    def _check_open_trainer_options(self) -> None:
        for name in ("stream", "pin_memory", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_choice(self.augment, "augment", AUGMENTATIONS)
        if isinstance(self.precision, int) and not isinstance(self.precision, bool):
            self.precision = str(self.precision)  # YAML reads `precision: 32` as a number
        _check_choice(self.precision, "precision", PRECISIONS)
        _check_choice(self.schedule, "schedule", SCHEDULES)
        _check_str(self.best_metric, "best_metric")
        if self.weights is not None:
            _check_str(self.weights, "weights")
        for name in ("freeze_epochs", "warmup_steps", "patience", "workers"):
            _check_int(getattr(self, name), name, minimum=0)
        clip = self.grad_clip
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
                raise ValueError(f"grad_clip must be a number > 0 (or null), got {clip!r}")
            self.grad_clip = float(clip)
        size = self.validation_size
        valid_fraction = isinstance(size, float) and 0 < size < 1
        valid_count = isinstance(size, int) and not isinstance(size, bool) and size >= 1
        if size is not None and not (valid_fraction or valid_count):
            raise ValueError(
                f"validation_size must be a fraction in (0, 1) or a count >= 1, got {size!r}"
            )
        if self.output is None and self.tensorboard:
            raise ValueError("tensorboard logging needs a run directory (output), got None")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; keys may use hyphens or underscores; unknown keys are refused.

        A run's ``config.json`` can be passed as it is: its ``inputs`` record is left out.
        """
        return cls(**_normalise_keys(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def merged(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied; ``loss_params`` are merged key by key."""
        values = self.to_dict()
        overrides = _normalise_keys(overrides)
        given = overrides.pop("loss_params", {})
        if not isinstance(given, Mapping):
            raise ValueError(
                f"loss_params must be a mapping of parameter names to values, got {given!r}"
            )
        params = {**values["loss_params"], **given}
        return TrainConfig(**{**values, **overrides, "loss_params": params})

    def differences(self, other: TrainConfig) -> list[str]:
        """Options (other than :data:`RESUMABLE_CHANGES`) whose values differ, as readable text."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {mine[key]!r} != {theirs[key]!r}"
            for key in mine
            if key not in RESUMABLE_CHANGES and mine[key] != theirs[key]
        ]


def _deprecated_miner(config: TrainConfig) -> str | None:
    warnings.warn("TrainConfig.miner is deprecated, use mining", DeprecationWarning, stacklevel=2)
    return config.mining


TrainConfig.miner = property(_deprecated_miner)  # type: ignore[assignment]

def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option mapping in a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text)
        elif suffix == ".toml":
            values = tomllib.loads(text)
        elif suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(
                f"config file {str(path)!r} must end in .yaml, .yml, .toml or .json, "
                f"got {suffix or 'no suffix'!r}"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {str(path)!r} could not be parsed: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of options")
    return _normalise_keys(values)


def read_config_json(path: str | Path) -> dict[str, Any]:
    """The options saved with a run (its ``config.json``, without the ``inputs`` record)."""
    return _normalise_keys(read_run_config(path))


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A run's whole ``config.json``: the options and, from metrickit 0.1 on, ``inputs``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path.parent)!r} holds no metrickit run (no {path.name})")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} could not be read: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of options")
    return values


def _normalise_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keys with underscores; a run's ``inputs`` record (not an option) is left out."""
    out = {str(key).replace("-", "_"): value for key, value in values.items() if key != INPUTS_KEY}
    if "miner" in out:  # deprecated name of mining (run directories before the rename)
        out["mining"] = renamed(out.get("mining"), out.pop("miner"), "mining", "miner", "config")
    unknown = sorted(set(out) - set(field_names()))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))}; valid options: "
            f"{', '.join(field_names())}"
        )
    return out


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_int(value: object, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_choice(value: object, name: str, choices: tuple[str, ...], allow_none=False) -> None:
    if value is None and allow_none:
        return
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
