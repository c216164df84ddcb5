"""The ``tokentrail`` command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tokentrail.report import CALL_FIELDS
from tokentrail.sim import Simulator


def tokentrail(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


APP = textwrap.dedent(
    """
    import sys, openai
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test", max_retries=1)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    client.embeddings.create(model="text-embedding-3-small", input="hello")
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    for _ in stream:
        pass
    print("app done")
    """
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, sim: Simulator) -> Path:
    """A ledger filled by an unmodified program under `tokentrail run`."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "app.py").write_text(APP)
    db = tmp / "runs.db"
    done = tokentrail("run", "--db", str(db), "--run", "trial-7", "--", sys.executable, "app.py", sim.url, cwd=tmp)
    assert done.returncode == 0, done.stderr
    assert "app done" in done.stdout
    return db


def test_run_captures_a_program_without_code_changes(ledger: Path) -> None:
    done = tokentrail("calls", "--db", str(ledger), "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in done.stdout.splitlines()]
    assert [c["api"] for c in calls] == ["openai.chat", "openai.embeddings", "openai.chat"]
    assert {c["run"] for c in calls} == {"trial-7"}
    assert all(c["call_site"].startswith("app.py:") for c in calls)
    # The stream asked for no usage: counted with gpt-4o's own tokenizer, and it says so.
    assert calls[2]["input_tokens"] > 0 and (calls[2]["usage_source"], calls[2]["tokenizer"]) == ("counted", "o200k_base")
    assert calls[0]["input_tokens"] > 0 and calls[0]["usage_source"] == "reported"


def test_calls_jsonl_has_the_contract_fields(ledger: Path) -> None:
    line = tokentrail("calls", "--db", str(ledger), "--format", "jsonl", "-n", "1").stdout.splitlines()
    assert len(line) == 1
    record = json.loads(line[0])
    required = {
        "id", "run", "scope_path", "agent", "step", "tool", "provider", "api", "model", "stream", "status",
        "attempt", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
        "total_tokens", "usage_source", "latency_ms", "call_site", "flags",
    }  # fmt: skip
    assert required <= set(record) == set(CALL_FIELDS)


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_report_formats(ledger: Path, fmt: str) -> None:
    done = tokentrail("report", "--db", str(ledger), "--by", "run,model,api", "--format", fmt)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    if fmt == "json":
        data = json.loads(out)
        assert data["total"]["calls"] == 3
        assert {r["model"] for r in data["rows"]} == {"gpt-4o-mini", "text-embedding-3-small", "gpt-4o"}
        assert sum(r["calls_without_usage"] for r in data["rows"]) == 0
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert sum(int(r["calls"]) for r in rows) == 3
    else:
        assert "trial-7" in out and "gpt-4o-mini" in out and "TOTAL" in out


def test_report_every_dimension(ledger: Path) -> None:
    from tokentrail.report import DIMENSIONS

    done = tokentrail("report", "--db", str(ledger), "--by", ",".join(DIMENSIONS), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["calls"] == 3


def test_report_rejects_an_unknown_dimension(ledger: Path) -> None:
    done = tokentrail("report", "--db", str(ledger), "--by", "colour")
    assert done.returncode == 2 and "unknown --by dimension colour" in done.stderr


def test_a_missing_ledger_is_a_clear_error(tmp_path: Path) -> None:
    done = tokentrail("report", "--db", str(tmp_path / "nope.db"))
    assert done.returncode == 2 and "no tokentrail ledger" in done.stderr


def test_run_filter(ledger: Path) -> None:
    done = tokentrail("report", "--db", str(ledger), "--run", "another", "--format", "json")
    assert json.loads(done.stdout)["total"]["calls"] == 0


def test_sim_command_serves_the_openai_format() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokentrail", "sim", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] > 0
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_demo(tmp_path: Path) -> None:
    done = tokentrail("demo", "--db", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    served, recorded = first.split(": ")[1].split(" HTTP requests served by the simulator, ")
    assert int(served) == int(recorded.split()[0]) >= 14
    for agent in ("planner", "researcher", "judge", "writer"):
        assert agent in done.stdout
    assert "tokentrail.demo.helper.classify" in done.stdout


def test_report_what_if_prices_the_recorded_usage_on_another_model(ledger: Path) -> None:
    from decimal import Decimal

    from tokentrail import pricing
    from tokentrail.usage import Usage

    done = tokentrail("report", "--db", str(ledger), "--by", "model", "--what-if", "gpt-4o", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    rates = pricing.rates_for("gpt-4o")
    assert rates is not None
    for row in data["rows"]:
        expected = pricing.amount(rates, Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                                               cache_read_tokens=row["cache_read_tokens"] or 0))  # fmt: skip
        assert Decimal(row["cost_if_gpt-4o"]) == expected  # one call per model here: per-call == per-group
    assert Decimal(data["total"]["cost_if_gpt-4o"]) == sum(Decimal(r["cost_if_gpt-4o"]) for r in data["rows"])


def test_run_reaches_python_children_with_the_runs_scope(tmp_path: Path, sim: Simulator) -> None:
    (tmp_path / "child.py").write_text(APP.replace('print("app done")', 'print("child done")'))
    (tmp_path / "parent.py").write_text(textwrap.dedent("""
        import subprocess, sys
        import openai
        client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "parent"}])
        subprocess.run([sys.executable, "child.py", sys.argv[1]], check=True)
    """))  # fmt: skip
    db = tmp_path / "family.db"
    done = tokentrail("run", "--db", str(db), "--run", "family", "--agent", "launcher", "--",
                      sys.executable, "parent.py", sim.url, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "child done" in done.stdout
    calls = [json.loads(line) for line in tokentrail("calls", "--db", str(db), "--format", "jsonl").stdout.splitlines()]
    assert len(calls) == 4 and {c["run"] for c in calls} == {"family"}
    assert {c["scope_path"] for c in calls} == {"family/launcher"}
    assert {c["call_site"].split(":")[0] for c in calls} == {"parent.py", "child.py"}


def test_report_markdown_keeps_a_pipe_or_a_line_break_in_a_name_inside_its_cell(tmp_path: Path, sim: Simulator) -> None:
    from markdown_it import MarkdownIt  # a GFM table parser (comes with inline-snapshot's rich)

    (tmp_path / "app.py").write_text(APP)
    db = tmp_path / "pipes.db"
    run, agent = "trial|7", "planner|v2\nback\\|slash"
    done = tokentrail("run", "--db", str(db), "--run", run, "--agent", agent, "--",
                      sys.executable, "app.py", sim.url, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = tokentrail("report", "--db", str(db), "--by", "run,agent,model", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("\n\n")[0]
    assert len(table.splitlines()) == 2 + 3 + 1  # head, rule, one row per model, TOTAL
    tokens = MarkdownIt("commonmark").enable("table").parse(table)
    rows: list[list[str]] = []
    for token in tokens:
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline":
            rows[-1].append("".join(child.content for child in token.children or []))  # as read
    head, *body, total = rows
    assert head[:4] == ["run", "agent", "model", "calls"]
    assert all(len(row) == len(head) for row in rows)
    # Each name reads back whole in its own cell; the line break is a <br>.
    assert {(r[0], r[1]) for r in body} == {(run, agent.replace("\n", "<br>"))}
    assert total[:4] == ["TOTAL", "", "", "3"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "json"])
@pytest.mark.parametrize("by", ["", ",", " "])
def test_report_rejects_an_empty_by(ledger: Path, by: str, fmt: str) -> None:
    # It printed the total twice, the second time with TOTAL written over its call count.
    done = tokentrail("report", "--db", str(ledger), "--by", by, "--format", fmt)
    assert done.returncode == 2 and done.stdout == ""
    assert "--by needs at least one dimension; choose from run, agent," in done.stderr


@pytest.mark.parametrize("n", ["-3", "0", "x"])
def test_calls_rejects_a_limit_below_one(ledger: Path, n: str) -> None:
    # SQLite reads LIMIT -3 as no limit: `-n -3` printed every call.
    done = tokentrail("calls", "--db", str(ledger), "-n", n, "--format", "jsonl")
    assert done.returncode == 2 and done.stdout == ""
    assert f"N must be a whole number, 1 or more, not {n}" in done.stderr


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_report_what_if_a_model_without_a_price_is_an_error(ledger: Path, fmt: str) -> None:
    # It printed a column of nulls, said nothing and exited 0.
    done = tokentrail("report", "--db", str(ledger), "--what-if", "gpt-4o-mni", "--format", fmt)
    assert done.returncode == 2 and done.stdout == ""
    assert "no price for --what-if model 'gpt-4o-mni'" in done.stderr and "tokentrail prices" in done.stderr


def test_report_what_if_says_how_many_calls_it_could_not_price(tmp_path: Path, sim: Simulator) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import sys, openai
        client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        try:  # an error answer: no usage, so nothing to price
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"X-Sim-Fault": "500"})
        except openai.InternalServerError:
            pass
    """))  # fmt: skip
    db = tmp_path / "nousage.db"
    done = tokentrail("run", "--db", str(db), "--", sys.executable, "app.py", sim.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = tokentrail("report", "--db", str(db), "--by", "model", "--what-if", "gpt-4o")
    assert done.returncode == 0, done.stderr
    assert "note: 1 call(s) could not be priced on gpt-4o" in done.stdout
