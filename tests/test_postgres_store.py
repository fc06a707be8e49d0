"""What only the PostgreSQL store does: its URL, its schema, its errors and its notifications.

The behaviour every store shares is tested once for all three (``store_url`` and ``shared_url``
in ``conftest.py``); a fleet of real processes is in ``integration/test_postgres_fleet.py``. The
tests here that need no server (a refused connection, a bad URL, psycopg missing) always run.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import pytest
from psycopg.conninfo import conninfo_to_dict

import packrun
from _store_sql import execute, split
from packrun import StoreError
from packrun._stores import _postgres
from packrun._stores._pg_url import parse_url

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- without a server ----------------------------------------------------------------------------


async def test_a_server_that_is_not_there_fails_at_once_with_its_reason_and_no_password() -> None:
    url = f"postgresql://ops:s3cret@127.0.0.1:{free_port()}/fleet?schema=ours"
    with pytest.raises(StoreError) as refused:  # the libpq reason, not a pool's timeout
        async with packrun.open_runtime(url):
            pass
    message = str(refused.value)
    assert refused.value.code == "store_error"
    assert f"cannot open the store postgresql://ops:***@127.0.0.1:{url.split(':')[3]}" in message
    assert "Connection refused" in message
    assert "expected a reachable PostgreSQL server" in message
    assert "s3cret" not in message
    assert "s3cret" not in repr(refused.value)


@pytest.mark.parametrize(
    "schema",
    ["a-b", "1abc", "", "x" * 41, "caf\u00e9", 'a"b', "a;drop"],
)
async def test_a_schema_that_is_not_a_plain_name_is_refused(schema: str) -> None:
    url = f"postgresql://ops:s3cret@127.0.0.1:1/fleet?{urlencode({'schema': schema})}"
    with pytest.raises(StoreError) as refused:
        packrun.open_runtime(url)
    message = str(refused.value)
    assert f"schema {schema!r} is not a valid name" in message
    assert "expected a letter or _ then letters, digits or _" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ops:s3cret@db:5432/fleet", "postgresql://ops:***@db:5432/fleet"),
        ("postgres://ops:s3cret@db/fleet?schema=a", "postgres://ops:***@db/fleet?schema=a"),
        (
            "postgresql://ops@db/fleet?password=s3cret&schema=a",
            "postgresql://ops@db/fleet?password=***&schema=a",
        ),
        ("postgresql://db/fleet", "postgresql://db/fleet"),
        ("postgresql://ops:p%40ss@db/fleet", "postgresql://ops:***@db/fleet"),
    ],
)
def test_the_url_a_runtime_shows_masks_the_password(url: str, shown: str) -> None:
    assert packrun.open_runtime(url).url == shown


async def test_a_password_libpq_cannot_read_is_not_shown_in_its_message() -> None:
    url = f"postgresql://ops:s3cr%zz@127.0.0.1:{free_port()}/fleet?schema=ours"
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime(url):
            pass
    message = str(refused.value)
    assert "invalid percent-encoded token" in message  # libpq's own reason ...
    assert "s3cr" not in message  # ... with the token it quoted masked
    assert 'token: "***"' in message


async def test_a_password_with_a_hash_is_masked_and_the_schema_after_it_still_read() -> None:
    rt = packrun.open_runtime(f"postgresql://ops:p#ss@127.0.0.1:{free_port()}/fleet?schema=ours")
    assert "p#ss" not in rt.url
    assert rt.url.endswith("/fleet?schema=ours")
    with pytest.raises(StoreError) as refused:
        async with rt:
            pass
    assert "p#ss" not in str(refused.value)
    assert "Connection refused" in str(refused.value)  # libpq read the URL, schema taken out


def test_libpq_gets_the_url_as_written_but_packrun_parameters() -> None:
    url = parse_url(
        "postgresql://ops:s%20e@db:5432/fleet?schema=ours&options=-c%20statement_timeout%3D5s"
        "&pool_size=3&application_name=a+b&connect_timeout=30"
    )
    assert url.conninfo == (
        "postgresql://ops:s%20e@db:5432/fleet?options=-c%20statement_timeout%3D5s"
        "&application_name=a+b&connect_timeout=30"
    )
    assert url.own == {"schema": "ours", "pool_size": "3"}
    assert url.libpq == {"options", "application_name", "connect_timeout"}
    assert conninfo_to_dict(url.conninfo)["password"] == "s e"
    assert conninfo_to_dict(url.conninfo)["options"] == "-c statement_timeout=5s"


def test_a_timeout_or_keepalive_the_user_set_is_the_one_libpq_gets() -> None:
    store = _postgres.PostgresStore("postgresql://db/fleet?connect_timeout=30&keepalives=0")
    options = store._connect_options
    assert "connect_timeout" not in options  # the URL's 30 stands
    assert "keepalives" not in options
    assert options["keepalives_idle"] == 30  # packrun's default for what the user left out
    defaults = _postgres.PostgresStore("postgresql://db/fleet")._connect_options
    assert defaults["connect_timeout"] == _postgres.CONNECT_TIMEOUT


async def test_without_psycopg_the_store_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_postgres, "psycopg", None)
    with pytest.raises(StoreError, match=r"needs psycopg; install packrun\[postgres\]") as refused:
        packrun.open_runtime("postgresql://ops:s3cret@db/fleet")
    assert "s3cret" not in str(refused.value)


# --- with a server -------------------------------------------------------------------------------


async def test_the_tables_live_in_the_schema_the_url_names(postgres_url: str) -> None:
    _, schema = split(postgres_url)
    async with packrun.open_runtime(postgres_url) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("i", "acme")
    tables = execute(
        postgres_url,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' "
        "ORDER BY table_name",
    )
    assert [t for (t,) in tables] == [
        "aliases",
        "artifacts",
        "catalog",
        "changes",
        "events",
        "health",
        "installations",
        "observed_tools",
        "packrun_meta",
        "packrun_state",
        "pin_events",
        "rollouts",
        "runs",
        "settings",
        "soak",
        "sources",
        "workflows",
    ]
    assert execute(postgres_url, "SELECT value FROM packrun_meta") == [
        (str(_postgres.SCHEMA_VERSION),)
    ]
    nothing_in_public = execute(
        postgres_url,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name IN ('catalog', 'packrun_meta')",
    )
    assert nothing_in_public == [(0,)]


async def test_two_schemas_in_one_database_are_two_separate_stores(postgres_url: str) -> None:
    base, schema = split(postgres_url)
    other = postgres_url.replace(f"schema={schema}", f"schema={schema}_b")
    try:
        async with (
            packrun.open_runtime(postgres_url) as a,
            packrun.open_runtime(other, refresh_interval=0.05) as b,
        ):
            await a.publish(dist("1.0.0"))
            await a.install("i", "acme")
            await anyio.sleep(0.3)  # longer than b's refresh: a NOTIFY of a's schema is not b's
            with pytest.raises(packrun.NotFound):
                b.versions("acme")
            assert [i.id for i in b.installations()] == []
            await b.publish(dist("1.0.1"))
            assert [str(e.version) for e in a.versions("acme")] == ["1.0.0"]
    finally:
        execute(base + "?schema=public", f'DROP SCHEMA IF EXISTS "{schema}_b" CASCADE')


async def test_a_store_written_by_a_newer_schema_is_refused_untouched(postgres_url: str) -> None:
    async with packrun.open_runtime(postgres_url) as rt:
        await rt.publish(dist("1.0.0"))
    execute(postgres_url, "UPDATE packrun_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime(postgres_url):
            pass
    assert "written by a newer packrun (schema 99" in str(refused.value)
    assert execute(postgres_url, "SELECT value FROM packrun_meta") == [("99",)]
    assert execute(postgres_url, "SELECT version FROM catalog") == [("1.0.0",)]


async def test_a_schema_holding_another_applications_tables_is_refused_untouched(
    postgres_url: str,
) -> None:
    _, schema = split(postgres_url)
    base, _ = split(postgres_url)
    execute(base + "?schema=public", f'CREATE SCHEMA "{schema}"')
    execute(postgres_url, "CREATE TABLE catalog (id INTEGER PRIMARY KEY, name TEXT)")
    execute(postgres_url, "INSERT INTO catalog VALUES (1, 'x')")
    with pytest.raises(StoreError, match="failed to migrate its schema") as refused:
        async with packrun.open_runtime(postgres_url):
            pass
    assert "already exists" in str(refused.value)
    assert execute(postgres_url, "SELECT * FROM catalog") == [(1, "x")]
    tables = execute(
        postgres_url,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'",
    )
    assert tables == [("catalog",)]  # the failed migration left nothing behind


async def test_postgres_scheme_is_an_alias(postgres_url: str) -> None:
    alias = "postgres://" + postgres_url.removeprefix("postgresql://")
    async with packrun.open_runtime(postgres_url) as a:
        await a.publish(dist("1.0.0"))
    async with packrun.open_runtime(alias) as b:
        assert [str(e.version) for e in b.versions("acme")] == ["1.0.0"]


async def test_refresh__a_damaged_row_is_skipped_and_later_changes_still_arrive(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="packrun")
    async with (
        packrun.open_runtime(postgres_url, refresh_interval=0.05) as a,
        packrun.open_runtime(postgres_url, refresh_interval=0.05) as b,
    ):
        await a.publish(dist("1.0.0"))
        with anyio.fail_after(10):
            while "acme" not in b.packs():
                await anyio.sleep(0.02)
        # A row damaged outside packrun: b cannot re-read the pack, keeps what it had of it, and
        # still takes in the changes logged after it.
        execute(
            postgres_url,
            "INSERT INTO catalog (pack_id, version_key, version, channel, entries, digest, "
            "published_at, state) VALUES ('acme', 'zz', 'not-a-version', 'vendor', "
            "'[]', NULL, now(), 'live')",
        )
        execute(postgres_url, "INSERT INTO changes (kind, key) VALUES ('pack', 'acme')")
        await a.install("good", "acme")
        with anyio.fail_after(10):
            while "good" not in [i.id for i in b.installations()]:
                await anyio.sleep(0.05)
        assert b.resolve("good").version == "1.0.0"
        assert "skipped pack acme" in caplog.text


async def test_a_closed_store_refuses_work_with_store_error(postgres_url: str) -> None:
    rt = packrun.open_runtime(postgres_url, refresh_interval=0)
    async with rt:
        await rt.publish(dist("1.0.0"))
    with pytest.raises(StoreError, match="is closed"):
        await rt.publish(dist("1.0.1"))


@pytest.mark.parametrize("size", ["0", "-1", "x", "1001", "", "\u0661"])
def test_a_pool_size_that_is_not_a_number_of_connections_is_refused(size: str) -> None:
    url = f"postgresql://ops:s3cret@db/fleet?{urlencode({'pool_size': size})}"
    with pytest.raises(StoreError) as refused:
        packrun.open_runtime(url)
    assert f"pool_size {size!r} is not a number of connections" in str(refused.value)
    assert "expected a whole number from 1 to 1000" in str(refused.value)


async def test_a_pool_of_one_connection_serves_many_concurrent_runs(postgres_url: str) -> None:
    name = f"packrun_pool_{split(postgres_url)[1]}"
    async with packrun.open_runtime(f"{postgres_url}&pool_size=1&application_name={name}") as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("i", "acme")
        outputs: list[object] = []

        async def one(n: int) -> None:
            async with rt.run("i", run_id=f"r{n}", auth=packrun.Auth.api_key("k")) as run:
                outputs.append(await run.call("list_contacts", {}))

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(one, n)
        assert len(outputs) == 50
        assert rt.in_flight("acme", "1.0.0") == 0
        backends = execute(
            postgres_url,
            f"SELECT query FROM pg_stat_activity WHERE application_name = '{name}'",
        )
        assert len(backends) == 2, backends  # the pool's one connection, and the listener
        assert sum(str(q).startswith("LISTEN") for (q,) in backends) == 1, backends
    rows = execute(postgres_url, "SELECT count(*) FROM runs WHERE ended_at IS NOT NULL")
    assert rows == [(50,)]


@pytest.fixture
def plain_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A role that may log in and nothing more (no ``CREATE`` on the database): its URL on the
    test's schema, and its name. Dropped afterwards, with what it owns."""
    _, schema = split(postgres_url)
    role = f"r_{schema}"
    execute(postgres_url, f"CREATE ROLE {role} LOGIN PASSWORD 'plain' NOSUPERUSER")
    parts = urlsplit(postgres_url)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}:plain@{host}")), role
    finally:
        execute(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        execute(postgres_url, f"DROP OWNED BY {role} CASCADE")
        execute(postgres_url, f"DROP ROLE {role}")


async def test_a_role_without_create_on_the_database_uses_a_schema_made_for_it(
    postgres_url: str, plain_role: tuple[str, str]
) -> None:
    url, role = plain_role
    _, schema = split(postgres_url)
    with pytest.raises(StoreError, match="permission denied for database") as refused:
        async with packrun.open_runtime(url):
            pass
    assert ":plain@" not in str(refused.value)  # the password is masked
    execute(postgres_url, f'CREATE SCHEMA "{schema}" AUTHORIZATION {role}')  # what a DBA does
    async with packrun.open_runtime(url) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("i", "acme")
        assert rt.resolve("i").version == "1.0.0"
    async with packrun.open_runtime(url) as again:  # and opens it again, already migrated
        assert again.resolve("i").version == "1.0.0"


async def test_a_storm_of_notifications_costs_a_bounded_number_of_catch_up_reads(
    postgres_url: str,
) -> None:
    storm = 20_000
    channel = f"packrun_changes_{split(postgres_url)[1]}"
    async with (
        packrun.open_runtime(postgres_url, refresh_interval=0) as writer,
        # Only notifications wake this one: the periodic read is an hour away.
        packrun.open_runtime(postgres_url, refresh_interval=3600) as rt,
    ):
        await writer.publish(dist("1.0.0"))
        await writer.publish(dist("1.0.1"))
        await writer.install("i", "acme", pin="1.0.0")
        with anyio.fail_after(30):
            while "i" not in [i.id for i in rt.installations()]:
                await anyio.sleep(0.02)
        before = rt.stats()
        # Forged, from a connection of its own: distinct payloads, so none is folded into another.
        execute(
            postgres_url,
            f"SELECT count(pg_notify('{channel}', g::text)) FROM generate_series(1, {storm}) g",
        )
        with anyio.fail_after(60):
            while rt.stats().notifications - before.notifications < storm:
                await anyio.sleep(0.02)
        await writer.set_pin("i", "1.0.1")  # a real change after the storm is still seen
        with anyio.fail_after(30):
            while rt.resolve("i").version != "1.0.1":
                await anyio.sleep(0.02)
        reads = rt.stats().catch_up_reads - before.catch_up_reads
    assert 1 <= reads <= 10, reads
