"""``tokentrail report`` with prompt anatomy: its sums equal the stored per-call anatomies, a call without
one adds NULL (never 0), and ``--by tool`` adds tool tokens per tool name from the request bodies.

The ledger is filled as a user fills it: unmodified programs under ``tokentrail run`` (one with
``TOKENTRAIL_ANATOMY=1``, one without), real SDKs against the simulator.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import tokentrail
from tokentrail.enrich.anatomy import UNKNOWN_TOOL, anatomy
from tokentrail.sim import Simulator

PARTS = ("tool_definitions", "tool_results", "system", "history", "latest_input")

# An agent loop: each turn re-sends the earlier tool calls and results, as real agents do. Four API
# families' ways of writing tools (chat, streamed chat, Responses, Anthropic), a tool result whose call
# is not in the request, a model whose own tokenizer is not available (estimated), and an embedding.
AGENT = textwrap.dedent(
    """
    import json, sys, anthropic, openai, tokentrail

    SEARCH = {"type": "function", "function": {"name": "search", "description": "Search the web.",
              "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    CALC = {"type": "function", "function": {"name": "calc",
            "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}

    def call(i, name, args):
        return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}

    oa = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test", max_retries=0)
    an = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-ant-test", max_retries=0)
    history = [{"role": "system", "content": "You are a careful researcher."},
               {"role": "user", "content": "How deep is Lake Baikal, in feet?"}]
    first = {"model": "gpt-4o-mini", "messages": list(history), "tools": [SEARCH, CALC]}
    with open("first_request.json", "w") as f:
        json.dump(first, f)
    with tokentrail.run("agentic"):
        with tokentrail.agent("researcher"):
            oa.chat.completions.create(**first)
            history += [{"role": "assistant", "content": None, "tool_calls": [call(1, "search", '{"q": "Baikal"}')]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "Lake Baikal is 1,642 m deep."}]
            with tokentrail.tool("calculator"):
                oa.chat.completions.create(model="gpt-4o-mini", messages=history, tools=[SEARCH, CALC])
            history += [{"role": "assistant", "content": None, "tool_calls": [call(2, "calc", '{"expr": "1642*3"}')]},
                        {"role": "tool", "tool_call_id": "call_2", "content": "5387.14"},
                        {"role": "tool", "tool_call_id": "call_9", "content": "a result whose call was trimmed"}]
            stream = oa.chat.completions.create(model="gpt-4o", messages=history, tools=[SEARCH, CALC], stream=True)
            for _ in stream:
                pass
            oa.responses.create(model="gpt-4o-mini", instructions="Be brief.", tools=[
                {"type": "function", "name": "search", "parameters": {"type": "object"}}], input=[
                {"role": "user", "content": "Find the river."},
                {"type": "function_call", "call_id": "r1", "name": "search", "arguments": '{"q": "river"}'},
                {"type": "function_call_output", "call_id": "r1", "output": "The Angara flows out of Baikal."},
                {"role": "user", "content": "Which river flows out?"}])
        with tokentrail.agent("writer"):
            an.messages.create(model="claude-haiku-4-5", max_tokens=100, system="Write plainly.", tools=[
                {"name": "lookup", "description": "Look a fact up.", "input_schema": {"type": "object"}}], messages=[
                {"role": "user", "content": "Summarise."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "deepest lake"}]},
                {"role": "user", "content": "Now the summary, please."}])
            oa.embeddings.create(model="text-embedding-3-small", input="hello")
    print("agent done")
    """
)

PLAIN = textwrap.dedent(
    """
    import sys, openai, tokentrail
    oa = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test", max_retries=0)
    with tokentrail.agent("researcher"):
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   tools=[{"type": "function", "function": {"name": "search"}}])
    print("plain done")
    """
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, sim: Simulator) -> Path:
    tmp = tmp_path_factory.mktemp("anatomy")
    (tmp / "agent.py").write_text(AGENT)
    (tmp / "plain.py").write_text(PLAIN)
    db = tmp / "ledger.db"
    done = tokentrail("run", "--db", str(db), "--", sys.executable, "agent.py", sim.url, cwd=tmp,
                      env={"TOKENTRAIL_ANATOMY": "1"})  # fmt: skip
    assert done.returncode == 0 and "agent done" in done.stdout, done.stderr
    done = tokentrail("run", "--db", str(db), "--run", "plain", "--", sys.executable, "plain.py", sim.url, cwd=tmp,
                      env={"TOKENTRAIL_ANATOMY": "0"})  # fmt: skip
    assert done.returncode == 0 and "plain done" in done.stdout, done.stderr
    return db


def calls(db: Path, *args: str) -> list[dict[str, Any]]:
    done = tokentrail("calls", "--db", str(db), "--format", "jsonl", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def report_json(db: Path, *args: str) -> dict[str, Any]:
    done = tokentrail("report", "--db", str(db), "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def part_sums(records: list[dict[str, Any]]) -> dict[str, int | None]:
    """The five parts summed over the calls that have an anatomy; None when none has one."""
    seen = [c["anatomy"] for c in records if c["anatomy"] is not None]
    return {p: sum(a[p] for a in seen) if seen else None for p in PARTS}


def test_the_ledger_holds_what_the_programs_sent(ledger: Path, tmp_path: Path) -> None:
    records = calls(ledger)
    assert [c["api"] for c in records if c["run"] == "agentic"] == [
        "openai.chat", "openai.chat", "openai.chat", "openai.responses", "anthropic.messages", "openai.embeddings",
    ]  # fmt: skip
    assert all(c["anatomy"] is not None for c in records if c["run"] == "agentic")
    [plain] = [c for c in records if c["run"] == "plain"]
    assert plain["anatomy"] is None
    # The stored anatomy is the anatomy of the body the SDK sent, per-name counts included.
    first = json.loads((ledger.parent / "first_request.json").read_text())
    expected = anatomy("openai.chat", json.dumps(first).encode(), None)
    assert expected is not None and records[0]["anatomy"] == expected.as_dict()
    assert records[0]["anatomy"]["tool_definitions_by_name"].keys() == {"search", "calc"}
    # Provenance: the Anthropic model's own tokenizer is not available offline.
    sources = {c["api"]: c["anatomy"]["source"] for c in records if c["anatomy"]}
    assert sources["anthropic.messages"] == "estimated" and sources["openai.chat"] == "counted"


@pytest.mark.parametrize("by", ["run", "agent,tool", "model", "api,run"])
def test_report_sums_equal_the_stored_anatomies(ledger: Path, by: str) -> None:
    records = calls(ledger)
    data = report_json(ledger, "--by", by)
    dims = by.split(",")
    model = lambda c: c["model"] or c["requested_model"]  # noqa: E731 (the report's model dimension)
    key = lambda c: tuple(model(c) if d == "model" else c[d] for d in dims)  # noqa: E731
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in records:
        groups.setdefault(key(c), []).append(c)
    assert {tuple(r[d] for d in dims) for r in data["rows"]} == set(groups)
    for row in data["rows"]:
        group = groups[tuple(row[d] for d in dims)]
        assert {p: row[p] for p in PARTS} == part_sums(group), row
        assert row["calls_without_anatomy"] == sum(c["anatomy"] is None for c in group)
        estimated = sum(c["anatomy"] is not None and c["anatomy"]["source"] == "estimated" for c in group)
        assert row["calls_anatomy_estimated"] == estimated
    total = data["total"]
    assert {p: total[p] for p in PARTS} == part_sums(records)
    assert (total["calls_without_anatomy"], total["calls_anatomy_estimated"]) == (1, 1)


def test_a_group_without_anatomy_is_null_not_zero(ledger: Path) -> None:
    rows = {r["run"]: r for r in report_json(ledger, "--by", "run")["rows"]}
    assert all(rows["plain"][p] is None for p in PARTS)
    assert rows["plain"]["calls_without_anatomy"] == 1
    assert all(isinstance(rows["agentic"][p], int) for p in PARTS)
    # The agent shared by both runs: the sums cover the calls that had an anatomy, and say one had none.
    researcher = [r for r in report_json(ledger, "--by", "agent")["rows"] if r["agent"] == "researcher"]
    assert researcher[0]["calls"] == 5 and researcher[0]["calls_without_anatomy"] == 1
    assert researcher[0]["tool_definitions"] == part_sums(
        [c for c in calls(ledger) if c["agent"] == "researcher"])["tool_definitions"]  # fmt: skip


def test_anatomy_columns_show_when_the_selection_has_anatomy(ledger: Path) -> None:
    plain = report_json(ledger, "--run", "plain", "--by", "run")
    assert "tool_definitions" not in plain["total"]  # no call in the selection has one
    forced = report_json(ledger, "--run", "plain", "--by", "run", "--anatomy")
    assert all(forced["total"][p] is None for p in PARTS) and forced["total"]["calls_without_anatomy"] == 1
    hidden = report_json(ledger, "--by", "tool", "--no-anatomy")
    assert "system" not in hidden["total"] and "by_tool_name" not in hidden
    nothing = report_json(ledger, "--run", "no-such-run", "--anatomy")
    assert nothing["total"]["calls"] == 0 and all(nothing["total"][p] is None for p in PARTS)


def expected_by_tool_name(
    records: list[dict[str, Any]], group: str | None = None
) -> dict[tuple[Any, ...], dict[str, int]]:
    """Per (group, tool name): calls offering it, calls whose history called it, and its tokens."""
    out: dict[tuple[Any, ...], Counter[str]] = {}
    for c in records:
        a = c["anatomy"]
        if a is None:
            continue
        names = {*a["tool_definitions_by_name"], *a["tool_results_by_name"], *a["tools_offered"], *a["tools_called"]}
        for name in names:
            counter = out.setdefault((*((c[group],) if group else ()), name), Counter())
            counter["calls_offered"] += name in a["tools_offered"]
            counter["calls_in_history"] += name in a["tools_called"]
            counter["tool_definition_tokens"] += a["tool_definitions_by_name"].get(name, 0)
            counter["tool_result_tokens"] += a["tool_results_by_name"].get(name, 0)
    columns = ("calls_offered", "calls_in_history", "tool_definition_tokens", "tool_result_tokens")
    return {k: {col: v[col] for col in columns} for k, v in out.items()}


def test_by_tool_sums_tool_tokens_per_tool_name(ledger: Path) -> None:
    records = calls(ledger)
    data = report_json(ledger, "--by", "tool")
    # The main rows still group by the tokentrail.tool() scope.
    assert {r["tool"] for r in data["rows"]} == {None, "calculator"}
    got = {(r["tool_name"],): {k: v for k, v in r.items() if k != "tool_name"} for r in data["by_tool_name"]}
    assert got == expected_by_tool_name(records)
    search = got[("search",)]
    # search is offered by 3 chat calls, the Responses call and the plain run's call (no anatomy, not here).
    assert (search["calls_offered"], search["calls_in_history"]) == (4, 3)
    assert got[(UNKNOWN_TOOL,)] == {
        "calls_offered": 0, "calls_in_history": 0, "tool_definition_tokens": 0,
        "tool_result_tokens": records[2]["anatomy"]["tool_results_by_name"][UNKNOWN_TOOL],
    }  # fmt: skip
    # Per-name result tokens add up to the tool_results part (definitions may differ by the list's
    # punctuation in a family that counts the list as a whole, so only results are exact here).
    assert sum(r["tool_result_tokens"] for r in data["by_tool_name"]) == data["total"]["tool_results"]
    totals = [r["tool_definition_tokens"] + r["tool_result_tokens"] for r in data["by_tool_name"]]
    assert totals == sorted(totals, reverse=True)


def test_by_tool_with_other_dimensions_and_a_run_filter(ledger: Path) -> None:
    records = calls(ledger)
    data = report_json(ledger, "--by", "agent,tool")
    got = {(r["agent"], r["tool_name"]): {k: v for k, v in r.items() if k not in ("agent", "tool_name")}
           for r in data["by_tool_name"]}  # fmt: skip
    assert got == expected_by_tool_name(records, "agent")
    assert ("writer", "lookup") in got and ("writer", "search") not in got
    assert report_json(ledger, "--by", "tool", "--run", "plain", "--anatomy")["by_tool_name"] == []
    only = report_json(ledger, "--by", "tool", "--run", "agentic")["by_tool_name"]
    assert {r["tool_name"] for r in only} == {"search", "calc", "lookup", UNKNOWN_TOOL}


def test_text_formats_show_both_tables(ledger: Path) -> None:
    table = tokentrail("report", "--db", str(ledger), "--by", "tool")
    assert table.returncode == 0, table.stderr
    head = table.stdout.splitlines()[0].split()
    assert head[-7:] == ["tool_defs", "tool_results", "system", "history", "latest", "no_anatomy", "anat_est"]
    assert "Tool tokens by tool name" in table.stdout and "tool_name" in table.stdout
    assert "1 call(s) had no prompt anatomy" in table.stdout
    markdown = tokentrail("report", "--db", str(ledger), "--by", "tool", "-f", "markdown").stdout
    assert "| tool_name | offered | in_history | definition_tokens | result_tokens |" in markdown
    plain = tokentrail("report", "--db", str(ledger), "--by", "model").stdout
    assert "tool_defs" in plain and "Tool tokens by tool name" not in plain  # no --by tool, no second table


def test_csv_holds_the_second_table_after_an_empty_line(ledger: Path) -> None:
    done = tokentrail("report", "--db", str(ledger), "--by", "tool", "-f", "csv")
    assert done.returncode == 0, done.stderr
    main, by_name = done.stdout.split("\n\n")
    rows = list(csv.DictReader(io.StringIO(main)))
    assert sum(int(r["tool_definitions"] or 0) for r in rows) == report_json(ledger)["total"]["tool_definitions"]
    assert any(r["tool"] == "" and r["calls_without_anatomy"] == "1" for r in rows)
    named = {r["tool_name"]: r for r in csv.DictReader(io.StringIO(by_name))}
    assert named.keys() == {"search", "calc", "lookup", UNKNOWN_TOOL}
    assert int(named["calc"]["calls_offered"]) == 3
    # Without anatomy data the CSV is one table, as before.
    plain = tokentrail("report", "--db", str(ledger), "--by", "tool", "-f", "csv", "--run", "plain").stdout
    assert "\n\n" not in plain and "tool_definitions" not in plain


def test_older_or_damaged_anatomies_are_counted_apart(ledger: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    shutil.copy(ledger, db)
    for suffix in ("-wal", "-shm"):
        if Path(str(ledger) + suffix).exists():
            shutil.copy(Path(str(ledger) + suffix), Path(str(db) + suffix))
    conn = sqlite3.connect(db)
    try:
        # An anatomy from before the per-name counts were stored, and a value that is not JSON.
        ids = [r[0] for r in conn.execute("SELECT id FROM calls WHERE api = 'openai.chat' ORDER BY started_ns")]
        conn.execute("UPDATE call_rows SET anatomy = json_remove(anatomy, '$.tool_definitions_by_name',"
                     " '$.tool_results_by_name') WHERE id = ?", (ids[0],))  # fmt: skip
        conn.execute("UPDATE call_rows SET anatomy = '{not json' WHERE id = ?", (ids[1],))
        conn.commit()
    finally:
        conn.close()
    data = report_json(db, "--by", "tool")
    records = calls(ledger)
    assert data["total"]["calls_without_anatomy"] == 2  # the plain call and the damaged one
    kept = [c for c in records if c["anatomy"] is not None and c["id"] != ids[1]]
    assert {p: data["total"][p] for p in PARTS} == part_sums(kept)
    per_name = [c for c in kept if c["id"] != ids[0]]
    got = {(r["tool_name"],): {k: v for k, v in r.items() if k != "tool_name"} for r in data["by_tool_name"]}
    assert got == expected_by_tool_name(per_name)
    table = tokentrail("report", "--db", str(db), "--by", "tool")
    assert table.returncode == 0, table.stderr
    assert "1 call(s) have an anatomy without per-tool counts" in table.stdout
    # `calls` shows the damaged value as its text rather than failing.
    listed = calls(db)
    assert [c["anatomy"] for c in listed if c["id"] == ids[1]] == ["{not json"]
