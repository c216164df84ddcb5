"""``tokentrail calls``: one line or JSON object per recorded HTTP attempt."""

from __future__ import annotations

import argparse
import json
import sys

from tokentrail import report
from tokentrail.cli._common import add_db_options, open_db
from tokentrail.report.text import render

TABLE_COLUMNS = (
    "started_at",
    "run",
    "scope_path",
    "model",
    "status",
    "attempt",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "usage_source",
    "latency_ms",
    "call_site",
    "flags",
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calls", help="every recorded HTTP attempt")
    add_db_options(p)
    p.add_argument("--format", "-f", choices=("table", "jsonl"), default="table")
    p.add_argument("-n", "--limit", type=_count, default=None, metavar="N", help="only the latest N calls (N ≥ 1)")
    p.set_defaults(handler=main)


def _count(text: str) -> int:
    # SQLite reads a negative LIMIT as no limit: `-n -3` printed every call. 0 is refused too: it may
    # mean none or, as in `llm logs -n 0`, all, and omitting -n already says all.
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"N must be a whole number, 1 or more, not {text} (omit -n for every call)")
    return n


def main(args: argparse.Namespace) -> int:
    rows = report.calls(open_db(args), report.Filters(run=args.run), limit=args.limit)
    if args.format == "jsonl":
        out = sys.stdout
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
        return 0
    print(render(rows, TABLE_COLUMNS, "table"))
    return 0
