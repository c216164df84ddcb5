"""The embedded ledger: one SQLite file, WAL, safe for many processes writing at once."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

from tokentrail.errors import StoreError
from tokentrail.records import CallRecord
from tokentrail.sinks.migrations import migrate
from tokentrail.sinks.pipeline import _HOST, ScopeEvent, raw_usage_json

CALL_COLUMNS = (
    "id run_id run scope_id scope_id_path scope_path agent step tool api provider host endpoint "
    "requested_model model stream status http_status error attempt started_ns latency_ns first_token_ns "
    "input_tokens output_tokens cache_read_tokens cache_write_tokens reasoning_tokens total_tokens "
    "input_source output_source usage_source tokenizer raw_usage cost_usd price_version flags response_id "
    "call_site call_function call_module pid host_name tags cost_pico anatomy"
).split()
_INSERT_CALL = f"INSERT OR IGNORE INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
_INSERT_SCOPE = (
    "INSERT OR IGNORE INTO scopes"
    " (id, parent_id, run_id, kind, name, id_path, name_path, tags, started_ns, pid, host_name)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and migrate) a ledger. Raises `StoreError` with the path when it cannot."""
    path = Path(path)
    try:
        if readonly:
            if not path.exists():
                raise StoreError(f"no tokentrail ledger at {path} (set --db or TOKENTRAIL_DB)")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives application crashes; only a power loss can lose the last
            # commits. FULL would fsync every batch (BENCHMARKING.md: the hidden cost of small commits).
            db.execute("PRAGMA synchronous=NORMAL")
            migrate(db)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the tokentrail ledger at {path}: {exc}") from exc
    db.row_factory = sqlite3.Row
    return db


def call_row(r: CallRecord) -> tuple[object, ...]:
    """A record as a row of the ``calls`` table, in `CALL_COLUMNS` order."""
    u, p, site = r.usage, r.provenance, r.call_site
    return (
        r.id, r.run_id, r.run, r.scope_id, r.scope_id_path, r.scope_path, r.agent, r.step, r.tool, r.api,
        r.provider, r.host, r.endpoint, r.requested_model, r.model, int(r.stream), r.status.value,
        r.http_status, r.error, r.attempt, r.started_ns, r.latency_ns, r.first_token_ns,
        u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens,
        u.total_tokens, p.input.value, p.output.value, p.source.value, p.tokenizer,
        raw_usage_json(r.raw_usage), None if r.cost is None else format(r.cost.amount, "f"),
        None if r.cost is None else r.cost.price_version, ",".join(sorted(r.flags)), r.response_id,
        None if site is None else str(site), None if site is None else site.qualname,
        None if site is None else site.module, r.pid, r.host_name, json.dumps(r.tags) if r.tags else None,
        None if r.cost is None else pico(r.cost.amount), None if r.anatomy is None else json.dumps(r.anatomy),
    )  # fmt: skip


def pico(amount: Decimal | None) -> int | None:
    """USD as integer pico-dollars (exact for every price the table holds), for sums in SQL."""
    return None if amount is None else int((amount * PICO).to_integral_value())


PICO = Decimal(10) ** 12


class SqliteSink:
    """Writes batches in one transaction each. Opened lazily in the writing thread; reopened after fork."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        connect(self.path).close()  # fail early, in the caller, if the file cannot be a ledger

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.path)
        return self._db

    def write(self, records: list[CallRecord], scopes: list[ScopeEvent], dropped: int) -> None:
        with self._lock:
            db = self._conn()
            opened, closed = [], []
            for kind, scope, at in scopes:
                (opened if kind == "open" else closed).append((scope, at))
            db.execute("BEGIN")
            try:
                if opened:
                    db.executemany(
                        _INSERT_SCOPE,
                        [
                            (
                                s.id, s.parent.id if s.parent else None, s.run.id if s.run else s.id, s.kind.value,
                                s.name, s.id_path, s.name_path, json.dumps(s.tags) if s.tags else None,
                                s.started_ns, s.pid, _HOST,
                            )
                            for s, _ in opened
                        ],
                    )  # fmt: skip
                if closed:
                    db.executemany("UPDATE scopes SET ended_ns = ? WHERE id = ?", [(at, s.id) for s, at in closed])
                if records:
                    db.executemany(_INSERT_CALL, [call_row(r) for r in records])
                if dropped:
                    db.execute(
                        "INSERT INTO drops (at_ns, pid, host_name, count) VALUES (?, ?, ?, ?)",
                        (records[-1].started_ns if records else 0, os.getpid(), _HOST, dropped),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def after_fork(self) -> None:
        # A SQLite connection must not be used across fork; the child opens its own.
        self._db = None
        self._lock = threading.Lock()
