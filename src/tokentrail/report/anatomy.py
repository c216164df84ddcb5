"""Prompt anatomy in reports: where the recorded calls' input tokens went, summed in SQL.

Each call recorded with ``instrument(anatomy=True)`` stores its anatomy as a JSON object in the
``anatomy`` column (see `tokentrail.enrich.anatomy.Anatomy.as_dict`); every other call stores NULL.
Two views sum it:

- `MEASURES`: the five parts (``tool_definitions``, ``tool_results``, ``system``, ``history``,
  ``latest_input``) as extra columns of the ordinary report. A call without anatomy adds NULL, not 0,
  to each part, so a group none of whose calls has anatomy shows NULL; ``calls_without_anatomy`` says
  how many calls each sum could not include, and ``calls_anatomy_estimated`` how many of the included
  calls were counted with a tokenizer other than the model's own.
- `by_tool_name`: tool-definition and tool-result tokens per tool *name* as found in the request
  bodies (``json_each`` over the stored per-name objects). This is not the ``tool`` dimension, which is
  the ``tokentrail.tool(...)`` scope a call was made in.

Anatomy counts are always tokenizer counts (``counted`` or ``estimated``), never the provider's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from tokentrail.report import DIMENSIONS, Filters

_ALL = Filters()  # every call

PARTS: tuple[str, ...] = ("tool_definitions", "tool_results", "system", "history", "latest_input")
"""The anatomy's parts, named as in the stored object and in ``tokentrail calls --format jsonl``."""

# A malformed value in the column (a hand-edited ledger) must not fail the whole report: the JSON
# functions raise on invalid JSON and SQLite does not promise to short-circuit AND, so every read goes
# through this CASE, and such a call counts as one without anatomy.
_VALID = "CASE WHEN json_valid(anatomy) THEN anatomy END"

MEASURES: tuple[tuple[str, str], ...] = (
    *((part, f"SUM(json_extract({_VALID}, '$.{part}'))") for part in PARTS),
    ("calls_without_anatomy", "SUM(anatomy IS NULL OR NOT json_valid(anatomy))"),
    ("calls_anatomy_estimated", f"SUM(COALESCE(json_extract({_VALID}, '$.source') = 'estimated', 0))"),
)
"""Report columns → SQL aggregates over the ``calls`` table (appended to `tokentrail.report.MEASURES`)."""

TOOL_NAME_COLUMNS: tuple[str, ...] = (
    "tool_name",
    "calls_offered",
    "calls_in_history",
    "tool_definition_tokens",
    "tool_result_tokens",
)
"""The columns of `by_tool_name`, after the grouping dimensions."""

# Calls whose stored anatomy carries the per-name objects (records written before they were stored
# have only the five parts; they are counted apart, never read as zeros).
_PER_NAME = (
    f"COALESCE(json_type({_VALID}, '$.tool_definitions_by_name') = 'object'"
    f" AND json_type({_VALID}, '$.tool_results_by_name') = 'object', 0)"
)


def present(db: sqlite3.Connection, filters: Filters = _ALL) -> bool:
    """Whether any call the filters cover has an anatomy (what ``report`` shows its columns for)."""
    where, params = _and(filters, "anatomy IS NOT NULL")
    return db.execute(f"SELECT 1 FROM calls {where} LIMIT 1", params).fetchone() is not None


def by_tool_name(db: sqlite3.Connection, by: Sequence[str], filters: Filters = _ALL) -> list[dict[str, Any]]:
    """Tool tokens per tool name found in the request bodies, grouped by ``by`` (minus ``tool``).

    One row per group and tool name, most tool tokens first:

    - ``calls_offered``: calls whose request offered the tool (its definition was sent);
    - ``calls_in_history``: calls whose request history held at least one call of the tool. A tool
      call is re-sent with every later turn of its conversation, so this is not how often the model
      called the tool;
    - ``tool_definition_tokens`` / ``tool_result_tokens``: the tokens of its definitions and results
      over those calls, re-sent ones included (each was billed again). A tool a call did not offer, or
      had no result of, adds a known 0 for that call.

    Only calls whose anatomy has per-name counts are covered; `calls_without_per_name` counts the rest.
    """
    dims = [d for d in by if d != "tool"]
    where, params = _and(filters, _PER_NAME)
    keys = "".join(f"{DIMENSIONS[d]} AS {d}, " for d in dims)
    cols = "".join(f"sel.{d}, " for d in dims)
    outer = "".join(f"{d}, " for d in dims)
    sql = f"""
        WITH sel AS MATERIALIZED (SELECT id, {keys}{_VALID} AS anatomy FROM calls {where}),
        facts AS (
            SELECT {cols}j.key AS tool_name, 0 AS offered, 0 AS in_history, j.value AS definition, NULL AS result
              FROM sel, json_each(sel.anatomy, '$.tool_definitions_by_name') AS j
            UNION ALL
            SELECT {cols}j.key, 0, 0, NULL, j.value
              FROM sel, json_each(sel.anatomy, '$.tool_results_by_name') AS j
            UNION ALL
            SELECT {outer}tool_name, 1, 0, NULL, NULL FROM (
                SELECT DISTINCT sel.id, {cols}j.value AS tool_name
                  FROM sel, json_each(sel.anatomy, '$.tools_offered') AS j)
            UNION ALL
            SELECT {outer}tool_name, 0, 1, NULL, NULL FROM (
                SELECT DISTINCT sel.id, {cols}j.value AS tool_name
                  FROM sel, json_each(sel.anatomy, '$.tools_called') AS j)
        )
        SELECT {outer}tool_name,
               SUM(offered) AS calls_offered,
               SUM(in_history) AS calls_in_history,
               COALESCE(SUM(definition), 0) AS tool_definition_tokens,
               COALESCE(SUM(result), 0) AS tool_result_tokens
          FROM facts
         GROUP BY {outer}tool_name
         ORDER BY tool_definition_tokens + tool_result_tokens DESC, {outer}tool_name
    """
    return [dict(row) for row in db.execute(sql, params)]


def calls_without_per_name(db: sqlite3.Connection, filters: Filters = _ALL) -> int:
    """Calls the filters cover that `by_tool_name` cannot include (no anatomy, or none per name)."""
    where, params = _and(filters, f"NOT {_PER_NAME}")
    return int(db.execute(f"SELECT COUNT(*) FROM calls {where}", params).fetchone()[0])


def notes(db: sqlite3.Connection, filters: Filters, total: dict[str, Any], *, by_tool_name: bool) -> list[str]:
    """What the anatomy sums in ``total`` (a `tokentrail.report.totals` row) and, with
    ``by_tool_name``, the table by tool name could not include or only estimated, in words."""
    out: list[str] = []
    without, estimated = total.get("calls_without_anatomy") or 0, total.get("calls_anatomy_estimated") or 0
    if without:
        out.append(f"{without:,} call(s) had no prompt anatomy (no_anatomy column); they are not in its sums")
    if estimated:
        out.append(f"{estimated:,} call(s) had their anatomy counted with a tokenizer that is not the model's own"
                   " (anat_est column): estimated")  # fmt: skip
    # Calls with the five parts but no per-name counts (recorded before those were stored).
    partial = calls_without_per_name(db, filters) - without if by_tool_name else 0
    if partial:
        out.append(
            f"{partial:,} call(s) have an anatomy without per-tool counts; the table by tool name leaves them out"
        )
    return out


def _and(filters: Filters, condition: str) -> tuple[str, list[Any]]:
    where, params = filters.where()
    return (f"{where} AND ({condition})" if where else f"WHERE ({condition})"), params
