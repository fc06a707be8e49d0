"""The runtime: the one owner of a process's packrun state.

``open_runtime(url)`` opens a store, loads the catalog and the installations into memory and keeps
them fresh: every write goes to the store in one transaction and is applied to memory at once
(read-your-writes), and a background task reads the store's change log every
``refresh_interval`` seconds, so writes by other runtimes and processes are seen within about that
bound. The hot path, :meth:`Runtime.resolve`, only reads memory.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Collection, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.to_thread

from packrun._adapters import STEPS, Dispatcher, dispatcher_for
from packrun._args import (
    check_choice,
    check_flag,
    check_generations,
    check_id,
    check_mapping,
    check_path,
    check_seconds,
    check_whole,
)
from packrun._auth import Auth, Withheld
from packrun._bundle import bundle_is_loaded, hold_bundle, load_held, read_bundle, release_bundle
from packrun._catalog import (
    CHANNELS,
    CatalogEntry,
    Channel,
    ContentEntry,
    decide_publish,
    prepare,
    strict_check,
)
from packrun._checks import (
    CHECK_MODES,
    CallChecks,
    CheckMode,
    Contracts,
    HealthCounters,
    VersionHealth,
    compile_contracts,
)
from packrun._contract import CURRENT_GENERATION, DEFAULT_GENERATIONS, check_generation
from packrun._diff import DiffReport, diff
from packrun._dispatch import (
    SandboxLimits,
    SandboxMode,
    WorkerPool,
    effective_mode,
    sandbox_dispatcher,
)
from packrun._manifest import Manifest, decode_manifest
from packrun._policy import (
    Retirement,
    RetirementMove,
    Rollback,
    UpdateReview,
    affected_workflows,
    available_update,
    changed_tools,
    policy_target,
    retirement_move,
    why_acknowledge,
)
from packrun._reauth import missing_auth, reauth_reasons
from packrun._redact import RedactingLogger, Redactor
from packrun._resolver import (
    DYNAMIC_PINS,
    Explanation,
    Resolution,
    Resolver,
    exact_pin,
    normalize_pin,
)
from packrun._retention import (
    HISTORY_LIMIT,
    HistoryPage,
    RemoteRuns,
    Retention,
    check_history_page,
    gc_loop,
)
from packrun._runs import Run, RunScope, RuntimeStats
from packrun._sources._model import DEFAULT_INTERVAL, SourceSpec, SourceStatus, SyncReport, Trust
from packrun._sources._sync import Syncer, check_name
from packrun._stores import (
    DEFAULT_PROJECT,
    ORIGINS,
    POLICIES,
    GcReport,
    Installation,
    LiveRun,
    Origin,
    PinEvent,
    Policy,
    RunRecord,
    Settings,
    StartedRun,
    Store,
    Update,
    WorkflowTools,
    default_url,
    kept_events,
    open_store,
    stream_settings,
)
from packrun._versions import Version, version_key
from packrun.errors import (
    BreakingDiff,
    DrainTimeout,
    InvalidArgument,
    InvalidBundle,
    NeedsReauth,
    NotFound,
    PackrunError,
)
from packrun.sdk import ToolContext

__all__ = ["Runtime", "open_runtime"]

logger = logging.getLogger("packrun")


def _now() -> datetime:
    return datetime.now(UTC)


_TOOL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")  # a manifest's tool ids
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _manifest_of(row: CatalogEntry) -> Manifest:
    """A row's integration manifest; a pack without one diffs as a manifest of its version only."""
    if row.manifest is not None:
        return row.manifest
    return decode_manifest({"id": row.pack_id, "version": str(row.version), "tools": [{"id": "_"}]})


def _check_timeout(what: str, value: object) -> None:
    check_seconds(what, value, optional=True)


