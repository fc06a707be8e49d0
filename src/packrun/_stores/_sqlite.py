"""The embedded store (``sqlite:///path/to/state.db``): one SQLite file in WAL mode.

Many processes on one host may share the file. Every write is one ``BEGIN IMMEDIATE`` transaction,
so writers are serialised by SQLite itself and a publish decides against the rows as they are at
that moment; a process killed mid-write leaves the transaction rolled back. Calls run in a worker
thread so the event loop never waits on the disk.

The schema is versioned with ``PRAGMA user_version`` and migrated by :data:`MIGRATIONS` on open; a
file written by a newer packrun is refused with ``store_error``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

import anyio.to_thread

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
from packrun._stores._writer import GroupWriter
from packrun.errors import (
    InstallationExists,
    NotFound,
    PackrunError,
    RolloutInProgress,
    SourceError,
    StoreError,
    VersionExists,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

_T = TypeVar("_T")

MIGRATION_PROJECTS: Final = """
    CREATE TABLE catalog_projects (
        pack_id TEXT NOT NULL,
        project TEXT NOT NULL,
        version_key TEXT NOT NULL,
        version TEXT NOT NULL,
        channel TEXT NOT NULL,
        entries BLOB NOT NULL,
        manifest BLOB,
        digest TEXT REFERENCES artifacts (digest),
        contract INTEGER,
        published_at TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (pack_id, project, version_key)
    );
    INSERT INTO catalog_projects (pack_id, project, version_key, version, channel, entries,
        manifest, digest, contract, published_at, state)
        SELECT pack_id, CASE channel WHEN 'custom' THEN 'default' ELSE '' END, version_key,
            version, channel, entries, manifest, digest, contract, published_at, state
        FROM catalog;
    DROP TABLE catalog;
    ALTER TABLE catalog_projects RENAME TO catalog;
    ALTER TABLE installations ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    CREATE TABLE settings_projects (
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (project, name)
    );
    INSERT INTO settings_projects (project, name, value) SELECT '', name, value FROM settings;
    DROP TABLE settings;
    ALTER TABLE settings_projects RENAME TO settings;
