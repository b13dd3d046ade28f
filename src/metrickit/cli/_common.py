"""The flags every sub-command shares, spelled once: one vocabulary across the command line.

``-o/--output`` (where a command writes), ``--dataset`` (the data it reads), ``--threads``
(CPU threads, default: the idle cores), ``--device``, ``--seed``, ``--quiet``; ``-K/--k`` means
samples per class and ``-k/--top-k`` a retrieval cut-off. Old spellings are accepted, hidden from
the help, with a deprecation message (:func:`add_deprecated`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class _Deprecated(argparse.Action):
    """An old spelling: stores into the new option's ``dest`` and prints one warning line."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"metrickit: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr
        )
        setattr(namespace, self.dest, values)


def add_deprecated(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any
) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of ``new`` (same ``dest``)."""
    parser.add_argument(
        old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
        default=argparse.SUPPRESS, **kwargs,
    )  # fmt: skip


def add_output(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    parser.add_argument("-o", "--output", metavar="DIR", help=help, **kwargs)


def add_dataset(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    parser.add_argument("--dataset", metavar="DATA", help=help, **kwargs)


def add_threads(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads for torch [the idle cores: CPUs minus the load average, at least 1]",
        **kwargs,
    )  # fmt: skip


def add_device(parser: argparse.ArgumentParser, help: str = "cpu, cuda or auto", **kwargs) -> None:
    parser.add_argument("--device", help=help, **kwargs)


def add_quiet(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar", **kwargs)


def add_top_k(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    parser.add_argument("-k", "--top-k", dest="top_k", type=int, metavar="K", help=help, **kwargs)


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's threads from ``--threads`` (default: the idle cores); return the count."""
    from ..threads import set_threads

    return set_threads(getattr(args, "threads", None))


def add_run_dir(parser: argparse.ArgumentParser, help: str, metavar: str = "RUN_DIR") -> None:
    """The run directory a command reads, positional (old spelling ``--run``, deprecated)."""
    parser.add_argument(
        "run_dir", metavar=metavar, nargs="?", default=argparse.SUPPRESS, help=help
    )
    add_deprecated(parser, "--run", f"{metavar} (a positional argument)", dest="run_dir")


def run_dir_of(args: argparse.Namespace, command: str) -> str:
    """The run directory given, positional or with the deprecated ``--run``."""
    from . import UsageError

    value = getattr(args, "run_dir", None)
    if not value:
        raise UsageError(f"give the run directory: metrickit {command} RUN_DIR")
    return value
