"""Queries over the ledger, shared by the CLI and the dashboard.

Sums skip unknown counts (SQL ``SUM`` ignores NULL) and every group says how many of its calls had no
usage, so a total never hides what it could not include. Prompt-anatomy columns and the per-tool-name
view are in `tokentrail.report.anatomy`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokentrail.errors import ConfigError
from tokentrail.records import PICO
from tokentrail.usage import TOKEN_FIELDS, TOTAL_KEYS, ZERO, Source, Usage, UsageTotals

DIMENSIONS: dict[str, str] = {
    "run": "run",
    "agent": "agent",
    "step": "step",
    "tool": "tool",
    "model": "COALESCE(model, requested_model)",
    "provider": "provider",
    "api": "api",
    "status": "status",
    "source": "usage_source",
    "callsite": "call_function",
    "callmodule": "call_module",
}
"""``--by`` names → SQL expressions over the ``calls`` table."""

MEASURES: tuple[tuple[str, str], ...] = (
    ("calls", "COUNT(*)"),
    ("input_tokens", "SUM(input_tokens)"),
    ("output_tokens", "SUM(output_tokens)"),
    ("cache_read_tokens", "SUM(cache_read_tokens)"),
    ("cache_write_tokens", "SUM(cache_write_tokens)"),
    ("reasoning_tokens", "SUM(reasoning_tokens)"),
    ("total_tokens", "SUM(total_tokens)"),
    ("calls_without_usage", "SUM(input_tokens IS NULL OR output_tokens IS NULL OR usage_source = 'partial')"),
    ("errors", "SUM(status != 'ok')"),
    ("retries", "SUM(attempt > 1)"),
    ("cost_usd", "SUM(cost_pico)"),
    ("calls_without_cost", "SUM(cost_pico IS NULL)"),
)

CALL_FIELDS = (
    "id",
    "run",
    "run_id",
    "scope_path",
    "agent",
    "step",
    "tool",
    "provider",
    "api",
    "model",
    "requested_model",
    "stream",
    "status",
    "http_status",
    "attempt",
    *TOKEN_FIELDS,
    "usage_source",
    "input_source",
    "output_source",
    "tokenizer",
    "latency_ms",
    "first_token_ms",
    "call_site",
    "call_function",
    "flags",
    "started_at",
    "raw_usage",
    "cost_usd",
    "price_version",
    "anatomy",
)


@dataclass(frozen=True, slots=True)
class Filters:
    """Which calls a query covers."""

    run: str | None = None
    """A run name or id."""
    since_ns: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.run:
            clauses.append("(run = ? OR run_id = ?)")
            params += [self.run, self.run]
        if self.since_ns is not None:
            clauses.append("started_ns >= ?")
            params.append(self.since_ns)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def parse_dims(by: str | Sequence[str]) -> list[str]:
    """Validate ``--by`` (comma-separated or a list). Raises `ConfigError` naming the valid choices, also
    when no dimension is given (the report's TOTAL row is already the ungrouped sum)."""
    names = [d.strip() for d in (by.split(",") if isinstance(by, str) else by) if d.strip()]
    unknown = [d for d in names if d not in DIMENSIONS]
    if unknown:
        raise ConfigError(f"unknown --by dimension {', '.join(unknown)}; choose from {', '.join(DIMENSIONS)}")
    if not names:
        raise ConfigError(f"--by needs at least one dimension; choose from {', '.join(DIMENSIONS)}")
    return names


def summarize(
    db: sqlite3.Connection, by: Sequence[str], filters: Filters = Filters(), *, anatomy: bool = False
) -> list[dict[str, Any]]:
    """One row per group of ``by``, largest total first, with the `MEASURES`.

    With ``anatomy``, also the prompt-anatomy sums of `tokentrail.report.anatomy.MEASURES` (NULL for a
    group none of whose calls has an anatomy).
    """
    where, params = filters.where()
    keys = [f"{DIMENSIONS[d]} AS {d}" for d in by]
    select = ", ".join(keys + [f"{expr} AS {name}" for name, expr in measures(anatomy=anatomy)])
    group = f"GROUP BY {', '.join(by)} ORDER BY SUM(total_tokens) DESC NULLS LAST, calls DESC" if by else ""
    rows = db.execute(f"SELECT {select} FROM calls {where} {group}", params).fetchall()
    return [_money(dict(row)) for row in rows if row["calls"]]


def measures(*, anatomy: bool = False) -> tuple[tuple[str, str], ...]:
    """The report's columns → SQL aggregates: `MEASURES`, plus the anatomy sums with ``anatomy``."""
    if not anatomy:
        return MEASURES
    from tokentrail.report.anatomy import MEASURES as ANATOMY

    return MEASURES + ANATOMY


def _money(row: dict[str, Any]) -> dict[str, Any]:
    # Exact: pico-dollar integers summed in SQL, shown as a decimal string (JSON-safe, no float).
    pico = row.get("cost_usd")
    row["cost_usd"] = None if pico is None else format(Decimal(pico) / PICO, "f")
    return row


def totals(db: sqlite3.Connection, filters: Filters = Filters(), *, anatomy: bool = False) -> dict[str, Any]:
    """The measures over every call the filters cover (see `summarize` for ``anatomy``)."""
    rows = summarize(db, [], filters, anatomy=anatomy)
    if rows:
        return rows[0]
    # No calls: the cost and the anatomy parts are unknown (no call had any), the rest count nothing.
    nulls = {"cost_usd", "tool_definitions", "tool_results", "system", "history", "latest_input"}
    return {name: None if name in nulls else 0 for name, _ in measures(anatomy=anatomy)}


def what_if(
    db: sqlite3.Connection, by: Sequence[str], model: str, filters: Filters = Filters()
) -> dict[tuple[Any, ...], Any]:
    """What each group's recorded usage would have cost on ``model``, priced call by call (so
    long-context tiers apply per call as the provider bills them). Values are Decimal USD, or None
    when the model has no price or a call's counts are unknown (that call is left out and counted).

    Returns ``{group key: (cost, calls_priced, calls_not_priced)}``.
    """
    from tokentrail import pricing

    rates = pricing.rates_for(model)
    where, params = filters.where()
    keys = [f"{DIMENSIONS[d]} AS {d}" for d in by]
    select = ", ".join([*keys, "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens"])
    out: dict[tuple[Any, ...], Any] = {}
    for row in db.execute(f"SELECT {select} FROM calls {where}", params):
        key = tuple(row[d] for d in by)
        cost, priced, unpriced = out.get(key, (Decimal(0), 0, 0))
        usage = Usage(
            input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"], cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        )  # fmt: skip
        amount = None if rates is None else pricing.amount(rates, usage)
        if amount is None:
            out[key] = (cost, priced, unpriced + 1)
        else:
            out[key] = (cost + amount, priced + 1, unpriced)
    return out


_ESTIMATED = ", ".join(f"'{s}'" for s in (Source.COUNTED, Source.ESTIMATED))
_TOTALS_SQL = dict(
    MEASURES, calls_estimated=f"SUM(input_source IN ({_ESTIMATED}) OR output_source IN ({_ESTIMATED}))"
)
"""`UsageTotals` fields → SQL aggregates; ``calls_estimated`` as `tokentrail.usage.totals_row` counts it live."""


def subtree_totals(db: sqlite3.Connection, id_path: str) -> UsageTotals:
    """Totals of every call under the scope with materialized path ``id_path`` (one indexed query).

    The descendants' paths start with ``id_path + "/"``: in byte order they lie between that and
    ``id_path + "0"`` ("0" follows "/"), a range the ``call_places_path`` index serves (a ``LIKE``
    prefix would scan the whole table); their calls come by the ``call_rows_place`` index."""
    # Every field by name: a field with no aggregate fails here (KeyError) instead of reading as 0.
    row = db.execute(
        f"SELECT {', '.join(f'{_TOTALS_SQL[name]} AS {name}' for name in TOTAL_KEYS)} FROM calls"
        " WHERE scope_id_path = ? OR (scope_id_path > ? AND scope_id_path < ?)",
        (id_path, id_path + "/", id_path + "0"),
    ).fetchone()
    if not row["calls"]:
        return ZERO
    # A sum over calls none of which knows the count is NULL: 0, the call counted in calls_without_usage.
    return UsageTotals(**{name: row[name] or 0 for name in TOTAL_KEYS})


def dropped(db: sqlite3.Connection) -> int:
    """Records that tokentrail had to drop (queue overflow), over the ledger's whole life."""
    return int(db.execute("SELECT COALESCE(SUM(count), 0) FROM drops").fetchone()[0])


def calls(db: sqlite3.Connection, filters: Filters = Filters(), limit: int | None = None) -> list[dict[str, Any]]:
    """Every recorded HTTP attempt, oldest first, as JSON-ready dicts (unknown counts are ``None``)."""
    where, params = filters.where()
    if limit is None:
        return [call_dict(row) for row in db.execute(f"SELECT * FROM calls {where} ORDER BY started_ns, id", params)]
    sql = f"SELECT * FROM calls {where} ORDER BY started_ns DESC, id DESC LIMIT ?"
    return [call_dict(row) for row in reversed(db.execute(sql, [*params, limit]).fetchall())]


def call_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A ``calls`` row in the `CALL_FIELDS` shape of ``tokentrail calls --format jsonl``."""
    data = dict(row)
    latency, first = data.pop("latency_ns"), data.pop("first_token_ns")
    data["latency_ms"] = None if latency is None else round(latency / 1e6, 3)
    data["first_token_ms"] = None if first is None else round(first / 1e6, 3)
    data["stream"] = bool(data["stream"])
    data["flags"] = [f for f in (data["flags"] or "").split(",") if f]
    data["raw_usage"] = _json_or_text(data["raw_usage"])
    data["anatomy"] = _json_or_text(data.get("anatomy"))
    from datetime import UTC, datetime

    data["started_at"] = datetime.fromtimestamp(data["started_ns"] / 1e9, UTC).isoformat(timespec="milliseconds")
    return {name: data.get(name) for name in CALL_FIELDS}


def _json_or_text(stored: str | None) -> Any:
    """A JSON column's value; a value that is not JSON (a hand-edited ledger) as its text, never an error."""
    if not stored:
        return None
    try:
        return json.loads(stored)
    except ValueError:
        return stored
