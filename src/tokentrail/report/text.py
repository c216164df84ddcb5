"""Rows → text: aligned tables, Markdown, CSV and JSON. Unknown values print as ``-`` (null in JSON)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("table", "json", "csv", "markdown")

_SHORT = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "cache_write_tokens": "cache_write",
    "reasoning_tokens": "reasoning",
    "total_tokens": "total",
    "calls_without_usage": "no_usage",
    "calls_without_cost": "no_cost",
    "cost_usd": "cost_usd",
    "tool_definitions": "tool_defs",
    "latest_input": "latest",
    "calls_without_anatomy": "no_anatomy",
    "calls_anatomy_estimated": "anat_est",
    "tool_definition_tokens": "definition_tokens",
    "tool_result_tokens": "result_tokens",
    "calls_offered": "offered",
    "calls_in_history": "in_history",
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    *,
    total: dict[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render ``rows`` (dicts) with ``columns`` in ``fmt`` (one of `FORMATS`).

    In JSON, ``total`` and ``extra`` (more top-level keys, e.g. a second table) make the output an
    object with ``rows``; the other formats ignore ``extra``.
    """
    if fmt == "json":
        if total is None and not extra:
            return json.dumps(list(rows), indent=2, default=str)
        return json.dumps({"rows": list(rows), "total": total, **(extra or {})}, indent=2, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    head = [_SHORT.get(c, c) for c in columns]
    body = [[_cell(row.get(c)) for c in columns] for row in rows]
    if total is not None:
        body.append([_cell(total.get(c)) if c in total else "" for c in columns])
        body[-1][0] = "TOTAL"
    numeric = [all(_is_num(r.get(c)) for r in rows) for c in columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(map(_md, cells)) + " |" for cells in [head, *body]]
        lines.insert(1, "|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        return "\n".join(lines)
    body = [[_LINE_BREAK.sub(_escaped, c) for c in r] for r in body]  # a line break in a name keeps the row whole
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body[:-1]] if total is not None else [line(r) for r in body]
    if total is not None:
        out += [line(["-" * w for w in widths]), line(body[-1])]
    return "\n".join(out)


def _md(cell: str) -> str:
    """A Markdown table cell: a pipe would start a new column and a line break end the row (a run
    named ``trial|7``), so pipes are escaped (with the backslashes before them, which would escape
    the escape) and line breaks become ``<br>``."""
    return _LINE_BREAK.sub("<br>", _PIPE.sub(r"\1\1\\|", cell))


_PIPE = re.compile(r"(\\*)\|")


_LINE_BREAK = re.compile(r"\r\n?|\n")


def _escaped(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")  # "\r\n" as the four characters \r\n


def _is_num(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
