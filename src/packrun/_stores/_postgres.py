"""The fleet store (``postgresql://…``): PostgreSQL through psycopg 3, shared by many processes.

Install it with ``pip install packrun[postgres]``. The tables live in a schema of the user's
choice (``?schema=name`` on the URL, ``packrun`` by default), created and migrated by packrun.

Every write that other runtimes must learn of takes one transaction-level advisory lock per
schema before it touches anything: writers of the catalog and of installations are serialised
(so a publish decides against the rows as they are, and two processes publishing one version
race to exactly one winner), and the change log's sequence numbers become visible in commit
order (so a reader never skips a line). Run starts, ends and lease renewals do not take it (only
an end that logs a workflow's observed tools does, after its updates); they take their rows in run
id order and measure leases on the server's clock. Each logging transaction ends with ``NOTIFY``,
which :meth:`PostgresStore.wait_for_change` hears on a connection of its own; the runtime's
periodic read of the change log stays as the fallback when a notification is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel

from packrun._catalog import CatalogEntry, Prepared
from packrun._retention import Retention
from packrun._stores import (
    Alias,
    AliasMove,
    Change,
    ChangeBatch,
    Decide,
    GcReport,
    HealthDelta,
    Installation,
    LiveRun,
    NewEvent,
    PinEvent,
    RolloutRow,
    RunDelta,
    RunEnd,
    RunRecord,
    Settings,
    SourceRow,
    StartedRun,
    Store,
    StoredEvent,
    StoreState,
    Update,
    WorkflowTools,
    gc_in_batches,
    stream_settings,
)
from packrun._stores._fleet import pin_move_body, publish_body
from packrun._stores._pg_url import parse_url
from packrun._stores._rows import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    INSTALLATION_COLUMNS,
    RUN_COLUMNS,
    entry_from,
    entry_row,
    event_from,
    installation_from,
    run_from,
)
from packrun.errors import (
    InstallationExists,
    NotFound,
    PackrunError,
    RolloutInProgress,
    SourceError,
    StoreError,
    VersionExists,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]


async def _fetch_one(conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row ``query`` returns."""
    row = await (await conn.execute(query, params)).fetchone()
    return row[0]


_T = TypeVar("_T")
_Conn = Any  # psycopg.AsyncConnection[tuple[Any, ...]]

MIGRATION_PROJECTS: Final = """
    ALTER TABLE catalog ADD COLUMN project TEXT NOT NULL DEFAULT '';
    UPDATE catalog SET project = 'default' WHERE channel = 'custom';
    ALTER TABLE catalog DROP CONSTRAINT catalog_pkey;
    ALTER TABLE catalog ADD PRIMARY KEY (pack_id, project, version_key);
    ALTER TABLE installations ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE settings ADD COLUMN project TEXT NOT NULL DEFAULT '';
    ALTER TABLE settings DROP CONSTRAINT settings_pkey;
    ALTER TABLE settings ADD PRIMARY KEY (project, name)
"""
"""4: projects. A catalog row belongs to a stream (``project`` empty for a vendor row, the
project's id for a custom row); installations and settings belong to a project (settings with an
empty project are the store's own). What a store held before lands in project ``default``: its
custom rows, its installations; its settings stay the store's."""


MIGRATION_GROWTH: Final = """
    CREATE TABLE packrun_state (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO packrun_state (name, value) VALUES ('changes_horizon', 0);
    ALTER TABLE changes ADD COLUMN writer TEXT;
    ALTER TABLE changes ADD COLUMN at DOUBLE PRECISION;
    CREATE INDEX changes_at ON changes (at);
    ALTER TABLE installations ADD COLUMN last_event BIGINT;
    ALTER TABLE installations ADD COLUMN hold_event BIGINT;
    UPDATE installations SET last_event = (
        SELECT max(seq) FROM pin_events e WHERE e.installation_id = installations.id);
    UPDATE installations SET hold_event = (
        SELECT max(seq) FROM pin_events e WHERE e.installation_id = installations.id
        AND e.origin IN ('user', 'rollback') AND e.from_version = installations.hold)
        WHERE hold IS NOT NULL;
    CREATE INDEX pin_events_at ON pin_events (at);
    CREATE FUNCTION packrun_pin_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE installations SET last_event = NEW.seq,
            hold_event = CASE WHEN NEW.origin IN ('user', 'rollback')
                AND NEW.from_version = hold THEN NEW.seq ELSE hold_event END
        WHERE id = NEW.installation_id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER pin_events_kept AFTER INSERT ON pin_events
        FOR EACH ROW EXECUTE FUNCTION packrun_pin_event();
    ALTER TABLE runs ADD COLUMN txid xid8;
    CREATE INDEX runs_by_txid ON runs (txid);
    CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
    CREATE FUNCTION packrun_run_written() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.txid := pg_current_xact_id();
        RETURN NEW;
    END $$;
    CREATE TRIGGER runs_written BEFORE INSERT OR UPDATE OF ended_at, owner, lease_until ON runs
        FOR EACH ROW EXECUTE FUNCTION packrun_run_written();
    CREATE TABLE observed_tools (
        installation_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        PRIMARY KEY (installation_id, workflow_id, tool)
    );
    INSERT INTO observed_tools (installation_id, workflow_id, tool)
        SELECT DISTINCT r.installation_id, r.workflow_id, t.tool
        FROM runs r, jsonb_array_elements_text(r.calls::jsonb) AS t (tool)
        WHERE r.workflow_id IS NOT NULL AND r.calls IS NOT NULL;
    CREATE FUNCTION packrun_run_calls() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO observed_tools (installation_id, workflow_id, tool)
            SELECT NEW.installation_id, NEW.workflow_id, t.tool
            FROM jsonb_array_elements_text(NEW.calls::jsonb) AS t (tool)
            ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER runs_observed AFTER UPDATE OF calls ON runs FOR EACH ROW
        WHEN (NEW.calls IS NOT NULL AND NEW.workflow_id IS NOT NULL)
        EXECUTE FUNCTION packrun_run_calls()
"""
"""5: growth over time. Change-log lines carry their writer (a runtime skips its own) and time
(retention); ``packrun_state`` holds the newest line pruned. Every write of a run's start, end,
owner or lease stamps it with its transaction id (``txid``): a reader of runs in flight reads only
the rows written since the oldest transaction in progress at its last read. An installation
points at its last pin event and at the one that set its hold (what a runtime loads, instead of
the whole history). The tools workflows' runs called are kept per workflow in
``observed_tools``, not re-read from every run."""


