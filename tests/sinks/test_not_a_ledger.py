"""A file that is not a ledger is refused with a clear error, and another program's database is
never written to."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tokentrail.errors import StoreError
from tokentrail.sinks.sqlite import connect


def _app_database(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    return path


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokentrail", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("readonly", [True, False])
def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path: Path, readonly: bool) -> None:
    path = _app_database(tmp_path / "app.db")
    with pytest.raises(StoreError, match="not a tokentrail ledger"):
        connect(path, readonly=readonly)
    assert _tables(path) == ["users"]


@pytest.mark.parametrize("readonly", [True, False])
def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text " * 100)
    with pytest.raises(StoreError, match="cannot open the tokentrail ledger"):
        connect(path, readonly=readonly)


def test_an_empty_file_becomes_a_ledger_only_where_one_may_be_created(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError, match="no tokentrail ledger"):
        connect(path, readonly=True)
    with pytest.raises(StoreError, match="no tokentrail ledger"):
        connect(path, create=False)
    connect(path).close()  # instrument() makes its ledger in it
    assert "_tokentrail_migrations" in _tables(path)


@pytest.mark.parametrize("command", [["report"], ["calls"], ["reprice"]])
def test_the_cli_says_so_and_exits_2(tmp_path: Path, command: list[str]) -> None:
    app = _app_database(tmp_path / "app.db")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 512)
    for path, message in ((app, "not a tokentrail ledger"), (corrupt, "cannot open the tokentrail ledger")):
        done = _cli(*command, "--db", str(path))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
    assert _tables(app) == ["users"]
