"""Peak-memory measurement: resident set size on CPU, the caching allocator on CUDA."""

from __future__ import annotations

import ctypes
import gc
import re
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), or None where unavailable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS so they do not hide the next run's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.bytes``: peak memory above the level at
    entry. CPU: VmHWM − VmRSS (falls back to ru_maxrss if VmHWM cannot be reset); CUDA:
    ``max_memory_allocated`` − ``memory_allocated``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes = 0
        self.method = ""
        self._base = 0

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.method = "VmHWM" if _reset_hwm() else "ru_maxrss"
            self._base = (status_kib("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "VmHWM":
            peak = (status_kib("VmHWM") or 0) * 1024
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.bytes = max(0, peak - self._base)