def _statements(script: str) -> list[str]:
    """The statements of a migration script: split at semicolons outside ``$$`` bodies."""
    found: list[str] = []
    for index, part in enumerate(script.split("$$")):
        pieces = [part] if index % 2 else part.split(";")
        if index == 0:
            found.extend(pieces)
            continue
        # A body (odd) or the text after it (even) continues the statement it is in.
        found[-1] += "$$" + pieces[0]
        found.extend(pieces[1:])
    return [s for s in found if s.strip()]


MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the same tables as the embedded store, in PostgreSQL's types.
    """
    CREATE TABLE settings (name TEXT PRIMARY KEY, value BOOLEAN NOT NULL);
    CREATE TABLE artifacts (digest TEXT PRIMARY KEY, data BYTEA NOT NULL);
    CREATE TABLE catalog (
        pack_id TEXT NOT NULL,
        version_key TEXT NOT NULL,
        version TEXT NOT NULL,
        channel TEXT NOT NULL,
        entries BYTEA NOT NULL,
        manifest BYTEA,
        digest TEXT REFERENCES artifacts (digest),
        contract INTEGER,
        published_at TIMESTAMPTZ NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (pack_id, version_key)
    );
    CREATE TABLE installations (
        id TEXT PRIMARY KEY,
        pack_id TEXT NOT NULL,
        pin TEXT NOT NULL,
        policy TEXT NOT NULL,
        allow_prerelease BOOLEAN NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE pin_events (
        seq BIGSERIAL PRIMARY KEY,
        installation_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        origin TEXT NOT NULL,
        from_pin TEXT,
        to_pin TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT,
        at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX pin_events_by_installation ON pin_events (installation_id, seq);
    CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        installation_id TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT,
        contract INTEGER,
        channel TEXT NOT NULL,
        workflow_id TEXT,
        started_at TIMESTAMPTZ NOT NULL,
        ended_at TIMESTAMPTZ,
        owner TEXT,
        lease_until DOUBLE PRECISION,
        calls TEXT
    );
    CREATE INDEX runs_in_flight ON runs (lease_until) WHERE ended_at IS NULL;
    CREATE INDEX runs_by_installation ON runs (installation_id) WHERE workflow_id IS NOT NULL;
    CREATE TABLE workflows (
        installation_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        tools TEXT NOT NULL,
        PRIMARY KEY (installation_id, workflow_id)
    );
    """,
    # 2: the version a manual move took an installation down from (what holds its policy).
    """
    ALTER TABLE installations ADD COLUMN hold TEXT;
    """,
    # 3: pack sources: their specs, sync status and sync lease (on the server's clock).
    """
    CREATE TABLE IF NOT EXISTS sources (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        status TEXT,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    """,
    # 4: projects (custom rows, installations and settings per project).
    MIGRATION_PROJECTS,
    # 5: the fleet's health sums, its rollouts and its event log.
    """
    CREATE TABLE health (
        pack_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        version_key TEXT NOT NULL,
        project TEXT NOT NULL,
        metric TEXT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (pack_id, stream, version_key, project, metric)
    );
    CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        pack_id TEXT NOT NULL,
        project TEXT NOT NULL,
        state TEXT NOT NULL,
        rev BIGINT NOT NULL,
        body TEXT NOT NULL,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        created BIGSERIAL
    );
    CREATE UNIQUE INDEX rollouts_active ON rollouts (pack_id, project)
        WHERE state IN ('running', 'aborting');
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        pack_id TEXT NOT NULL,
        project TEXT NOT NULL,
        body TEXT NOT NULL,
        dedupe TEXT UNIQUE
    );
    """,
    # 6: aliases (named pins per pack and project) and soak settings (release age, window).
    """
    CREATE TABLE IF NOT EXISTS aliases (
        project TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        actor TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (project, pack_id, name)
    );
    CREATE TABLE IF NOT EXISTS soak (scope TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 7: growth over time (see MIGRATION_GROWTH).
    MIGRATION_GROWTH,
    # event log retention: pruned by age.
    "CREATE INDEX IF NOT EXISTS events_at ON events (at);",
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
_E_COLUMNS: Final = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))


def _kept_events_sql(where: str) -> str:
    """Per installation, the pin events a runtime keeps (see ``kept_events``): the last one, and
    the one that set its hold, found by the installation's pointers (no scan of the history)."""
    also = f"{where} AND" if where else "WHERE"
    return (
        f"SELECT {_E_COLUMNS} FROM installations i JOIN pin_events e ON e.seq = i.last_event "
        f"{where} UNION ALL SELECT {_E_COLUMNS} FROM installations i JOIN pin_events e "
        f"ON e.seq = i.hold_event AND e.from_version = i.hold "
        f"{also} i.hold IS NOT NULL AND i.hold_event <> i.last_event"
    )


