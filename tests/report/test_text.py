"""The plain table keeps a row on one line whatever the names hold."""

from __future__ import annotations

from tokentrail.report.text import render


def test_a_line_break_in_a_name_is_written_escaped_in_the_table() -> None:
    rows = [{"run": "trial\n7", "calls": 1}, {"run": "a\r\nb", "calls": 2}]
    lines = render(rows, ["run", "calls"], "table").splitlines()
    assert len(lines) == 2 + len(rows)
    assert [line.split()[0] for line in lines[2:]] == ["trial\\n7", "a\\r\\nb"]
