"""The ledger's schema, as named, append-only migrations (llm's ``migrations.py`` pattern).

Each migration is a function ``mNNN_name(db)``; the names applied are kept in
``_tokentrail_migrations``. Never edit a released migration: add the next one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def _script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, which would end migrate()'s BEGIN IMMEDIATE.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migration
def m001_calls(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE scopes (
            id TEXT PRIMARY KEY,
            parent_id TEXT,
            run_id TEXT,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            id_path TEXT NOT NULL,
            name_path TEXT NOT NULL,
            tags TEXT,
            started_ns INTEGER,
            ended_ns INTEGER,
            pid INTEGER,
            host_name TEXT
        );
        CREATE INDEX scopes_id_path ON scopes(id_path);
        CREATE INDEX scopes_run ON scopes(run_id);
        CREATE INDEX scopes_name ON scopes(kind, name);

        CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            run_id TEXT,
            run TEXT,
            scope_id TEXT,
            scope_id_path TEXT,
            scope_path TEXT,
            agent TEXT,
            step TEXT,
            tool TEXT,
            api TEXT NOT NULL,
            provider TEXT NOT NULL,
            host TEXT,
            endpoint TEXT,
            requested_model TEXT,
            model TEXT,
            stream INTEGER NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER,
            error TEXT,
            attempt INTEGER NOT NULL,
            started_ns INTEGER NOT NULL,
            latency_ns INTEGER,
            first_token_ns INTEGER,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cache_read_tokens INTEGER,
            cache_write_tokens INTEGER,
            reasoning_tokens INTEGER,
            total_tokens INTEGER,
            input_source TEXT NOT NULL,
            output_source TEXT NOT NULL,
            usage_source TEXT NOT NULL,
            tokenizer TEXT,
            raw_usage TEXT,
            cost_usd TEXT,
            price_version TEXT,
            flags TEXT NOT NULL,
            response_id TEXT,
            call_site TEXT,
            call_function TEXT,
            call_module TEXT,
            pid INTEGER,
            host_name TEXT,
            tags TEXT
        );
        CREATE INDEX calls_run ON calls(run_id);
        CREATE INDEX calls_scope_path ON calls(scope_id_path);
        CREATE INDEX calls_started ON calls(started_ns);

        CREATE TABLE drops (
            at_ns INTEGER NOT NULL,
            pid INTEGER,
            host_name TEXT,
            count INTEGER NOT NULL
        );
        """,
    )


@migration
def m002_cost_pico(db: sqlite3.Connection) -> None:
    # Cost as an integer of pico-dollars (1e-12 USD) beside the exact decimal text, so reports sum
    # money exactly in SQL: no float ever enters a total. int64 holds $9.2M of calls per sum.
    db.execute("ALTER TABLE calls ADD COLUMN cost_pico INTEGER")


@migration
def m003_anatomy(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE calls ADD COLUMN anatomy TEXT")


@migration
def m004_drop_unused_run_index(db: sqlite3.Connection) -> None:
    # No query uses it: runs are selected by name or id together ("run = ? OR run_id = ?"), which
    # SQLite answers with a scan either way. An index costs every insert (BENCHMARKING.md).
    db.execute("DROP INDEX IF EXISTS calls_run")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; returns their names.

    Safe when several processes open a new ledger at once: the check and the migration run under
    one ``BEGIN IMMEDIATE``, which takes the write lock first.
    """
    db.execute("CREATE TABLE IF NOT EXISTS _tokentrail_migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)")
    applied: list[str] = []
    for fn in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT 1 FROM _tokentrail_migrations WHERE name = ?", (fn.__name__,)).fetchone()
            if done is None:
                fn(db)
                db.execute("INSERT INTO _tokentrail_migrations VALUES (?, ?)", (fn.__name__, time.time_ns()))
                applied.append(fn.__name__)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied
