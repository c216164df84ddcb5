"""The ledger fails under the program: locked by another process, full, deleted. The program is never
held up for long, and no record is lost silently: it is written later, or counted and reported."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tokentrail
from tokentrail import report
from tokentrail.sinks import pipeline, sqlite
from tokentrail.sinks.sqlite import SqliteSink, connect

from .test_schema import record, stored

BODY = {"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}


def count(db: Path) -> int:
    return int(report.totals(connect(db, readonly=True))["calls"])


def new_ledger(path: Path) -> Path:
    connect(path).close()
    return path


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the ledger's write lock (a long reprice, a sqlite3 shell left in a
    transaction), until it is killed or ``seconds`` have passed."""
    code = f"""
        import sqlite3, time
        db = sqlite3.connect({str(db)!r}, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        time.sleep({seconds})
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def lockers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def calls(n: int) -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=BODY)))
    for _ in range(n):
        client.post("http://llm.test/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})


# -- a ledger another process holds locked -----------------------------------------------------------


@pytest.mark.parametrize("ledger", ["up to date", "to be made"])
def test_instrument_does_not_wait_for_a_locked_ledger(
    tmp_path: Path, lockers: list[subprocess.Popen[str]], ledger: str
) -> None:
    path = tmp_path / "ledger.db"
    if ledger == "up to date":
        new_ledger(path)
    lockers.append(hold_lock(path, 8))  # "to be made": the locker's empty database is to be migrated
    tokentrail.flush()
    started = time.monotonic()
    try:
        tokentrail.instrument(path)
        waited = time.monotonic() - started
        calls(7)
        lockers[0].kill()  # the lock is let go: the writer migrates the ledger and writes the records
        lockers[0].wait()
        tokentrail.flush()
        assert count(path) == 7
    finally:
        tokentrail.uninstrument()
    assert waited < 2


def test_a_locked_ledger_is_not_an_error_but_a_file_that_cannot_be_one_is(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database " * 100)
    with pytest.raises(tokentrail.StoreError, match="cannot open"):
        SqliteSink(tmp_path / "notes.db")
    (tmp_path / "file").write_text("")
    with pytest.raises(tokentrail.StoreError, match="cannot open"):  # its directory cannot be made
        SqliteSink(tmp_path / "file" / "ledger.db")


PROGRAM = """
import json, os, sys, time
import httpx
import tokentrail
from tokentrail.sinks import pipeline

client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={body!r})))

def calls(n):
    for _ in range(n):
        client.post("http://llm.test/v1/chat/completions", json={{"model": "gpt-4o-mini", "messages": []}})

tokentrail.instrument(sys.argv[1])
{code}
"""


def start(tmp_path: Path, code: str, db: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM.format(body=BODY, code=textwrap.dedent(code).strip()))
    env = {**os.environ, "TOKENTRAIL_STRICT": "0"}  # as users run it: the locked ledger is no bug of ours
    return subprocess.Popen(
        [sys.executable, str(script), str(db), *args],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_a_ledger_locked_at_exit_delays_it_only_briefly_and_the_loss_is_reported(
    tmp_path: Path, lockers: list[subprocess.Popen[str]], ending: str
) -> None:
    db = new_ledger(tmp_path / "ledger.db")
    code = """
    calls(3)
    tokentrail.flush()
    print("ready", flush=True)
    sys.stdin.readline()  # the ledger is locked now
    calls(40)
    print("go", flush=True)
    if sys.argv[2:] == ["sigterm"]:
        time.sleep(60)
    """
    proc = start(tmp_path, code, db, ending)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    lockers.append(hold_lock(db, 60))
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "go"
    began = time.monotonic()
    if ending == "sigterm":
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    took = time.monotonic() - began
    assert took < pipeline.exit_timeout + 3, err
    assert proc.returncode == (0 if ending == "exit" else -signal.SIGTERM), err
    assert f"40 records were dropped, unwritten when the {'program exited' if ending == 'exit' else 'process'}" in err
    assert f"not written to the tokentrail ledger at {db}" in err and "database is locked" in err
    lockers[0].kill()
    lockers[0].wait()
    assert count(db) == 3


# -- a full disk ---------------------------------------------------------------------------------------


def _full_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection the sink opens finds its database full: no page past those it has (SQLite's
    ``max_page_count``: the same SQLITE_FULL as a full disk, mid-transaction, with SQLite's own rollback)."""
    real = sqlite.connect

    def full(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real(*args, **kwargs)  # type: ignore[arg-type]
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        return db

    monkeypatch.setattr(sqlite, "connect", full)


def test_a_full_ledger_reports_its_real_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    _full_at_open(monkeypatch)
    batch = [record(i, scope_id=f"s{i}", requested_model=f"m{i}") for i in range(60)]
    # Not "cannot rollback - no transaction is active": SQLite rolled back already.
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        sink.write(batch, [], 0)
    monkeypatch.undo()  # space is back: the batch, kept by the pipeline, is written next round
    sink.close()
    sink.write(batch, [], 0)
    assert len(stored(path)) == 60


def test_records_a_full_ledger_could_not_take_by_exit_are_counted_and_reported(tmp_path: Path) -> None:
    db = new_ledger(tmp_path / "ledger.db")
    code = """
    calls(5)
    tokentrail.flush()
    sink = pipeline._sinks[0]
    sink._db.execute(f"PRAGMA max_page_count = {sink._db.execute('PRAGMA page_count').fetchone()[0]}")
    calls(300)
    """
    proc = start(tmp_path, code, db)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "cannot rollback" not in err
    assert "database or disk is full" in err
    stored_calls = count(db)
    assert f"{305 - stored_calls} records were dropped, unwritten when the program exited" in err
    assert f"not written to the tokentrail ledger at {db}" in err
    assert stored_calls < 305


def test_an_unwritten_backlog_counts_as_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing:
        def __str__(self) -> str:
            return "the failing sink"

    sink = Failing()
    monkeypatch.setattr(pipeline, "_dropped", 3)  # the queue was full earlier
    monkeypatch.setattr(pipeline, "_dropped_unwritten", 3)
    monkeypatch.setattr(pipeline, "_sinks", [sink])
    monkeypatch.setattr(pipeline, "_backlogs", {sink: ([record(1), record(2)], 0, OSError("no space left"))})
    assert pipeline.drop_unwritten("the test ended") == 2
    assert pipeline.dropped() == 5
    assert not pipeline._backlogs
    assert caplog.messages == [
        "tokentrail: 2 records were dropped, unwritten when the test ended: 2 not written to the failing sink: "
        "no space left"
    ]


# -- a ledger deleted or replaced while the program runs -----------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_ledger_deleted_or_replaced_while_open_is_written_at_its_path(tmp_path: Path, how: str) -> None:
    path = tmp_path / "ledger.db"
    sink = SqliteSink(path)
    sink.write([record(1)], [], 0)
    if how == "deleted":  # a cleanup job: rm *.db*
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
    else:  # another ledger moved into its place (a restored backup)
        other = SqliteSink(tmp_path / "other.db")
        other.write([record(7)], [], 0)
        other.close()
        os.replace(tmp_path / "other.db", path)
    sink.write([record(2), record(3, scope_id="s3")], [], 0)
    sink.close()
    ids = [row["id"] for row in stored(path)]
    assert ids == (["call-002", "call-003"] if how == "deleted" else ["call-002", "call-003", "call-007"])


def test_a_ledger_deleted_under_instrument_gets_the_later_calls(db: Path) -> None:
    calls(3)
    tokentrail.flush()
    shutil.rmtree(db.parent)
    calls(10)
    tokentrail.flush()
    assert count(db) == 10
