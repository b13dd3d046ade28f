"""The ``metrickit`` command line: one sub-command per module of this package.

Each sub-command module defines ``add_parser(subparsers)`` (which sets ``func`` on its parser) and
is listed in ``_COMMANDS``. Errors a user can fix (:class:`UsageError`, ``ValueError`` from input
validation, a run directory that cannot be used, missing or unwritable files, a missing
data-carrier package) print one clear line and exit with status 2. The flags every sub-command
shares are spelled once, in :mod:`metrickit.cli._common`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMANDS = ("demo", "train", "evaluate", "embed", "index", "search", "recsys", "text")


class UsageError(Exception):
    """A problem with the user's input: reported without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrickit", description="Deep metric learning and learning to rank on PyTorch."
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"metrickit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, ModuleNotFoundError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"metrickit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
