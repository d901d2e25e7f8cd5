"""``appt``: the command line. ``appt train | eval | predict | info | bundle``; ``appt <command> -h`` for help.

Bad use (unknown config key or backbone, missing data, mismatched weights, unreadable input) ends
with a one-line message and exit status 2, never a traceback; argparse's own errors do the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from appt.errors import APPTError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from appt.cli import bundle, convert, evaluate, info, predict, train

    parser = argparse.ArgumentParser(
        prog="appt", description="Adaptive Point-Prompt Tuning: train, evaluate and use point-cloud models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, evaluate, predict, info, bundle, convert):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``appt`` script; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except APPTError as exc:
        print(f"appt {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"appt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
