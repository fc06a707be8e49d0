"""A store written before projects opens, migrates, and loses nothing.

``data/stores/before-projects.db`` was written by packrun before projects existed (SQLite schema
3; see ``data/stores/README.md``): vendor and custom rows, a retired row, installations with every
kind of pin, pin events, a declared workflow, an ended run, and store settings. The SQLite test
opens a copy of it; the PostgreSQL test builds a schema at PostgreSQL's previous version (its
first migration only) and copies the same rows into it, table by table.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import packrun
from packrun import Runtime
from packrun._stores import _postgres

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).parent / "data" / "stores" / "before-projects.db"
BUNDLES = Path(__file__).parent.parent / "bundles"
TABLES = (
    "settings",
    "artifacts",
    "catalog",
    "installations",
    "pin_events",
    "changes",
    "runs",
    "workflows",
)
_TIMES = {"published_at", "created_at", "at", "started_at", "ended_at"}
_BOOLEANS = {("settings", "value"), ("installations", "allow_prerelease")}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fixture_rows() -> Iterator[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """Every table of the fixture file: its name, columns and rows."""
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro&immutable=1", uri=True)
    try:
        for table in TABLES:
            cursor = conn.execute(f"SELECT * FROM {table}")
            columns = [d[0] for d in cursor.description]
            yield table, columns, cursor.fetchall()
    finally:
        conn.close()


def counts() -> dict[str, int]:
    return {table: len(rows) for table, _, rows in fixture_rows()}


def previous_postgres_schema(url: str) -> None:
    """A PostgreSQL schema as packrun left it before projects, holding the fixture's rows."""
    import psycopg
    from psycopg import sql

    from _store_sql import split

    base, schema = split(url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE packrun_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO packrun_meta VALUES ('schema_version', '1')"
        )
        for statement in _postgres.MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement.encode())
        for table, columns, rows in fixture_rows():
            for row in rows:
                values = [
                    datetime.fromisoformat(v)
                    if c in _TIMES and v is not None
                    else bool(v)
                    if (table, c) in _BOOLEANS
                    else v
                    for c, v in zip(columns, row, strict=True)
                ]
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                    ),
                    values,
                )
        for table in ("pin_events", "changes"):
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence(%s, 'seq'), max(seq)) FROM {}"
                ).format(sql.Identifier(table)),
                (table,),
            )


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store written before projects, not yet opened by this packrun."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        shutil.copy(FIXTURE, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    previous_postgres_schema(url)
    return url


@pytest.fixture
async def rt(migrated_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(migrated_url, refresh_interval=0) as runtime:
        yield runtime


def table_counts(url: str) -> dict[str, int]:
    from _store_sql import execute

    return {t: execute(url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


async def test_migration__every_row_is_kept_and_lands_in_project_default(
    rt: Runtime, migrated_url: str
) -> None:
    assert table_counts(migrated_url) == counts()
    rows = [(str(e.version), e.channel, e.state, e.project) for e in rt.versions("acme")]
    assert rows == [
        ("1.0.0", "vendor", "retired", ""),
        ("1.1.0", "vendor", "live", ""),
        ("1.1.1", "custom", "live", "default"),
    ]
    assert [i.id for i in rt.installations(project="default")] == [
        "acme-dev",
        "acme-old",
        "acme-prod",
        "acme-vendor",
        "desk",
    ]
    assert rt.installations() == rt.installations(project="default")
    assert {i: rt.resolve(i).version for i in ("acme-dev", "acme-old", "acme-prod", "desk")} == {
        "acme-dev": "1.1.1",
        "acme-old": "1.0.0",
        "acme-prod": "1.1.0",
        "desk": "1.1.0",
    }
    assert rt.resolve("acme-vendor").channel == "vendor"
    assert [(e.origin, e.actor) for e in (await rt.history("acme-dev"))] == [
        ("install", "system"),
        ("user", "alice"),
    ]
    assert rt.installation("acme-prod").policy == "auto_patch"
    review = rt.review_update("acme-prod", to="1.1.1")
    assert "wf-sync" in [w.workflow_id for w in review.affected_workflows]
    assert set(rt.process_flows("helpdesk")) == {"ticket-triage"}


async def test_migration__store_settings_stay_the_stores_and_other_projects_see_no_custom_rows(
    rt: Runtime,
) -> None:
    assert (rt.settings.immutable_versions, rt.settings.strict_versions) == (False, True)
    assert rt.project_settings("default") == rt.settings
    assert [e.channel for e in rt.versions("acme", project="acme-corp")] == ["vendor", "vendor"]
    # The custom helpdesk 1.1.0 (its flow 1.1.0) is default's; another project has the vendor's.
    assert str(rt.process_flows("helpdesk")["ticket-triage"].version) == "1.1.0"
    assert str(rt.process_flows("helpdesk", project="acme-corp")["ticket-triage"].version) == (
        "1.0.0"
    )
    await rt.publish(BUNDLES / "acme" / "1.1.1", channel="custom", project="acme-corp")
    assert [(str(e.version), e.project) for e in rt.versions("acme", project="acme-corp")][-1] == (
        "1.1.1",
        "acme-corp",
    )


async def test_migration__a_migrated_store_opens_again_unchanged(migrated_url: str) -> None:
    async with packrun.open_runtime(migrated_url, refresh_interval=0) as first:
        before = [(str(e.version), e.channel, e.project) for e in first.versions("acme")]
    async with packrun.open_runtime(migrated_url, refresh_interval=0) as again:
        assert [(str(e.version), e.channel, e.project) for e in again.versions("acme")] == before
        assert len(again.installations()) == 5
    assert table_counts(migrated_url) == counts()
