"""Training: :class:`Trainer`, :class:`TrainConfig`, atomic checkpoints and resume.

The run directory a :class:`Trainer` writes is described in docs/training.md.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, read_config_file
from .outputs import format_results_table
from .trainer import Trainer, build_loss

__all__ = [
    "Trainer",
    "TrainConfig",
    "read_config_file",
    "build_loss",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "format_results_table",
]
