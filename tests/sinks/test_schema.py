"""The ledger's normalized schema: what calls share is stored once, the ``calls`` view reads as the old table."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import CallRecord, CallSite, CallStatus, Cost
from tokentrail.sinks import migrations, pipeline, sqlite
from tokentrail.sinks.sqlite import CALL_COLUMNS, SqliteSink, call_row, connect
from tokentrail.usage import REPORTED, Provenance, Source, Usage

SITE = CallSite(module="app.main", function="answer", file="app/main.py", line=12)


def record(i: int, **kw: Any) -> CallRecord:
    fields: dict[str, Any] = dict(
        id=f"call-{i:03d}", api="openai.chat", provider="openai", host="api.openai.com",
        endpoint="/v1/chat/completions", requested_model="gpt-4o", model="gpt-4o-2024-08-06", stream=True,
        status=CallStatus.OK, http_status=200, attempt=1, started_ns=1_700_000_000_000_000_000 + i,
        latency_ns=1000 + i, first_token_ns=10, usage=Usage(input_tokens=10 + i, output_tokens=i, cache_read_tokens=4),
        provenance=REPORTED, raw_usage_json=f'{{"prompt_tokens":{10 + i},"completion_tokens":{i}}}', flags=frozenset(),
        cost=Cost(decimal=Decimal("0.000125"), price_version="genai-prices==1"), response_id=f"resp-{i}",
        scope_id="s1", scope_id_path="r1/s1", scope_path="trial/planner", run_id="r1", run="trial",
        agent="planner", call_site=SITE, pid=42, host_name="box", tags={"seed": "7"},
    )  # fmt: skip
    fields.update(kw)
    return CallRecord(**fields)


def stored(path: Path) -> list[dict[str, Any]]:
    db = connect(path, readonly=True)
    return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY started_ns")]


def expected(r: CallRecord) -> dict[str, Any]:
    row = dict(zip(CALL_COLUMNS, call_row(r), strict=True))
    row["total_tokens"] = r.usage.total_tokens
    return row


def test_calls_that_share_a_context_and_a_place_store_them_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    records = [record(i, model="gpt-4o" if i % 2 else "gpt-4o-mini") for i in range(50)]
    sink.write(records[:20], [], 0)
    sink.write(records[20:], [], 0)
    sink.close()
    db = connect(path, readonly=True)
    assert db.execute("SELECT COUNT(*) FROM call_contexts").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM call_places").fetchone()[0] == 1
    rows = stored(path)
    assert [{k: row[k] for k in expected(r)} for row, r in zip(rows, records, strict=True)] == [
        expected(r) for r in records
    ]


def test_unknown_counts_stay_null_through_the_view(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    sink.write(
        [record(1, usage=Usage(output_tokens=3), provenance=Provenance(output=Source.REPORTED), cost=None)], [], 0
    )
    [row] = stored(path)
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"], row["cost_usd"], row["cost_pico"]) == (
        None, 3, None, None, None,
    )  # fmt: skip
    assert (row["input_source"], row["output_source"], row["usage_source"]) == ("missing", "reported", "missing")


def test_a_batch_mixing_known_and_unknown_values_stores_each_as_it_was(tmp_path: Path) -> None:
    # insert_rows writes ROWS_PER_INSERT rows a statement, and a column null (or of its usual value:
    # attempt 1, no flags) in the whole batch as NULL (or that value) in it: columns null or usual in
    # every row, in some, in none; batches of one, of several statements.
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    count = 2 * sqlite.ROWS_PER_INSERT + 3
    records = [
        record(i, first_token_ns=None, anatomy=None, response_id=None if i % 2 else f"resp-{i}",
               usage=Usage(input_tokens=10, output_tokens=i if i % 3 else None),
               cost=None if i == 4 else record(0).cost, attempt=2 if i == 7 else 1,
               flags=frozenset({"http_error"}) if i > count - 3 else frozenset())
        for i in range(count)
    ]  # fmt: skip
    sink.write(records[:1], [], 0)
    sink.write(records[1 : count - 3], [], 0)  # flags empty in every row, attempts mixed
    sink.write(records[count - 3 :], [], 0)  # attempts all 1, flags mixed
    sink.close()
    rows = stored(path)
    assert [{k: row[k] for k in expected(r)} for row, r in zip(rows, records, strict=True)] == [
        expected(r) for r in records
    ]
    assert [row["response_id"] for row in rows] == [None if i % 2 else f"resp-{i}" for i in range(count)]
    assert [row["output_tokens"] for row in rows] == [i if i % 3 else None for i in range(count)]
    assert [row["attempt"] for row in rows] == [2 if i == 7 else 1 for i in range(count)]
    assert [row["flags"] for row in rows] == ["http_error" if i > count - 3 else "" for i in range(count)]


def test_inserting_into_the_view_stores_what_the_sink_stores(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    sink.write([record(1)], [], 0)
    sink.close()
    db = connect(path)
    db.execute(f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})",
               call_row(record(2)))  # fmt: skip
    db.close()
    # The trigger's key (SQLite's json_array) is the sink's (msgspec): the same context and place rows.
    db = connect(path, readonly=True)
    assert db.execute("SELECT COUNT(*) FROM call_contexts").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM call_places").fetchone()[0] == 1
    assert [row["id"] for row in stored(path)] == ["call-001", "call-002"]


def test_a_failed_batch_leaves_no_ids_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)

    def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(sqlite, "own_values", broken)  # fails after the new context and place were stored
        with pytest.raises(RuntimeError):
            sink.write([record(1)], [], 0)
    sink.write([record(1)], [], 0)  # their ids were rolled back: stored again, not reused
    assert [row["id"] for row in stored(path)] == ["call-001"]


def test_a_ledger_of_the_old_schema_keeps_its_calls(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _tokentrail_migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)")
    for fn in migrations.MIGRATIONS[:4]:  # the schema up to m004: one wide calls table
        fn(db)
        db.execute("INSERT INTO _tokentrail_migrations VALUES (?, 0)", (fn.__name__,))
    old = [record(i, model=f"m{i % 3}") for i in range(9)]
    wide = list(migrations.V1_COLUMNS)
    rows = [expected(r) for r in old]
    db.executemany(f"INSERT INTO calls ({', '.join(wide)}) VALUES ({', '.join('?' * len(wide))})",
                   [tuple(row[c] for c in wide) for row in rows])  # fmt: skip
    db.close()
    SqliteSink(path).write([record(100, model="m1")], [], 0)  # opening migrates; new calls join the old
    got = stored(path)
    assert [{k: row[k] for k in wide} for row in got[:9]] == rows
    assert got[9]["id"] == "call-100"
    db = connect(path, readonly=True)
    assert db.execute("SELECT COUNT(*) FROM call_contexts").fetchone()[0] == 3
    assert "calls_v1" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}


class _Collect:
    def __init__(self, fail_first: bool) -> None:
        self.fail = fail_first
        self.got: list[str] = []

    def write(self, records: list[CallRecord], scopes: list[Any], dropped: int) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("transient")
        self.got += [r.id for r in records]

    def close(self) -> None:
        pass


def test_a_sink_that_fails_is_retried_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    good, flaky = _Collect(False), _Collect(True)
    monkeypatch.setattr(pipeline, "_sinks", [good, flaky])
    monkeypatch.setattr(pipeline, "_backlogs", {})
    with pytest.warns(Warning):
        pipeline._ready.extend([record(1), record(2)])
        pipeline.write_ready()
    pipeline._ready.append(record(3))
    pipeline.write_ready()
    assert good.got == ["call-001", "call-002", "call-003"]  # each once, though the other sink failed
    assert flaky.got == ["call-001", "call-002", "call-003"]  # its batch again, in order, then the new one


@pytest.mark.parametrize("text", ["0.000012345", "1E-7", "0E-12", "12.5", "0.0000001230", "1.2E+3", "100", "0", "-0.5"])
def test_costs_are_stored_as_plain_decimal_text(text: str) -> None:
    from tokentrail.sinks.sqlite import decimal_text

    assert decimal_text(Decimal(text)) == format(Decimal(text), "f")


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.integers(0, 10**6), st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 10**12, 15 * 10**11])))
def test_a_cost_stored_as_pico_dollars_reads_as_its_decimal_text(pico: int) -> None:
    # The sink stores a cost priced in integers as its pico-dollars alone; the view writes the text
    # that decimal_text would have stored.
    text = _MEMORY.execute(f"SELECT {migrations._COST_TEXT} FROM (SELECT ? AS cost_pico) AS r", (pico,)).fetchone()[0]
    assert text == sqlite.decimal_text(Cost(pico=pico).amount)


_MEMORY = sqlite3.connect(":memory:", check_same_thread=False)


def test_the_view_shows_each_cost_as_it_was_priced(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "ledger.db")
    costs = [Cost(pico=12_345_000, price_version="v"), Cost(decimal=Decimal("0.0000123450"), price_version="v"),
             Cost(pico=0, price_version="v"), None]  # fmt: skip
    sink.write([record(i, cost=cost) for i, cost in enumerate(costs)], [], 0)
    sink.close()
    rows = stored(tmp_path / "ledger.db")
    assert [(row["cost_usd"], row["cost_pico"]) for row in rows] == [
        ("0.000012345", 12_345_000), ("0.0000123450", 12_345_000), ("0", 0), (None, None),
    ]  # fmt: skip
