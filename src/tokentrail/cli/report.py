"""``tokentrail report``: totals grouped by any of run, agent, step, tool, model, provider, api, …

When the selected calls have a prompt anatomy (recorded with ``instrument(anatomy=True)``), the
anatomy sums are extra columns (``--anatomy`` / ``--no-anatomy`` force them on or off), and
``--by tool`` adds a second table of tool tokens per tool name found in the requests.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from tokentrail import pricing, report
from tokentrail.cli._common import add_db_options, open_db
from tokentrail.errors import ConfigError
from tokentrail.pricing import table
from tokentrail.report import anatomy
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
    p.add_argument(
        "--anatomy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prompt-anatomy columns (tokens of tool definitions, tool results, system, history, latest input)"
        " and, with --by tool, tokens per tool name (default: shown when any selected call has an anatomy)",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    dims = report.parse_dims(args.by)
    if args.what_if and pricing.rates_for(args.what_if) is None:  # else a column of nulls, unexplained
        raise ConfigError(
            f"no price for --what-if model {args.what_if!r} in {table.price_version()} or the overrides;"
            " check the name with `tokentrail prices MODEL`"
        )
    db = open_db(args)
    filters = report.Filters(run=args.run)
    show = args.anatomy if args.anatomy is not None else anatomy.present(db, filters)
    rows = report.summarize(db, dims, filters, anatomy=show)
    total = report.totals(db, filters, anatomy=show)
    columns = [*dims, *(name for name, _ in report.measures(anatomy=show))]
    unpriced = 0  # calls --what-if could not price
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
        unpriced = sum(n for _, _, n in alternative.values())
    by_name = anatomy.by_tool_name(db, dims, filters) if show and "tool" in dims else None
    extra = {"by_tool_name": by_name} if by_name is not None else None
    print(render(rows, columns, args.format, total=total if args.format in ("table", "markdown", "json") else None,
                 extra=extra))  # fmt: skip
    if by_name is not None and args.format != "json":
        _print_by_tool_name(by_name, [d for d in dims if d != "tool"], args.format)
    lost = report.dropped(db)
    if lost and args.format in ("table", "markdown"):
        print(f"\nwarning: {lost:,} record(s) were dropped (queue overflow) and are not in these totals")
    without = total.get("calls_without_usage") or 0
    if without and args.format in ("table", "markdown"):
        print(f"\nnote: {without:,} call(s) had no usage (no_usage column); their tokens are not in the sums")
    if unpriced and args.format in ("table", "markdown"):
        print(f"\nnote: {unpriced:,} call(s) could not be priced on {args.what_if} (a count or a rate unknown);"
              f" they are not in cost_if_{args.what_if}")  # fmt: skip
    if show and args.format in ("table", "markdown"):
        for note in anatomy.notes(db, filters, total, by_tool_name=by_name is not None):
            print(f"\nnote: {note}")
    return 0


def _print_by_tool_name(rows: list[dict[str, Any]], dims: list[str], fmt: str) -> None:
    columns = [*dims, *anatomy.TOOL_NAME_COLUMNS]
    if fmt == "csv":
        print()  # a second CSV table, after one empty line
    else:
        print(
            "\nTool tokens by tool name in the requests (the tool column above is the tokentrail.tool() scope;"
            "\nin_history = calls whose request history held a call of the tool):"
        )
        if fmt == "markdown":
            print()
    print(render(rows, columns, fmt) if rows or fmt == "csv" else "(no tool was offered or called in these requests)")
