"""``tokentrail run -- COMMAND``: capture a Python program and its Python children with no code change.

Works like ``opentelemetry-instrument``: the bootstrap folder goes first on ``PYTHONPATH``, so every
Python process started with this environment loads tokentrail's ``sitecustomize`` and instruments
itself. The command replaces this process (exit status and signals are the program's own).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tokentrail import config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a Python program with capture on: tokentrail run -- python app.py")
    p.add_argument("--db", metavar="PATH", help="the ledger (default: $TOKENTRAIL_DB, else ./tokentrail.db)")
    p.add_argument("--run", metavar="NAME", help="name of the run the program's calls belong to")
    p.add_argument("--agent", metavar="NAME", help="name an agent scope for the whole program")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(handler=main)


def environment(db: str | None, run: str | None, agent: str | None = None) -> dict[str, str]:
    """The environment variables that turn capture on in every Python process that inherits them."""
    bootstrap = str(Path(__file__).resolve().parent.parent / "_bootstrap")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != bootstrap]
    env = {
        "TOKENTRAIL_AUTO": "1",
        "TOKENTRAIL_DB": str(config.db_path(db).resolve()),
        "PYTHONPATH": os.pathsep.join([bootstrap, *paths]),
    }
    if run:
        env["TOKENTRAIL_RUN"] = run
    if agent:
        env["TOKENTRAIL_AGENT"] = agent
    return env


def main(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("tokentrail run: give the command after --, e.g. tokentrail run -- python app.py", file=sys.stderr)
        return 2
    executable = shutil.which(command[0])
    if executable is None:
        print(f"tokentrail run: command not found: {command[0]}", file=sys.stderr)
        return 127
    env = {**os.environ, **environment(args.db, args.run, args.agent)}
    sys.stdout.flush()
    os.execve(executable, command, env)
    return 0  # not reached