"""
"""6: projects. A catalog row belongs to a stream (``project`` empty for a vendor row, the
project's id for a custom row); installations and settings belong to a project (settings with an
empty project are the store's own). What a store held before lands in project ``default``: its
custom rows, its installations; its settings stay the store's."""


MIGRATION_GROWTH: Final = """
    CREATE TABLE packrun_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO packrun_state (name, value) VALUES ('run_seq', 0), ('changes_horizon', 0);
    ALTER TABLE changes ADD COLUMN writer TEXT;
    ALTER TABLE changes ADD COLUMN at REAL;
    CREATE INDEX changes_at ON changes (at);
    ALTER TABLE installations ADD COLUMN last_event INTEGER;
    ALTER TABLE installations ADD COLUMN hold_event INTEGER;
    UPDATE installations SET last_event = (
        SELECT max(seq) FROM pin_events e WHERE e.installation_id = installations.id);
    UPDATE installations SET hold_event = (
        SELECT max(seq) FROM pin_events e WHERE e.installation_id = installations.id
        AND e.origin IN ('user', 'rollback') AND e.from_version = installations.hold)
        WHERE hold IS NOT NULL;
    CREATE INDEX pin_events_at ON pin_events (at);
    CREATE TRIGGER pin_events_kept AFTER INSERT ON pin_events BEGIN
        UPDATE installations SET last_event = NEW.seq,
            hold_event = CASE WHEN NEW.origin IN ('user', 'rollback')
                AND NEW.from_version = hold THEN NEW.seq ELSE hold_event END
        WHERE id = NEW.installation_id;
    END;
    ALTER TABLE runs ADD COLUMN rseq INTEGER;
    CREATE INDEX runs_by_rseq ON runs (rseq);
    CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
    CREATE TRIGGER runs_started AFTER INSERT ON runs BEGIN
        UPDATE packrun_state SET value = value + 1 WHERE name = 'run_seq';
        UPDATE runs SET rseq = (SELECT value FROM packrun_state WHERE name = 'run_seq')
            WHERE rowid = NEW.rowid;
    END;
    CREATE TRIGGER runs_changed AFTER UPDATE OF ended_at, owner, lease_until ON runs BEGIN
        UPDATE packrun_state SET value = value + 1 WHERE name = 'run_seq';
        UPDATE runs SET rseq = (SELECT value FROM packrun_state WHERE name = 'run_seq')
            WHERE rowid = NEW.rowid;
    END;
    CREATE TABLE observed_tools (
        installation_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        PRIMARY KEY (installation_id, workflow_id, tool)
    );
    INSERT OR IGNORE INTO observed_tools (installation_id, workflow_id, tool)
        SELECT r.installation_id, r.workflow_id, j.value FROM runs r, json_each(r.calls) j
        WHERE r.workflow_id IS NOT NULL AND r.calls IS NOT NULL;
    CREATE TRIGGER runs_observed AFTER UPDATE OF calls ON runs
        WHEN NEW.calls IS NOT NULL AND NEW.workflow_id IS NOT NULL BEGIN
        INSERT OR IGNORE INTO observed_tools (installation_id, workflow_id, tool)
            SELECT NEW.installation_id, NEW.workflow_id, value FROM json_each(NEW.calls);
    END;
"""
"""7: growth over time. Change-log lines carry their writer (a runtime skips its own) and time
(retention); ``packrun_state`` holds the newest line pruned and the run change sequence. Every
write of a run's start, end, owner or lease stamps it with the next ``rseq`` (readers of runs in
flight read only what changed). An installation points at its last pin event and at the one that
set its hold (what a runtime loads, instead of the whole history). The tools workflows' runs
called are kept per workflow in ``observed_tools``, not re-read from every run."""


def _statements(script: str) -> list[str]:
    """The statements of a migration script (a trigger's body holds semicolons of its own)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().rstrip(";").strip():
                found.append(pending)
            pending = ""
    if pending.strip():
        found.append(pending)
    return found


MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the catalog, artifacts, installations, pin events, settings and the change log.
    """
    CREATE TABLE settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE artifacts (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
    CREATE TABLE catalog (
        pack_id TEXT NOT NULL,
        version_key TEXT NOT NULL,
        version TEXT NOT NULL,
        channel TEXT NOT NULL,
        entries BLOB NOT NULL,
        manifest BLOB,
        digest TEXT REFERENCES artifacts (digest),
        contract INTEGER,
        published_at TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (pack_id, version_key)
    );
    CREATE TABLE installations (
        id TEXT PRIMARY KEY,
        pack_id TEXT NOT NULL,
        pin TEXT NOT NULL,
        policy TEXT NOT NULL,
        allow_prerelease INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE pin_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        installation_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        origin TEXT NOT NULL,
        from_pin TEXT,
        to_pin TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT,
        at TEXT NOT NULL
    );
    CREATE INDEX pin_events_by_installation ON pin_events (installation_id, seq);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL
    );
    """,
    # 2: runs, their bindings and leases.
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        installation_id TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT,
        contract INTEGER,
        channel TEXT NOT NULL,
        workflow_id TEXT,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        owner TEXT,
        lease_until REAL
    );
    CREATE INDEX runs_in_flight ON runs (lease_until) WHERE ended_at IS NULL;
    CREATE INDEX runs_by_owner ON runs (owner) WHERE ended_at IS NULL;
    """,
    # 3: the tools each run called, and the workflows declared for an installation.
    """
    ALTER TABLE runs ADD COLUMN calls TEXT;
    CREATE INDEX runs_by_installation ON runs (installation_id) WHERE workflow_id IS NOT NULL;
    CREATE TABLE workflows (
        installation_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        tools TEXT NOT NULL,
        PRIMARY KEY (installation_id, workflow_id)
    );
    """,
    # 4: the version a manual move took an installation down from (what holds its policy).
    """
    ALTER TABLE installations ADD COLUMN hold TEXT;
    """,
    # 5: pack sources: their specs, sync status and sync lease.
    """
    CREATE TABLE IF NOT EXISTS sources (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        status TEXT,
        lease_owner TEXT,
        lease_until REAL
    );
    """,
    # 6: projects (custom rows, installations and settings per project).
    MIGRATION_PROJECTS,
    # 7: the fleet's health sums, its rollouts and its event log.
    """
    CREATE TABLE health (
        pack_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        version_key TEXT NOT NULL,
        project TEXT NOT NULL,
        metric TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (pack_id, stream, version_key, project, metric)
    );
    CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        pack_id TEXT NOT NULL,
        project TEXT NOT NULL,
        state TEXT NOT NULL,
        rev INTEGER NOT NULL,
        body TEXT NOT NULL,
        lease_owner TEXT,
        lease_until REAL
    );
    CREATE UNIQUE INDEX rollouts_active ON rollouts (pack_id, project)
        WHERE state IN ('running', 'aborting');
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        project TEXT NOT NULL,
        body TEXT NOT NULL,
        dedupe TEXT UNIQUE
    );
    """,
    # 8: aliases (named pins per pack and project) and soak settings (release age, window).
    """
    CREATE TABLE IF NOT EXISTS aliases (
        project TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        actor TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (project, pack_id, name)
    );
    CREATE TABLE IF NOT EXISTS soak (scope TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 9: growth over time (see MIGRATION_GROWTH).
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


_KEPT_EVENTS: Final = _kept_events_sql("")
_KEPT_EVENTS_OF: Final = _kept_events_sql("WHERE i.id = :id")

_TEXT = datetime.isoformat  # times are stored as ISO 8601 text
_Starts: TypeAlias = tuple[Sequence[RunRecord], str, float, float]  # start_runs' arguments
_TIME = datetime.fromisoformat


def _alias_from(row: Sequence[Any]) -> Alias:
    project, pack_id, name, version, actor, at = row
    return Alias(project, pack_id, name, version, actor, _TIME(at))


class SQLiteStore(Store):
    """One SQLite file in WAL mode, shared by every runtime and process that opens it."""

    # Run starts are grouped by the store's own writer thread, not by the runtime.
    group_commit = False

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._identity: tuple[int, int] = (0, 0)
        self._starts: GroupWriter[_Starts, list[StartedRun]] = GroupWriter(
            self._write_starts, "packrun-sqlite-starts"
        )

    # --- plumbing -------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._locked, fn)

    def _locked(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the store {self.url} is closed")
            try:
                return fn(self._conn)
            except PackrunError:
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"the store {self.url} failed: {exc}") from exc

    def _check_file(self) -> None:
        # SQLite keeps writing to an open file that was deleted or replaced, and those writes
        # are lost: refuse them instead.
        try:
            st = os.stat(self.path)
        except OSError:
            raise StoreError(
                f"the store file {self.path} is gone (deleted while open); reopen the runtime"
            ) from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(
                f"the store file {self.path} was replaced while open; reopen the runtime"
            )

    def _write(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
        conn.execute("BEGIN")  # one snapshot for every SELECT of the body
        try:
            return body(conn)
        finally:
            conn.execute("COMMIT")

    def _log(self, conn: sqlite3.Connection, kind: str, key: str) -> None:
        conn.execute(
            "INSERT INTO changes (kind, key, writer, at) VALUES (?, ?, ?, ?)",
            (kind, key, self.writer, time.time()),
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        try:
            if self.create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
            elif not self.path.is_file():
                raise StoreError(
                    f"no store at {self.path} ({self.url}): expected an existing packrun store; "
                    "this open does not create one (create=False)"
                )
            else:  # read-write, never create: the file may go away between the check and here
                conn = sqlite3.connect(
                    f"{self.path.absolute().as_uri()}?mode=rw",
                    uri=True,
                    timeout=30.0,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.url}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            # Before journal_mode, which writes to an empty file.
            if not self.create and conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                raise StoreError(
                    f"no store at {self.path} ({self.url}): the file is not a packrun store; "
                    "this open does not create one (create=False)"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"the store {self.url} is not a packrun SQLite store: {exc}") from exc
        except StoreError:
            conn.close()
            raise
        st = os.stat(self.path)
        with self._lock:
            self._conn = conn
            self._identity = (st.st_dev, st.st_ino)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {self.url} was written by a newer packrun (schema {version}; this "
                    f"packrun knows up to {SCHEMA_VERSION}): upgrade packrun to open it"
                )
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} holds tables that are not a packrun store")

            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        # In a worker thread: the lock may be held by a call waiting on another process's write.
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        self._starts.stop()  # what it holds is written first
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- reads ----------------------------------------------------------------------------------

    async def load(self) -> StoreState:
        def body(conn: sqlite3.Connection) -> StoreState:
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            return StoreState(
                self._settings_from(conn),
                [
                    entry_from(r, _TIME)
                    for r in conn.execute(f"SELECT {CATALOG_COLUMNS} FROM catalog")
                ],
                [
                    installation_from(r, _TIME)
                    for r in conn.execute(f"SELECT {INSTALLATION_COLUMNS} FROM installations")
                ],
                [event_from(r, _TIME) for r in conn.execute(_KEPT_EVENTS)],
                seq,
                self._project_settings_from(conn),
            )

        return await self._call(lambda conn: self._read(conn, body))

    @staticmethod
    def _project_settings_from(conn: sqlite3.Connection) -> dict[str, dict[str, bool]]:
        found: dict[str, dict[str, bool]] = {}
        for project, name, value in conn.execute(
            "SELECT project, name, value FROM settings WHERE project <> ''"
        ):
            found.setdefault(project, {})[name] = bool(value)
        return found

    @staticmethod
    def _settings_from(conn: sqlite3.Connection) -> Settings:
        values = dict(
            conn.execute("SELECT name, value FROM settings WHERE project = ''").fetchall()
        )
        defaults = Settings()
        return Settings(
            bool(values.get("immutable_versions", defaults.immutable_versions)),
            bool(values.get("strict_versions", defaults.strict_versions)),
        )

    async def changes(self, since: int) -> list[Change]:
        def body(conn: sqlite3.Connection) -> list[Change]:
            self._check_file()
            rows = conn.execute(
                "SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq", (since,)
            )
            return [Change(*row) for row in rows]

        return await self._call(body)

    async def changes_since(self, since: int, writer: str | None) -> ChangeBatch:
        def body(conn: sqlite3.Connection) -> ChangeBatch:
            self._check_file()
            head = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            if head <= since:
                return ChangeBatch([], head)
            horizon = self._state(conn, "changes_horizon")
            rows = conn.execute(
                "SELECT seq, kind, key FROM changes WHERE seq > ? "
                "AND (writer IS NULL OR writer IS NOT ?) ORDER BY seq",
                (since, writer),
            )
            return ChangeBatch([Change(*row) for row in rows], head, since < horizon)

        return await self._call(lambda conn: self._read(conn, body))

    @staticmethod
    def _state(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT value FROM packrun_state WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    async def pin_events(
        self, installation_id: str, limit: int, before: int | None = None
    ) -> list[PinEvent]:
        def body(conn: sqlite3.Connection) -> list[PinEvent]:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM pin_events WHERE installation_id = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?",
                (installation_id, before if before is not None else 2**62, limit),
            )
            return [event_from(r, _TIME) for r in rows]

        return await self._call(body)

    async def run_changes(self, cursor: int | None, skip_owner: str | None = None) -> RunDelta:
        def body(conn: sqlite3.Connection) -> RunDelta:
            now = time.time()
            if cursor is None:
                start = self._state(conn, "run_seq")
                rows = conn.execute(
                    f"SELECT {RUN_COLUMNS}, owner, lease_until FROM runs "
                    "WHERE ended_at IS NULL AND lease_until > ?",
                    (now,),
                )
                live = [LiveRun(run_from(r, _TIME), r[9], r[10]) for r in rows]
                return RunDelta(start, live, [], now, full=True)
            live, gone = [], []
            last = max(cursor, self._state(conn, "run_seq"))
            for r in conn.execute(
                f"SELECT {RUN_COLUMNS}, owner, lease_until, ended_at, rseq FROM runs "
                "WHERE rseq > ? AND (? IS NULL OR owner IS NOT ?) ORDER BY rseq",
                (cursor, skip_owner, skip_owner),
            ):
                if r[11] is None and r[10] is not None and r[10] > now:
                    live.append(LiveRun(run_from(r, _TIME), r[9], r[10]))
                else:
                    gone.append(r[0])
            return RunDelta(last, live, gone, now)

        return await self._call(lambda conn: self._read(conn, body))

    async def gc(
        self,
        retention: Retention,
        *,
        dry_run: bool = False,
        now: float | None = None,
        batch: int = 1000,
        pause: float = 0.0,
    ) -> GcReport:
        now = time.time() if now is None else now
        runs_before = datetime.fromtimestamp(now - retention.ended_runs, UTC).isoformat()
        events_before = datetime.fromtimestamp(now - retention.pin_events, UTC).isoformat()
        kinds: dict[str, tuple[str, str, tuple[Any, ...]]] = {
            "ended_runs": (
                "runs",
                "(ended_at IS NOT NULL AND ended_at < ?) OR (ended_at IS NULL AND lease_until < ?)",
                (runs_before, now - retention.ended_runs),
            ),
            "pin_events": (
                "pin_events",
                "at < ? AND NOT EXISTS (SELECT 1 FROM installations i "
                "WHERE i.id = pin_events.installation_id "
                "AND (i.last_event = pin_events.seq OR i.hold_event = pin_events.seq))",
                (events_before,),
            ),
            "changes": (
                "changes",
                "seq < (SELECT max(seq) FROM changes) AND (at IS NULL OR at < ?)",
                (now - retention.change_log,),
            ),
            "log_events": (
                "events",
                "at < ?",
                (datetime.fromtimestamp(now - retention.event_log, UTC).isoformat(),),
            ),
        }
        Spec = tuple[str, str, tuple[Any, ...]]

        async def count(spec: Spec) -> int:
            table, where, params = spec
            sql = f"SELECT count(*) FROM {table} WHERE {where}"
            return await self._call(lambda conn: int(conn.execute(sql, params).fetchone()[0]))

        async def prune(spec: Spec) -> int:
            return await self._call(
                lambda conn: self._write(conn, lambda c: self._prune(c, *spec, batch))
            )

        return await gc_in_batches(kinds, count, prune, dry_run=dry_run, batch=batch, pause=pause)

    @staticmethod
    def _prune(
        conn: sqlite3.Connection, table: str, where: str, params: tuple[Any, ...], batch: int
    ) -> int:
        """Delete one batch of ``table``'s rows matching ``where``; how many were deleted."""
        if table == "changes":  # a prefix of the log; the newest line pruned is the horizon
            seqs = [
                r[0]
                for r in conn.execute(
                    f"SELECT seq FROM changes WHERE {where} ORDER BY seq LIMIT ?", (*params, batch)
                )
            ]
            if not seqs:
                return 0
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seqs[-1],))
            conn.execute(
                "UPDATE packrun_state SET value = max(value, ?) WHERE name = 'changes_horizon'",
                (seqs[-1],),
            )
            return len(seqs)
        order = " ORDER BY seq" if table == "events" else ""  # the event log: oldest first
        return int(
            conn.execute(
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} WHERE {where}{order} LIMIT ?)",
                (*params, batch),
            ).rowcount
        )

    async def pack_entries(self, pack_id: str) -> list[CatalogEntry]:
        return await self._call(lambda conn: self._pack_rows(conn, pack_id))

    @staticmethod
    def _pack_rows(conn: sqlite3.Connection, pack_id: str) -> list[CatalogEntry]:
        rows = conn.execute(f"SELECT {CATALOG_COLUMNS} FROM catalog WHERE pack_id = ?", (pack_id,))
        return [entry_from(r, _TIME) for r in rows]

    async def installation(
        self, installation_id: str
    ) -> tuple[Installation | None, list[PinEvent]]:
        def body(conn: sqlite3.Connection) -> tuple[Installation | None, list[PinEvent]]:
            row = conn.execute(
                f"SELECT {INSTALLATION_COLUMNS} FROM installations WHERE id = ?",
                (installation_id,),
            ).fetchone()
            events = conn.execute(_KEPT_EVENTS_OF, {"id": installation_id})
            return (
                installation_from(row, _TIME) if row else None,
                [event_from(e, _TIME) for e in events],
            )

        return await self._call(lambda conn: self._read(conn, body))

    async def settings(self) -> Settings:
        return await self._call(self._settings_from)

    async def project_settings(self) -> dict[str, dict[str, bool]]:
        return await self._call(self._project_settings_from)

    async def start_runs(
        self, records: Sequence[RunRecord], owner: str, now: float, lease_until: float
    ) -> list[StartedRun]:
        # Through the writer thread: concurrent starts share one transaction (group commit),
        # and none waits for a worker thread of its own.
        return await self._starts.submit((records, owner, now, lease_until))

    def _write_starts(self, group: list[_Starts]) -> list[list[StartedRun]]:
        return self._locked(
            lambda conn: self._write(conn, lambda c: [self._start(c, *starts) for starts in group])
        )

    @staticmethod
    def _start(
        conn: sqlite3.Connection,
        records: Sequence[RunRecord],
        owner: str,
        now: float,
        lease_until: float,
    ) -> list[StartedRun]:
        started: list[StartedRun] = []
        for record in records:
            inserted = conn.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}, owner, lease_until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (
                    record.run_id,
                    record.installation_id,
                    record.pack_id,
                    record.version,
                    record.digest,
                    record.contract,
                    record.channel,
                    record.workflow_id,
                    record.started_at.isoformat(),
                    owner,
                    lease_until,
                ),
            ).rowcount
            if inserted:
                started.append((record, False, None))
                continue
            # A run id seen before: reopen it with its original binding, unless another
            # runtime holds it live.
            row = conn.execute(
                f"SELECT {RUN_COLUMNS}, ended_at, owner, lease_until FROM runs WHERE run_id = ?",
                (record.run_id,),
            ).fetchone()
            ended_at, holder, until = row[9:]
            if ended_at is None and holder != owner and until is not None and until > now:
                started.append((run_from(row, _TIME), True, holder))
                continue
            conn.execute(
                "UPDATE runs SET ended_at = NULL, owner = ?, lease_until = ? WHERE run_id = ?",
                (owner, lease_until, record.run_id),
            )
            started.append((run_from(row, _TIME), True, None))
        return started

    async def end_runs(self, ends: Sequence[RunEnd], owner: str, at: datetime) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE runs SET ended_at = ?, calls = ? WHERE run_id = ? AND owner = ?",
                [
                    (at.isoformat(), json.dumps(sorted(calls)) if calls else None, run_id, owner)
                    for run_id, calls in ends
                ],
            )
            with_calls = [run_id for run_id, calls in ends if calls]
            if with_calls:  # workflows' observed tools changed: other runtimes re-read them
                marks = ", ".join("?" * len(with_calls))
                rows = conn.execute(
                    "SELECT DISTINCT installation_id FROM runs "
                    f"WHERE workflow_id IS NOT NULL AND run_id IN ({marks})",
                    with_calls,
                ).fetchall()
                for (installation_id,) in rows:
                    self._log(conn, "usage", installation_id)

        await self._call(lambda conn: self._write(conn, body))

    async def declare_workflow(
        self, installation_id: str, workflow_id: str, tools: Sequence[str]
    ) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workflows (installation_id, workflow_id, tools) VALUES (?, ?, ?) "
                "ON CONFLICT (installation_id, workflow_id) DO UPDATE SET tools = excluded.tools",
                (installation_id, workflow_id, json.dumps(sorted(set(tools)))),
            )
            self._log(conn, "usage", installation_id)

        await self._call(lambda conn: self._write(conn, body))

    async def all_workflow_tools(self) -> dict[str, WorkflowTools]:
        return await self._call(lambda conn: self._read(conn, lambda c: self._usage(c, None)))

    async def workflow_tools(self, installation_id: str) -> WorkflowTools:
        found = await self._call(
            lambda conn: self._read(conn, lambda c: self._usage(c, installation_id))
        )
        return found.get(installation_id, WorkflowTools({}, {}))

    @staticmethod
    def _usage(conn: sqlite3.Connection, installation_id: str | None) -> dict[str, WorkflowTools]:
        """Declared and observed tools by installation (of one, or of all)."""
        only = "" if installation_id is None else " WHERE installation_id = ?"
        params = () if installation_id is None else (installation_id,)
        declared: dict[str, dict[str, frozenset[str]]] = {}
        for iid, workflow, tools in conn.execute(
            f"SELECT installation_id, workflow_id, tools FROM workflows{only}", params
        ):
            declared.setdefault(iid, {})[workflow] = frozenset(json.loads(tools))
        observed: dict[str, dict[str, set[str]]] = {}
        for iid, workflow, tool in conn.execute(
            f"SELECT installation_id, workflow_id, tool FROM observed_tools{only}", params
        ):
            observed.setdefault(iid, {}).setdefault(workflow, set()).add(tool)
        return {
            iid: WorkflowTools(
                declared.get(iid, {}),
                {w: frozenset(t) for w, t in observed.get(iid, {}).items()},
            )
            for iid in declared.keys() | observed.keys()
        }

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_until: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE runs SET lease_until = ? WHERE run_id = ? AND owner = ? "
                "AND ended_at IS NULL",
                [(lease_until, run_id, owner) for run_id in run_ids],
            )

        await self._call(lambda conn: self._write(conn, body))

    async def live_runs(self, now: float) -> list[LiveRun]:
        def body(conn: sqlite3.Connection) -> list[LiveRun]:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS}, owner, lease_until FROM runs "
                "WHERE ended_at IS NULL AND lease_until > ?",
                (now,),
            )
            return [LiveRun(run_from(r, _TIME), r[9], r[10]) for r in rows]

        return await self._call(body)

    async def artifact(self, digest: str) -> bytes:
        def body(conn: sqlite3.Connection) -> bytes:
            row = conn.execute("SELECT data FROM artifacts WHERE digest = ?", (digest,)).fetchone()
            if row is None:
                raise NotFound("artifact", digest)
            return bytes(row[0])

        return await self._call(body)

    # --- writes ---------------------------------------------------------------------------------

    async def publish(self, prepared: Prepared, decide: Decide) -> CatalogEntry:
        def body(conn: sqlite3.Connection) -> CatalogEntry:
            # Stamped inside the write: writers are serialised, so times follow commit order.
            entry = dataclasses.replace(prepared.entry, published_at=datetime.now(UTC))
            settings = stream_settings(
                self._settings_from(conn), self._project_settings_from(conn), entry
            )
            action = decide(self._pack_rows(conn, entry.pack_id), settings)
            if entry.digest is not None and prepared.artifact is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO artifacts (digest, data) VALUES (?, ?)",
                    (entry.digest, prepared.artifact),
                )
            row = entry_row(entry, _TEXT)
            if action == "insert":
                try:
                    conn.execute(
                        "INSERT INTO catalog (pack_id, version_key, version, channel, entries, "
                        "manifest, digest, contract, published_at, state, project) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                except sqlite3.IntegrityError:  # a second line of defence behind decide()
                    raise VersionExists(
                        entry.pack_id, str(entry.version), "published meanwhile"
                    ) from None
            else:  # an overwrite keeps the row's state: a retired row stays retired
                conn.execute(
                    "UPDATE catalog SET version = ?, channel = ?, entries = ?, manifest = ?, "
                    "digest = ?, contract = ?, published_at = ? "
                    "WHERE pack_id = ? AND version_key = ? AND project = ?",
                    (*row[2:9], row[0], row[1], entry.project),
                )
            self._log(conn, "pack", entry.pack_id)
            self._add_events(
                conn, [("publish", entry.pack_id, entry.project, publish_body(entry), None)]
            )
            stored = conn.execute(
                f"SELECT {CATALOG_COLUMNS} FROM catalog "
                "WHERE pack_id = ? AND version_key = ? AND project = ?",
                (entry.pack_id, entry.version_key, entry.project),
            ).fetchone()
            return entry_from(stored, _TIME)

        return await self._call(lambda conn: self._write(conn, body))

    async def retire(self, pack_id: str, version_key: str, project: str = "") -> CatalogEntry:
        def body(conn: sqlite3.Connection) -> CatalogEntry:
            updated = conn.execute(
                "UPDATE catalog SET state = 'retired' "
                "WHERE pack_id = ? AND version_key = ? AND project = ?",
                (pack_id, version_key, project),
            ).rowcount
            if not updated:
                raise NotFound("version", f"{pack_id} {version_key}")
            self._log(conn, "pack", pack_id)
            row = conn.execute(
                f"SELECT {CATALOG_COLUMNS} FROM catalog "
                "WHERE pack_id = ? AND version_key = ? AND project = ?",
                (pack_id, version_key, project),
            ).fetchone()
            return entry_from(row, _TIME)

        return await self._call(lambda conn: self._write(conn, body))

    async def set_setting(self, name: str, value: bool, project: str = "") -> Settings:
        def body(conn: sqlite3.Connection) -> Settings:
            conn.execute(
                "INSERT INTO settings (project, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (project, name) DO UPDATE SET value = excluded.value",
                (project, name, int(value)),
            )
            self._log(conn, "settings", f"{project}/{name}" if project else name)
            return self._settings_from(conn)

        return await self._call(lambda conn: self._write(conn, body))

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, event: PinEvent) -> PinEvent:
        cursor = conn.execute(
            "INSERT INTO pin_events (installation_id, actor, origin, from_pin, to_pin, "
            "from_version, to_version, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.installation_id,
                event.actor,
                event.origin,
                event.from_pin,
                event.to_pin,
                event.from_version,
                event.to_version,
                event.at.isoformat(),
            ),
        )
        assert cursor.lastrowid is not None
        pack_id, project = conn.execute(
            "SELECT pack_id, project FROM installations WHERE id = ?", (event.installation_id,)
        ).fetchone()
        SQLiteStore._add_events(conn, [("pin_move", pack_id, project, pin_move_body(event), None)])
        return dataclasses.replace(event, seq=cursor.lastrowid)

    @staticmethod
    def _installation_row(installation: Installation) -> tuple[Any, ...]:
        return (
            installation.id,
            installation.pack_id,
            installation.pin,
            installation.policy,
            int(installation.allow_prerelease),
            installation.created_at.isoformat(),
            installation.hold,
            installation.project,
        )

    async def create_installation(self, installation: Installation, event: PinEvent) -> PinEvent:
        def body(conn: sqlite3.Connection) -> PinEvent:
            row = conn.execute(
                "SELECT pack_id, pin, project FROM installations WHERE id = ?", (installation.id,)
            ).fetchone()
            if row is not None and row[2] != installation.project:
                raise InstallationExists(installation.id)  # another project's: nothing told
            if row is not None:
                raise InstallationExists(installation.id, row[0], row[1])
            conn.execute(
                f"INSERT INTO installations ({INSTALLATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._installation_row(installation),
            )
            stored = self._insert_event(conn, event)
            self._log(conn, "installation", installation.id)
            return stored

        return await self._call(lambda conn: self._write(conn, body))

    async def update_installation(
        self, installation_id: str, update: Update
    ) -> tuple[Installation, PinEvent | None]:
        def body(conn: sqlite3.Connection) -> tuple[Installation, PinEvent | None]:
            row = conn.execute(
                f"SELECT {INSTALLATION_COLUMNS} FROM installations WHERE id = ?",
                (installation_id,),
            ).fetchone()
            if row is None:
                raise NotFound("installation", installation_id)
            current = installation_from(row, _TIME)
            changed, event = update(current)
            if changed == current and event is None:
                return current, None  # nothing changed: nothing written, nothing logged
            conn.execute(
                "UPDATE installations SET pin = ?, policy = ?, hold = ? WHERE id = ?",
                (changed.pin, changed.policy, changed.hold, installation_id),
            )
            stored = self._insert_event(conn, event) if event is not None else None
            self._log(conn, "installation", installation_id)
            return changed, stored

        return await self._call(lambda conn: self._write(conn, body))

    # --- pack sources -------------------------------------------------------------------------

    async def sources(self) -> list[SourceRow]:
        def body(conn: sqlite3.Connection) -> list[SourceRow]:
            rows = conn.execute("SELECT name, spec, status FROM sources ORDER BY name")
            return [(r[0], r[1], r[2]) for r in rows]

        return await self._call(body)

    async def add_source(self, name: str, spec: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM sources WHERE name = ?", (name,)).fetchone():
                raise SourceError(name, "a source of that name exists: remove it first")
            conn.execute("INSERT INTO sources (name, spec) VALUES (?, ?)", (name, spec))
            self._log(conn, "source", name)

        await self._call(lambda conn: self._write(conn, body))

    async def remove_source(self, name: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM sources WHERE name = ?", (name,)).rowcount > 0
            if gone:
                self._log(conn, "source", name)
            return gone

        return await self._call(lambda conn: self._write(conn, body))

    async def claim_source(self, name: str, owner: str, ttl: float) -> str | None:
        def body(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT lease_owner, lease_until FROM sources WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                known = [r[0] for r in conn.execute("SELECT name FROM sources ORDER BY name")]
                raise NotFound("source", name, known)
            now = time.time()
            if row[0] is not None and row[0] != owner and (row[1] or 0.0) > now:
                return str(row[0])
            conn.execute(
                "UPDATE sources SET lease_owner = ?, lease_until = ? WHERE name = ?",
                (owner, now + ttl, name),
            )
            return None

        return await self._call(lambda conn: self._write(conn, body))

    async def release_source(self, name: str, owner: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sources SET lease_owner = NULL, lease_until = NULL "
                "WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )

        await self._call(lambda conn: self._write(conn, body))

    async def save_source_status(self, name: str, status: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if conn.execute(
                "UPDATE sources SET status = ? WHERE name = ?", (status, name)
            ).rowcount:
                self._log(conn, "source", name)

        await self._call(lambda conn: self._write(conn, body))

    # --- health, rollouts and events ------------------------------------------------------------

    @staticmethod
    def _add_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
        at = datetime.now(UTC).isoformat()
        conn.executemany(
            "INSERT OR IGNORE INTO events (kind, at, pack_id, project, body, dedupe) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (kind, at, pack, project, body, dedupe)
                for kind, pack, project, body, dedupe in events
            ],
        )

    async def add_health(self, deltas: Sequence[HealthDelta]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO health (pack_id, stream, version_key, project, metric, n) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pack_id, stream, version_key, project, "
                "metric) DO UPDATE SET n = n + excluded.n",
                deltas,
            )

        await self._call(lambda conn: self._write(conn, body))

    async def health_rows(self) -> list[HealthDelta]:
        def body(conn: sqlite3.Connection) -> list[HealthDelta]:
            rows = conn.execute(
                "SELECT pack_id, stream, version_key, project, metric, n FROM health"
            )
            return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

        return await self._call(body)

    async def append_events(self, events: Sequence[NewEvent]) -> None:
        await self._call(lambda conn: self._write(conn, lambda c: self._add_events(c, events)))

    async def read_events(self, since: int, limit: int) -> list[StoredEvent]:
        def body(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(
                "SELECT seq, kind, at, pack_id, project, body FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (since, limit),
            )
            return [(r[0], r[1], _TIME(r[2]), r[3], r[4], r[5]) for r in rows]

        return await self._call(body)

    async def create_rollout(
        self, row: RolloutRow, owner: str, ttl: float, events: Sequence[NewEvent]
    ) -> None:
        def body(conn: sqlite3.Connection) -> None:
            active = conn.execute(
                "SELECT id, body FROM rollouts WHERE pack_id = ? AND project = ? "
                "AND state IN ('running', 'aborting')",
                (row.pack_id, row.project),
            ).fetchone()
            if active is not None:
                version = json.loads(active[1]).get("version", "?")
                raise RolloutInProgress(row.pack_id, row.project, active[0], version)
            conn.execute(
                "INSERT INTO rollouts (id, pack_id, project, state, rev, body, lease_owner, "
                "lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.pack_id,
                    row.project,
                    row.state,
                    row.rev,
                    row.body,
                    owner,
                    time.time() + ttl,
                ),
            )
            self._add_events(conn, events)

        await self._call(lambda conn: self._write(conn, body))

    async def rollouts(
        self, pack_id: str | None = None, *, active: bool = False
    ) -> list[RolloutRow]:
        def body(conn: sqlite3.Connection) -> list[RolloutRow]:
            where = ["1 = 1"]
            args: list[Any] = []
            if pack_id is not None:
                where.append("pack_id = ?")
                args.append(pack_id)
            if active:
                where.append("state IN ('running', 'aborting')")
            rows = conn.execute(
                "SELECT id, pack_id, project, state, rev, body FROM rollouts "
                f"WHERE {' AND '.join(where)} ORDER BY rowid",
                args,
            )
            return [RolloutRow(*r) for r in rows]

        return await self._call(body)

    async def save_rollout(self, row: RolloutRow, events: Sequence[NewEvent]) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            updated = conn.execute(
                "UPDATE rollouts SET state = ?, rev = ?, body = ? WHERE id = ? AND rev = ?",
                (row.state, row.rev, row.body, row.id, row.rev - 1),
            ).rowcount
            if updated:
                self._add_events(conn, events)
            return bool(updated)

        return await self._call(lambda conn: self._write(conn, body))

    async def claim_rollout(self, rollout_id: str, owner: str, ttl: float) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            now = time.time()
            return bool(
                conn.execute(
                    "UPDATE rollouts SET lease_owner = ?, lease_until = ? WHERE id = ? AND "
                    "(lease_owner IS NULL OR lease_owner = ? OR coalesce(lease_until, 0) <= ?)",
                    (owner, now + ttl, rollout_id, owner, now),
                ).rowcount
            )

        return await self._call(lambda conn: self._write(conn, body))

    # --- aliases and soak settings ------------------------------------------------------------

    _ALIAS_COLUMNS: Final = "project, pack_id, name, version, actor, at"

    async def aliases(self) -> list[Alias]:
        def body(conn: sqlite3.Connection) -> list[Alias]:
            rows = conn.execute(
                f"SELECT {self._ALIAS_COLUMNS} FROM aliases ORDER BY project, pack_id, name"
            )
            return [_alias_from(r) for r in rows]

        return await self._call(body)

    async def set_alias(
        self, alias: Alias, moves: AliasMove
    ) -> tuple[Alias | None, list[PinEvent]]:
        def body(conn: sqlite3.Connection) -> tuple[Alias | None, list[PinEvent]]:
            key = (alias.project, alias.pack_id, alias.name)
            row = conn.execute(
                f"SELECT {self._ALIAS_COLUMNS} FROM aliases "
                "WHERE project = ? AND pack_id = ? AND name = ?",
                key,
            ).fetchone()
            before = None if row is None else _alias_from(row)
            pinned = [
                installation_from(r, _TIME)
                for r in conn.execute(
                    f"SELECT {INSTALLATION_COLUMNS} FROM installations "
                    "WHERE project = ? AND pack_id = ? AND pin = ? ORDER BY id",
                    (alias.project, alias.pack_id, f"@{alias.name}"),
                )
            ]
            events = moves(before, pinned)
            conn.execute(
                f"INSERT INTO aliases ({self._ALIAS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (project, pack_id, name) DO UPDATE SET version = excluded.version, "
                "actor = excluded.actor, at = excluded.at",
                (*key, alias.version, alias.actor, alias.at.isoformat()),
            )
            stored = [self._insert_event(conn, e) for e in events]
            for event in stored:
                self._log(conn, "installation", event.installation_id)
            self._log(conn, "alias", "/".join(key))
            return before, stored

        return await self._call(lambda conn: self._write(conn, body))

    async def soak_settings(self) -> dict[str, str]:
        def body(conn: sqlite3.Connection) -> dict[str, str]:
            return dict(conn.execute("SELECT scope, value FROM soak").fetchall())

        return await self._call(body)

    async def set_soak(self, scope: str, value: str | None) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute("DELETE FROM soak WHERE scope = ?", (scope,))
            else:
                conn.execute(
                    "INSERT INTO soak (scope, value) VALUES (?, ?) "
                    "ON CONFLICT (scope) DO UPDATE SET value = excluded.value",
                    (scope, value),
                )
            self._log(conn, "soak", scope)

        await self._call(lambda conn: self._write(conn, body))
