"""The ``tokentrail`` command: one module per subcommand, each thin over `tokentrail.report`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tokentrail import __version__
from tokentrail.cli import calls, demo, prices, report, reprice, run, sim
from tokentrail.errors import TokentrailError

COMMANDS = (report, calls, run, prices, reprice, sim, demo)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used to regenerate the CLI docs)."""
    top = argparse.ArgumentParser(
        prog="tokentrail",
        description="Account for every token and every dollar an LLM application spends.",
    )
    top.add_argument("--version", action="version", version=f"tokentrail {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TokentrailError as exc:
        print(f"tokentrail: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tokentrail calls | head`
        return 0
    except KeyboardInterrupt:
        return 130
