"""A store's tables read and written behind packrun's back, for the tests: the SQLite file or the
PostgreSQL schema a store URL names."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["execute", "split"]


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
