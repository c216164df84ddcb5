"""``tokentrail reprice``: recompute the stored cost of calls with the prices in use now.

For after an upgrade of the price table, or a new overrides file (``--prices``). Every selected call
is priced again from its stored model, provider, token counts, raw usage and start time, and the
changes are written in one transaction: all or nothing.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from decimal import Decimal, InvalidOperation
from typing import Any

from tokentrail import config, pricing
from tokentrail.cli._common import add_db_options
from tokentrail.enrich.price import COST_MISMATCH, price_record
from tokentrail.errors import StoreError
from tokentrail.records import CallRecord
from tokentrail.sinks.sqlite import connect, pico
from tokentrail.usage import Usage

_COLUMNS = (
    "row_id, id, api, provider, host, endpoint, model, requested_model, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, reasoning_tokens, raw_usage, started_ns, cost_usd, price_version, flags"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reprice", help="recompute the stored cost of calls with the current prices")
    add_db_options(p)
    p.add_argument(
        "--prices",
        metavar="FILE",
        help="price overrides (default: $TOKENTRAIL_PRICES, else tokentrail.toml or pyproject.toml from here upward)",
    )
    p.add_argument("--dry-run", action="store_true", help="count the changes without writing them")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    pricing.configure(args.prices)  # a bad overrides file fails here, before the ledger is touched
    path = config.db_path(args.db)
    if not path.exists():
        raise StoreError(f"no tokentrail ledger at {path} (set --db or TOKENTRAIL_DB)")
    db = connect(path, create=False)
    try:
        result = reprice(db, run=args.run, dry_run=args.dry_run)
    finally:
        db.close()
    scope = f" in run {args.run}" if args.run else ""
    verb = "would change" if args.dry_run else "changed"
    print(f"repriced {result['calls']:,} call(s){scope}: {result['changed']:,} {verb}")
    print(f"total: ${_usd(result['total'])} (was ${_usd(result['was'])})")
    if result["unpriced"]:
        print(f"note: {result['unpriced']:,} call(s) have no price (unknown model or counts); not in the total")
    return 0


def reprice(db: sqlite3.Connection, *, run: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Price the calls again (all, or one run's by name or id) in one transaction.

    Returns ``calls``, ``changed``, ``unpriced`` (counts) and ``total``/``was`` (Decimal USD).
    """
    where, params = ("WHERE run = ? OR run_id = ?", (run, run)) if run else ("", ())
    db.execute("BEGIN IMMEDIATE")  # read and write under one lock: no call is priced twice or missed
    try:
        rows = db.execute(f"SELECT {_COLUMNS} FROM calls {where}", params).fetchall()
        updates: list[tuple[str | None, int | None, str | None, str, int]] = []
        total = was = Decimal(0)
        unpriced = 0
        for row in rows:
            old_cost = _decimal(row["cost_usd"])
            was += old_cost or 0
            old_flags = frozenset(f for f in (row["flags"] or "").split(",") if f)
            # The mismatch flag is recomputed with the new price; every other flag stays as stored.
            record = price_record(_record(row, old_flags - {COST_MISMATCH}))
            new_cost = None if record.cost is None else record.cost.amount
            version = None if record.cost is None else record.cost.price_version
            if new_cost is None:
                unpriced += 1
            else:
                total += new_cost
            flags = ",".join(sorted(record.flags))
            if new_cost != old_cost or version != row["price_version"] or record.flags != old_flags:
                stored = None if new_cost is None else format(new_cost, "f")
                updates.append((stored, pico(new_cost), version, flags, row["row_id"]))
        if updates and not dry_run:
            db.executemany(
                "UPDATE call_rows SET cost_usd = ?, cost_pico = ?, price_version = ?, flags = ? WHERE rowid = ?",
                updates,
            )
        db.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return {"calls": len(rows), "changed": len(updates), "unpriced": unpriced, "total": total, "was": was}


def _record(row: sqlite3.Row, flags: frozenset[str]) -> CallRecord:
    raw = row["raw_usage"]
    try:
        if raw:
            json.loads(raw)
    except ValueError:  # not JSON (a ledger edited by hand): priced without it
        raw = None
    return CallRecord(
        id=row["id"],
        api=row["api"],
        provider=row["provider"],
        host=row["host"] or "",
        endpoint=row["endpoint"] or "",
        model=row["model"],
        requested_model=row["requested_model"],
        started_ns=row["started_ns"] or 0,
        usage=Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        ),
        raw_usage_json=raw or None,
        flags=flags,
    )


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _usd(amount: Decimal) -> str:
    return format(amount.quantize(Decimal("0.000001")), "f")
