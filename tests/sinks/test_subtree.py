"""`report.subtree_totals`: every call under a scope, found by its materialized path with an index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokentrail import report
from tokentrail.records import CallRecord
from tokentrail.sinks.sqlite import SqliteSink, connect
from tokentrail.usage import REPORTED, Usage

# (scope_id_path, input tokens): "r/ab" and "rx" share a prefix with "r/a" and "r" but are not under them.
CALLS = [("r", 1), ("r/a", 10), ("r/a/b", 100), ("r/ab", 1000), ("rx", 10000), ("rx/a", 100000)]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "subtree.db"
    sink = SqliteSink(path)
    records = [
        CallRecord(
            id=f"call-{i}", api="openai.chat", provider="openai", host="h", endpoint="/v1/chat/completions",
            scope_id_path=scope_path, usage=Usage(input_tokens=tokens, output_tokens=0), provenance=REPORTED,
        )
        for i, (scope_path, tokens) in enumerate(CALLS)
    ]  # fmt: skip
    sink.write(records, [], 0)
    sink.close()
    return path


@pytest.mark.parametrize(
    "path, tokens, calls",
    [("r", 1111, 4), ("r/a", 110, 2), ("r/a/b", 100, 1), ("r/ab", 1000, 1), ("rx", 110000, 2), ("r/a/b/c", 0, 0)],
)
def test_a_subtree_holds_the_scope_and_its_descendants_only(ledger: Path, path: str, tokens: int, calls: int) -> None:
    totals = report.subtree_totals(connect(ledger, readonly=True), path)
    assert (totals.input_tokens, totals.calls) == (tokens, calls)


def test_the_subtree_query_uses_the_scope_path_index(ledger: Path) -> None:
    db = connect(ledger, readonly=True)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    report.subtree_totals(db, "r/a")
    db.set_trace_callback(None)
    [query] = [q for q in statements if "FROM calls" in q]
    plan = [row["detail"] for row in db.execute("EXPLAIN QUERY PLAN " + query)]
    # The places under the path by their index, then their calls by theirs: no table is scanned.
    assert any("USING COVERING INDEX call_places_path" in step for step in plan), plan
    assert any("USING INDEX call_rows_place" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
