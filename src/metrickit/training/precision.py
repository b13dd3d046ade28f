"""Mixed precision chosen by an explicit ``precision`` argument, never by the device type.

``"32"``: float32 throughout. ``"bf16"``: forward and loss under ``torch.autocast`` in bfloat16
(CPU and CUDA; no loss scaling needed, bfloat16 has float32's range). ``"fp16"``: autocast in
float16 with a ``GradScaler`` on the device (dynamic loss scaling, Micikevicius et al. 2018,
"Mixed Precision Training"); meant for CUDA, and runs on CPU too, so the CPU test suite covers it.

    >>> amp = MixedPrecision("bf16", device)
    >>> with amp.autocast():
    ...     loss = loss_fn(model(x), y)
    >>> amp.backward(loss); amp.step(optimizer, clip=lambda: clip_gradients(params, 1.0))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .._validation import check_choice

PRECISIONS = ("32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast and loss scaling for one ``precision`` on one device."""

    def __init__(self, precision: str, device: torch.device | str) -> None:
        self.precision = check_choice(str(precision), "precision", PRECISIONS)
        self.device = torch.device(device)
        self.dtype = _DTYPES.get(self.precision, torch.float32)
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        )

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the forward pass and the loss inside this context."""
        if self.precision == "32":
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(
        self, optimizer: torch.optim.Optimizer, clip: Callable[[], object] | None = None
    ) -> None:
        """Unscale (fp16), call ``clip`` on the true gradients, then step the optimiser (an fp16
        step with inf/NaN gradients is skipped and the scale lowered)."""
        if self.scaler is None:
            if clip is not None:
                clip()
            optimizer.step()
            return
        if clip is not None:
            self.scaler.unscale_(optimizer)
            clip()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
