"""Run directories: the one place where every command creates, locks and writes them.

A run directory holds exactly one run (``metrickit train``, ``metrickit recsys train``, ...):

* :meth:`RunDir.create` makes a new one. It refuses a directory that is not empty (it may hold
  another run, or anything else), and a directory that cannot be written, with one clear
  :class:`RunDirError` raised before anything is written.
* :meth:`RunDir.open` opens an existing run to continue or re-evaluate it; it checks that the
  directory holds a run of the expected kind.
* Both take an exclusive lock (``fcntl.flock`` on ``.lock``, released by the kernel when the
  process ends, even by SIGKILL), so two processes never write into one run at the same time:
  the second one is refused.
* Every file is written atomically (:func:`atomic_write`: temporary file in the same directory,
  fsync, ``os.replace``), so a crash leaves the previous version or the new one, never a torn file.

``run.json`` records the kind of run and the metrickit version that wrote it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an O_EXCL lock file instead
    fcntl = None  # type: ignore[assignment]

MARKER = "run.json"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"
_HIDDEN = {LOCK}


class RunDirError(ValueError):
    """A run directory that cannot be used: not empty, not writable, in use, or not a run."""


# ----------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(binary_file)`` atomically: temp file, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace the file ``path`` with ``data`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace the text file ``path`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> Path:
    """Replace ``path`` with ``value`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a writer killed mid-write left in ``directory``; return them."""
    stale = sorted(Path(directory).glob(f".*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _fsync_directory(directory: Path) -> None:
    """Persist a rename itself (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- run directory
def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def run_kind(path: str | Path, default_marker: str = "config.json") -> str | None:
    """The kind recorded in a run directory's ``run.json``; ``"unknown"`` for a run written before
    ``run.json`` existed (it has ``default_marker``); None when the directory holds no run."""
    path = Path(path)
    try:
        info = json.loads((path / MARKER).read_text(encoding="utf-8"))
        return str(info["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown" if (path / default_marker).is_file() else None


def contents(path: str | Path) -> list[str]:
    """Names in a directory other than the lock file (empty if it does not exist)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.name not in _HIDDEN)


def check_new(path: str | Path, kind: str, resume_hint: str | None = None) -> None:
    """Raise :class:`RunDirError` unless ``path`` is free for a new run (absent or empty)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output directory {str(path)!r} is a file, not a directory")
    names = contents(path)
    if not names:
        return
    held = run_kind(path)
    what = "holds another run" if held else "is not empty"
    if held and held != kind and held != "unknown":
        what = f"holds a {held} run"
    hint = f", or continue the run there with {resume_hint} {str(path)!r}" if resume_hint else ""
    raise RunDirError(
        f"output directory {str(path)!r} {what}; choose another output directory{hint}"
    )


class RunDir:
    """An open, locked run directory. Use :meth:`create` or :meth:`open`, then :meth:`close`
    (or a ``with`` block)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self._lock_fd: int | None = None

    # -------------------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, kind: str, *, resume_hint: str | None = None) -> RunDir:
        """A new run in ``path``: created if needed, checked writable, locked, empty.

        ``resume_hint`` names the option that continues an existing run, for the error message.
        """
        run = cls(path, kind)
        check_new(run.path, kind, resume_hint)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(
                f"cannot create output directory {str(run.path)!r}: {_reason(exc)}"
            ) from None
        run._lock()
        try:
            check_new(run.path, kind, resume_hint)  # again, now that we hold the lock
            run.write_json(MARKER, {"kind": kind, "metrickit": _version()})
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path, kind: str, *, required: str = "config.json") -> RunDir:
        """An existing run of ``kind`` in ``path`` (holding ``required``), locked for writing."""
        run = cls(path, kind)
        check_run(run.path, kind, required)
        run._lock()
        remove_stale_temporaries(run.path)
        return run

    def close(self) -> None:
        """Release the lock (the lock file stays; it is not part of the run)."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:  # pragma: no cover
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path / LOCK)

    def discard(self) -> None:
        """Delete everything in the run (and the directory itself), then release the lock: what a
        command that failed half-way calls, so it leaves nothing half-written behind."""
        for name in contents(self.path):
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        (self.path / LOCK).unlink(missing_ok=True)
        self.close()
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, kind={self.kind!r}, locked={self.locked})"

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def _lock(self) -> None:
        lock = self.path / LOCK
        try:
            probe_fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=TMP_SUFFIX, dir=self.path)
            os.close(probe_fd)
            os.unlink(probe)
            if fcntl is None:  # pragma: no cover
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            else:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:  # pragma: no cover - the O_EXCL fallback
            raise RunDirError(self._busy_message(lock)) from None
        except OSError as exc:
            raise RunDirError(
                f"cannot write to the run directory {str(self.path)!r}: {_reason(exc)}"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunDirError(self._busy_message(lock)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _busy_message(self, lock: Path) -> str:
        try:
            pid = lock.read_text().strip()
        except OSError:
            pid = ""
        who = f" (pid {pid})" if pid.isdigit() else ""
        return (
            f"run directory {str(self.path)!r} is in use by another metrickit process{who}; "
            "wait for it to finish or choose another output directory"
        )

    # -------------------------------------------------------------------------- writing
    def file(self, name: str | Path) -> Path:
        """The path of ``name`` inside the run."""
        return self.path / name

    def write(self, name: str | Path, write: Callable[[BinaryIO], object]) -> Path:
        return atomic_write(self.path / name, write)

    def write_bytes(self, name: str | Path, data: bytes) -> Path:
        return atomic_write_bytes(self.path / name, data)

    def write_text(self, name: str | Path, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def write_json(self, name: str | Path, value: Any) -> Path:
        return atomic_write_json(self.path / name, value)


def clear(path: str | Path, kind: str) -> None:
    """Empty ``path`` if it holds a run of ``kind`` (under its lock); refuse anything else."""
    path = Path(path)
    if not contents(path):
        return
    held = run_kind(path)
    if held not in (kind, "unknown"):
        what = f"holds a {held} run" if held else "is not empty and holds no metrickit run"
        raise RunDirError(f"{str(path)!r} {what}; choose another --output")
    run = RunDir(path, kind)
    run._lock()
    try:
        for name in contents(path):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    finally:
        run.close()


def check_run(path: str | Path, kind: str, required: str = "config.json") -> None:
    """Raise :class:`RunDirError` unless ``path`` holds a run of ``kind`` (with ``required``)."""
    path = Path(path)
    held = run_kind(path, required)
    if held not in (None, kind, "unknown"):
        article = "an" if kind[:1] in "aeiou" else "a"
        raise RunDirError(
            f"{str(path)!r} holds a {held} run; this command needs {article} {kind} run"
        )
    if held is None or not (path / required).is_file():
        raise RunDirError(f"{str(path)!r} holds no metrickit run (no {required})")


@contextlib.contextmanager
def locked(path: str | Path, kind: str, required: str = "config.json") -> Iterator[RunDir]:
    """``with locked(path, kind) as run:`` an existing run, locked for the block."""
    run = RunDir.open(path, kind, required=required)
    try:
        yield run
    finally:
        run.close()


def _version() -> str:
    from . import __version__

    return __version__
