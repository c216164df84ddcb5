"""The embedded ledger: one SQLite file, WAL, safe for many processes writing at once."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import chain, islice
from pathlib import Path

import msgspec

from tokentrail.errors import StoreError
from tokentrail.records import PICO, CallRecord, Flag
from tokentrail.sinks import pipeline
from tokentrail.sinks.migrations import CONTEXT_COLUMNS, MIGRATIONS, PLACE_COLUMNS, ROW_COLUMNS, V1_COLUMNS, migrate
from tokentrail.sinks.pipeline import _HOST, ScopeEvent

log = logging.getLogger("tokentrail")

CALL_COLUMNS = [c for c in V1_COLUMNS if c != "total_tokens"]
"""The columns an ``INSERT INTO calls`` (the view) takes: every stored field of a record."""
_INSERT_CONTEXT = (
    f"INSERT OR IGNORE INTO call_contexts (key, {', '.join(CONTEXT_COLUMNS)})"
    f" VALUES (?, {', '.join('?' * len(CONTEXT_COLUMNS))})"
)
_INSERT_PLACE = (
    f"INSERT OR IGNORE INTO call_places (key, {', '.join(PLACE_COLUMNS)})"
    f" VALUES (?, {', '.join('?' * len(PLACE_COLUMNS))})"
)
_INSERT_SCOPE = (
    "INSERT OR IGNORE INTO scopes"
    " (id, parent_id, run_id, kind, name, id_path, name_path, tags, started_ns, pid, host_name)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    create: bool = True,
    timeout: float = 60.0,
    patience: Callable[[], bool] | None = None,
) -> sqlite3.Connection:
    """Open (and migrate) a ledger; ``create``: make one where there is none. Raises `StoreError`
    with the path when it cannot, and for a file that is not a ledger (another program's database
    is never written to). ``timeout``: seconds to wait for a lock another connection holds; with
    ``patience``, a migration waiting for one is tried again while ``patience()`` is true (a
    `StoreError` whose cause is `busy` when it is not)."""
    path = Path(path)
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            if not path.exists():
                raise StoreError(f"no tokentrail ledger at {path} (set --db or TOKENTRAIL_DB)")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            _check_ledger(db, path, create=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = writable = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            _check_ledger(db, path, create=create)
            if not _up_to_date(db):
                # An up-to-date ledger in WAL mode takes no lock here (only reads): a process
                # holding the write lock for long does not hold up instrument() (bug hunt).
                _retry_busy(lambda: writable.execute("PRAGMA journal_mode=WAL"), patience)
                _retry_busy(lambda: migrate(writable), patience)
            # NORMAL in WAL mode survives application crashes; only a power loss can lose the last
            # commits. FULL would fsync every batch (BENCHMARKING.md: the hidden cost of small commits).
            db.execute("PRAGMA synchronous=NORMAL")
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise StoreError(f"cannot open the tokentrail ledger at {path}: {exc}") from exc
    except BaseException:
        if db is not None:
            db.close()
        raise
    db.row_factory = sqlite3.Row
    return db


def busy(exc: BaseException | None) -> bool:
    """``exc`` says another connection holds the lock SQLite needed (SQLITE_BUSY or SQLITE_LOCKED):
    not a fault of the ledger, a reason to try again later."""
    if isinstance(exc, StoreError):
        exc = exc.__cause__
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.OperationalError) else None
    return code is not None and code & 0xFF in _BUSY_CODES


_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _retry_busy(step: Callable[[], object], patience: Callable[[], bool] | None) -> None:
    """``step()``, tried again (each try waits the connection's busy timeout) while it finds the
    database locked and ``patience()`` is true."""
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if patience is None or not busy(exc) or not patience():
                raise


def _up_to_date(db: sqlite3.Connection) -> bool:
    """Every migration is applied and the file is in WAL mode: opening needs no write (nor lock)."""
    try:
        applied = {row[0] for row in db.execute("SELECT name FROM _tokentrail_migrations")}
    except sqlite3.OperationalError:  # no such table: a new ledger
        return False
    if not _MIGRATION_NAMES <= applied:
        return False
    return str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


_MIGRATION_NAMES = frozenset(fn.__name__ for fn in MIGRATIONS)


def _check_ledger(db: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Raise `StoreError` unless ``db`` is a ledger, or (``create``) an empty database to make one in.
    Reading the schema also fails, as `sqlite3.DatabaseError`, on a file that is not SQLite."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    if "_tokentrail_migrations" in tables or (create and not tables):
        return
    db.close()
    if tables:
        raise StoreError(f"{path} is a SQLite database but not a tokentrail ledger (choose another --db)")
    raise StoreError(f"no tokentrail ledger at {path} (the file is empty)")


def context_key(r: CallRecord) -> tuple[object, ...]:
    """What ``r`` shares with other calls, as a hashable key (cheap: no conversions; not an
    attrgetter, whose generic attribute lookups cost more than the bytecode's cached ones)."""
    return (r.api, r.provider, r.host, r.endpoint, r.requested_model, r.model, r.stream, r.status,
            r.http_status, r.error, r.provenance, r.call_site, r.pid, r.host_name)  # fmt: skip


def context_of(r: CallRecord) -> tuple[object, ...]:
    """What ``r`` shares with other calls, in `CONTEXT_COLUMNS` order."""
    p, site = r.provenance, r.call_site
    return (
        r.api, r.provider, r.host, r.endpoint, r.requested_model, r.model, int(r.stream), r.status.value,
        r.http_status, r.error, p.input.value, p.output.value, p.source.value, p.tokenizer,
        None if site is None else str(site), None if site is None else site.qualname,
        None if site is None else site.module, r.pid, r.host_name,
    )  # fmt: skip


def place_of(r: CallRecord) -> tuple[object, ...]:
    """Where in the run tree ``r`` was made, in `PLACE_COLUMNS` order."""
    return (r.scope_id, r.scope_id_path, r.scope_path, r.run_id, r.run, r.agent, r.step, r.tool,
            json.dumps(r.tags) if r.tags else None)  # fmt: skip


def own_values(r: CallRecord, context_id: int, place_id: int) -> tuple[object, ...]:
    """What is ``r``'s own, in `ROW_COLUMNS` order."""
    u, cost = r.usage, r.cost
    return (
        r.id, context_id, place_id, r.attempt, r.started_ns, r.latency_ns, r.first_token_ns,
        u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens,
        r.raw_usage_json, None if cost is None or cost.decimal is None else decimal_text(cost.decimal),
        None if cost is None else cost.pico if cost.pico is not None else pico(cost.decimal),
        None if cost is None else cost.price_version,
        ",".join(sorted(r.flags)) if r.flags else "", r.response_id,
        None if r.anatomy is None else json.dumps(r.anatomy),
    )  # fmt: skip


def call_row(r: CallRecord) -> tuple[object, ...]:
    """A record as a row of the ``calls`` view, in `CALL_COLUMNS` order (what ``INSERT INTO calls`` takes)."""
    by_name = dict(zip(CONTEXT_COLUMNS, context_of(r), strict=True))
    by_name.update(zip(PLACE_COLUMNS, place_of(r), strict=True))
    by_name.update(zip(ROW_COLUMNS, own_values(r, 0, 0), strict=True))
    return tuple(by_name[c] for c in CALL_COLUMNS)


def decimal_text(amount: Decimal) -> str:
    """``format(amount, "f")``: the same digits, from ``str()`` where it writes no exponent (the
    common amount; half the instructions of the format spec's parsing)."""
    text = str(amount)
    return format(amount, "f") if "E" in text else text


def pico(amount: Decimal | None) -> int | None:
    """USD as integer pico-dollars (exact for every price the table holds), for sums in SQL."""
    return None if amount is None else int((amount * PICO).to_integral_value())


LOCK_WAIT = 5.0
"""Seconds a batch waits for the write lock another process holds before it is left for the next
round (less once the exit's flush runs out of time: `pipeline.exit_deadline`)."""
OPEN_WAIT = 0.5
"""Seconds `SqliteSink()` (so `instrument()`) waits for a lock to migrate the ledger before it
leaves that to the writer."""
_LOCK_STEP = 0.1
"""SQLite's busy timeout of the sink's connection: a wait for a lock is tried again in steps of
this, so that the exit's deadline can end it."""


def _patience(wait: float) -> Callable[[], bool]:
    """True until ``wait`` seconds from now, or the exit's flush ran out of time."""
    until = time.monotonic() + wait

    def patient() -> bool:
        now, deadline = time.monotonic(), pipeline.exit_deadline
        return now < until and (deadline is None or now < deadline)

    return patient


class SqliteSink:
    """Writes batches in one transaction each. Opened lazily in the writing thread; reopened after fork,
    and when the file at its path is no longer the one it opened (deleted or replaced).

    The ids of the contexts and places already stored are kept in memory, so a call whose context
    and place were seen before costs one row of `ROW_COLUMNS`; new ones are stored (or found, when
    another process stored them first) inside the batch's transaction.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        """(st_dev, st_ino) of the file ``_db`` opened."""
        self._lock = threading.Lock()
        self._contexts: dict[tuple[object, ...], int] = {}
        self._places: dict[object, int] = {}
        """Place ids by scope id (or by `place_of` for a record without one)."""
        try:  # fail early, in the caller, if the file cannot be a ledger
            connect(self.path, timeout=_LOCK_STEP, patience=_patience(OPEN_WAIT)).close()
        except StoreError as exc:
            if not busy(exc):
                raise
            # Another process holds the ledger locked (a migration, a long reprice, a sqlite3 shell
            # left in a transaction): not a fault. The writer migrates it once the lock is free.
            log.info("tokentrail: %s is locked by another process; it is opened when it is free", self)

    def __str__(self) -> str:
        return f"the tokentrail ledger at {self.path}"

    def _conn(self) -> sqlite3.Connection:
        if self._db is not None and not self._same_file():
            log.warning("tokentrail: %s was deleted or replaced while in use; writing to the file now there", self)
            with contextlib.suppress(sqlite3.Error):
                # The -wal file at the path is still this connection's (SQLite does not remove it
                # when the file it belongs to was moved away): emptied, so that the new file does
                # not take in frames of the old one (a corrupt ledger).
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._db is None:
            db = connect(self.path, timeout=_LOCK_STEP, patience=_patience(LOCK_WAIT))
            try:
                st = os.stat(self.path)
            except OSError:
                db.close()
                raise
            self._db, self._file = db, (st.st_dev, st.st_ino)
            # Ids belong to the file this connection opened: a new connection may see another file.
            self._contexts, self._places = {}, {}
        return self._db

    def _same_file(self) -> bool:
        """The file at ``path`` is still the one ``_db`` opened (one stat per batch): a ledger
        deleted while open would otherwise take every later record into its unlinked inode."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError:  # cannot tell (a directory's permissions changed): keep the connection
            return True
        return (st.st_dev, st.st_ino) == self._file

    def write(self, records: list[CallRecord], scopes: list[ScopeEvent], dropped: int) -> None:
        with self._lock:
            try:
                self._write(records, scopes, dropped, careful=False)
            except _UNSTORABLE:
                # A value SQLite cannot hold (a string with a lone surrogate, an integer past 64
                # bits) came with a record: the batch is written again with such values made
                # storable (and the record flagged), so one bad payload cannot hold back the rest.
                self._write(records, scopes, dropped, careful=True)

    def _write(self, records: list[CallRecord], scopes: list[ScopeEvent], dropped: int, *, careful: bool) -> None:
        """One batch in one transaction; ``careful``: every value made `storable` first."""
        clean = storable if careful else _as_is
        db = self._conn()
        opened, closed = [], []
        for kind, scope, at in scopes:
            (opened if kind == "open" else closed).append((scope, at))
        new_contexts: dict[tuple[object, ...], int] = {}
        new_places: dict[object, int] = {}
        _retry_busy(lambda: db.execute("BEGIN IMMEDIATE"), _patience(LOCK_WAIT))
        try:
            if opened:
                db.executemany(
                    _INSERT_SCOPE,
                    [
                        clean((
                            s.id, s.parent.id if s.parent else None, s.run.id if s.run else s.id, s.kind.value,
                            s.name, s.id_path, s.name_path, json.dumps(s.tags) if s.tags else None,
                            s.started_ns, s.pid, _HOST,
                        ))
                        for s, _ in opened
                    ],
                )  # fmt: skip
            if closed:
                db.executemany("UPDATE scopes SET ended_ns = ? WHERE id = ?", [(at, s.id) for s, at in closed])
            if records:
                contexts, places = self._contexts, self._places
                rows = []
                for r in records:
                    context = context_key(r)
                    context_id = contexts.get(context) or new_contexts.get(context)
                    if context_id is None:
                        context_id = new_contexts[context] = _stored_id(db, "call_contexts", clean(context_of(r)))
                    # A scope's id names its place (every other place value comes from the scope).
                    place = r.scope_id or place_of(r)
                    place_id = places.get(place) or new_places.get(place)
                    if place_id is None:
                        place_id = new_places[place] = _stored_id(db, "call_places", clean(place_of(r)))
                    row = own_values(r, context_id, place_id)
                    rows.append(_flagged(r, row) if careful else row)
                insert_rows(db, rows)
            if dropped:
                db.execute(
                    "INSERT INTO drops (at_ns, pid, host_name, count) VALUES (?, ?, ?, ?)",
                    (records[-1].started_ns if records else 0, os.getpid(), _HOST, dropped),
                )
            db.execute("COMMIT")
        except BaseException:
            # The ids found in this transaction are forgotten with it. SQLite has already rolled
            # back after some failed statements (a COMMIT that found the disk full): rolling back
            # again would raise "no transaction is active" and hide the real error.
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:  # the connection's state is unknown: the next batch opens another
                    self._db = None
                    db.close()
            raise
        self._contexts.update(new_contexts)
        self._places.update(new_places)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def after_fork(self) -> None:
        # A SQLite connection must not be used across fork; the child opens its own.
        self._db = None
        self._lock = threading.Lock()


def insert_rows(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Insert `ROW_COLUMNS` rows, `ROWS_PER_INSERT` to a statement (``VALUES (…), (…), …``: a third
    of the instructions per row of ``executemany``, callgrind). A column that is null in every row
    is written as ``NULL`` in the statement, not bound: CPython's sqlite3 looks for an adapter before
    binding ``None`` (~2,500 instructions a value, CPython 3.11), and a call's row typically has three
    or four (first-token time, cache-write count, anatomy). So is a column of `_LITERALS` that holds
    its usual value in every row (a first attempt, no flags): each text bound is copied by SQLite."""
    columns = list(zip(*rows, strict=True))
    nones = (None,) * len(rows)
    usual = {i: (value,) * len(rows) for i, (value, _) in _LITERALS.items()}
    fixed = tuple(i for i in _FIXABLE if columns[i] == usual.get(i, nones))  # == stops at the first that differs
    # The parameters of each statement, row by row, from the columns kept: zip hands chain one
    # tuple it reuses for every row (no row tuple is made, so none for the collector to look at).
    values = chain.from_iterable(zip(*(column for i, column in enumerate(columns) if i not in fixed), strict=True))
    per_row = len(ROW_COLUMNS) - len(fixed)
    for start in range(0, len(rows), ROWS_PER_INSERT):
        count = min(ROWS_PER_INSERT, len(rows) - start)
        db.execute(_insert_statement(fixed, count), list(islice(values, count * per_row)))


ROWS_PER_INSERT = 50
"""Rows per ``INSERT``: 50 × 19 columns stay under 999 parameters, the limit of SQLite before 3.32."""
_LITERALS: dict[int, tuple[object, str]] = {
    ROW_COLUMNS.index("attempt"): (1, "1"),
    ROW_COLUMNS.index("flags"): ("", "''"),
}
"""Columns written as a literal when every row of a batch holds the usual value: (value, SQL)."""
_FIXABLE = (*_LITERALS, *(i for i, c in enumerate(ROW_COLUMNS)
                          if c not in ("id", "context_id", "place_id", "attempt", "started_ns", "flags")))  # fmt: skip
"""The columns `insert_rows` may write into the statement: `_LITERALS`, then every nullable one."""


@functools.lru_cache(maxsize=256)
def _insert_statement(fixed: tuple[int, ...], count: int) -> str:
    """An ``INSERT`` of ``count`` rows, the columns at the indexes ``fixed`` written as ``NULL`` or
    their `_LITERALS` value."""
    values = [
        ("NULL" if i not in _LITERALS else _LITERALS[i][1]) if i in fixed else "?" for i in range(len(ROW_COLUMNS))
    ]
    row = "(" + ", ".join(values) + ")"
    return f"INSERT INTO call_rows ({', '.join(ROW_COLUMNS)}) VALUES {', '.join([row] * count)}"


def _stored_id(db: sqlite3.Connection, table: str, values: tuple[object, ...]) -> int:
    """The id of the ``table`` row holding ``values``, stored now if no process stored it before."""
    key = _encode_key(values).decode()
    db.execute(_INSERT_CONTEXT if table == "call_contexts" else _INSERT_PLACE, (key, *values))
    return db.execute(f"SELECT id FROM {table} WHERE key = ?", (key,)).fetchone()[0]  # type: ignore[no-any-return]


_encode_key = msgspec.json.Encoder().encode
"""The key of a dimension row: its values as a compact JSON array, as SQLite's ``json_array`` writes it."""


_UNSTORABLE = (UnicodeEncodeError, OverflowError)
"""What binding a value SQLite cannot hold raises (sqlite3, CPython 3.11): a str with a lone
surrogate (JSON's ``"\\ud800"`` escape decodes to one), an int outside 64 bits."""
_INT64 = range(-(2**63), 2**63)


def _as_is(values: tuple[object, ...]) -> tuple[object, ...]:
    return values


def storable(values: tuple[object, ...]) -> tuple[object, ...]:
    """``values`` with what SQLite cannot hold made storable: a lone surrogate written as its
    escape (``\\ud800``), an integer past 64 bits as null (no count or cost is that large)."""
    return tuple(
        v.encode("utf-8", "backslashreplace").decode("utf-8") if type(v) is str and not v.isascii()
        else None if type(v) is int and v not in _INT64
        else v
        for v in values
    )  # fmt: skip


_FLAGS_AT = ROW_COLUMNS.index("flags")


def _flagged(r: CallRecord, row: tuple[object, ...]) -> tuple[object, ...]:
    """``r``'s `ROW_COLUMNS` row made `storable`, flagged ``invalid_value`` if any of its values
    (its context's and place's included) had to be changed."""
    cleaned = storable(row)
    if cleaned == row and all(storable(v) == v for v in (context_of(r), place_of(r))):
        return row
    flags = set(filter(None, str(cleaned[_FLAGS_AT]).split(","))) | {Flag.INVALID_VALUE.value}
    return (*cleaned[:_FLAGS_AT], ",".join(sorted(flags)), *cleaned[_FLAGS_AT + 1 :])
