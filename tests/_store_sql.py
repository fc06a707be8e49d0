"""A store's tables read and written behind packrun's back, for the tests: the SQLite file or the
PostgreSQL schema a store URL names."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["execute", "split", "undo_growth", "undo_projects"]


def split(url: str) -> tuple[str, str]:
    """``(libpq URL, schema)`` of a PostgreSQL store URL (the ``schema`` parameter is packrun's)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next(v for k, v in query if k == "schema")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def execute(url: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of the test's own: on the SQLite file, or in the
    PostgreSQL store's schema. The rows it returns, if any."""
    if url.startswith("sqlite:///"):
        # closing(): a connection's own ``with`` commits but leaves it open.
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            return db.execute(statement, params).fetchall()
    import psycopg
    from psycopg import sql

    base, schema = split(url)
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cursor = conn.execute(statement.encode(), params)
        return cursor.fetchall() if cursor.description else []


def undo_projects(url: str) -> None:
    """Take a store's tables back to before projects (and the fleet tables after them), as a release from
    before projects left them: no ``project`` columns, one setting per name. Only for a store whose
    rows are all vendor rows or project ``default``'s."""
    undo_growth(url)  # the migrations after projects, undone first
    for table in ("aliases", "soak", "health", "rollouts", "events"):
        execute(url, f"DROP TABLE IF EXISTS {table}")
    if url.startswith("sqlite:///"):
        statements = [
            """CREATE TABLE catalog_old (
                pack_id TEXT NOT NULL, version_key TEXT NOT NULL, version TEXT NOT NULL,
                channel TEXT NOT NULL, entries BLOB NOT NULL, manifest BLOB,
                digest TEXT REFERENCES artifacts (digest), contract INTEGER,
                published_at TEXT NOT NULL, state TEXT NOT NULL,
                PRIMARY KEY (pack_id, version_key))""",
            "INSERT INTO catalog_old SELECT pack_id, version_key, version, channel, entries, "
            "manifest, digest, contract, published_at, state FROM catalog",
            "DROP TABLE catalog",
            "ALTER TABLE catalog_old RENAME TO catalog",
            "ALTER TABLE installations DROP COLUMN project",
            "CREATE TABLE settings_old (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO settings_old SELECT name, value FROM settings WHERE project = ''",
            "DROP TABLE settings",
            "ALTER TABLE settings_old RENAME TO settings",
        ]
    else:
        statements = [
            "ALTER TABLE catalog DROP CONSTRAINT catalog_pkey",
            "ALTER TABLE catalog DROP COLUMN project",
            "ALTER TABLE catalog ADD PRIMARY KEY (pack_id, version_key)",
            "ALTER TABLE installations DROP COLUMN project",
            "DELETE FROM settings WHERE project <> ''",
            "ALTER TABLE settings DROP CONSTRAINT settings_pkey",
            "ALTER TABLE settings DROP COLUMN project",
            "ALTER TABLE settings ADD PRIMARY KEY (name)",
        ]
    for statement in statements:
        execute(url, statement)


def undo_growth(url: str) -> None:
    """Take a store's tables back to before growth over time (retention, incremental reads) as
    the release before it left them; the schema version is the caller's to set."""
    if url.startswith("sqlite:///"):
        statements = [
            *(
                f"DROP TRIGGER {t}"
                for t in ("pin_events_kept", "runs_started", "runs_changed", "runs_observed")
            ),
            "DROP TABLE observed_tools",
            "DROP TABLE packrun_state",
            *(
                f"DROP INDEX {i}"
                for i in ("changes_at", "pin_events_at", "runs_by_rseq", "runs_ended")
            ),
            "ALTER TABLE changes DROP COLUMN writer",
            "ALTER TABLE changes DROP COLUMN at",
            "ALTER TABLE installations DROP COLUMN last_event",
            "ALTER TABLE installations DROP COLUMN hold_event",
            "ALTER TABLE runs DROP COLUMN rseq",
        ]
    else:
        statements = [
            "DROP TRIGGER pin_events_kept ON pin_events",
            "DROP TRIGGER runs_written ON runs",
            "DROP TRIGGER runs_observed ON runs",
            "DROP FUNCTION packrun_pin_event()",
            "DROP FUNCTION packrun_run_written()",
            "DROP FUNCTION packrun_run_calls()",
            "DROP TABLE observed_tools",
            "DROP TABLE packrun_state",
            "DROP INDEX pin_events_at",
            "DROP INDEX runs_ended",
            "ALTER TABLE changes DROP COLUMN writer, DROP COLUMN at",
            "ALTER TABLE installations DROP COLUMN last_event, DROP COLUMN hold_event",
            "ALTER TABLE runs DROP COLUMN txid",
        ]
    for statement in statements:
        execute(url, statement)
