"""Options shared by the commands that read the ledger."""

from __future__ import annotations

import argparse
import sqlite3

from tokentrail import config
from tokentrail.sinks.sqlite import connect


def add_db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="the ledger (default: $TOKENTRAIL_DB, else ./tokentrail.db)")
    p.add_argument("--run", metavar="NAME", help="only this run (its name or id)")


def open_db(args: argparse.Namespace) -> sqlite3.Connection:
    return connect(config.db_path(args.db), readonly=True)