CONNECT_TIMEOUT: Final = 10
"""Seconds to wait for a new connection to the server."""
POOL_TIMEOUT: Final = 10.0
"""Seconds an operation waits for a pooled connection (the server down or every one busy)
before it fails with ``store_error``."""
IDLE_IN_TRANSACTION: Final = 30
"""Seconds the server lets one of packrun's transactions sit idle before it ends the session."""
RETRIES: Final = 3
"""Attempts of a transaction the server aborted as a deadlock victim or a serialisation failure."""
LISTEN_RETRY: Final = 1.0
"""Seconds between attempts to open the listening connection again while the server is away."""
LISTEN_SLICE: Final = 0.25
"""Seconds of one shielded wait for a notification (what closing a runtime may wait)."""
NOTIFY_DRAIN: Final = 100_000
"""The most notifications one wake-up takes in at once (the rest wake the next one)."""
DEFAULT_POOL_SIZE: Final = 8
"""The most connections a runtime's pool opens (``?pool_size=`` on the URL), besides the one it
listens on."""
_CONNECT_DEFAULTS: Final[dict[str, Any]] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
_SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
"""A read transaction's first statement, when its reads must agree with each other."""
_NOW: Final = "extract(epoch FROM clock_timestamp())::double precision"
"""The server's clock, in seconds since the epoch: what leases are measured on."""
_SCHEMA: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class PostgresStore(Store):
    """PostgreSQL, shared by every runtime of a fleet; one pool of connections per runtime."""

    group_commit = True

    def __init__(self, url: str) -> None:
        self._url = parse_url(url)
        self.url = self._url.shown  # what messages, logs and ``Runtime.url`` show
        if psycopg is None:
            raise StoreError(
                f"cannot open the store {self.url}: the PostgreSQL store needs psycopg; "
                "install packrun[postgres]"
            )
        self._conninfo, ours = self._url.conninfo, self._url.own
        # Defaults for what the user did not set: a bounded connect, and keepalives so that a
        # peer gone silent (a host cut off the network) is noticed within about a minute.
        self._connect_options = {
            k: v for k, v in _CONNECT_DEFAULTS.items() if k not in self._url.libpq
        }
        self.schema = ours.get("schema", "packrun")
        if not _SCHEMA.fullmatch(self.schema):
            raise StoreError(
                f"cannot open the store {self.url}: schema {self.schema!r} is not a valid name; "
                "expected a letter or _ then letters, digits or _ (ASCII, at most 40)"
            )
        size = ours.get("pool_size", str(DEFAULT_POOL_SIZE))
        if not (size.isascii() and size.isdigit() and 1 <= int(size) <= 1000):
            raise StoreError(
                f"cannot open the store {self.url}: pool_size {size!r} is not a number of "
                "connections; expected a whole number from 1 to 1000"
            )
        self._pool_size = int(size)
        self._pool: AsyncConnectionPool | None = None
        self._channel = f"packrun_changes_{self.schema}"
        # One advisory lock per schema: writers that log changes take it in their transaction.
        self._lock_key = zlib.crc32(self.schema.encode()) & 0x7FFFFFFF
        self._listener: Any = None
        self._next_listen = 0.0  # when the listening connection may be opened again

    # --- plumbing -------------------------------------------------------------------------------

    async def _configure(self, conn: _Conn) -> None:
        # UTC, as the other stores answer; and a transaction left open by a client that went
        # silent (holding the schema's lock) is ended by the server instead of blocking writers.
        await conn.execute(
            sql.SQL(
                "SET search_path TO {}; SET TIME ZONE 'UTC'; "
                "SET idle_in_transaction_session_timeout = {}"
            ).format(sql.Identifier(self.schema), sql.Literal(f"{IDLE_IN_TRANSACTION}s"))
        )
        await conn.commit()

    def _reason(self, exc: BaseException) -> str:
        """The first line of ``exc``'s message (libpq adds hints on the lines after it), with the
        password masked wherever libpq quoted it."""
        text = str(exc).strip()
        return self._url.scrub(text.splitlines()[0] if text else type(exc).__name__)

    def _safe(self, what: str) -> str:
        return f"the store {self.url} failed to {what}"

    async def _run(
        self, what: str, body: Callable[[_Conn], Awaitable[_T]], *, logged: bool = False
    ) -> _T:
        if self._pool is None:
            raise StoreError(f"the store {self.url} is closed")
        attempts = 0
        while True:
            attempts += 1
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    if logged:
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                    result = await body(conn)
                    if logged:
                        await self._notify(conn)
                    return result
            except PackrunError:
                raise
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                # Rolled back whole: every body is a function of what it reads, so it can run
                # again.
                if attempts == RETRIES:
                    raise StoreError(f"{self._safe(what)}: {self._reason(exc)}") from exc
            except (psycopg.Error, OSError) as exc:
                raise StoreError(f"{self._safe(what)}: {self._reason(exc)}") from exc
            except Exception as exc:  # the pool's own errors (a timeout waiting for a connection)
                if type(exc).__module__.startswith("psycopg_pool"):
                    raise StoreError(f"{self._safe(what)}: {self._reason(exc)}") from exc
                raise

    async def _notify(self, conn: _Conn) -> None:
        await conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(self._channel)))

    async def _log(self, conn: _Conn, kind: str, key: str) -> None:
        await conn.execute(
            f"INSERT INTO changes (kind, key, writer, at) VALUES (%s, %s, %s, {_NOW})",
            (kind, key, self.writer),
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        # psycopg's async connections and pool need asyncio: say so before any of them starts.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise StoreError(
                f"cannot open the store {self.url}: the PostgreSQL store runs on asyncio only "
                "(psycopg's async connections need it), and this is another event loop (trio?); "
                "expected an asyncio event loop (anyio.run(main), whose default backend is "
                "asyncio), or a memory: or sqlite:/// store, which run on trio too"
            ) from None
        # One connection first: a server that is down, a wrong password or a missing database
        # fails here at once, with the server's own words (a pool would retry for its timeout).
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_options)
        except (psycopg.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the store {self.url}: {self._reason(exc)}; expected a reachable "
                "PostgreSQL server with that database and credentials"
            ) from exc
        try:
            async with conn:
                await self._configure(conn)
                async with conn.transaction():
                    await self._migrate(conn)
        except PackrunError:
            raise
        except psycopg.errors.DuplicateTable as exc:
            raise StoreError(
                f"{self._safe('migrate its schema')}: schema {self.schema!r} holds tables packrun "
                f"did not make ({self._reason(exc)}); expected a schema of packrun's own: name "
                "another with ?schema="
            ) from exc
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"{self._safe('migrate its schema')}: {self._reason(exc)}") from exc
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_TIMEOUT,
            kwargs=self._connect_options,
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except Exception as exc:
            await pool.close()
            raise StoreError(f"cannot open the store {self.url}: {self._reason(exc)}") from exc
        self._pool = pool

    async def _migrate(self, conn: _Conn) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        schema = sql.Identifier(self.schema)
        exists = await (
            await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        ).fetchone()
        if (
            not self.create
            and not await (
                await conn.execute(
                    "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'packrun_meta'",
                    (self.schema,),
                )
            ).fetchone()
        ):
            raise StoreError(
                f"no store in schema {self.schema!r} of {self.url}: expected an existing packrun "
                "store; this open does not create one (create=False)"
            )
        if exists is None:  # CREATE SCHEMA needs CREATE on the database, even IF NOT EXISTS
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS packrun_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        row = await (
            await conn.execute("SELECT value FROM packrun_meta WHERE key = 'schema_version'")
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.url} was written by a newer packrun (schema {version}; "
                f"this packrun knows up to {SCHEMA_VERSION}): upgrade packrun to open it"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                await conn.execute(statement)
        await conn.execute(
            "INSERT INTO packrun_meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        listener, self._listener = self._listener, None
        if listener is not None:
            with anyio.CancelScope(shield=True):
                await listener.close()
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await pool.close()

    async def wait_for_change(self, timeout: float) -> None:
        """Return when another runtime has written (a ``NOTIFY``), or after ``timeout`` seconds.

        The listening connection is its own. When it is lost (the server restarted, or the
        connection was terminated), a new one is opened (at most once a second) and the call
        returns as soon as it listens, so that the runtime reads the change log for whatever was
        written in between.
        """
        deadline = anyio.current_time() + timeout
        while (left := deadline - anyio.current_time()) > 0:
            if self._listener is None or self._listener.closed:
                if anyio.current_time() >= self._next_listen and await self._reconnect():
                    return  # a change may have been missed meanwhile: read the log now
                await anyio.sleep(min(left, LISTEN_SLICE))
                continue
            # In short shielded slices: a runtime that closes waits for the slice to end rather
            # than cancel a query, which would cost psycopg the connection (and log it).
            with anyio.CancelScope(shield=True):
                heard = await self._hear(min(left, LISTEN_SLICE))
            if heard:
                return
            await anyio.lowlevel.checkpoint()

    async def listen(self) -> None:
        await self._reconnect()  # when it fails, wait_for_change tries again

    async def _reconnect(self) -> bool:
        """Open the listening connection and ``LISTEN``; ``False`` when the server is away."""
        self._next_listen = anyio.current_time() + LISTEN_RETRY
        listener = None
        try:
            listener = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, **self._connect_options
            )
            await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException as exc:  # closed on a cancellation too: never left to the collector
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.close()
            if isinstance(exc, (psycopg.Error, OSError)):
                return False
            raise
        self._listener = listener
        return True

    async def _hear(self, timeout: float) -> bool:
        """Whether a notification came within ``timeout``; a broken listener is dropped.

        Notifications are hints that the change log moved, and anyone who can connect can send
        them: every one already received is taken with the first, so a burst of them (a storm of
        forged ``NOTIFY``s included) wakes the runtime for one catch-up read, not one each.
        """
        try:
            async with contextlib.aclosing(
                self._listener.notifies(timeout=timeout, stop_after=1)
            ) as notifies:
                taken = 0
                async for _ in notifies:  # stops after the packet holding the first one
                    taken += 1
            if not taken:
                return False
            while taken < NOTIFY_DRAIN:  # bounded: a storm that never ends still lets us read
                before = taken
                async with contextlib.aclosing(self._listener.notifies(timeout=0)) as pending:
                    async for _ in pending:
                        taken += 1
                if taken == before:
                    break
            self.notifications += taken
            return True
        except (psycopg.Error, OSError):
            listener, self._listener = self._listener, None
            if listener is not None:
                await listener.close()
            return False

    # --- reads ----------------------------------------------------------------------------------

    async def load(self) -> StoreState:
        async def body(conn: _Conn) -> StoreState:
            await conn.execute(_SNAPSHOT)
            seq = (
                await (await conn.execute("SELECT coalesce(max(seq), 0) FROM changes")).fetchone()
            )[0]
            entries = await (
                await conn.execute(f"SELECT {CATALOG_COLUMNS} FROM catalog")
            ).fetchall()
            insts = await (
                await conn.execute(f"SELECT {INSTALLATION_COLUMNS} FROM installations")
            ).fetchall()
            events = await (await conn.execute(_kept_events_sql(""))).fetchall()
            return StoreState(
                await self._settings_from(conn),
                [entry_from(r) for r in entries],
                [installation_from(r) for r in insts],
                [event_from(r) for r in events],
                seq,
                await self._project_settings_from(conn),
            )

        return await self._run("load", body)

    @staticmethod
    async def _project_settings_from(conn: _Conn) -> dict[str, dict[str, bool]]:
        rows = await (
            await conn.execute("SELECT project, name, value FROM settings WHERE project <> ''")
        ).fetchall()
        found: dict[str, dict[str, bool]] = {}
        for project, name, value in rows:
            found.setdefault(project, {})[name] = bool(value)
        return found

    @staticmethod
    async def _settings_from(conn: _Conn) -> Settings:
        rows = await (
            await conn.execute("SELECT name, value FROM settings WHERE project = ''")
        ).fetchall()
        values = dict(rows)
        defaults = Settings()
        return Settings(
            bool(values.get("immutable_versions", defaults.immutable_versions)),
            bool(values.get("strict_versions", defaults.strict_versions)),
        )

    async def changes(self, since: int) -> list[Change]:
        async def body(conn: _Conn) -> list[Change]:
            rows = await (
                await conn.execute(
                    "SELECT seq, kind, key FROM changes WHERE seq > %s ORDER BY seq", (since,)
                )
            ).fetchall()
            return [Change(*row) for row in rows]

        return await self._run("read its change log", body)

    async def changes_since(self, since: int, writer: str | None) -> ChangeBatch:
        async def body(conn: _Conn) -> ChangeBatch:
            await conn.execute(_SNAPSHOT)
            (head,) = await (
                await conn.execute("SELECT coalesce(max(seq), 0) FROM changes")
            ).fetchone()
            if head <= since:
                return ChangeBatch([], head)
            horizon = await self._state(conn, "changes_horizon")
            rows = await (
                await conn.execute(
                    "SELECT seq, kind, key FROM changes WHERE seq > %s "
                    "AND writer IS DISTINCT FROM %s ORDER BY seq",
                    (since, writer),
                )
            ).fetchall()
            return ChangeBatch([Change(*row) for row in rows], head, since < horizon)

        return await self._run("read its change log", body)

    @staticmethod
    async def _state(conn: _Conn, name: str) -> int:
        row = await (
            await conn.execute("SELECT value FROM packrun_state WHERE name = %s", (name,))
        ).fetchone()
        return int(row[0]) if row else 0

    async def pin_events(
        self, installation_id: str, limit: int, before: int | None = None
    ) -> list[PinEvent]:
        async def body(conn: _Conn) -> list[PinEvent]:
            rows = await (
                await conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM pin_events WHERE installation_id = %s "
                    "AND seq < %s ORDER BY seq DESC LIMIT %s",
                    (installation_id, before if before is not None else 2**62, limit),
                )
            ).fetchall()
            return [event_from(r) for r in rows]

        return await self._run("read pin events", body)

    async def run_changes(self, cursor: int | None, skip_owner: str | None = None) -> RunDelta:
        # The cursor is the oldest transaction in progress when the last read took its snapshot:
        # every run row written by a transaction that committed after that read carries a txid at
        # or above it (it was in progress then, or began later). A quiet store has none.
        async def body(conn: _Conn) -> RunDelta:
            start, now = await (
                await conn.execute(
                    f"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, {_NOW}"
                )
            ).fetchone()
            if cursor is None:
                rows = await (
                    await conn.execute(
                        f"SELECT {RUN_COLUMNS}, owner, lease_until FROM runs "
                        "WHERE ended_at IS NULL AND lease_until > %s",
                        (now,),
                    )
                ).fetchall()
                live = [LiveRun(run_from(r), r[9], r[10]) for r in rows]
                return RunDelta(start, live, [], now, full=True)
            live, gone = [], []
            for r in await (
                await conn.execute(
                    f"SELECT {RUN_COLUMNS}, owner, lease_until, ended_at IS NULL FROM runs "
                    "WHERE txid >= %s::text::xid8 "
                    "AND (%s::text IS NULL OR owner IS DISTINCT FROM %s)",
                    (str(cursor), skip_owner, skip_owner),
                )
            ).fetchall():
                if r[11] and r[10] is not None and r[10] > now:
                    live.append(LiveRun(run_from(r), r[9], r[10]))
                else:
                    gone.append(r[0])
            return RunDelta(start, live, gone, now)

        return await self._run("read runs in flight", body)

    async def gc(
        self,
        retention: Retention,
        *,
        dry_run: bool = False,
        now: float | None = None,
        batch: int = 1000,
        pause: float = 0.0,
    ) -> GcReport:
        if now is None:
            now = await self._run(
                "read its clock",
                lambda conn: _fetch_one(conn, f"SELECT {_NOW}"),
            )
        assert now is not None
        kinds: dict[str, tuple[str, str, str, tuple[Any, ...]]] = {
            "ended_runs": (
                "runs",
                "run_id",
                "(ended_at IS NOT NULL AND ended_at < to_timestamp(%s)) "
                "OR (ended_at IS NULL AND lease_until < %s)",
                (now - retention.ended_runs, now - retention.ended_runs),
            ),
            "pin_events": (
                "pin_events",
                "seq",
                "at < to_timestamp(%s) AND NOT EXISTS (SELECT 1 FROM installations i "
                "WHERE i.id = pin_events.installation_id "
                "AND (i.last_event = pin_events.seq OR i.hold_event = pin_events.seq))",
                (now - retention.pin_events,),
            ),
            "changes": (
                "changes",
                "seq",
                "seq < (SELECT max(seq) FROM changes) AND (at IS NULL OR at < %s)",
                (now - retention.change_log,),
            ),
            "log_events": (
                "events",
                "seq",
                "at < to_timestamp(%s)",
                (now - retention.event_log,),
            ),
        }
        Spec = tuple[str, str, str, tuple[Any, ...]]

        async def count(spec: Spec) -> int:
            table, _, where, params = spec
            sql = f"SELECT count(*) FROM {table} WHERE {where}"
            found = await self._run(
                "count what retention prunes", lambda conn: _fetch_one(conn, sql, params)
            )
            return int(found)

        async def prune(spec: Spec) -> int:
            return await self._run(
                "prune what retention no longer keeps",
                lambda conn: self._prune(conn, *spec, batch),
            )

        return await gc_in_batches(kinds, count, prune, dry_run=dry_run, batch=batch, pause=pause)

    @staticmethod
    async def _prune(
        conn: _Conn, table: str, key: str, where: str, params: tuple[Any, ...], batch: int
    ) -> int:
        """Delete one batch of ``table``'s rows matching ``where``; how many were deleted."""
        rows = await (
            await conn.execute(
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {where} "
                f"ORDER BY {key} LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {key}",
                (*params, batch),
            )
        ).fetchall()
        if table == "changes" and rows:  # the newest line pruned is the horizon
            await conn.execute(
                "UPDATE packrun_state SET value = greatest(value, %s) "
                "WHERE name = 'changes_horizon'",
                (max(r[0] for r in rows),),
            )
        return len(rows)

    async def pack_entries(self, pack_id: str) -> list[CatalogEntry]:
        return await self._run("read a pack", lambda conn: self._pack_rows(conn, pack_id))

    @staticmethod
    async def _pack_rows(conn: _Conn, pack_id: str) -> list[CatalogEntry]:
        rows = await (
            await conn.execute(
                f"SELECT {CATALOG_COLUMNS} FROM catalog WHERE pack_id = %s", (pack_id,)
            )
        ).fetchall()
        return [entry_from(r) for r in rows]

    async def installation(
        self, installation_id: str
    ) -> tuple[Installation | None, list[PinEvent]]:
        async def body(conn: _Conn) -> tuple[Installation | None, list[PinEvent]]:
            await conn.execute(_SNAPSHOT)  # the row and its events as of one moment
            row = await (
                await conn.execute(
                    f"SELECT {INSTALLATION_COLUMNS} FROM installations WHERE id = %s",
                    (installation_id,),
                )
            ).fetchone()
            events = await (
                await conn.execute(_kept_events_sql("WHERE i.id = %(id)s"), {"id": installation_id})
            ).fetchall()
            return (installation_from(row) if row else None, [event_from(e) for e in events])

        return await self._run("read an installation", body)

    async def settings(self) -> Settings:
        return await self._run("read its settings", self._settings_from)

    async def project_settings(self) -> dict[str, dict[str, bool]]:
        return await self._run("read its settings", self._project_settings_from)

    async def artifact(self, digest: str) -> bytes:
        async def body(conn: _Conn) -> bytes:
            row = await (
                await conn.execute("SELECT data FROM artifacts WHERE digest = %s", (digest,))
            ).fetchone()
            if row is None:
                raise NotFound("artifact", digest)
            return bytes(row[0])

        return await self._run("read an artifact", body)

    # --- writes ---------------------------------------------------------------------------------

    async def publish(self, prepared: Prepared, decide: Decide) -> CatalogEntry:
        async def body(conn: _Conn) -> CatalogEntry:
            # The server's clock, read under the schema's lock: times follow commit order, and
            # the hosts of a fleet need not agree on the time.
            (now,) = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
            entry = dataclasses.replace(prepared.entry, published_at=now)
            rows = await self._pack_rows(conn, entry.pack_id)
            settings = stream_settings(
                await self._settings_from(conn), await self._project_settings_from(conn), entry
            )
            action = decide(rows, settings)
            if entry.digest is not None and prepared.artifact is not None:
                await conn.execute(
                    "INSERT INTO artifacts (digest, data) VALUES (%s, %s) "
                    "ON CONFLICT (digest) DO NOTHING",
                    (entry.digest, prepared.artifact),
                )
            row = entry_row(entry)
            if action == "insert":
                try:
                    await conn.execute(
                        "INSERT INTO catalog (pack_id, version_key, version, channel, entries, "
                        "manifest, digest, contract, published_at, state, project) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        row,
                    )
                except psycopg.errors.UniqueViolation:
                    raise VersionExists(
                        entry.pack_id, str(entry.version), "published meanwhile"
                    ) from None
            else:  # an overwrite keeps the row's state: a retired row stays retired
                await conn.execute(
                    "UPDATE catalog SET version = %s, channel = %s, entries = %s, manifest = %s, "
                    "digest = %s, contract = %s, published_at = %s "
                    "WHERE pack_id = %s AND version_key = %s AND project = %s",
                    (*row[2:9], row[0], row[1], entry.project),
                )
            await self._log(conn, "pack", entry.pack_id)
            await self._add_events(
                conn, [("publish", entry.pack_id, entry.project, publish_body(entry), None)]
            )
            stored = await (
                await conn.execute(
                    f"SELECT {CATALOG_COLUMNS} FROM catalog WHERE pack_id = %s "
                    "AND version_key = %s AND project = %s",
                    (entry.pack_id, entry.version_key, entry.project),
                )
            ).fetchone()
            return entry_from(stored)

        return await self._run("publish", body, logged=True)

    async def retire(self, pack_id: str, version_key: str, project: str = "") -> CatalogEntry:
        async def body(conn: _Conn) -> CatalogEntry:
            row = await (
                await conn.execute(
                    f"UPDATE catalog SET state = 'retired' WHERE pack_id = %s AND version_key = %s "
                    f"AND project = %s RETURNING {CATALOG_COLUMNS}",
                    (pack_id, version_key, project),
                )
            ).fetchone()
            if row is None:
                raise NotFound("version", f"{pack_id} {version_key}")
            await self._log(conn, "pack", pack_id)
            return entry_from(row)

        return await self._run("retire a version", body, logged=True)

    async def set_setting(self, name: str, value: bool, project: str = "") -> Settings:
        async def body(conn: _Conn) -> Settings:
            await conn.execute(
                "INSERT INTO settings (project, name, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (project, name) DO UPDATE SET value = excluded.value",
                (project, name, value),
            )
            await self._log(conn, "settings", f"{project}/{name}" if project else name)
            return await self._settings_from(conn)

        return await self._run("change a setting", body, logged=True)

    @staticmethod
    async def _insert_event(conn: _Conn, event: PinEvent) -> PinEvent:
        row = await (
            await conn.execute(
                "INSERT INTO pin_events (installation_id, actor, origin, from_pin, to_pin, "
                "from_version, to_version, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING seq",
                (
                    event.installation_id,
                    event.actor,
                    event.origin,
                    event.from_pin,
                    event.to_pin,
                    event.from_version,
                    event.to_version,
                    event.at,
                ),
            )
        ).fetchone()
        pack_id, project = await (
            await conn.execute(
                "SELECT pack_id, project FROM installations WHERE id = %s",
                (event.installation_id,),
            )
        ).fetchone()
        await PostgresStore._add_events(
            conn, [("pin_move", pack_id, project, pin_move_body(event), None)]
        )
        return dataclasses.replace(event, seq=row[0])

    async def create_installation(self, installation: Installation, event: PinEvent) -> PinEvent:
        async def body(conn: _Conn) -> PinEvent:
            row = await (
                await conn.execute(
                    "SELECT pack_id, pin, project FROM installations WHERE id = %s",
                    (installation.id,),
                )
            ).fetchone()
            if row is not None and row[2] != installation.project:
                raise InstallationExists(installation.id)  # another project's: nothing told
            if row is not None:
                raise InstallationExists(installation.id, row[0], row[1])
            await conn.execute(
                f"INSERT INTO installations ({INSTALLATION_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    installation.id,
                    installation.pack_id,
                    installation.pin,
                    installation.policy,
                    installation.allow_prerelease,
                    installation.created_at,
                    installation.hold,
                    installation.project,
                ),
            )
            stored = await self._insert_event(conn, event)
            await self._log(conn, "installation", installation.id)
            return stored

        return await self._run("create an installation", body, logged=True)

    async def update_installation(
        self, installation_id: str, update: Update
    ) -> tuple[Installation, PinEvent | None]:
        async def body(conn: _Conn) -> tuple[Installation, PinEvent | None]:
            row = await (
                await conn.execute(
                    f"SELECT {INSTALLATION_COLUMNS} FROM installations WHERE id = %s FOR UPDATE",
                    (installation_id,),
                )
            ).fetchone()
            if row is None:
                raise NotFound("installation", installation_id)
            current = installation_from(row)
            changed, event = update(current)
            if changed == current and event is None:
                return current, None  # nothing changed: nothing written, nothing logged
            await conn.execute(
                "UPDATE installations SET pin = %s, policy = %s, hold = %s WHERE id = %s",
                (changed.pin, changed.policy, changed.hold, installation_id),
            )
            stored = await self._insert_event(conn, event) if event is not None else None
            await self._log(conn, "installation", installation_id)
            return changed, stored

        return await self._run("update an installation", body, logged=True)

    # Runs: leases are measured on the server's clock (``_NOW``), so the hosts of a fleet need
    # not agree on the time; the runtime's own times only give the lease's length. Every batch
    # takes its rows in run id order, so two runtimes writing the same runs cannot deadlock.

    async def start_runs(
        self, records: Sequence[RunRecord], owner: str, now: float, lease_until: float
    ) -> list[StartedRun]:
        ttl = lease_until - now

        async def body(conn: _Conn) -> list[StartedRun]:
            started: dict[int, StartedRun] = {}
            for index, record in sorted(enumerate(records), key=lambda item: item[1].run_id):
                cursor = await conn.execute(
                    f"INSERT INTO runs ({RUN_COLUMNS}, owner, lease_until) "
                    f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW} + %s) "
                    "ON CONFLICT (run_id) DO NOTHING",
                    (
                        record.run_id,
                        record.installation_id,
                        record.pack_id,
                        record.version,
                        record.digest,
                        record.contract,
                        record.channel,
                        record.workflow_id,
                        record.started_at,
                        owner,
                        ttl,
                    ),
                )
                if cursor.rowcount:
                    started[index] = (record, False, None)
                    continue
                # Seen before: reopen it, unless another owner's lease on it is still live.
                row = await (
                    await conn.execute(
                        f"SELECT {RUN_COLUMNS}, ended_at IS NULL AND owner <> %s "
                        f"AND lease_until > {_NOW}, owner FROM runs WHERE run_id = %s FOR UPDATE",
                        (owner, record.run_id),
                    )
                ).fetchone()
                held, holder = row[9:]
                if held:
                    started[index] = (run_from(row), True, holder)
                    continue
                await conn.execute(
                    f"UPDATE runs SET ended_at = NULL, owner = %s, lease_until = {_NOW} + %s "
                    "WHERE run_id = %s",
                    (owner, ttl, record.run_id),
                )
                started[index] = (run_from(row), True, None)
            return [started[index] for index in range(len(records))]

        return await self._run("start runs", body)

    async def end_runs(self, ends: Sequence[RunEnd], owner: str, at: datetime) -> None:
        ordered = sorted(ends, key=lambda end: end[0])

        async def body(conn: _Conn) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "UPDATE runs SET ended_at = %s, calls = %s WHERE run_id = %s AND owner = %s",
                    [
                        (at, json.dumps(sorted(calls)) if calls else None, run_id, owner)
                        for run_id, calls in ordered
                    ],
                )
            with_calls = [run_id for run_id, calls in ordered if calls]
            if not with_calls:
                return
            rows = await (
                await conn.execute(
                    "SELECT DISTINCT installation_id FROM runs "
                    "WHERE workflow_id IS NOT NULL AND run_id = ANY(%s) AND owner = %s "
                    "ORDER BY installation_id",
                    (with_calls, owner),
                )
            ).fetchall()
            if rows:  # workflows' observed tools changed: other runtimes re-read them
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                for (installation_id,) in rows:
                    await self._log(conn, "usage", installation_id)
                await self._notify(conn)

        await self._run("end runs", body)

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_until: float) -> None:
        ttl = lease_until - time.time()

        async def body(conn: _Conn) -> None:
            await conn.execute(
                f"UPDATE runs SET lease_until = {_NOW} + %s WHERE run_id IN "
                "(SELECT run_id FROM runs WHERE owner = %s AND run_id = ANY(%s) "
                "AND ended_at IS NULL ORDER BY run_id FOR UPDATE)",
                (ttl, owner, sorted(run_ids)),
            )

        await self._run("renew run leases", body)

    async def live_runs(self, now: float) -> list[LiveRun]:
        async def body(conn: _Conn) -> list[LiveRun]:
            rows = await (
                await conn.execute(
                    f"SELECT {RUN_COLUMNS}, owner, lease_until FROM runs "
                    f"WHERE ended_at IS NULL AND lease_until > {_NOW}"
                )
            ).fetchall()
            return [LiveRun(run_from(r), r[9], r[10]) for r in rows]

        return await self._run("read runs in flight", body)

    async def declare_workflow(
        self, installation_id: str, workflow_id: str, tools: Sequence[str]
    ) -> None:
        async def body(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO workflows (installation_id, workflow_id, tools) VALUES (%s, %s, %s) "
                "ON CONFLICT (installation_id, workflow_id) DO UPDATE SET tools = excluded.tools",
                (installation_id, workflow_id, json.dumps(sorted(set(tools)))),
            )
            await self._log(conn, "usage", installation_id)

        await self._run("declare a workflow", body, logged=True)

    async def all_workflow_tools(self) -> dict[str, WorkflowTools]:
        return await self._run("read workflows", lambda conn: self._workflow_tools(conn, None))

    async def workflow_tools(self, installation_id: str) -> WorkflowTools:
        found = await self._run(
            "read workflows", lambda conn: self._workflow_tools(conn, installation_id)
        )
        return found.get(installation_id, WorkflowTools({}, {}))

    @staticmethod
    async def _workflow_tools(conn: _Conn, installation_id: str | None) -> dict[str, WorkflowTools]:
        """Declared and observed tools by installation (of one, or of all), in one snapshot."""
        await conn.execute(_SNAPSHOT)
        only = "" if installation_id is None else " AND installation_id = %s"
        params = () if installation_id is None else (installation_id,)
        declared: dict[str, dict[str, frozenset[str]]] = {}
        for iid, workflow, tools in await (
            await conn.execute(
                f"SELECT installation_id, workflow_id, tools FROM workflows WHERE TRUE{only}",
                params,
            )
        ).fetchall():
            declared.setdefault(iid, {})[workflow] = frozenset(json.loads(tools))
        observed: dict[str, dict[str, frozenset[str]]] = {}
        for iid, workflow, tool in await (
            await conn.execute(
                f"SELECT installation_id, workflow_id, tool FROM observed_tools WHERE TRUE{only}",
                params,
            )
        ).fetchall():
            seen = observed.setdefault(iid, {})
            seen[workflow] = seen.get(workflow, frozenset()) | {tool}
        return {
            iid: WorkflowTools(declared.get(iid, {}), observed.get(iid, {}))
            for iid in declared.keys() | observed.keys()
        }

    # --- pack sources -------------------------------------------------------------------------

    async def sources(self) -> list[SourceRow]:
        async def body(conn: _Conn) -> list[SourceRow]:
            rows = await (
                await conn.execute("SELECT name, spec, status FROM sources ORDER BY name")
            ).fetchall()
            return [(r[0], r[1], r[2]) for r in rows]

        return await self._run("read the pack sources", body)

    async def add_source(self, name: str, spec: str) -> None:
        async def body(conn: _Conn) -> None:
            inserted = await conn.execute(
                "INSERT INTO sources (name, spec) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (name, spec),
            )
            if not inserted.rowcount:
                raise SourceError(name, "a source of that name exists: remove it first")
            await self._log(conn, "source", name)

        await self._run("add a pack source", body, logged=True)

    async def remove_source(self, name: str) -> bool:
        async def body(conn: _Conn) -> bool:
            gone = (await conn.execute("DELETE FROM sources WHERE name = %s", (name,))).rowcount
            if gone:
                await self._log(conn, "source", name)
            return bool(gone)

        return await self._run("remove a pack source", body, logged=True)

    async def claim_source(self, name: str, owner: str, ttl: float) -> str | None:
        async def body(conn: _Conn) -> str | None:
            row = await (
                await conn.execute(
                    f"SELECT lease_owner, coalesce(lease_until, 0) > {_NOW} FROM sources "
                    "WHERE name = %s FOR UPDATE",
                    (name,),
                )
            ).fetchone()
            if row is None:
                known = await (
                    await conn.execute("SELECT name FROM sources ORDER BY name")
                ).fetchall()
                raise NotFound("source", name, [k[0] for k in known])
            if row[0] is not None and row[0] != owner and row[1]:
                return str(row[0])
            await conn.execute(
                f"UPDATE sources SET lease_owner = %s, lease_until = {_NOW} + %s WHERE name = %s",
                (owner, ttl, name),
            )
            return None

        return await self._run("claim a pack source", body)

    async def release_source(self, name: str, owner: str) -> None:
        async def body(conn: _Conn) -> None:
            await conn.execute(
                "UPDATE sources SET lease_owner = NULL, lease_until = NULL "
                "WHERE name = %s AND lease_owner = %s",
                (name, owner),
            )

        await self._run("release a pack source", body)

    async def save_source_status(self, name: str, status: str) -> None:
        async def body(conn: _Conn) -> None:
            updated = await conn.execute(
                "UPDATE sources SET status = %s WHERE name = %s", (status, name)
            )
            if updated.rowcount:
                await self._log(conn, "source", name)

        await self._run("record a sync", body, logged=True)

    # --- health, rollouts and events ------------------------------------------------------------
    # Events are appended only in transactions that hold the schema's lock (``logged``), so their
    # sequence numbers become visible in order, as the change log's.

    @staticmethod
    async def _add_events(conn: _Conn, events: Sequence[NewEvent]) -> None:
        for kind, pack, project, body, dedupe in events:
            await conn.execute(
                "INSERT INTO events (kind, at, pack_id, project, body, dedupe) "
                "VALUES (%s, clock_timestamp(), %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (kind, pack, project, body, dedupe),
            )

    async def add_health(self, deltas: Sequence[HealthDelta]) -> None:
        async def body(conn: _Conn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO health (pack_id, stream, version_key, project, metric, n) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (pack_id, stream, version_key, "
                    "project, metric) DO UPDATE SET n = health.n + excluded.n",
                    sorted(deltas),  # one order for every writer: no deadlock between them
                )

        await self._run("record health", body)

    async def health_rows(self) -> list[HealthDelta]:
        async def body(conn: _Conn) -> list[HealthDelta]:
            rows = await (
                await conn.execute(
                    "SELECT pack_id, stream, version_key, project, metric, n FROM health"
                )
            ).fetchall()
            return [(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

        return await self._run("read health", body)

    async def append_events(self, events: Sequence[NewEvent]) -> None:
        async def body(conn: _Conn) -> None:
            await self._add_events(conn, events)

        await self._run("append events", body, logged=True)

    async def read_events(self, since: int, limit: int) -> list[StoredEvent]:
        async def body(conn: _Conn) -> list[StoredEvent]:
            rows = await (
                await conn.execute(
                    "SELECT seq, kind, at, pack_id, project, body FROM events WHERE seq > %s "
                    "ORDER BY seq LIMIT %s",
                    (since, limit),
                )
            ).fetchall()
            return [(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

        return await self._run("read events", body)

    async def create_rollout(
        self, row: RolloutRow, owner: str, ttl: float, events: Sequence[NewEvent]
    ) -> None:
        async def body(conn: _Conn) -> None:
            active = await (
                await conn.execute(
                    "SELECT id, body FROM rollouts WHERE pack_id = %s AND project = %s "
                    "AND state IN ('running', 'aborting')",
                    (row.pack_id, row.project),
                )
            ).fetchone()
            if active is not None:
                version = json.loads(active[1]).get("version", "?")
                raise RolloutInProgress(row.pack_id, row.project, active[0], version)
            await conn.execute(
                "INSERT INTO rollouts (id, pack_id, project, state, rev, body, lease_owner, "
                f"lease_until) VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW} + %s)",
                (row.id, row.pack_id, row.project, row.state, row.rev, row.body, owner, ttl),
            )
            await self._add_events(conn, events)

        # Under the schema's lock: two starts of one pack's rollout are serialised.
        await self._run("start a rollout", body, logged=True)

    async def rollouts(
        self, pack_id: str | None = None, *, active: bool = False
    ) -> list[RolloutRow]:
        async def body(conn: _Conn) -> list[RolloutRow]:
            where = ["TRUE"]
            args: list[Any] = []
            if pack_id is not None:
                where.append("pack_id = %s")
                args.append(pack_id)
            if active:
                where.append("state IN ('running', 'aborting')")
            rows = await (
                await conn.execute(
                    "SELECT id, pack_id, project, state, rev, body FROM rollouts "
                    f"WHERE {' AND '.join(where)} ORDER BY created",
                    args,
                )
            ).fetchall()
            return [RolloutRow(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]

        return await self._run("read rollouts", body)

    async def save_rollout(self, row: RolloutRow, events: Sequence[NewEvent]) -> bool:
        async def body(conn: _Conn) -> bool:
            updated = await conn.execute(
                "UPDATE rollouts SET state = %s, rev = %s, body = %s WHERE id = %s AND rev = %s",
                (row.state, row.rev, row.body, row.id, row.rev - 1),
            )
            if updated.rowcount:
                await self._add_events(conn, events)
            return bool(updated.rowcount)

        return await self._run("save a rollout", body, logged=True)

    async def claim_rollout(self, rollout_id: str, owner: str, ttl: float) -> bool:
        async def body(conn: _Conn) -> bool:
            claimed = await conn.execute(
                f"UPDATE rollouts SET lease_owner = %s, lease_until = {_NOW} + %s WHERE id = %s "
                f"AND (lease_owner IS NULL OR lease_owner = %s OR coalesce(lease_until, 0) <= {_NOW})",
                (owner, ttl, rollout_id, owner),
            )
            return bool(claimed.rowcount)

        return await self._run("claim a rollout", body)

    # --- aliases and soak settings ------------------------------------------------------------

    _ALIAS_COLUMNS: Final = "project, pack_id, name, version, actor, at"

    async def aliases(self) -> list[Alias]:
        async def body(conn: _Conn) -> list[Alias]:
            rows = await (
                await conn.execute(
                    f"SELECT {self._ALIAS_COLUMNS} FROM aliases ORDER BY project, pack_id, name"
                )
            ).fetchall()
            return [Alias(*r) for r in rows]

        return await self._run("read the aliases", body)

    async def set_alias(
        self, alias: Alias, moves: AliasMove
    ) -> tuple[Alias | None, list[PinEvent]]:
        async def body(conn: _Conn) -> tuple[Alias | None, list[PinEvent]]:
            key = (alias.project, alias.pack_id, alias.name)
            row = await (
                await conn.execute(
                    f"SELECT {self._ALIAS_COLUMNS} FROM aliases "
                    "WHERE project = %s AND pack_id = %s AND name = %s",
                    key,
                )
            ).fetchone()
            before = None if row is None else Alias(*row)
            rows = await (
                await conn.execute(
                    f"SELECT {INSTALLATION_COLUMNS} FROM installations "
                    "WHERE project = %s AND pack_id = %s AND pin = %s ORDER BY id FOR UPDATE",
                    (alias.project, alias.pack_id, f"@{alias.name}"),
                )
            ).fetchall()
            events = moves(before, [installation_from(r) for r in rows])
            await conn.execute(
                f"INSERT INTO aliases ({self._ALIAS_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (project, pack_id, name) DO UPDATE SET version = excluded.version, "
                "actor = excluded.actor, at = excluded.at",
                (*key, alias.version, alias.actor, alias.at),
            )
            stored = [await self._insert_event(conn, e) for e in events]
            for event in stored:
                await self._log(conn, "installation", event.installation_id)
            await self._log(conn, "alias", "/".join(key))
            return before, stored

        return await self._run("move an alias", body, logged=True)

    async def soak_settings(self) -> dict[str, str]:
        async def body(conn: _Conn) -> dict[str, str]:
            rows = await (await conn.execute("SELECT scope, value FROM soak")).fetchall()
            return {r[0]: r[1] for r in rows}

        return await self._run("read the soak settings", body)

    async def set_soak(self, scope: str, value: str | None) -> None:
        async def body(conn: _Conn) -> None:
            if value is None:
                await conn.execute("DELETE FROM soak WHERE scope = %s", (scope,))
            else:
                await conn.execute(
                    "INSERT INTO soak (scope, value) VALUES (%s, %s) "
                    "ON CONFLICT (scope) DO UPDATE SET value = excluded.value",
                    (scope, value),
                )
            await self._log(conn, "soak", scope)

        await self._run("change the soak settings", body, logged=True)
