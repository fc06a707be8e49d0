"""Shared fixtures: the PostgreSQL store, when a server is configured.

Set ``PACKRUN_TEST_POSTGRES=postgresql://user:password@127.0.0.1:5432/db`` to run the store tests
against PostgreSQL as well; each test gets a schema of its own, dropped afterwards. Outside CI,
the PostgreSQL cases skip (saying how to enable them) when it is not set; in CI it must be set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES = os.environ.get("PACKRUN_TEST_POSTGRES", "")
IN_CI = os.environ.get("CI") == "true"


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and not POSTGRES:
        raise pytest.UsageError(
            "CI runs the PostgreSQL store tests: set PACKRUN_TEST_POSTGRES to a server's URL"
        )


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL with a schema of this test's own."""
    if not POSTGRES:
        pytest.skip(
            "no PostgreSQL server configured: set PACKRUN_TEST_POSTGRES="
            "postgresql://user:password@host:5432/db to run the PostgreSQL store tests"
        )
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield with_schema(POSTGRES, schema)
    drop_schema(POSTGRES, schema)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio; the tests of what trio supports ask for it by name."""
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store suite's URL: each test that takes it runs on all three stores."""
    if request.param == "memory":
        return "memory:"
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A durable store that several runtimes share: each test that takes it runs on both."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store file, for the tests of what only SQLite does."""
    return f"sqlite:///{tmp_path / 'shared.db'}"
