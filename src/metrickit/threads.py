"""How many CPU threads a command uses: one rule for every command (``--threads``).

Metric-learning batches are small: extra intra-op threads gain little, and threads competing with
other busy processes for the same cores slow every step down many times over. So by default a
command uses the CPUs this process may run on minus the current load, at least one.
"""

from __future__ import annotations

import os

import torch


def idle_cpus() -> int:
    """CPUs this process may use minus the current load average (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, cpus - busy)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`idle_cpus`); return the count.

    A run's loss history is reproducible for a seed at a fixed thread count: pass ``threads``
    explicitly when results must match bit for bit across machines or loads.
    """
    if threads is None:
        threads = idle_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads
