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


CONTEXT_COLUMNS = (
    "api provider host endpoint requested_model model stream status http_status error input_source "
    "output_source usage_source tokenizer call_site call_function call_module pid host_name"
).split()
"""What many calls share (where they went, how they ended, who made them): one ``call_contexts`` row each."""
PLACE_COLUMNS = "scope_id scope_id_path scope_path run_id run agent step tool tags".split()
"""Where in the run tree calls were made: one ``call_places`` row per scope."""
ROW_COLUMNS = (
    "id context_id place_id attempt started_ns latency_ns first_token_ns input_tokens output_tokens "
    "cache_read_tokens cache_write_tokens reasoning_tokens raw_usage cost_usd cost_pico price_version flags "
    "response_id anatomy"
).split()
"""What is each call's own: one ``call_rows`` row per HTTP attempt."""
_COST_TEXT = (
    "CASE WHEN r.cost_pico IS NULL THEN NULL ELSE rtrim(rtrim(printf('%d.%012d',"
    " r.cost_pico / 1000000000000, r.cost_pico % 1000000000000), '0'), '.') END"
)
"""``format(Decimal(cost_pico) / 10**12, "f")`` in SQL (NULL for a NULL ``cost_pico``): the text of a
cost the sink stored as its integer alone."""
_VIEW_COLUMNS = {
    **{c: f"x.{c}" for c in CONTEXT_COLUMNS},
    **{c: f"p.{c}" for c in PLACE_COLUMNS},
    **{c: f"r.{c}" for c in ROW_COLUMNS if c not in ("context_id", "place_id")},
    "total_tokens": "r.input_tokens + r.output_tokens",
    "cost_usd": "COALESCE(r.cost_usd, " + _COST_TEXT + ")",
}
V1_COLUMNS = (
    "id run_id run scope_id scope_id_path scope_path agent step tool api provider host endpoint "
    "requested_model model stream status http_status error attempt started_ns latency_ns first_token_ns "
    "input_tokens output_tokens cache_read_tokens cache_write_tokens reasoning_tokens total_tokens "
    "input_source output_source usage_source tokenizer raw_usage cost_usd price_version flags response_id "
    "call_site call_function call_module pid host_name tags cost_pico anatomy"
).split()
"""The columns of the ``calls`` view, in order: the columns of the table it replaced."""


def _key(columns: list[str]) -> str:
    return "json_array(" + ", ".join(f"NEW.{c}" for c in columns) + ")"


def _calls_view() -> list[str]:
    """The ``calls`` view over the three tables, and its trigger that stores an ``INSERT INTO calls``."""
    return [
        f"""
        CREATE VIEW calls AS SELECT {", ".join(f"{_VIEW_COLUMNS[c]} AS {c}" for c in V1_COLUMNS)},
            r.rowid AS row_id
            FROM call_rows r JOIN call_contexts x ON x.id = r.context_id JOIN call_places p ON p.id = r.place_id""",
        f"""
        CREATE TRIGGER calls_insert INSTEAD OF INSERT ON calls BEGIN
            INSERT OR IGNORE INTO call_contexts (key, {", ".join(CONTEXT_COLUMNS)})
                VALUES ({_key(CONTEXT_COLUMNS)}, {", ".join(f"NEW.{c}" for c in CONTEXT_COLUMNS)});
            INSERT OR IGNORE INTO call_places (key, {", ".join(PLACE_COLUMNS)})
                VALUES ({_key(PLACE_COLUMNS)}, {", ".join(f"NEW.{c}" for c in PLACE_COLUMNS)});
            INSERT INTO call_rows ({", ".join(ROW_COLUMNS)}) VALUES (
                {
            ", ".join(
                f"(SELECT id FROM call_contexts WHERE key = {_key(CONTEXT_COLUMNS)})"
                if c == "context_id"
                else f"(SELECT id FROM call_places WHERE key = {_key(PLACE_COLUMNS)})"
                if c == "place_id"
                else "COALESCE(NEW.flags, '')"
                if c == "flags"
                else f"NEW.{c}"
                for c in ROW_COLUMNS
            )
        }
            );
        END""",
    ]


@migration
def m005_normalized_calls(db: sqlite3.Connection) -> None:
    # A call's row held 47 values, most of them the same from call to call (the run, the scope path,
    # the model, the host, the call site…); binding and encoding them cost ~7 µs a call in the
    # writer. Now what calls share is stored once, in `call_contexts` and `call_places`, and a call's
    # row holds 19 values. The `calls` view keeps every column and name of the old table, so readers
    # are unchanged; inserting into the view stores through the same tables (a trigger), which is
    # how the old rows move here. Dimension rows are found by `key`, the JSON array of their values.
    db.execute("ALTER TABLE calls RENAME TO calls_v1")
    for index in ("calls_scope_path", "calls_started", "calls_run"):
        db.execute(f"DROP INDEX IF EXISTS {index}")
    context_cols = ",\n".join(f"            {c} {'INTEGER' if c in ('stream', 'http_status', 'pid') else 'TEXT'}"
                               for c in CONTEXT_COLUMNS)  # fmt: skip
    place_cols = ",\n".join(f"            {c} TEXT" for c in PLACE_COLUMNS)
    statements = [
        f"""
        CREATE TABLE call_contexts (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
{context_cols}
        )""",
        f"""
        CREATE TABLE call_places (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
{place_cols}
        )""",
        "CREATE INDEX call_places_path ON call_places(scope_id_path)",
        """
        CREATE TABLE call_rows (
            id TEXT NOT NULL,
            context_id INTEGER NOT NULL REFERENCES call_contexts(id),
            place_id INTEGER NOT NULL REFERENCES call_places(id),
            attempt INTEGER NOT NULL,
            started_ns INTEGER NOT NULL,
            latency_ns INTEGER,
            first_token_ns INTEGER,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cache_read_tokens INTEGER,
            cache_write_tokens INTEGER,
            reasoning_tokens INTEGER,
            raw_usage TEXT,
            cost_usd TEXT,
            cost_pico INTEGER,
            price_version TEXT,
            flags TEXT NOT NULL,
            response_id TEXT,
            anatomy TEXT
        )""",
        "CREATE INDEX call_rows_place ON call_rows(place_id)",
        "CREATE INDEX call_rows_started ON call_rows(started_ns)",
        *_calls_view(),
        f"INSERT INTO calls ({', '.join(V1_COLUMNS)}) SELECT {', '.join(V1_COLUMNS)} FROM calls_v1 ORDER BY rowid",
        "DROP TABLE calls_v1",
    ]
    for statement in statements:  # not _script(): the trigger's body holds semicolons
        db.execute(statement)


@migration
def m006_cost_text_from_pico(db: sqlite3.Connection) -> None:
    # A cost priced by the integer path is stored as its pico-dollars alone (cost_usd NULL): the
    # view writes its text. Rows stored with the text keep it. Dropping the view drops its trigger.
    db.execute("DROP VIEW calls")
    for statement in _calls_view():
        db.execute(statement)


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
