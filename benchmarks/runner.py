"""Run cases in fresh subprocesses under a memory and time watchdog; skip what cannot fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .cases import Case
from .memory import status_kib
from .worker import RESULT_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def _record(case: Case, status: str, reason: str = "") -> dict[str, Any]:
    return {**case.to_dict(), "status": status, "reason": reason}


def precheck(case: Case, max_bytes: float) -> dict[str, Any] | None:
    """A 'skipped' record if the case cannot or should not run here, else None."""
    spec = case.spec
    if not spec.available():
        return _record(case, "unavailable", f"{spec.requires} not installed")
    need = spec.estimate(case.batch, case.k)
    if need > max_bytes:
        return _record(case, "skipped", f"would need ~{gib(need)}")
    return None


def run_isolated(
    case: Case, settings: Settings, grad_dir: str, timeout_s: float, kill_bytes: float
) -> dict[str, Any]:
    """Run ``case`` in ``python -m benchmarks.worker``; kill it past ``timeout_s`` or when its
    resident memory passes ``kill_bytes``."""
    name = f"{case.task}-{case.impl}-{case.batch}-{case.k}-{case.dim}-{settings.dtype}.pt"
    grad_path = str(Path(grad_dir) / name)
    spec = {"case": case.to_dict(), "settings": asdict(settings), "grad_path": grad_path}
    threads = str(settings.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env, text=True)
        start, verdict = time.monotonic(), None
        while proc.poll() is None:
            rss = (status_kib("VmRSS", proc.pid) or 0) * 1024
            if rss > kill_bytes:
                verdict = _record(case, "killed", f"resident memory passed {gib(kill_bytes)}")
            elif time.monotonic() - start > timeout_s:
                verdict = _record(case, "timeout", f"took longer than {timeout_s:.0f} s")
            if verdict:
                proc.kill()
                proc.wait()
                return verdict
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()
            return _record(case, "error", tail[-1] if tail else f"exit code {proc.returncode}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])
