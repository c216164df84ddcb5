"""``tokentrail report``: totals grouped by any of run, agent, step, tool, model, provider, api, …"""

from __future__ import annotations

import argparse
from decimal import Decimal

from tokentrail import report
from tokentrail.cli._common import add_db_options, open_db
from tokentrail.report.text import FORMATS, render


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="token totals grouped by scope, model, provider, …")
    add_db_options(p)
    p.add_argument(
        "--by",
        default="agent,model",
        metavar="DIMS",
        help=f"comma-separated dimensions: {', '.join(report.DIMENSIONS)} (default: agent,model)",
    )
    p.add_argument("--format", "-f", choices=FORMATS, default="table")
    p.add_argument(
        "--what-if", metavar="MODEL", help="add what the recorded usage would have cost on MODEL (priced per call)"
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    dims = report.parse_dims(args.by)
    db = open_db(args)
    filters = report.Filters(run=args.run)
    rows = report.summarize(db, dims, filters)
    total = report.totals(db, filters)
    columns = [*dims, *(name for name, _ in report.MEASURES)]
    if args.what_if:
        column = f"cost_if_{args.what_if}"
        alternative = report.what_if(db, dims, args.what_if, filters)
        for row in rows:
            cost, priced, _ = alternative.get(tuple(row[d] for d in dims), (None, 0, 0))
            row[column] = None if not priced else format(cost, "f")
        total[column] = (
            format(sum((c for c, p, _ in alternative.values() if p), Decimal(0)), "f")
            if any(p for _, p, _ in alternative.values()) else None
        )  # fmt: skip
        columns.append(column)
    print(render(rows, columns, args.format, total=total if args.format in ("table", "markdown", "json") else None))
    lost = report.dropped(db)
    if lost and args.format in ("table", "markdown"):
        print(f"\nwarning: {lost:,} record(s) were dropped (queue overflow) and are not in these totals")
    without = total.get("calls_without_usage") or 0
    if without and args.format in ("table", "markdown"):
        print(f"\nnote: {without:,} call(s) had no usage (no_usage column); their tokens are not in the sums")
    return 0
