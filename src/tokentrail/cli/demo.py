"""``tokentrail demo``: a multi-agent program against the local simulator, recorded and reported."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a small multi-agent program against the simulator and report it")
    p.add_argument("--db", metavar="PATH", default="tokentrail-demo.db", help="ledger to write (replaced)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from tokentrail.demo.main import run_demo

    return run_demo(Path(args.db))