def _check_actor(value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or not value.isprintable():
        shown = value[:60] if isinstance(value, str) else value
        raise InvalidArgument(
            "actor", shown, ["1 to 200 printable characters (no control characters)"]
        )


_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_project(value: object) -> str:
    if not isinstance(value, str) or not _PROJECT.fullmatch(value):
        shown = value[:60] if isinstance(value, str) else value
        raise InvalidArgument(
            "project",
            shown,
            ["1 to 100 characters: letters, digits and . _ -, starting with a letter or digit"],
        )
    return value


def _optional_project(value: object) -> str | None:
    """``None`` (no project named), or a project id (``invalid_argument`` otherwise)."""
    return None if value is None else _check_project(value)


def _qualified(version: str) -> tuple[Channel | None, str]:
    """``vendor:1.2.0`` -> ``("vendor", "1.2.0")``; a plain version has no channel."""
    # Not text: ``Version.parse`` below says what was given (``invalid_version``).
    channel, sep, rest = version.partition(":") if isinstance(version, str) else ("", "", "")
    if sep and channel in ("vendor", "custom"):
        return channel, version_key(Version.parse(rest))  # type: ignore[return-value]
    return None, version_key(Version.parse(version))


def _check_tool(value: object) -> None:
    if not isinstance(value, str) or not _TOOL.fullmatch(value):
        raise InvalidArgument(
            "tool", value, ["a tool id: a letter or _, then letters, digits, _ . - (at most 128)"]
        )


def _hold_after(
    stored: Installation,
    before: CatalogEntry | None,
    to: CatalogEntry,
    pin: str,
    origin: Origin,
) -> str | None:
    """The hold an installation keeps after its pin moves from ``before`` to ``to``.

    A manual move (``user``, ``rollback``) down holds at the version it left (or at a higher hold
    left earlier); a manual move up keeps a hold still above it; a policy move (only ever above
    the hold) and a dynamic pin end it.
    """
    if origin == "policy" or pin in DYNAMIC_PINS:
        return None
    held = Version.parse(stored.hold) if stored.hold else None
    if before is not None and to.version < before.version:  # a move down
        held = max(before.version, held) if held is not None else before.version
    return str(held) if held is not None and held > to.version else None


def _log_retirement(
    pack_id: str, version: str, moves: Sequence[RetirementMove], pinned: Sequence[str]
) -> None:
    """INFO records for a retirement: one for the version, and one for each installation whose
    ``latest*`` pin it moved (its pin is unchanged, so no pin event records that move)."""
    logger.info(
        "packrun retired %s %s (%d latest-pinned installation(s) moved, %d pinned to it)",
        pack_id,
        version,
        len(moves),
        len(pinned),
        extra={
            "event": "retire",
            "pack": pack_id,
            "version": version,
            "moved": [m.installation_id for m in moves],
            "pinned": list(pinned),
        },
    )
    for move in moves:
        logger.info(
            "packrun moved %s (%s, pin %s) from %s to %s by retiring %s",
            move.installation_id,
            pack_id,
            move.pin,
            move.from_version,
            move.to_version or "nothing",
            version,
            extra={
                "event": "retire_move",
                "pack": pack_id,
                "version": move.to_version,
                "from_version": move.from_version,
                "installation": move.installation_id,
                "pin": move.pin,
                "bump": move.bump,
                "origin": "retire",
            },
        )


def _log_pin_move(pack_id: str, event: PinEvent, held: Installation | None = None) -> None:
    """An INFO record for a pin move (an install, a user's move, a policy's move, a rollback);
    ``held``, the installation after the move, when the move may have left its policy holding."""
    hold = held.hold if held is not None else None
    holding = (
        f"; its {held.policy} policy holds below {hold}"
        if held is not None and hold is not None and held.policy != "manual"
        else ""
    )
    logger.info(
        "packrun moved %s (%s) from %s to %s (%s -> %s) by %s (%s)%s",
        event.installation_id,
        pack_id,
        event.from_pin or "-",
        event.to_pin,
        event.from_version or "-",
        event.to_version or "-",
        event.actor,
        event.origin,
        holding,
        extra={
            "event": "pin_move",
            "pack": pack_id,
            "version": event.to_version,
            "from_version": event.from_version,
            "installation": event.installation_id,
            "pin": event.to_pin,
            "actor": event.actor,
            "origin": event.origin,
            "hold": hold,
        },
    )


_END_BATCH_SECONDS = 0.005
_END_RETRY_SECONDS = 1.0  # between attempts to write ends while the store is away
_HELD_RETRIES = 40  # about 0.2 s of waiting for another runtime's end of the run to be written
_NO_AUTH = Auth.none()
_WARN_EVERY_SECONDS = 60.0  # per kind of warning


class _StartWaiter:
    __slots__ = ("done", "error", "record", "result")

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.done = anyio.Event()
        self.result: StartedRun | None = None
        self.error: BaseException | None = None


class Runtime:
    """A process's view of one store: the catalog, the installations and the resolver.

    Make one with :func:`open_runtime` and use it as an async context manager.
    """

    def __init__(
        self,
        store: Store,
        *,
        generations: Collection[int] = DEFAULT_GENERATIONS,
        refresh_interval: float = 0.1,
        lease_ttl: float = 30.0,
        tool_threads: int = 40,
        background_sync: bool = True,
        check_input: CheckMode = "enforce",
        check_output: CheckMode = "warn",
        check_auth: CheckMode = "enforce",
        in_process: Collection[str] = frozenset(),
        sandbox: SandboxMode = "auto",
        sandbox_limits: SandboxLimits | None = None,
        retention: Retention | None = None,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidArgument("retention", retention, ["None or a packrun.Retention"])
        check_seconds("lease_ttl", lease_ttl, zero=False)
        check_seconds("refresh_interval", refresh_interval)
        check_whole("tool_threads", tool_threads, 1, 100_000)
        check_generations("generations", generations)
        check_choice("check_input", check_input, CHECK_MODES)
        check_choice("check_output", check_output, CHECK_MODES)
        check_choice("check_auth", check_auth, CHECK_MODES)
        if not isinstance(in_process, set | frozenset | list | tuple) or not all(
            isinstance(c, str) and c in CHANNELS for c in in_process
        ):
            raise InvalidArgument(
                "in_process (the channels trusted to run in-process)",
                in_process,
                [f"a set of channels among {', '.join(CHANNELS)}"],
            )
        if sandbox_limits is not None and not isinstance(sandbox_limits, SandboxLimits):
            raise InvalidArgument("sandbox_limits", sandbox_limits, ["a packrun.SandboxLimits"])
        effective_mode(sandbox)  # a mode outside process, bwrap, auto is refused here
        servable = sorted(
            g
            for g in range(CURRENT_GENERATION + 1)
            if all(step in STEPS for step in range(g, CURRENT_GENERATION))
        )
        if not generations or any(g not in servable for g in generations):
            shown = sorted(generations) if generations else generations
            raise InvalidArgument(
                "set of contract generations",
                shown,
                [f"a non-empty subset of {servable}: the generations this packrun can run"],
            )
        self._store = store
        self.generations = frozenset(generations)
        """The contract generations this runtime admits."""
        self.refresh_interval = refresh_interval
        """Seconds between reads of the store's change log (the staleness bound for other writers)."""
        self._resolver = Resolver()
        self._cells = self._resolver._cells  # the hot path reads this dictionary directly
        self._settings = Settings()
        self._project_settings: dict[str, dict[str, bool]] = {}
        self._seq = 0
        self._lock = anyio.Lock()  # orders this runtime's writes and refreshes
        self._task_group: anyio.abc.TaskGroup | None = None
        self._last_warning: dict[str, float] = {}
        self._refreshed_at = time.monotonic()  # the last successful refresh (or the load)
        self._refresh_failures = 0  # failed refreshes in a row
        self.lease_ttl = lease_ttl
        """Seconds a run's lease lasts unless renewed; a dead process's runs expire after it."""
        self.owner = uuid.uuid4().hex
        """This runtime's id as the holder of run leases (and as the writer of its change-log
        lines, which its refreshes skip: it applied them already)."""
        store.writer = self.owner
        self.retention = retention or Retention()
        """What the store keeps and how this runtime's background pass prunes the rest."""
        self._remote_runs = RemoteRuns(self.owner)
        self._dispatchers: dict[str, Dispatcher] = {}
        self.check_input: CheckMode = check_input
        """What a call whose input breaks the tool's declared input gets: ``enforce`` (refused
        with ``invalid_input``), ``warn`` (counted and logged) or ``off``."""
        self.check_output: CheckMode = check_output
        """The same for a tool's output (``invalid_output``); ``warn`` unless told otherwise."""
        self.check_auth: CheckMode = check_auth
        """What a run whose credentials do not satisfy its version's auth gets: ``enforce``
        (refused with ``needs_reauth`` before any bundle code runs), ``warn`` or ``off``."""
        self._contracts: dict[str, Contracts] = {}  # by digest: compiled once
        self._health: dict[tuple[str, str, str], HealthCounters] = {}
        self._sandboxed: dict[tuple[str, str], Dispatcher] = {}
        self.in_process = frozenset(in_process)
        """The channels whose code this runtime trusts to run in its own process."""
        self.sandbox = sandbox
        """How other channels' code is contained: ``process``, ``bwrap`` or ``auto``."""
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        """The limits sandbox workers run under."""
        self._pool = WorkerPool(sandbox, self.sandbox_limits, self.generations)
        self._runs: dict[str, Run] = {}
        self._by_version: Counter[tuple[str, str]] = Counter()
        self._by_installation: Counter[str] = Counter()
        self._remote: list[LiveRun] = []
        self._runs_started = 0
        self._catch_up_reads = 0
        self._adapter_runs: Counter[tuple[str, str, str]] = Counter()
        self._adapter_warned: dict[tuple[str, str], float] = {}
        self._diffs: dict[tuple[object, ...], DiffReport] = {}
        self._usage: dict[str, WorkflowTools] = {}
        self._pending_starts: list[_StartWaiter] = []
        self._starting: set[str] = set()
        # Sync tools get threads of their own: a runtime full of slow tools must still renew its
        # leases and record its runs (those use anyio's default threads).
        self._tool_threads = anyio.CapacityLimiter(tool_threads)
        self._start_leader = False
        self._pending_ends: dict[str, frozenset[str]] = {}  # run id -> the tools it called
        self._ends_ready = anyio.Event()
        self.background_sync = background_sync
        """Whether this runtime syncs its pack sources on their intervals (when it has any)."""
        self._syncer = Syncer(
            store,
            self.owner,
            lambda folder, channel, project: self.publish(
                folder, channel=channel, project=project if channel == "custom" else None
            ),
            self._known_versions,
            self.refresh,
        )

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._store.url

    @property
    def settings(self) -> Settings:
        """The store-wide settings as last seen: those of the vendor stream, and of every project
        that has not set its own."""
        return self._settings

    def project_settings(self, project: str = DEFAULT_PROJECT) -> Settings:
        """The settings that govern ``project``'s custom stream: what it set itself, else the
        store-wide settings."""
        return stream_settings(self._settings, self._project_settings, _check_project(project))

    def projects(self) -> list[str]:
        """Every project with an installation or a custom version, sorted."""
        return self._resolver.projects()

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self._store.open()
        try:
            if self.refresh_interval > 0:
                await self._store.listen()  # before the load: a change made meanwhile is heard
            await self._load()
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            if self.refresh_interval > 0:
                self._task_group.start_soon(self._refresh_loop)
            self._task_group.start_soon(self._lease_loop)
            self._task_group.start_soon(self._end_loop)
            self._task_group.start_soon(self._reap_loop)
            if self.retention.interval > 0:
                self._task_group.start_soon(gc_loop, self._store, self.retention, self._warn)
            if self.background_sync and self._syncer.statuses:
                self._syncer.start(self._task_group)
        except BaseException:
            await self._store.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # First: a host cancelled from outside (Ctrl-C cancels the main task) sees that
            # cancellation again when the task group exits, and must have ended its runs by then,
            # or they would count as in flight until their leases expire.
            with anyio.CancelScope(shield=True):
                for run in list(self._runs.values()):
                    self._end_run(run)
                await self._flush_ends()
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
                self._task_group = None
            with anyio.CancelScope(shield=True):
                for run in list(self._runs.values()):  # runs still open when the runtime closes
                    self._end_run(run)
                await self._flush_ends()
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._pool.close()
            finally:
                await self._store.close()

    async def _load(self) -> None:
        state = await self._store.load()
        self._settings = state.settings
        self._project_settings = state.project_settings
        by_pack: dict[str, list[CatalogEntry]] = {}
        for entry in state.entries:
            by_pack.setdefault(entry.pack_id, []).append(entry)
        for pack_id, rows in by_pack.items():
            self._resolver.set_pack(pack_id, rows)
        events: dict[str, list[PinEvent]] = {}  # each installation's last and hold events
        for event in state.events:
            events.setdefault(event.installation_id, []).append(event)
        for inst in state.installations:
            self._resolver.set_installation(inst, events.get(inst.id, []))
        self._usage = await self._store.all_workflow_tools()
        await self._syncer.load()
        self._seq = state.seq
        self._refreshed_at = time.monotonic()

    async def _refresh_loop(self) -> None:
        while True:
            # Returns early when the store hears of a change (PostgreSQL's NOTIFY).
            await self._store.wait_for_change(self.refresh_interval)
            self._catch_up_reads += 1
            try:
                with anyio.CancelScope(shield=True):  # a close waits for it: no query cancelled
                    await self.refresh()
            except Exception as exc:  # never let a refresh take the host's code down
                self._refresh_failures += 1
                stale = time.monotonic() - self._refreshed_at
                self._warn(
                    "refresh",
                    f"could not refresh from {self.url} ({self._refresh_failures} attempt(s) "
                    f"failed; answers are {stale:.1f} s stale): {exc}",
                )

    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            if self._runs:
                try:
                    with anyio.CancelScope(shield=True):
                        await self._store.renew_leases(
                            self.owner, list(self._runs), time.time() + self.lease_ttl
                        )
                except Exception as exc:
                    self._warn("lease", f"could not renew run leases in {self.url}: {exc}")

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(self.sandbox_limits.idle_timeout / 2)
            with anyio.CancelScope(shield=True):
                await self._pool.reap_idle()

    @property
    def sandbox_workers(self) -> list[int]:
        """The process ids of this runtime's sandbox workers alive now."""
        return self._pool.pids

    async def _refresh_remote_runs(self) -> None:
        # Only what changed since the last read; leases that ran out are dropped as they pass.
        delta = await self._store.run_changes(self._remote_runs.cursor, self.owner)
        if self._remote_runs.apply(delta):
            self._remote = self._remote_runs.listed()

    def _warn(self, kind: str, message: str) -> None:
        # The hot path keeps answering from memory; say so, at most once a minute per kind of
        # warning, so one kind never hides another.
        now = time.monotonic()
        if now - self._last_warning.get(kind, -120.0) > _WARN_EVERY_SECONDS:
            self._last_warning[kind] = now
            logger.warning("packrun %s", message, extra={"packrun_warning": kind})

    async def refresh(self) -> None:
        """Apply what other runtimes wrote to the store since the last refresh, and read which
        runs other processes hold in flight. Runs on its own every ``refresh_interval`` seconds;
        call it to catch up at once."""
        async with self._lock:
            await self._refresh_remote_runs()
            # Other runtimes' lines only: this runtime applied its own writes when it made them.
            batch = await self._store.changes_since(self._seq, self.owner)
            self._refreshed()
            if batch.behind:  # lines it missed were pruned: reload everything instead
                logger.info("packrun reloads %s in full: it fell behind the change log", self.url)
                await self._load()
                return
            self._seq = max(self._seq, batch.head)
            changes = batch.changes
            if not changes:
                return
            packs = {c.key for c in changes if c.kind == "pack"}
            installations = {c.key for c in changes if c.kind == "installation"}
            # What others changed (not the echo of this runtime's own writes) may call for an
            # update policy to act: compare what is reloaded with what was held.
            rows_before = {p: self._resolver.rows_or_empty(p) for p in packs}
            held = {i: self._resolver.find_installation(i) for i in installations}
            for pack_id in sorted(packs):
                await self._refresh_one(f"pack {pack_id}", self._reload_pack(pack_id))
            for iid in sorted(installations):
                await self._refresh_one(f"installation {iid}", self._reload_installation(iid))
            for iid in sorted({c.key for c in changes if c.kind == "usage"}):
                stored = await self._store.workflow_tools(iid)
                known = self._usage.get(iid, WorkflowTools({}, {}))
                # Observed tools only grow; this runtime's own run ends may not be written yet.
                observed = {
                    w: stored.observed.get(w, frozenset()) | known.observed.get(w, frozenset())
                    for w in set(stored.observed) | set(known.observed)
                }
                self._usage[iid] = WorkflowTools(stored.declared, observed)
            if any(c.kind == "settings" for c in changes):
                self._settings = await self._store.settings()
                self._project_settings = await self._store.project_settings()
            sources = {c.key for c in changes if c.kind == "source"}
            if sources:
                await self._syncer.reload(sources)
                if self.background_sync and self._syncer.statuses and self._task_group:
                    self._syncer.start(self._task_group)
        # Outside the lock (a move takes it): any runtime that learns of a new version, or of a
        # new or changed installation with a policy, applies the policy. A move is conditional on
        # the pin it saw, so when several runtimes try, one moves and the others change nothing.
        touched = {
            i.id: i
            for p in packs
            if self._resolver.rows_or_empty(p) != rows_before[p]
            for i in self._resolver.auto_installations_of(p)
        }
        for iid in installations:
            inst = self._resolver.find_installation(iid)
            if (
                inst is not None
                and inst != held[iid]
                and inst.policy != "manual"
                and inst.pin not in DYNAMIC_PINS
            ):
                touched[iid] = inst
        if touched:
            await self._apply_policies([touched[i] for i in sorted(touched)])

    def _refreshed(self) -> None:
        now = time.monotonic()
        if self._refresh_failures:
            logger.info(
                "packrun refreshed from %s again after %d failed attempt(s), %.1f s stale",
                self.url,
                self._refresh_failures,
                now - self._refreshed_at,
            )
            self._refresh_failures = 0
        self._refreshed_at = now

    async def _refresh_one(self, what: str, reload: Awaitable[None]) -> None:
        # A row that cannot be read is skipped with a warning; it must not hold back the others.
        try:
            await reload
        except PackrunError as exc:
            self._warn(f"skipped {what}", f"skipped {what} while refreshing from {self.url}: {exc}")
        except (ValueError, TypeError) as exc:  # a row damaged outside packrun
            self._warn(
                f"skipped {what}",
                f"skipped {what} while refreshing from {self.url}: unreadable row ({exc})",
            )

    async def _reload_pack(self, pack_id: str) -> None:
        self._resolver.set_pack(pack_id, await self._store.pack_entries(pack_id))

    async def _reload_installation(self, installation_id: str) -> None:
        inst, events = await self._store.installation(installation_id)
        if inst is not None:
            self._resolver.set_installation(inst, events)

    # --- the hot path ---------------------------------------------------------------------------

    def resolve(self, installation_id: str) -> Resolution:
        """Which artifact runs for ``installation_id`` now: ``.version .channel .contract .digest``.

        Synchronous and without I/O: it reads an answer that publishes and pin changes keep
        precomputed. ``not_found`` for an unknown installation, or when nothing satisfies its pin.
        """
        try:
            value = self._cells[installation_id].value
        except (KeyError, TypeError):  # checked only now: a hit costs one lookup, nothing more
            check_id("installation id", installation_id)
            raise NotFound("installation", installation_id) from None
        if value is None:
            raise NotFound("version satisfying the pin of installation", installation_id)
        return value

    def explain(self, installation_id: str, *, project: str | None = None) -> Explanation:
        """Why ``installation_id`` resolves as it does: pin, policy, candidates, what was skipped
        and why, an available update, and the last pin move. With ``project``, the installation
        must be of that project (``not_found`` otherwise)."""
        why = self._resolver.explain(installation_id, _optional_project(project))
        inst = why.installation
        reauth = self._needs_reauth(why)
        if reauth:
            why = dataclasses.replace(why, needs_reauth=reauth)
        if inst.policy == "manual" or why.resolution is None or inst.pin in DYNAMIC_PINS:
            return why
        _, blocked = policy_target(
            inst.policy,
            why.resolution.entry,
            self._resolver.rows(inst.pack_id, inst.project),
            inst.allow_prerelease,
            self._diff_of,
            hold=Version.parse(inst.hold) if inst.hold else None,
        )
        waiting = tuple(str(b) for b in blocked if b.waits_for_review)
        holding = None
        if inst.hold:
            move = next(  # the manual move down that left the held version
                (
                    e
                    for e in reversed(self._resolver.history(inst.id))
                    if e.origin in ("user", "rollback") and e.from_version == inst.hold
                ),
                None,
            )
            how = (
                f"{'rolled back' if move.origin == 'rollback' else 'moved down'} from "
                f"{move.from_version} by {move.actor}"
                if move is not None
                else "a manual move"
            )
            holding = (
                f"{inst.policy} holds at {why.resolution.version} ({how}); it moves again only "
                f"to a version above {inst.hold}, or after set_policy"
            )
        return dataclasses.replace(why, update_blocked=waiting, holding=holding)

    def _needs_reauth(self, why: Explanation) -> tuple[str, ...]:
        """What the last pin move asks the linked account to re-authenticate with."""
        event = why.last_event
        if event is None or event.from_version is None or event.to_version is None:
            return ()
        if event.from_version == event.to_version or why.resolution is None:
            return ()
        if str(why.resolution.version) != event.to_version:
            return ()  # the pin follows a dynamic target that moved since: judged on its own
        try:
            inst = why.installation
            old = self._row(inst.pack_id, event.from_version, inst.project)
            new = why.resolution.entry  # the row the move went to, whatever its channel
        except NotFound:
            return ()
        return reauth_reasons(self._diff_of(old, new))

    # --- catalog --------------------------------------------------------------------------------

    async def publish(
        self,
        source: bytes | str | Path,
        *,
        channel: Channel = "vendor",
        force: bool = False,
        project: str | None = None,
    ) -> CatalogEntry:
        """Publish a bundle (its bytes or file) or a source folder (pack or integration source).

        A vendor row is global; a custom row belongs to ``project`` (default ``default``) and only
        that project sees it. Checks the version layers, the contract generation and the code
        against its manifest, then applies the publish rules of the row's stream (the vendor rows,
        or the project's custom rows) inside the store's transaction: immutable versions (on by
        default; ``force`` changes nothing then), a republish needing ``force`` when they are off,
        and the per-line order. The row and the artifact are stored atomically. Resolutions pick
        the new row up at once.
        """
        check_path("source", source, data=(bytes, bytearray, memoryview))
        check_flag("force", force)
        if channel == "vendor" and project is not None:
            raise InvalidArgument(
                "project for a vendor publish",
                project,
                ["None: vendor rows are global (publish with channel='custom' for a project)"],
            )
        owner = _check_project(DEFAULT_PROJECT if project is None else project)
        prepared = await anyio.to_thread.run_sync(
            partial(
                prepare,
                source,
                channel=channel,
                generations=self.generations,
                strict_versions=(
                    self.project_settings(owner) if channel == "custom" else self._settings
                ).strict_versions,
                now=_now(),
                project=owner,
                sandbox=self.sandbox,
                limits=self.sandbox_limits,
            )
        )

        def decide(
            rows: Sequence[CatalogEntry], settings: Settings
        ) -> Literal["insert", "replace"]:
            if settings.strict_versions:
                strict_check(prepared.entry, str(source))
            return decide_publish(
                rows, prepared.entry, immutable=settings.immutable_versions, force=force
            )

        entry = await self._write_row(self._store.publish(prepared, decide))
        logger.info(
            "packrun published %s %s (%s, %s)",
            entry.pack_id,
            entry.version,
            entry.channel,
            entry.digest or "no integration",
            extra={
                "event": "publish",
                "pack": entry.pack_id,
                "version": str(entry.version),
                "channel": entry.channel,
                "digest": entry.digest,
            },
        )
        # Catch up first: installations made elsewhere meanwhile must count too. The publish has
        # committed: a failed catch-up is a warning, and policies apply to what is known.
        try:
            await self.refresh()
        except PackrunError as exc:
            self._warn("refresh", f"could not refresh from {self.url} after a publish: {exc}")
        await self._apply_policies(self._resolver.auto_installations_of(entry.pack_id))
        return entry

    async def _write_row(self, write: Awaitable[CatalogEntry]) -> CatalogEntry:
        async with self._lock:
            entry = await write
            self._resolver.put_row(entry)
            return entry

    async def retire(
        self,
        pack_id: str,
        version: str,
        *,
        acknowledge_breaking: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> Retirement:
        """Take a version out of ``latest`` pins and update targets; exact pins keep working.

        ``version`` names a row as an exact pin does for ``project``: its own custom row of that
        version when it has one, else the vendor row; ``vendor:1.2.0`` or ``custom:1.2.0`` names
        one of them. Retiring a vendor row moves the ``latest*`` pins of every project that
        resolved to it; retiring a custom row, only that project's.

        Returns a :class:`Retirement`: the retired row, every installation whose ``latest*`` pin
        resolved to it with where it moves (from/to, bump), and the installations pinned to it
        exactly. A retirement that would move an installation across a major or across breaking
        findings needs ``acknowledge_breaking=True``; without it the call fails with
        ``breaking_diff`` naming those installations, and nothing is retired.
        """
        check_id("pack id", pack_id)
        check_flag("acknowledge_breaking", acknowledge_breaking)
        row = self._row(pack_id, version, _check_project(project))
        key = row.version_key
        await self.refresh()  # installations made elsewhere count
        moves = self._retirement_moves(pack_id, row)
        needing = [
            (m.installation_id, m.from_version, m.to_version, "; ".join(m.acknowledge))
            for m in moves
            if m.acknowledge
        ]
        if needing and not acknowledge_breaking:
            raise BreakingDiff.retiring(pack_id, key, needing)
        entry = await self._write_row(
            self._store.retire(pack_id, key, row.project if row.channel == "custom" else "")
        )
        pinned = [
            inst.id
            for inst in self._resolver.installations()
            if inst.pack_id == pack_id
            and (res := self._cells[inst.id].value) is not None
            and res.entry.version_key == key
            and res.entry.stream == entry.stream
        ]
        _log_retirement(pack_id, key, moves, pinned)
        if pinned:
            shown = ", ".join(pinned[:10]) + (", ..." if len(pinned) > 10 else "")
            logger.warning(
                "packrun retired %s %s; %d installation(s) pinned to it keep running it: %s",
                pack_id,
                key,
                len(pinned),
                shown,
            )
        return Retirement(entry, moves, tuple(pinned))

    def _retirement_moves(self, pack_id: str, row: CatalogEntry) -> tuple[RetirementMove, ...]:
        """Where retiring ``row`` moves the installations whose dynamic pin resolves to it now
        (each in its own project: a custom row is only its project's)."""
        moves = []
        for inst in self._resolver.installations():
            if inst.pack_id != pack_id or inst.pin not in DYNAMIC_PINS:
                continue
            res = self._cells[inst.id].value
            if (
                res is None
                or res.entry.version_key != row.version_key
                or res.entry.stream != row.stream
                or not res.entry.is_live
            ):
                continue
            after = self._resolver.pick_without(
                pack_id, inst.pin, inst.allow_prerelease, row, inst.project
            )
            moves.append(retirement_move(inst.id, inst.pin, res.entry, after, self._diff_of))
        return tuple(moves)

    def pinned_to(self, pack_id: str, version: str, *, project: str | None = None) -> list[str]:
        """The installations (of ``project``, when given) whose pin resolves to ``pack_id``
        ``version`` now (by id). ``vendor:1.2.0`` or ``custom:1.2.0`` counts one channel's row."""
        check_id("pack id", pack_id)
        channel, key = _qualified(version)
        if project is not None:
            _check_project(project)
        return [
            inst.id
            for inst in self._resolver.installations(project)
            if inst.pack_id == pack_id
            and (res := self._cells[inst.id].value) is not None
            and res.entry.version_key == key
            and (channel is None or res.channel == channel)
        ]

    def packs(self, *, project: str = DEFAULT_PROJECT) -> list[str]:
        """The ids of every pack ``project`` sees a published version of (vendor, or its own
        custom), sorted."""
        return self._resolver.packs(_check_project(project))

    def versions(self, pack_id: str, *, project: str = DEFAULT_PROJECT) -> list[CatalogEntry]:
        """Every version of a pack that ``project`` sees, ascending, live and retired: the vendor
        rows and the project's own custom rows."""
        return self._resolver.rows(pack_id, _check_project(project))

    def process_flows(
        self, pack_id: str, *, project: str = DEFAULT_PROJECT
    ) -> dict[str, ContentEntry]:
        """A pack's process flows for ``project``: each from the latest live version that carries
        it, the project's own custom versions before the vendor's."""
        return self._resolver.process_flows(pack_id, _check_project(project))

    async def set_immutable_versions(self, on: bool, *, project: str | None = None) -> None:
        """Immutable versions (on by default): a republish is refused whatever ``force`` says.

        Without ``project``, the store-wide setting: the vendor stream's, and that of every project
        that has not set its own. With ``project``, that project's custom stream only."""
        await self._set_setting("immutable_versions", on, project)

    async def set_strict_versions(self, on: bool, *, project: str | None = None) -> None:
        """Strict versions (off by default): only ``MAJOR.MINOR.PATCH`` may be published.

        Without ``project``, store-wide (as :meth:`set_immutable_versions`); with it, that
        project's custom stream only."""
        await self._set_setting("strict_versions", on, project)

    async def _set_setting(self, name: str, value: bool, project: str | None) -> None:
        check_flag(name.replace("_", " "), value)
        if project is not None:
            _check_project(project)
        async with self._lock:
            self._settings = await self._store.set_setting(name, value, project or "")
            if project is not None:
                self._project_settings.setdefault(project, {})[name] = value

    async def artifact(self, digest: str) -> bytes:
        """The bytes of a published artifact."""
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidArgument("digest", digest, ["sha256: and 64 lowercase hex digits"])
        return await self._store.artifact(digest)

    # --- runs ---------------------------------------------------------------------------------------

    def run(
        self,
        installation_id: str,
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        auth: Auth | None = None,
    ) -> RunScope:
        """A run of ``installation_id``: ``async with rt.run(...) as run: await run.call(...)``.

        The run binds at its start to the installation's current ``(version, digest)`` and keeps
        that binding until it ends, whatever happens to pins meanwhile. A ``run_id`` seen before (a
        resumed run, possibly in another process) gets its original binding back. ``auth`` is
        passed to the tools and never stored. A bundle outside this runtime's contract window is
        refused here with ``BUNDLE_CONTRACT_INCOMPATIBLE``.
        """
        if run_id is not None:
            check_id("run id", run_id)
        if workflow_id is not None:
            check_id("workflow id", workflow_id)
        if auth is not None and not isinstance(auth, Auth):
            # Withheld: a token or a dict of credentials passed by mistake must not reach a log.
            raise InvalidArgument(
                "auth", Withheld(auth), ["None or a packrun.Auth, such as Auth.api_key(key)"]
            )
        return RunScope(self, installation_id, run_id, workflow_id, auth or _NO_AUTH)

    async def call(
        self,
        installation_id: str,
        tool: str,
        input: dict[str, Any] | None = None,
        *,
        auth: Auth | None = None,
        run_id: str | None = None,
        workflow_id: str | None = None,
    ) -> Any:
        """One tool call in a run of its own (started and ended around the call)."""
        _check_tool(tool)  # before the run starts: a refused call leaves no run behind
        check_mapping("input", input, optional=True)
        async with self.run(
            installation_id, run_id=run_id, workflow_id=workflow_id, auth=auth
        ) as r:
            return await r.call(tool, input)

    async def _dispatcher(self, digest: str, channel: str, installation_id: str) -> Dispatcher:
        """The dispatcher of ``digest``: in a sandbox worker unless ``channel`` runs in-process,
        where it is returned with a hold on its bundle (the run releases it): a bundle a run in
        flight uses is never evicted from the process."""
        if channel not in self.in_process:
            return await self._sandbox_dispatcher(digest, installation_id)
        dispatcher = self._dispatchers.get(digest)
        if dispatcher is not None and dispatcher.loaded and hold_bundle(dispatcher.loaded):
            return dispatcher
        data = await self._store.artifact(digest)
        loaded = await anyio.to_thread.run_sync(
            partial(
                load_held,
                data,
                expected_digest=digest,
                generations=self.generations,
                stage="run",
            )
        )
        try:
            dispatcher = dispatcher_for(loaded, self.generations)
        except BaseException:
            release_bundle(loaded)
            raise
        # Drop what the process evicted: this cache never keeps a bundle alive on its own.
        self._dispatchers = {
            d: x for d, x in self._dispatchers.items() if x.loaded and bundle_is_loaded(x.loaded)
        }
        self._dispatchers[digest] = dispatcher
        return dispatcher

    async def _sandbox_dispatcher(self, digest: str, installation_id: str) -> Dispatcher:
        # One worker serves one digest of one project: credentials never reach a worker that
        # another project's code runs in.
        inst = self._resolver.find_installation(installation_id)
        project = inst.project if inst is not None else DEFAULT_PROJECT
        dispatcher = self._sandboxed.get((project, digest))
        if dispatcher is None:
            data = await self._store.artifact(digest)
            bundle = await anyio.to_thread.run_sync(
                partial(read_bundle, data, source=f"artifact {digest}")
            )
            if bundle.digest != digest:
                raise InvalidBundle(
                    bundle.source,
                    f"digest mismatch: the catalog recorded {digest} but the bytes are "
                    f"{bundle.digest}; the artifact changed after it was published",
                )
            dispatcher = sandbox_dispatcher(self._pool, bundle, project, self.generations)
            self._sandboxed[(project, digest)] = dispatcher
        return dispatcher

    async def _start_run(
        self, installation_id: str, run_id: str | None, workflow_id: str | None, auth: Auth
    ) -> Run:
        res = self.resolve(installation_id)
        if res.digest is None:
            raise NotFound("integration to run in pack", res.pack_id)
        if run_id is None:
            run_id = uuid.uuid4().hex  # one given was checked by run(), the only maker of scopes
        if run_id in self._runs or run_id in self._starting:
            raise InvalidArgument("run id", run_id, ["an id that is not in flight in this runtime"])
        self._starting.add(run_id)  # reserved before the first await: a concurrent start is refused
        self._pending_ends.pop(run_id, None)  # ended a moment ago and reopened: its end is moot
        try:
            return await self._open_run(run_id, installation_id, res, workflow_id, auth)
        finally:
            self._starting.discard(run_id)

    async def _open_run(
        self,
        run_id: str,
        installation_id: str,
        res: Resolution,
        workflow_id: str | None,
        auth: Auth,
    ) -> Run:
        record = RunRecord(
            run_id,
            installation_id,
            res.pack_id,
            res.version,
            res.digest,
            res.contract,
            res.channel,
            workflow_id,
            _now(),
        )
        bound, resumed, held_by = await self._record_start(record)
        for _ in range(_HELD_RETRIES):
            if held_by is None:
                break
            # Ended elsewhere a moment ago? Ends are written behind, within a few milliseconds.
            await anyio.sleep(_END_BATCH_SECONDS)
            bound, resumed, held_by = await self._record_start(record)
        if held_by is not None:
            raise InvalidArgument(
                "run id",
                run_id,
                [
                    f"an id not in flight elsewhere (runtime {held_by[:8]} holds it under a live lease)"
                ],
            )
        try:
            if bound.digest is None:
                raise NotFound("integration to run in pack", bound.pack_id)
            row = self._bound_row(bound, res, resumed)
            if auth is not _NO_AUTH and self.check_auth != "off" and row is not None:
                self._check_auth(installation_id, row, auth)
            dispatcher = await self._dispatcher(bound.digest, bound.channel, bound.installation_id)
        except BaseException:
            self._queue_end(bound.run_id)
            raise
        tool_logger = logging.getLogger(f"packrun.tools.{bound.pack_id}")
        ctx = ToolContext(
            bound.run_id,
            bound.installation_id,
            bound.pack_id,
            bound.version,
            auth,
            tool_logger if auth.mode == "none" else RedactingLogger(tool_logger, auth),
        )
        key = res.entry.version_key if not resumed else version_key(bound.version)
        run = Run(
            bound,
            dispatcher,
            ctx,
            resumed,
            key,
            self._tool_threads,
            self._call_checks(bound, row, dispatcher, auth),
        )
        self._runs[run.run_id] = run
        self._by_version[(run.pack_id, key)] += 1
        self._by_installation[run.installation_id] += 1
        self._runs_started += 1
        if run.adapter is not None:
            self._count_adapter_run(run)
        return run

    def _bound_row(self, bound: RunRecord, res: Resolution, resumed: bool) -> CatalogEntry | None:
        """The catalog row a run binds to: the one resolved, or for a resumed run the row of its
        recorded channel and version as its installation's project sees it (``None`` when gone)."""
        if not resumed:
            return res.entry
        try:
            project = self._resolver.installation(bound.installation_id).project
            return self._row(bound.pack_id, f"{bound.channel}:{bound.version}", project)
        except NotFound:
            return None

    def _check_auth(self, installation_id: str, row: CatalogEntry, auth: Auth) -> None:
        """Refuse a run whose credentials do not satisfy its version's auth (``needs_reauth``)."""
        if row.manifest is None:
            return
        missing = missing_auth(row.manifest.auth, auth)
        if not missing:
            return
        version = str(row.version)
        error = NeedsReauth(installation_id, row.pack_id, version, missing)
        if self.check_auth == "enforce":
            raise error
        self._warn_contract(f"{installation_id}:{row.pack_id}:{version}:auth", str(error))

    def _call_checks(
        self, bound: RunRecord, row: CatalogEntry | None, dispatcher: Dispatcher, auth: Auth
    ) -> CallChecks:
        assert bound.digest is not None
        contracts = self._contracts.get(bound.digest)
        if contracts is None:
            manifest = (
                dispatcher.loaded.bundle.manifest
                if dispatcher.loaded is not None
                else dispatcher.manifest
            )
            assert manifest is not None  # a sandbox dispatcher carries its bundle's manifest
            contracts = self._contracts[bound.digest] = compile_contracts(manifest)
        # Counted per catalog row: a project's custom row may carry a vendor version's number.
        stream = row.stream if row is not None else bound.channel
        key = (bound.pack_id, stream, version_key(bound.version))
        counters = self._health.get(key)
        if counters is None:
            counters = self._health[key] = HealthCounters()
        return CallChecks(
            contracts,
            counters,
            self.check_input,
            self.check_output,
            bound.pack_id,
            bound.version,
            self._warn_contract,
            Redactor(auth).text,
        )

    def _warn_contract(self, kind: str, message: str) -> None:
        # At most once a minute per (pack, version, tool, side): a broken release calls often.
        now = time.monotonic()
        if now - self._last_warning.get(kind, -120.0) > 60:
            self._last_warning[kind] = now
            logger.warning("packrun %s", message)

    def health(
        self, pack_id: str, version: str, *, project: str = DEFAULT_PROJECT
    ) -> VersionHealth:
        """What this runtime saw of ``pack_id`` ``version`` since it opened: calls, and calls whose
        input or output broke the tool's declared contract (see ``check_input``/``check_output``).

        ``version`` names a row as an exact pin of ``project`` would: ``1.2.0`` is the project's
        own custom row when it has one of that number, else the vendor row; ``vendor:1.2.0`` or
        ``custom:1.2.0`` names one channel's row. The counts are the row's, over every project's
        runs on it (``not_found`` for a version the project does not see).
        """
        check_id("pack id", pack_id)
        row = self._row(pack_id, version, _check_project(project))
        shown = str(row.version)
        counters = self._health.get((pack_id, row.stream, row.version_key))
        if counters is None:
            return VersionHealth(pack_id, shown, channel=row.channel)
        return counters.snapshot(pack_id, shown, row.channel)

    def _count_adapter_run(self, run: Run) -> None:
        assert run.adapter is not None
        self._adapter_runs[(run.pack_id, run.version, run.adapter)] += 1
        key = (run.pack_id, run.version)
        now = time.monotonic()
        if now - self._adapter_warned.get(key, -3600.0) >= 3600:  # once an hour per version
            self._adapter_warned[key] = now
            logger.warning(
                "packrun runs %s %s (contract generation %s) through the %s adapter; rebuild it "
                "with a current SDK so generation %s can be dropped",
                run.pack_id,
                run.version,
                run.generation,
                run.adapter,
                run.generation,
            )

    def _end_run(self, run: Run) -> None:
        run._end()
        if self._runs.pop(run.run_id, None) is not run:
            return
        key = (run.pack_id, run.version_key)
        self._by_version[key] -= 1
        if not self._by_version[key]:
            del self._by_version[key]
        self._by_installation[run.installation_id] -= 1
        if not self._by_installation[run.installation_id]:
            del self._by_installation[run.installation_id]
        calls = run.calls
        if run.workflow_id is not None and calls:
            usage = self._usage.get(run.installation_id, WorkflowTools({}, {}))
            observed = dict(usage.observed)
            observed[run.workflow_id] = observed.get(run.workflow_id, frozenset()) | calls
            self._usage[run.installation_id] = WorkflowTools(usage.declared, observed)
        self._queue_end(run.run_id, calls)

    # Starts are written in groups: concurrent starts share one transaction, and each waits for
    # its commit (a binding is durable before the run makes its first call). Ends are written
    # behind: a background task records them in batches, and a crash in between is covered by
    # the run's lease.

    async def _record_start(self, record: RunRecord) -> StartedRun:
        if not self._store.group_commit:
            now = time.time()
            started = await self._store.start_runs([record], self.owner, now, now + self.lease_ttl)
            return started[0]
        waiter = _StartWaiter(record)
        self._pending_starts.append(waiter)
        if not self._start_leader:
            self._start_leader = True
            try:
                with anyio.CancelScope(shield=True):  # the others wait on this batch
                    while self._pending_starts:
                        batch, self._pending_starts = self._pending_starts, []
                        try:
                            now = time.time()
                            results = await self._store.start_runs(
                                [w.record for w in batch], self.owner, now, now + self.lease_ttl
                            )
                        except BaseException as exc:
                            for w in batch:
                                w.error = exc
                                w.done.set()
                            continue
                        for w, result in zip(batch, results, strict=True):
                            w.result = result
                            w.done.set()
            finally:
                self._start_leader = False
        # Shielded: once the batch is committed, the run exists in the store, and a cancellation
        # must reach _start_run's cleanup with it rather than lose it here.
        with anyio.CancelScope(shield=True):
            await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def _queue_end(self, run_id: str, calls: frozenset[str] = frozenset()) -> None:
        self._pending_ends[run_id] = calls
        self._ends_ready.set()

    async def _end_loop(self) -> None:
        while True:
            await self._ends_ready.wait()
            await anyio.sleep(_END_BATCH_SECONDS)  # let the ends of a busy moment share a write
            self._ends_ready = anyio.Event()
            if not await self._flush_ends():
                await anyio.sleep(_END_RETRY_SECONDS)  # the store is away: try again later
                self._ends_ready.set()

    async def _flush_ends(self) -> bool:
        """Write the pending ends; ``False`` when the store failed (they are pending again)."""
        if not self._pending_ends:
            return True
        batch, self._pending_ends = list(self._pending_ends.items()), {}
        try:
            with anyio.CancelScope(shield=True):  # taken from the queue: it must reach the store
                await self._store.end_runs(batch, self.owner, _now())
        except PackrunError as exc:  # kept for the next attempt; meanwhile the leases run out
            for run_id, calls in batch:
                if run_id not in self._runs and run_id not in self._pending_ends:
                    self._pending_ends[run_id] = calls  # unless reopened or ended again since
            self._warn(
                "run ends", f"could not record the end of {len(batch)} run(s) in {self.url}: {exc}"
            )
            return False
        return True

    def in_flight(self, pack_id: str, version: str, *, project: str | None = None) -> int:
        """Runs in flight on ``pack_id`` ``version``: this runtime's, exactly, plus those other
        processes hold under live leases (as of the last refresh). With ``project``, only the runs
        of that project's installations; ``vendor:1.2.0`` or ``custom:1.2.0`` counts one
        channel's row."""
        check_id("pack id", pack_id)
        if project is not None or (isinstance(version, str) and ":" in version):
            return len(self.runs_in_flight(pack_id, version, project=project))
        key = (pack_id, version_key(Version.parse(version)))
        remote = sum(
            1 for r in self._remote if (r.record.pack_id, version_key(r.record.version)) == key
        )
        return self._by_version.get(key, 0) + remote

    def in_flight_for(self, installation_id: str) -> int:
        """Runs in flight of one installation (this runtime's plus other processes')."""
        check_id("installation id", installation_id)
        remote = sum(1 for r in self._remote if r.record.installation_id == installation_id)
        return self._by_installation.get(installation_id, 0) + remote

    def runs_in_flight(
        self, pack_id: str, version: str, *, project: str | None = None
    ) -> list[str]:
        """The ids of the runs in flight on ``pack_id`` ``version``, here and elsewhere (of
        ``project``'s installations, when given; of one channel's row for ``vendor:1.2.0`` or
        ``custom:1.2.0``)."""
        check_id("pack id", pack_id)
        channel, key = _qualified(version)
        if project is not None:
            _check_project(project)

        def counts(installation_id: str, run_channel: str) -> bool:
            if channel is not None and run_channel != channel:
                return False
            if project is None:
                return True
            inst = self._resolver.find_installation(installation_id)
            return inst is not None and inst.project == project

        mine = [
            r.run_id
            for r in self._runs.values()
            if r.pack_id == pack_id
            and r.version_key == key
            and counts(r.installation_id, r.channel)
        ]
        theirs = [
            r.record.run_id
            for r in self._remote
            if r.record.pack_id == pack_id
            and version_key(r.record.version) == key
            and counts(r.record.installation_id, r.record.channel)
        ]
        return sorted(mine + theirs)

    def version_status(
        self, pack_id: str, version: str, *, project: str | None = None
    ) -> Literal["active", "draining", "drained"]:
        """``active`` while an installation (of ``project``, when given) resolves to the version,
        then ``draining`` while runs are still in flight on it, then ``drained``."""
        if self.pinned_to(pack_id, version, project=project):
            return "active"
        return "draining" if self.in_flight(pack_id, version, project=project) else "drained"

    async def wait_drained(
        self,
        pack_id: str,
        version: str,
        timeout: float | None = None,
        *,
        project: str | None = None,
    ) -> None:
        """Wait until no run is in flight on ``pack_id`` ``version`` in any process (runs of a
        process that died count until their leases expire). ``drain_timeout`` after ``timeout``
        seconds, naming the runs still in flight. With ``project``, only the runs of that
        project's installations count; ``vendor:1.2.0`` or ``custom:1.2.0`` names one row."""
        check_id("pack id", pack_id)
        _qualified(version)
        if project is not None:
            _check_project(project)
        _check_timeout("timeout", timeout)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            await self._refresh_remote_runs()
            if not self.in_flight(pack_id, version, project=project):
                return
            left = None if deadline is None else deadline - anyio.current_time()
            if left is not None and left <= 0:
                break
            await anyio.sleep(min(0.05, self.refresh_interval or 0.05, left or 0.05))
        raise DrainTimeout(
            pack_id,
            version,
            timeout or 0.0,
            self.runs_in_flight(pack_id, version, project=project),
        )

    def stats(self) -> RuntimeStats:
        """Counters: runs started and in flight here, runs served through adapters, how stale
        this runtime's view of the store is (seconds since its last successful refresh), and the
        refresh loop's reads of the change log and the notifications that woke it."""
        return RuntimeStats(
            self._runs_started,
            len(self._runs),
            dict(self._adapter_runs),
            time.monotonic() - self._refreshed_at,
            self._refresh_failures,
            self._catch_up_reads,
            self._store.notifications,
        )

    # --- installations --------------------------------------------------------------------------

    def _target(
        self, installation_id: str, pack_id: str, pin: str, allow_prerelease: bool, project: str
    ) -> CatalogEntry:
        row = self._resolver.pick(pack_id, pin, allow_prerelease, project)
        if row is None:
            rows = self._resolver.rows(pack_id, project)
            raise NotFound(
                f"version of {pack_id} satisfying pin",
                pin,
                [f"{r.version} ({r.channel}, {r.state})" for r in rows],
            )
        if row.contract is not None:
            check_generation(row.pack_id, str(row.version), row.contract, self.generations)
        return row

    async def install(
        self,
        installation_id: str,
        pack_id: str,
        pin: str | None = None,
        policy: Policy = "manual",
        *,
        allow_prerelease: bool = False,
        actor: str = "system",
        project: str = DEFAULT_PROJECT,
    ) -> Installation:
        """Install ``pack_id`` as ``installation_id`` in ``project`` (installation ids are unique
        across projects).

        Without a pin, the installation is pinned to the exact version ``latest`` picks now, so
        later releases are inert until an update. ``pin`` may be ``latest``, ``latest-vendor``,
        ``latest-custom`` or an exact version (which may be a pre-release or retired): ``1.2.0``
        names the project's own custom 1.2.0 when it has one, else the vendor 1.2.0;
        ``vendor:1.2.0`` and ``custom:1.2.0`` name one of them.
        """
        check_id("installation id", installation_id)
        _check_actor(actor)
        check_flag("allow_prerelease", allow_prerelease)
        _check_project(project)
        self._resolver.rows(pack_id, project)  # not_found naming the packs the project sees
        if policy not in POLICIES:
            raise InvalidArgument("policy", policy, POLICIES)
        if pin is None:
            latest = self._target(installation_id, pack_id, "latest", allow_prerelease, project)
            pin = exact_pin(latest, self._resolver.custom_keys(pack_id, project))
        pin = normalize_pin(pin)
        row = self._target(installation_id, pack_id, pin, allow_prerelease, project)
        now = _now()
        inst = Installation(
            installation_id, pack_id, pin, policy, allow_prerelease, now, project=project
        )
        event = PinEvent(
            0, installation_id, actor, "install", None, pin, None, str(row.version), now
        )
        async with self._lock:
            stored = await self._store.create_installation(inst, event)
            self._resolver.set_installation(inst, [stored])
        _log_pin_move(pack_id, stored)
        await self._apply_policies([inst])  # an auto_* installation takes what it may at once
        return self._resolver.installation(installation_id)

    async def set_pin(
        self,
        installation_id: str,
        pin: str,
        *,
        actor: str = "system",
        origin: Origin = "user",
        expect_pin: str | None = None,
        project: str | None = None,
    ) -> Installation:
        """Move an installation's pin; the move is recorded with ``actor`` and ``origin``.

        With ``project``, the installation must be of that project (``not_found`` otherwise).

        The pin's previous value and version are read inside the store's transaction, so
        concurrent moves (in this process or another) are each recorded from what they replaced.
        With ``expect_pin``, the move happens only if the pin is still that (as read in the
        transaction): how update policies avoid undoing a concurrent manual update.
        """
        if origin not in ORIGINS:
            raise InvalidArgument("origin", origin, ORIGINS)
        _check_actor(actor)
        if expect_pin is not None:
            normalize_pin(expect_pin, "expect_pin")
        current = self._resolver.installation(installation_id, _optional_project(project))
        pin = normalize_pin(pin)
        row = self._target(
            installation_id, current.pack_id, pin, current.allow_prerelease, current.project
        )
        at = _now()

        def update(stored: Installation) -> tuple[Installation, PinEvent | None]:
            if expect_pin is not None and stored.pin != expect_pin:
                return stored, None  # moved meanwhile (here or elsewhere): leave it as it is
            if origin == "policy" and stored.hold and row.version <= Version.parse(stored.hold):
                return stored, None  # held by a manual move another runtime made meanwhile
            before = self._resolver.pick(
                stored.pack_id, stored.pin, stored.allow_prerelease, stored.project
            )
            event = PinEvent(
                0,
                installation_id,
                actor,
                origin,
                stored.pin,
                pin,
                str(before.version) if before is not None else None,
                str(row.version),
                at,
            )
            hold = _hold_after(stored, before, row, pin, origin)
            return dataclasses.replace(stored, pin=pin, hold=hold), event

        return await self._update_installation(installation_id, update)

    async def set_policy(
        self,
        installation_id: str,
        policy: Policy,
        *,
        actor: str = "system",
        project: str | None = None,
    ) -> Installation:
        """Change how an installation follows new versions: ``manual``, ``auto_patch``,
        ``auto_minor``. Recorded on the installation; it ends a hold left by a manual move (the
        policy applies at once from the current version); no pin moves otherwise."""
        if policy not in POLICIES:
            raise InvalidArgument("policy", policy, POLICIES)
        _check_actor(actor)
        self._resolver.installation(
            installation_id, _optional_project(project)
        )  # not_found naming known ones
        changed = await self._update_installation(
            installation_id,
            lambda stored: (dataclasses.replace(stored, policy=policy, hold=None), None),
        )
        logger.info(
            "packrun set the update policy of %s to %s by %s",
            installation_id,
            policy,
            actor,
            extra={
                "event": "policy_set",
                "pack": changed.pack_id,
                "installation": installation_id,
                "policy": policy,
                "actor": actor,
                "origin": "user",
            },
        )
        await self._apply_policies([changed])
        return self._resolver.installation(installation_id)

    async def _update_installation(self, installation_id: str, update: Update) -> Installation:
        async with self._lock:
            changed, event = await self._store.update_installation(installation_id, update)
            events = self._resolver.history(installation_id)
            self._resolver.set_installation(
                changed, kept_events(changed, [*events, event] if event else events)
            )
        if event is not None:
            _log_pin_move(changed.pack_id, event, changed)
        return changed

    # --- diffs, policies, reviews, updates and rollbacks ----------------------------------------

    def _diff_of(self, old: CatalogEntry, new: CatalogEntry) -> DiffReport:
        """The diff between two rows of a pack, computed once per pair of artifacts."""
        key = (old.pack_id, old.version_key, old.digest, new.version_key, new.digest)
        report = self._diffs.get(key)
        if report is None:
            report = self._diffs[key] = diff(_manifest_of(old), _manifest_of(new))
        return report

    async def _apply_policies(self, installations: Sequence[Installation]) -> None:
        """Move ``auto_patch``/``auto_minor`` installations to what their policy allows now."""
        for inst in installations:
            if inst.policy == "manual" or inst.pin in DYNAMIC_PINS:
                continue
            current = self._cells[inst.id].value
            if current is None:
                continue
            target, _ = policy_target(
                inst.policy,
                current.entry,
                self._resolver.rows(inst.pack_id, inst.project),
                inst.allow_prerelease,
                self._diff_of,
                hold=Version.parse(inst.hold) if inst.hold else None,
            )
            if target is None:
                continue
            try:
                await self.set_pin(
                    inst.id,
                    exact_pin(target, self._resolver.custom_keys(inst.pack_id, inst.project)),
                    actor=f"policy:{inst.policy}",
                    origin="policy",
                    expect_pin=inst.pin,  # a concurrent update wins over this policy move
                )
            except PackrunError as exc:  # one installation must not hold back the others
                self._warn(
                    f"policy {inst.id}",
                    f"update policy could not move {inst.id} to {target.version}: {exc}",
                )

    def review_update(
        self, installation_id: str, to: str | None = None, *, project: str | None = None
    ) -> UpdateReview:
        """What updating ``installation_id`` to ``to`` (default: the update available, the newest
        live version above the current one on its channel in the installation's project) would
        do: from/to, bump, findings, verdict, the workflows that use a changed tool (declared with
        :meth:`declare_workflow`, and observed from runs), and the runs in flight. ``to`` names a
        version as an exact pin does (``1.2.0``, ``vendor:1.2.0``, ``custom:1.2.0``)."""
        return self._review(installation_id, to, project)[0]

    def _review(
        self, installation_id: str, to: str | None, project: str | None
    ) -> tuple[UpdateReview, CatalogEntry]:
        inst = self._resolver.installation(installation_id, _optional_project(project))
        current = self.resolve(installation_id).entry
        rows = self._resolver.rows(inst.pack_id, inst.project)
        if to is None:
            available = available_update(current, rows, inst.allow_prerelease)
            if available is None:
                raise NotFound(
                    f"newer version of {inst.pack_id} on the {current.channel} channel than "
                    f"{current.version} for installation",
                    installation_id,
                )
            target = available
        else:
            target = self._row(inst.pack_id, to, inst.project)
        report = self._diff_of(current, target)
        tools = {t.id for e in (current, target) if e.manifest for t in e.manifest.tools}
        changed = changed_tools(report.findings, tools)
        usage = self._usage.get(installation_id, WorkflowTools({}, {}))
        in_flight = self._runs_of(installation_id, current.version_key)
        review = UpdateReview(
            installation_id,
            str(current.version),
            str(target.version),
            report.declared_bump,
            report.required_bump,
            report.verdict,
            report.findings,
            affected_workflows(usage, changed),
            in_flight,
            why_acknowledge(report),
            report,
            reauth_reasons(report),
        )
        return review, target

    def _row(self, pack_id: str, version: str, project: str) -> CatalogEntry:
        """The row ``version`` names for ``project``, as an exact pin would name it."""
        rows = self._resolver.rows(pack_id, project)
        channel, sep, rest = version.partition(":") if isinstance(version, str) else ("", "", "")
        if sep and channel in ("vendor", "custom"):
            pin = f"{channel}:{version_key(Version.parse(rest))}"
        else:
            pin = version_key(Version.parse(version))
        row = self._resolver.pick(pack_id, pin, True, project)
        if row is None:
            raise NotFound(
                f"version of {pack_id}", version, [f"{r.version} ({r.channel})" for r in rows]
            )
        return row

    async def declare_workflow(
        self,
        installation_id: str,
        workflow_id: str,
        tools: Sequence[str],
        *,
        project: str | None = None,
    ) -> None:
        """Declare which tools of an installation a workflow uses, for update reviews."""
        self._resolver.installation(installation_id, _optional_project(project))
        check_id("workflow id", workflow_id)
        if not isinstance(tools, list | tuple | set | frozenset) or not all(
            isinstance(t, str) and _TOOL.fullmatch(t) for t in tools
        ):
            raise InvalidArgument("tools", tools, ["a list of tool ids, such as ['list_contacts']"])
        tools = list(tools)
        async with self._lock:  # a refresh must not read the store between the write and this
            await self._store.declare_workflow(installation_id, workflow_id, tools)
            usage = self._usage.get(installation_id, WorkflowTools({}, {}))
            self._usage[installation_id] = WorkflowTools(
                {**usage.declared, workflow_id: frozenset(tools)}, usage.observed
            )

    async def update(
        self,
        installation_id: str,
        to: str | None = None,
        *,
        actor: str = "system",
        acknowledge_breaking: bool = False,
        project: str | None = None,
    ) -> UpdateReview:
        """Move an installation's pin to ``to`` (default: the update available, as for
        :meth:`review_update`).

        Runs in flight finish on their version; new runs use the new one. A major, or a target
        with breaking findings or a red verdict, needs ``acknowledge_breaking=True`` (the admin has
        seen :meth:`review_update`); without it the call fails with ``breaking_diff``. Returns the
        review of the update made.
        """
        _check_actor(actor)
        check_flag("acknowledge_breaking", acknowledge_breaking)
        review, target = self._review(installation_id, to, project)
        if review.bump == "none":
            return review  # already there: nothing moves, nothing is recorded
        if review.bump == "downgrade":
            raise InvalidArgument(
                "update target",
                review.to_version,
                [f"a version above the current {review.from_version} (to go back, use rollback)"],
            )
        if review.acknowledge and not acknowledge_breaking:
            raise BreakingDiff(
                installation_id,
                review.from_version,
                review.to_version,
                "; ".join(review.acknowledge),
            )
        inst = self._resolver.installation(installation_id)
        pin = exact_pin(target, self._resolver.custom_keys(inst.pack_id, inst.project))
        await self.set_pin(installation_id, pin, actor=actor, origin="user")
        return review

    async def rollback(
        self,
        installation_id: str,
        to: str,
        *,
        actor: str = "system",
        drain_timeout: float | None = None,
        project: str | None = None,
    ) -> Rollback:
        """Move an installation's pin back to an earlier version ``to`` (live or retired).

        The version left behind drains: its runs finish on it. With ``drain_timeout``, the call
        waits up to that many seconds for this installation's runs on it to end, and reports the
        runs still in flight when the time runs out. An update policy holds: in every runtime on the
        store, it moves the installation again only to a version above the one left behind (or
        after :meth:`set_policy`).
        """
        _check_timeout("drain_timeout", drain_timeout)
        _check_actor(actor)
        inst = self._resolver.installation(installation_id, _optional_project(project))
        current = self.resolve(installation_id).entry
        target = self._row(current.pack_id, to, inst.project)
        if target.version >= current.version:
            raise InvalidArgument(
                "rollback target", to, [f"a version below the current {current.version}"]
            )
        pin = exact_pin(target, self._resolver.custom_keys(inst.pack_id, inst.project))
        await self.set_pin(installation_id, pin, actor=actor, origin="rollback")
        left = str(current.version)
        if drain_timeout is None:
            return Rollback(installation_id, left, str(target.version), None, ())
        still = await self._wait_for_runs(installation_id, current.pack_id, left, drain_timeout)
        return Rollback(installation_id, left, str(target.version), not still, still)

    def _runs_of(self, installation_id: str, key: str) -> tuple[str, ...]:
        """The runs of one installation in flight on one version (key), here and elsewhere."""
        mine = [
            r.run_id
            for r in self._runs.values()
            if r.installation_id == installation_id and r.version_key == key
        ]
        theirs = [
            r.record.run_id
            for r in self._remote
            if r.record.installation_id == installation_id and version_key(r.record.version) == key
        ]
        return tuple(sorted(mine + theirs))

    async def _wait_for_runs(
        self, installation_id: str, pack_id: str, version: str, timeout: float
    ) -> tuple[str, ...]:
        deadline = anyio.current_time() + timeout
        key = version_key(Version.parse(version))
        while True:
            await self._refresh_remote_runs()
            still = self._runs_of(installation_id, key)
            left = deadline - anyio.current_time()
            if not still or left <= 0:
                return still
            await anyio.sleep(min(0.05, left))

    def installations(self, *, project: str | None = None) -> list[Installation]:
        """The installations of ``project`` by id (of every project when it is ``None``)."""
        return self._resolver.installations(None if project is None else _check_project(project))

    def installation(self, installation_id: str, *, project: str | None = None) -> Installation:
        """One installation; with ``project``, it must be of that project (``not_found``
        otherwise)."""
        return self._resolver.installation(installation_id, _optional_project(project))

    # --- pack sources -------------------------------------------------------------------------

    async def add_source(
        self,
        name: str,
        url: str,
        *,
        ref: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        channel: Channel = "vendor",
        project: str | None = None,
        trust: Trust | None = None,
    ) -> SourceStatus:
        """Add a pack source: ``git+https://``, ``git+ssh://``, ``git+file://`` (``ref`` a branch,
        tag or commit; default the remote's ``HEAD``) or ``oci://host/repository:tag``.

        Nothing is fetched now: call :meth:`sync` for a first sync at once. A runtime that has
        sources syncs each on its ``interval`` (seconds, with jitter) in the background. What a
        sync publishes goes to ``channel``, and for the custom channel to ``project``'s stream
        (default ``default``; a vendor source ignores ``project``).
        ``trust`` is a :class:`Trust` policy (default ``Trust.none()``). ``source_error`` for a
        bad URL or a name in use.
        """
        check_name(name)
        if project is not None:
            _check_project(project)
        if trust is not None and not isinstance(trust, Trust):
            raise InvalidArgument("trust policy", trust, ["a packrun.Trust (Trust.none(), ...)"])
        spec = SourceSpec(name, url, ref, interval, channel, project, trust or Trust.none(), _now())
        status = await self._syncer.add(spec)
        if self.background_sync and self._task_group is not None:
            self._syncer.start(self._task_group)
        return status

    def _known_versions(self, channel: Channel, project: str | None) -> frozenset[tuple[str, str]]:
        """The versions of the stream a source publishes to: the vendor rows, or the custom rows
        of its project."""
        owner = "" if channel == "vendor" else project or DEFAULT_PROJECT
        return frozenset(
            (p, row.version_key)
            for p in self._resolver.packs(owner or DEFAULT_PROJECT)
            for row in self._resolver.rows(p, owner or DEFAULT_PROJECT)
            if row.channel == channel and (channel == "vendor" or row.project == owner)
        )

    async def remove_source(self, name: str) -> None:
        """Forget a pack source; what it published stays. ``not_found`` for an unknown name."""
        check_name(name)
        await self._syncer.remove(name)

    async def sync(self, name: str) -> SyncReport:
        """Sync a pack source now ("Refresh") and return its :class:`SyncReport`.

        Fetches the ref (or tag), applies the trust policy, and for every index entry whose
        version is not in the catalog checks the three layers, rebuilds from source and compares
        with ``dist/``, then publishes. When another process holds the source's lease the report
        says so (``held_by``) and nothing is done here.
        """
        check_name(name)
        return await self._syncer.sync(name)

    def sources(self) -> list[SourceStatus]:
        """Every pack source with its status: last sync, revision, the last report, next sync."""
        return [self._syncer.statuses[n] for n in sorted(self._syncer.statuses)]

    def source(self, name: str) -> SourceStatus:
        """One pack source's status; ``not_found`` naming the known sources."""
        check_name(name)
        return self._syncer.status(name)

    async def history(
        self,
        installation_id: str,
        *,
        limit: int = HISTORY_LIMIT,
        before: int | None = None,
        project: str | None = None,
    ) -> HistoryPage:
        """A page of an installation's pin moves, read from the store: the newest ``limit``
        (default 100) before the cursor ``before``, oldest first, each with ``.actor .origin
        .from_version .to_version .at``. The page's ``.before`` is the cursor of the next, older
        page (``None`` at the first move the store still keeps; see :class:`Retention`). With
        ``project``, the installation must be of that project."""
        self._resolver.installation(installation_id, _optional_project(project))
        check_history_page(limit, before)
        events = await self._store.pin_events(installation_id, limit + 1, before)
        more = len(events) > limit
        page = events[:limit]
        return HistoryPage(tuple(reversed(page)), page[-1].seq if more else None)

    async def gc(self, *, dry_run: bool = False) -> GcReport:
        """Prune what :attr:`retention` no longer keeps (ended runs, pin events, change-log
        lines) now, in small transactions; with ``dry_run``, only count it. The runtime also does
        this in the background every ``retention.interval`` seconds."""
        check_flag("dry_run", dry_run)
        r = self.retention
        return await self._store.gc(r, dry_run=dry_run, batch=r.batch, pause=r.pause)


def open_runtime(
    url: str | None = None,
    *,
    create: bool = True,
    generations: Collection[int] = DEFAULT_GENERATIONS,
    refresh_interval: float = 0.1,
    lease_ttl: float = 30.0,
    tool_threads: int = 40,
    background_sync: bool = True,
    check_input: CheckMode = "enforce",
    check_output: CheckMode = "warn",
    check_auth: CheckMode = "enforce",
    in_process: Collection[str] = frozenset(),
    sandbox: SandboxMode = "auto",
    sandbox_limits: SandboxLimits | None = None,
    retention: Retention | None = None,
) -> Runtime:
    """A runtime on the store at ``url``; use it with ``async with``.

    ``url`` defaults to ``$PACKRUN_STORE``, else the embedded SQLite file ``./.packrun/state.db``.
    ``create=False`` refuses a store that does not exist yet (``store_error`` naming its path or
    schema) and creates nothing: what an executor that only reads a store wants, so that a typo in
    the URL is an error rather than an empty catalog (``memory:`` always opens).
    ``generations`` restricts the contract generations admitted (``{2}`` retires generation 1).
    ``refresh_interval`` bounds how stale this process may be on writes by other processes,
    ``lease_ttl`` how long the runs of a process that died keep counting as in flight, and
    ``tool_threads`` how many sync tools may run at once (in worker threads of their own).
    ``background_sync=False`` keeps this runtime from syncing pack sources on their intervals
    (``sync`` still works).
    ``check_input`` and ``check_output`` (``off``, ``warn`` or ``enforce``) say what a call whose
    input, or a tool whose output, does not match the manifest's declaration gets: refused
    (``invalid_input``/``invalid_output``), counted and logged, or nothing; by default inputs are
    enforced and outputs warned about. Either way the violations are counted in :meth:`health`.
    ``check_auth`` does the same for a run whose ``auth`` does not satisfy the auth of the version
    it binds to (mode, required credential fields, scopes): ``needs_reauth`` by default. A run
    given no ``auth`` at all is not checked.

    Bundle code runs in sandbox worker processes (``sandbox``: ``"process"``, ``"bwrap"``, or
    ``"auto"``: bubblewrap when installed) under ``sandbox_limits``, except the code of the
    channels listed in ``in_process`` (``{"vendor"}``), which this process trusts to import.

    ``retention`` (a :class:`Retention`; its defaults when ``None``) says how long the store keeps
    ended runs, change-log lines and pin events, and how often this runtime prunes the rest.

    >>> import anyio, packrun
    >>> async def main():
    ...     async with packrun.open_runtime("memory:") as rt:
    ...         return rt.installations()
    >>> anyio.run(main)
    []
    """
    if url is not None and not isinstance(url, str):
        raise InvalidArgument("store URL", url, ["None or a URL such as sqlite:///state.db"])
    check_flag("create", create)
    check_flag("background_sync", background_sync)
    return Runtime(
        open_store(default_url() if url is None else url, create=create),
        generations=generations,
        refresh_interval=refresh_interval,
        lease_ttl=lease_ttl,
        tool_threads=tool_threads,
        background_sync=background_sync,
        check_input=check_input,
        check_output=check_output,
        check_auth=check_auth,
        in_process=in_process,
        sandbox=sandbox,
        sandbox_limits=sandbox_limits,
        retention=retention,
    )
