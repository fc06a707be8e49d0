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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.to_thread

from packrun._adapters import STEPS, Dispatcher, dispatcher_for
from packrun._aliases import AliasChange, check_alias_name, move_alias
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
from packrun._bulk import BulkPlan, Selector, bulk_apply, bulk_plan, wait_drained
from packrun._bundle import (
    LoadedBundle,
    bundle_is_loaded,
    hold_bundle,
    load_held,
    read_bundle,
    release_bundle,
)
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
from packrun._events import Event, blocked_events, read_events
from packrun._health import HealthBook, HealthKey, instrument
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
from packrun._redact import Redactor
from packrun._resolver import (
    DYNAMIC_PINS,
    Explanation,
    Resolution,
    Resolver,
    exact_pin,
    follows,
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
from packrun._rollouts import DEFAULT_STEPS, Rollouts, RolloutStatus
from packrun._runs import Run, RunScope, RuntimeStats
from packrun._soak import Soak, UpdateWindow, check_age
from packrun._sources._model import DEFAULT_INTERVAL, SourceSpec, SourceStatus, SyncReport, Trust
from packrun._sources._sync import Syncer, check_name
from packrun._stores import (
    DEFAULT_PROJECT,
    ORIGINS,
    POLICIES,
    Alias,
    GcReport,
    Installation,
    LiveRun,
    NewEvent,
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
from packrun._tracker import RunTracker
from packrun._versions import Version, version_key
from packrun._views import PackUpdates, flows_only, notices_between, pack_updates
from packrun.errors import (
    BreakingDiff,
    DrainTimeout,
    InvalidArgument,
    InvalidBundle,
    NeedsReauth,
    NotFound,
    PackrunError,
)

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
    if origin == "policy" or follows(pin):
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


_NO_AUTH = Auth.none()
_WARN_EVERY_SECONDS = 60.0  # per kind of warning


class _FastBind:
    """How an installation's last run without credentials bound, for the next one with the same
    resolution and check modes (its bundle still held by the runs here)."""

    __slots__ = (
        "bundle_key",
        "checks",
        "dispatcher",
        "input_mode",
        "logger",
        "output_mode",
        "res",
        "version_key",
    )

    def __init__(
        self, res: Resolution, input_mode: str, output_mode: str, dispatcher: Dispatcher, run: Run
    ) -> None:
        assert dispatcher.loaded is not None
        self.res = res
        self.input_mode = input_mode
        self.output_mode = output_mode
        self.dispatcher = dispatcher
        self.bundle_key = id(dispatcher.loaded)  # valid while this holds the dispatcher
        self.logger = run._logger
        self.version_key = run.version_key
        self.checks = run._checks


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
        fleet_interval: float = 1.0,
        count_health: bool = True,
        clock: Callable[[], datetime] | None = None,
        retention: Retention | None = None,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidArgument("retention", retention, ["None or a packrun.Retention"])
        check_seconds("lease_ttl", lease_ttl, zero=False)
        check_seconds("fleet_interval", fleet_interval, zero=False)
        check_flag("count_health", count_health)
        if clock is not None and not callable(clock):
            raise InvalidArgument(
                "clock", clock, ["None or a function returning the time as an aware datetime"]
            )
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
        self._clock: Callable[[], datetime] = clock or _now
        self._soak: dict[str, Soak] = {}  # by scope: project:<id>, installation:<id>
        self._due: datetime | None = None  # when a soaking version or a window is next due
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
        self.owner = uuid.uuid4().hex
        """This runtime's id as the holder of run leases (and as the writer of its change-log
        lines, which its refreshes skip: it applied them already)."""
        store.writer = self.owner
        self.retention = retention or Retention()
        """What the store keeps and how this runtime's background pass prunes the rest."""
        self._tracker = RunTracker(
            store, self.owner, lease_ttl, self._warn, ends_written=self._release_idle_bundles
        )
        self._dispatchers: dict[str, Dispatcher] = {}
        # Runs in flight here by the loaded bundle they use (its id()): they share one hold on it.
        self._bundle_runs: dict[int, int] = {}
        self._idle_bundles: dict[int, LoadedBundle] = {}  # held with no run on them (yet)
        self._fast_binds: dict[str, _FastBind] = {}  # by installation: how its last run bound
        self._fast_by_bundle: dict[int, set[str]] = {}  # the installations of each bundle there
        self._release = self._release_bundle  # one bound method for every run
        self.check_input: CheckMode = check_input
        """What a call whose input breaks the tool's declared input gets: ``enforce`` (refused
        with ``invalid_input``), ``warn`` (counted and logged) or ``off``."""
        self.check_output: CheckMode = check_output
        """The same for a tool's output (``invalid_output``); ``warn`` unless told otherwise."""
        self.check_auth: CheckMode = check_auth
        """What a run whose credentials do not satisfy its version's auth gets: ``enforce``
        (refused with ``needs_reauth`` before any bundle code runs), ``warn`` or ``off``."""
        self._contracts: dict[str, Contracts] = {}  # by digest: compiled once
        self._shared_checks: dict[tuple[str, ...], tuple[CallChecks, HealthKey]] = {}
        self._version_keys: dict[str, str] = {}  # a version's text -> its key
        self._tool_loggers: dict[str, logging.Logger] = {}
        self._health_book = HealthBook(count_health)
        self.fleet_interval = fleet_interval
        """Seconds between this runtime's writes of its health counts to the store (and reads of
        the fleet's), and between its turns at driving rollouts."""
        self._rollouts = Rollouts(self)
        self._sandboxed: dict[tuple[str, str], Dispatcher] = {}
        self.in_process = frozenset(in_process)
        """The channels whose code this runtime trusts to run in its own process."""
        self.sandbox = sandbox
        """How other channels' code is contained: ``process``, ``bwrap`` or ``auto``."""
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        """The limits sandbox workers run under."""
        self._pool = WorkerPool(sandbox, self.sandbox_limits, self.generations)
        self._catch_up_reads = 0
        self._diffs: dict[tuple[object, ...], DiffReport] = {}
        self._usage: dict[str, WorkflowTools] = {}
        # Sync tools get threads of their own: a runtime full of slow tools must still renew its
        # leases and record its runs (those use anyio's default threads).
        self._tool_threads = anyio.CapacityLimiter(tool_threads)
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
            await self._flush_health()  # the fleet's health figures, as of the open
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            if self.refresh_interval > 0:
                self._task_group.start_soon(self._refresh_loop)
            self._task_group.start_soon(self._tracker.lease_loop)
            self._task_group.start_soon(self._tracker.end_loop)
            self._task_group.start_soon(self._reap_loop)
            self._task_group.start_soon(self._fleet_loop)
            instrument(self._health_book)
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
                await self._end_all()
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
                self._task_group = None
            with anyio.CancelScope(shield=True):
                await self._end_all()  # runs still open when the runtime closes
            with anyio.CancelScope(shield=True):
                await self._flush_health()
                try:
                    await self._rollouts.release()
                except PackrunError as exc:  # the leases run out on their own
                    self._warn("rollouts", f"could not release rollouts in {self.url}: {exc}")
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
        await self._load_fleet()
        await self._syncer.load()
        self._seq = state.seq
        if self._soak:  # what soaked while no runtime was open is due now
            self._due = datetime.min.replace(tzinfo=UTC)
        self._refreshed_at = time.monotonic()

    async def _load_fleet(self) -> None:
        """The aliases and the soak settings (both small: read whole on a change)."""
        for alias in await self._store.aliases():
            self._resolver.set_alias(alias)
        self._soak = {
            scope: Soak._decode(text) for scope, text in (await self._store.soak_settings()).items()
        }

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

    async def _fleet_loop(self) -> None:
        while True:
            await anyio.sleep(self.fleet_interval)
            with anyio.CancelScope(shield=True):  # a close waits for it: no write cut in half
                await self._flush_health()
                try:
                    await self._rollouts.tick()
                except Exception as exc:  # never let a rollout take the host's code down
                    self._warn("rollouts", f"could not drive rollouts in {self.url}: {exc}")

    async def _flush_health(self) -> bool:
        try:
            await self._health_book.flush(self._store)
        except PackrunError as exc:  # kept: the next flush sends it
            self._warn("health", f"could not record health in {self.url}: {exc}")
            return False
        return True

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
        await self._tracker.refresh_remote()

    @property
    def lease_ttl(self) -> float:
        """Seconds a run's lease lasts unless renewed; a dead process's runs expire after it."""
        return self._tracker.lease_ttl

    @lease_ttl.setter
    def lease_ttl(self, seconds: float) -> None:
        self._tracker.lease_ttl = seconds

    @property
    def _runs(self) -> dict[str, Run]:
        """This runtime's runs in flight, by id (the tracker's)."""
        return self._tracker.runs

    @property
    def _remote(self) -> list[LiveRun]:
        """Other runtimes' runs in flight as of the last refresh (the tracker's)."""
        return self._tracker.remote

    @_remote.setter
    def _remote(self, runs: list[LiveRun]) -> None:
        self._tracker.remote = runs

    @property
    def _remote_runs(self) -> RemoteRuns:
        """What this runtime keeps of other runtimes' runs (the tracker's incremental reads)."""
        return self._tracker.remote_runs

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
        call it to catch up at once. Update policies waiting for a soaking version or their
        update window are applied again once that time has come."""
        due = self._due
        if due is not None and self._clock() >= due:
            self._due = None
            await self._apply_policies(self._resolver.auto_installations())
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
            if any(c.kind in ("alias", "soak") for c in changes):
                await self._refresh_one("aliases and soak settings", self._load_fleet())
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
                and not follows(inst.pin)
            ):
                touched[iid] = inst
        if any(c.kind == "soak" for c in changes):  # a soak or window changed: look again
            touched.update((i.id, i) for i in self._resolver.auto_installations())
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
        if inst.policy == "manual" or why.resolution is None or follows(inst.pin):
            return why
        _, blocked = policy_target(
            inst.policy,
            why.resolution.entry,
            self._resolver.rows(inst.pack_id, inst.project),
            inst.allow_prerelease,
            self._diff_of,
            hold=Version.parse(inst.hold) if inst.hold else None,
            soak=self.soak_of(inst.id),
            now=self._clock(),
        )
        waiting = tuple(str(b) for b in blocked if b.waits_for_review)
        soaking = tuple(str(b) for b in blocked if b.kind in ("soaking", "window"))
        available = why.update_available
        if available is not None:  # what the policy makes of the update available
            about = next((b for b in blocked if b.version == available.version), None)
            until = self.soak_of(inst.id)._soaks_until(
                self._row(
                    inst.pack_id, f"{available.channel}:{available.version}", inst.project
                ).published_at
            )
            available = dataclasses.replace(
                available,
                blocked=None if about is None else about.kind,
                soaking_until=until if until is not None and until > self._clock() else None,
            )
        resolution = why.resolution
        why = dataclasses.replace(why, soaking=soaking, update_available=available)
        holding = None
        if inst.hold:
            move = next(  # the manual move down that left the held version
                (
                    e
                    for e in reversed(self._resolver.history(inst.id))
                    if e.origin in ("user", "rollback", "bulk") and e.from_version == inst.hold
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
                f"{inst.policy} holds at {resolution.version} ({how}); it moves again only "
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

    def pack_updates(self, pack_id: str, *, project: str = DEFAULT_PROJECT) -> PackUpdates:
        """How many installations of ``pack_id`` in ``project`` there are and how many have an
        update available (as :meth:`explain` says), by the version they run."""
        _check_project(project)
        rows = self._resolver.rows(pack_id, project)
        mine = [i for i in self._resolver.installations(project) if i.pack_id == pack_id]
        return pack_updates(pack_id, project, rows, [(i, self._cells[i.id].value) for i in mine])

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
        version: str | None = None,
    ) -> RunScope:
        """A run of ``installation_id``: ``async with rt.run(...) as run: await run.call(...)``.

        The run binds at its start to the installation's current ``(version, digest)`` and keeps
        that binding until it ends, whatever happens to pins meanwhile. A ``run_id`` seen before (a
        resumed run, possibly in another process) gets its original binding back. ``auth`` is
        passed to the tools and never stored. A bundle outside this runtime's contract window is
        refused here with ``BUNDLE_CONTRACT_INCOMPATIBLE``.

        ``version`` starts the run on that version instead (a smoke test before a promotion):
        ``2.0.0``, or ``vendor:2.0.0`` / ``custom:2.0.0`` for one channel's row, named as an exact
        pin of the installation would name it. It must be a version the installation could move
        to: of its pack, seen by its project, live (not retired) and inside the contract window.
        The run is marked ``chosen``, counts in flight on that version like any run, and the pin
        does not move. A run id seen before keeps its original binding whatever ``version`` says.
        """
        if version is not None and not isinstance(version, str):
            raise InvalidArgument(
                "version",
                version,
                ["None or a version of the installation's pack, such as '2.0.0' or 'custom:2.0.0'"],
            )
        if run_id is not None:
            check_id("run id", run_id)
        if workflow_id is not None:
            check_id("workflow id", workflow_id)
        if auth is not None and not isinstance(auth, Auth):
            # Withheld: a token or a dict of credentials passed by mistake must not reach a log.
            raise InvalidArgument(
                "auth", Withheld(auth), ["None or a packrun.Auth, such as Auth.api_key(key)"]
            )
        return RunScope(self, installation_id, run_id, workflow_id, auth or _NO_AUTH, version)

    async def call(
        self,
        installation_id: str,
        tool: str,
        input: dict[str, Any] | None = None,
        *,
        auth: Auth | None = None,
        run_id: str | None = None,
        workflow_id: str | None = None,
        version: str | None = None,
    ) -> Any:
        """One tool call in a run of its own (started and ended around the call); ``version``
        as :meth:`run` has it."""
        _check_tool(tool)  # before the run starts: a refused call leaves no run behind
        check_mapping("input", input, optional=True)
        async with self.run(
            installation_id, run_id=run_id, workflow_id=workflow_id, auth=auth, version=version
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
        self,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
        version: str | None = None,
    ) -> Run:
        opened = self._open_run(installation_id, run_id, workflow_id, auth, version)
        return opened if isinstance(opened, Run) else await opened

    def _open_run(
        self,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
        version: str | None = None,
    ) -> Run | Coroutine[Any, Any, Run]:
        """Start a run: the run itself when nothing had to be awaited (the in-memory store, a
        bundle held in this process), else a coroutine that finishes the start. Either way the
        same checks and the same books; nothing suspends before the coroutine is awaited."""
        res = (
            self.resolve(installation_id)
            if version is None
            else self._chosen(installation_id, version)
        )
        if res.digest is None:
            raise NotFound("integration to run in pack", res.pack_id)
        tracker = self._tracker
        fresh = run_id is None
        if run_id is None:
            run_id = tracker.new_id()  # one given was checked by run(), the only maker of scopes
        record = RunRecord(
            run_id,
            installation_id,
            res.pack_id,
            res.version,
            res.digest,
            res.contract,
            res.channel,
            workflow_id,
            datetime.now(UTC),
        )
        started = tracker.begin_now(record, fresh)
        if started is None:
            return self._start_written(record, res, auth, version)
        return self._admit(started, res, auth, version)

    async def _start_written(
        self, record: RunRecord, res: Resolution, auth: Auth, version: str | None
    ) -> Run:
        admitted = self._admit(await self._tracker.begin(record), res, auth, version)
        return admitted if isinstance(admitted, Run) else await admitted

    def _admit(
        self, started: StartedRun, res: Resolution, auth: Auth, version: str | None
    ) -> Run | Coroutine[Any, Any, Run]:
        """Bind a run whose start is recorded and count it in; a coroutine when its bundle has to
        be loaded (or served by a sandbox worker) first."""
        tracker = self._tracker
        bound, resumed, _ = started
        if not resumed and auth is _NO_AUTH and version is None:
            # The common case: bound as the installation's last run was (same resolution, check
            # modes and held bundle), without looking any of it up again.
            fast = self._fast_binds.get(bound.installation_id)
            if (
                fast is not None
                and fast.res is res
                and fast.input_mode is self.check_input
                and fast.output_mode is self.check_output
            ):
                runs = self._bundle_runs.get(fast.bundle_key)
                if runs is not None:  # the runs here hold its bundle (so it is still loaded)
                    self._bundle_runs[fast.bundle_key] = runs + 1
                    run = Run(
                        bound,
                        fast.dispatcher,
                        auth,
                        fast.logger,
                        False,
                        fast.version_key,
                        self._tool_threads,
                        fast.checks,
                        release=self._release,
                    )
                    tracker.admit(run)
                    return run
        try:
            if bound.digest is None:
                raise NotFound("integration to run in pack", bound.pack_id)
            row = self._bound_row(bound, res, resumed)
            if auth is not _NO_AUTH and self.check_auth != "off" and row is not None:
                self._check_auth(bound.installation_id, row, auth)
            # A bundle loaded in this process is held without an await; else it is loaded (or a
            # sandbox worker serves it).
            dispatcher = self._held_dispatcher(bound.digest, bound.channel)
            if dispatcher is None:
                return self._admit_loaded(bound, resumed, row, auth, version)
            run = self._bind(bound, resumed, row, dispatcher, auth)
            if version is not None and not resumed:
                run.chosen = True
            elif not resumed and auth is _NO_AUTH and dispatcher.loaded is not None:
                assert run._checks is not None
                fast = _FastBind(res, self.check_input, self.check_output, dispatcher, run)
                self._fast_binds[bound.installation_id] = fast
                self._fast_by_bundle.setdefault(fast.bundle_key, set()).add(bound.installation_id)
        except BaseException:
            tracker.abandon(bound.run_id)
            raise
        tracker.admit(run)
        return run

    async def _admit_loaded(
        self,
        bound: RunRecord,
        resumed: bool,
        row: CatalogEntry | None,
        auth: Auth,
        version: str | None,
    ) -> Run:
        try:
            assert bound.digest is not None
            dispatcher = await self._dispatcher(bound.digest, bound.channel, bound.installation_id)
            if dispatcher.loaded is not None:  # loaded with a hold of its own
                key = id(dispatcher.loaded)
                runs = self._bundle_runs.get(key)
                if runs is not None:  # the runs here hold it already (or lately)
                    release_bundle(dispatcher.loaded)
                self._bundle_runs[key] = (runs or 0) + 1
            run = self._bind(bound, resumed, row, dispatcher, auth)
            if version is not None and not resumed:
                run.chosen = True
        except BaseException:
            self._tracker.abandon(bound.run_id)
            raise
        self._tracker.admit(run)
        return run

    def _bind(
        self,
        bound: RunRecord,
        resumed: bool,
        row: CatalogEntry | None,
        dispatcher: Dispatcher,
        auth: Auth,
    ) -> Run:
        """The run of a recorded binding: its tool context and checks."""
        tool_logger = self._tool_loggers.get(bound.pack_id)
        if tool_logger is None:
            tool_logger = self._tool_loggers[bound.pack_id] = logging.getLogger(
                f"packrun.tools.{bound.pack_id}"
            )
        key = self._version_keys.get(bound.version)
        if key is None:
            key = self._version_keys[bound.version] = version_key(bound.version)
        return Run(
            bound,
            dispatcher,
            auth,
            tool_logger,
            resumed,
            key,
            self._tool_threads,
            self._call_checks(bound, row, dispatcher, auth, key),
            release=self._release,
        )

    def _chosen(self, installation_id: str, version: str) -> Resolution:
        """What a run of ``installation_id`` started on ``version`` binds to: a row the
        installation could move to (its pack, seen by its project, live, inside the contract
        window)."""
        inst = self._resolver.installation(installation_id)
        row = self._row(inst.pack_id, version, inst.project)
        if not row.is_live:
            raise InvalidArgument(
                "version",
                version,
                [
                    f"a live version of {inst.pack_id} for {installation_id} "
                    f"({row.channel} {row.version} is retired)"
                ],
            )
        if row.contract is not None:
            check_generation(row.pack_id, str(row.version), row.contract, self.generations)
        return Resolution(
            row.pack_id, str(row.version), row.channel, row.contract, row.digest, inst.pin, row
        )

    def _held_dispatcher(self, digest: str, channel: str) -> Dispatcher | None:
        """The cached in-process dispatcher of ``digest`` with a new hold on its bundle, or
        ``None`` when it must be made (or served by a sandbox worker): no await for the
        common case."""
        if channel not in self.in_process:
            return None
        dispatcher = self._dispatchers.get(digest)
        if dispatcher is None or dispatcher.loaded is None:
            return None
        key = id(dispatcher.loaded)
        runs = self._bundle_runs.get(key)
        if runs is not None:  # held by the runs here already (or lately): counted, no lock taken
            self._bundle_runs[key] = runs + 1
            return dispatcher
        if hold_bundle(dispatcher.loaded):
            self._bundle_runs[key] = 1
            return dispatcher
        return None

    def _release_bundle(self, loaded: LoadedBundle) -> None:
        """A run on ``loaded`` ended. When it was the last one here, the runs' hold stays until
        the run ends are next written (:meth:`_release_idle_bundles`): a run that starts
        meanwhile takes it over without a lock, so a run after run does not take and give back
        the bundle's hold every time."""
        key = id(loaded)
        runs = self._bundle_runs[key] - 1
        self._bundle_runs[key] = runs
        if not runs:
            self._idle_bundles[key] = loaded

    def _release_idle_bundles(self) -> None:
        """Give back the holds of the bundles no run here has used since they went idle."""
        idle, self._idle_bundles = self._idle_bundles, {}
        for key, loaded in idle.items():
            if self._bundle_runs.get(key) == 0:
                del self._bundle_runs[key]
                release_bundle(loaded)
                # Forget how runs bound to it: an evicted bundle is not kept alive from here.
                for installation_id in self._fast_by_bundle.pop(key, ()):
                    fast = self._fast_binds.get(installation_id)
                    if fast is not None and fast.bundle_key == key:
                        del self._fast_binds[installation_id]

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
        self,
        bound: RunRecord,
        row: CatalogEntry | None,
        dispatcher: Dispatcher,
        auth: Auth,
        key: str,
    ) -> CallChecks:
        assert bound.digest is not None
        inst = self._resolver.find_installation(bound.installation_id)
        project = inst.project if inst is not None else DEFAULT_PROJECT
        # Runs without credentials share their checks (nothing of theirs to redact), per row and
        # per project (health is counted per project).
        shared = (
            (bound.digest, row.channel, row.project, project)
            if row is not None
            else (bound.digest, project)
        )
        if auth is _NO_AUTH:
            cached = self._shared_checks.get(shared)
            if cached is not None:
                checks, counted = cached
                if (
                    checks.input_mode == self.check_input
                    and checks.output_mode == self.check_output
                    and checks.counters is self._health_book.counters.get(counted)
                ):
                    return checks
        stream = row.stream if row is not None else bound.channel
        # Counted per catalog row: a project's custom row may carry a vendor version's number.
        counted = (bound.pack_id, stream, key, project)
        contracts = self._contracts.get(bound.digest)
        if contracts is None:
            manifest = (
                dispatcher.loaded.bundle.manifest
                if dispatcher.loaded is not None
                else dispatcher.manifest
            )
            assert manifest is not None  # a sandbox dispatcher carries its bundle's manifest
            contracts = self._contracts[bound.digest] = compile_contracts(manifest)
        checks = CallChecks(
            contracts,
            self._health_book.counters_for(counted),
            self.check_input,
            self.check_output,
            bound.pack_id,
            bound.version,
            self._warn_contract,
            Redactor(auth).text,
            self._health_book.enabled,
        )
        if auth is _NO_AUTH:
            self._shared_checks[shared] = (checks, counted)
        return checks

    def _warn_contract(self, kind: str, message: str) -> None:
        # At most once a minute per (pack, version, tool, side): a broken release calls often.
        now = time.monotonic()
        if now - self._last_warning.get(kind, -120.0) > 60:
            self._last_warning[kind] = now
            logger.warning("packrun %s", message)

    def health(
        self,
        pack_id: str,
        version: str,
        *,
        project: str = DEFAULT_PROJECT,
        per_project: bool = False,
    ) -> VersionHealth:
        """What the fleet saw of ``pack_id`` ``version``: calls, tool errors, timeouts, sandbox
        crashes, calls whose input or output broke the tool's declared contract (see
        ``check_input``/``check_output``), and latency percentiles.

        ``version`` names a row as an exact pin of ``project`` would: ``1.2.0`` is the project's
        own custom row when it has one of that number, else the vendor row; ``vendor:1.2.0`` or
        ``custom:1.2.0`` names one channel's row. The counts are the row's, over every project's
        runs on it, or with ``per_project=True`` over the runs of ``project``'s installations
        (``not_found`` for a version the project does not see).

        Freshness: this runtime's own calls count at once; other runtimes write theirs every
        ``fleet_interval`` seconds, and this one reads the fleet's sums as often, so theirs show
        within about two intervals (sums kept since the store was made; a runtime opened with
        ``count_health=False`` adds nothing).
        """
        check_id("pack id", pack_id)
        check_flag("per_project", per_project)
        row = self._row(pack_id, version, _check_project(project))
        return self._health_book.figures(
            pack_id,
            str(row.version),
            row.stream,
            row.version_key,
            project if per_project else None,
            row.channel,
        )

    # --- rollouts and events ------------------------------------------------------------------

    async def start_rollout(
        self,
        pack_id: str,
        version: str,
        *,
        steps: Sequence[int] = DEFAULT_STEPS,
        step_interval: float = 600.0,
        max_error_rate: float = 0.05,
        max_error_increase: float = 0.02,
        min_calls: int = 100,
        selector: Selector | str | Collection[str] | None = None,
        project: str = DEFAULT_PROJECT,
        actor: str = "system",
    ) -> RolloutStatus:
        """Move the installations of ``project`` that would take ``pack_id`` ``version`` to it in
        a growing share: ``steps`` percent of them, each step after ``step_interval`` seconds and
        a health gate.

        The installations are those whose dynamic pin picks the version, those an auto policy
        moved to it, or with ``selector`` those it picks: a :class:`Selector` (or its text,
        ``policy=auto_patch,pin=1.1.0``, as the bulk operations take) picks the installations
        matching it when the rollout starts; a collection names installation ids. Who goes first is decided
        by a stable hash of the installation id (an installation never flips back and forth).
        The gate passes once the new version has ``min_calls`` calls from the project's
        installations with an error rate (tool errors, timeouts, crashes, invalid outputs) at
        most ``max_error_rate`` and at most ``max_error_increase`` above the version it replaces;
        a failed gate aborts: every installation moves back (pin events with origin
        ``rollout``) and runs in flight finish on their version. One rollout per pack and
        project at a time (``rollout_in_progress``). The rollout lives in the store: any runtime
        on it continues it, within ``fleet_interval`` seconds, if this one goes away.
        """
        _check_actor(actor)
        return await self._rollouts.start(
            pack_id,
            version,
            steps=steps,
            step_interval=step_interval,
            max_error_rate=max_error_rate,
            max_error_increase=max_error_increase,
            min_calls=min_calls,
            selector=selector,
            project=_check_project(project),
            actor=actor,
        )

    async def rollout_status(
        self, pack_id: str, *, project: str = DEFAULT_PROJECT
    ) -> RolloutStatus:
        """The running rollout of ``pack_id`` in ``project``, else its last one (``not_found``
        when it never had one)."""
        return await self._rollouts.status(pack_id, _check_project(project))

    async def promote_rollout(
        self, pack_id: str, *, project: str = DEFAULT_PROJECT, actor: str = "system"
    ) -> RolloutStatus:
        """Jump the running rollout of ``pack_id`` to 100%: every installation it covers moves to
        the new version (``not_found`` when none is running)."""
        check_id("pack id", pack_id)
        _check_actor(actor)
        return await self._rollouts.request(pack_id, _check_project(project), "promote", actor)

    async def abort_rollout(
        self,
        pack_id: str,
        *,
        project: str = DEFAULT_PROJECT,
        actor: str = "system",
        drain_timeout: float | None = None,
    ) -> RolloutStatus:
        """Abort the running rollout of ``pack_id``: every installation it moved goes back to the
        version it had (one ``rollout_aborted`` event lists them); runs in flight finish on the
        new version. With ``drain_timeout``, wait up to that many seconds for them to end
        (``draining`` in the status says how many are left)."""
        check_id("pack id", pack_id)
        _check_actor(actor)
        _check_timeout("drain_timeout", drain_timeout)
        project = _check_project(project)
        status = await self._rollouts.request(pack_id, project, "abort", actor)
        if drain_timeout is not None:
            deadline = anyio.current_time() + drain_timeout
            while (status.draining or status.state != "aborted") and (
                anyio.current_time() < deadline
            ):
                await anyio.sleep(0.05)
                await self._refresh_remote_runs()
                status = await self._rollouts.status(pack_id, project)
        return status

    def events(self, since: int = 0, *, follow: bool = False) -> AsyncIterator[Event]:
        """The fleet's events after the cursor ``since`` (0: from the first), oldest first:
        publishes, pin moves (with their origin), blocked updates, and rollout starts, steps,
        promotions, aborts and completions. With ``follow``, keep waiting for new ones (read
        every ``refresh_interval`` seconds, at least every second). Each event carries its
        ``cursor``: keep the last one handled and pass it back to resume after it, exactly once.

        >>> async def consume(rt):
        ...     async for event in rt.events(since=0):
        ...         print(event.cursor, event.kind)
        """
        check_whole("since (an event cursor)", since, 0, 2**63 - 1)
        check_flag("follow", follow)
        poll = min(self.refresh_interval, 1.0) or 1.0
        return read_events(self._store, since, follow, poll)

    def _end_run(self, run: Run) -> None:
        calls = self._tracker.end(run)
        if calls and run.workflow_id is not None:
            usage = self._usage.get(run.installation_id, WorkflowTools({}, {}))
            observed = dict(usage.observed)
            observed[run.workflow_id] = observed.get(run.workflow_id, frozenset()) | calls
            self._usage[run.installation_id] = WorkflowTools(usage.declared, observed)

    async def _end_all(self) -> None:
        for run in list(self._tracker.runs.values()):
            self._end_run(run)
        await self._tracker.flush_ends()
        self._release_idle_bundles()

    def in_flight(self, pack_id: str, version: str, *, project: str | None = None) -> int:
        """Runs in flight on ``pack_id`` ``version``: this runtime's, exactly, plus those other
        processes hold under live leases (as of the last refresh). With ``project``, only the runs
        of that project's installations; ``vendor:1.2.0`` or ``custom:1.2.0`` counts one
        channel's row."""
        check_id("pack id", pack_id)
        if project is not None or (isinstance(version, str) and ":" in version):
            return len(self.runs_in_flight(pack_id, version, project=project))
        return self._tracker.in_flight(pack_id, version_key(Version.parse(version)))

    def in_flight_for(self, installation_id: str) -> int:
        """Runs in flight of one installation (this runtime's plus other processes')."""
        check_id("installation id", installation_id)
        return self._tracker.in_flight_for(installation_id)

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

        return self._tracker.runs_on(pack_id, key, counts)

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
        poll = min(0.05, self.refresh_interval or 0.05)
        if not await self._tracker.wait(
            lambda: self.in_flight(pack_id, version, project=project), timeout, poll
        ):
            return
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
        tracker = self._tracker
        return RuntimeStats(
            tracker.started,
            len(tracker.runs),
            dict(tracker.adapter_runs),
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
        if flows_only(row):
            raise InvalidArgument(
                "pack to install",
                pack_id,
                [
                    "a pack with an integration, ontology, KB domain, workflow or data source: "
                    f"{pack_id} {row.version} holds process flows only, which are not installed "
                    "or pinned (read them with process_flows)"
                ],
            )
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
        await self._move_pin(
            installation_id,
            pin,
            actor=actor,
            origin=origin,
            expect_pin=expect_pin,
            project=project,
        )
        return self._resolver.installation(installation_id)

    async def _move_pin(
        self,
        installation_id: str,
        pin: str,
        *,
        actor: str = "system",
        origin: Origin = "user",
        expect_pin: str | None = None,
        project: str | None = None,
    ) -> PinEvent | None:
        """:meth:`set_pin`, saying what moved: the pin event, or ``None`` when nothing did."""
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

        return (await self._change_installation(installation_id, update))[1]

    async def set_policy(
        self,
        installation_id: str,
        policy: Policy,
        *,
        actor: str = "system",
        project: str | None = None,
        min_release_age: float | None = None,
        window: str | None = None,
    ) -> Installation:
        """Change how an installation follows new versions: ``manual``, ``auto_patch``,
        ``auto_minor``. Recorded on the installation; it ends a hold left by a manual move (the
        policy applies at once from the current version); no pin moves otherwise.

        ``min_release_age`` (seconds) makes an auto policy take a version only once it is that
        old (from its ``published_at``), passing over younger ones; ``window`` (such as
        ``"mon-fri 02:00-06:00"``, UTC) lets it move only inside that window. Each call sets both:
        ``None`` means the project's (:meth:`set_project_soak`), or none."""
        if policy not in POLICIES:
            raise InvalidArgument("policy", policy, POLICIES)
        _check_actor(actor)
        age = check_age("min_release_age", min_release_age)
        opens = None if window is None else UpdateWindow.parse(window)
        self._resolver.installation(
            installation_id, _optional_project(project)
        )  # not_found naming known ones
        soak = Soak(age, opens)
        scope = f"installation:{installation_id}"
        if soak != self._soak.get(scope, Soak()):
            async with self._lock:
                await self._store.set_soak(scope, soak._encode() if soak.is_set else None)
                self._set_soak(scope, soak)
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

    def _set_soak(self, scope: str, soak: Soak) -> None:
        if soak.is_set:
            self._soak[scope] = soak
        else:
            self._soak.pop(scope, None)

    def soak_of(self, installation_id: str) -> Soak:
        """The soak that governs an installation's update policy: its own ``min_release_age``
        and ``window``, each else its project's (:meth:`set_project_soak`)."""
        inst = self._resolver.installation(installation_id)
        own = self._soak.get(f"installation:{inst.id}", Soak())
        return own._over(self._soak.get(f"project:{inst.project}", Soak()))

    async def set_project_soak(
        self,
        min_release_age: float | None = None,
        *,
        window: str | None = None,
        project: str = DEFAULT_PROJECT,
        actor: str = "system",
    ) -> Soak:
        """Set the soak of every installation of ``project`` with an auto policy that does not
        set its own: a ``min_release_age`` (seconds) and an update ``window`` (``None``: none).
        Policies are applied again at once under the new setting."""
        age = check_age("min_release_age", min_release_age)
        opens = None if window is None else UpdateWindow.parse(window)
        _check_project(project)
        _check_actor(actor)
        soak = Soak(age, opens)
        scope = f"project:{project}"
        async with self._lock:
            await self._store.set_soak(scope, soak._encode() if soak.is_set else None)
            self._set_soak(scope, soak)
        logger.info(
            "packrun set the soak of project %s to %s by %s",
            project,
            soak.describe(),
            actor,
            extra={"event": "soak_set", "project": project, "actor": actor},
        )
        await self._apply_policies(
            [i for i in self._resolver.auto_installations() if i.project == project]
        )
        return soak

    def project_soak(self, project: str = DEFAULT_PROJECT) -> Soak:
        """The soak ``project`` set with :meth:`set_project_soak` (an empty one when none)."""
        return self._soak.get(f"project:{_check_project(project)}", Soak())

    # --- aliases --------------------------------------------------------------------------------

    async def set_alias(
        self,
        pack_id: str,
        name: str,
        version: str,
        *,
        project: str = DEFAULT_PROJECT,
        actor: str = "system",
        drain_timeout: float | None = None,
    ) -> AliasChange:
        """Point the alias ``name`` (``stable``, ``canary``) of ``pack_id`` in ``project`` at
        ``version`` (``1.2.0``, ``vendor:1.2.0``, ``custom:1.2.0``), creating it if new.

        Every installation pinned ``@name`` moves with it, in one transaction, each with a pin
        event of origin ``alias``; runs in flight finish on their version. With
        ``drain_timeout``, the call waits up to that many seconds for those installations' runs on
        the version left behind to end, and reports those still in flight.
        """
        check_alias_name(name)
        _check_project(project)
        _check_actor(actor)
        _check_timeout("drain_timeout", drain_timeout)
        self._resolver.rows(pack_id, project)  # not_found naming the packs the project sees
        pin = normalize_pin(version, "version")
        if follows(pin):
            raise InvalidArgument("version", version, ["an exact version such as 1.2.0"])
        row = self._row(pack_id, version, project)
        if row.contract is not None:
            check_generation(row.pack_id, str(row.version), row.contract, self.generations)
        pin = exact_pin(row, self._resolver.custom_keys(pack_id, project))
        return await move_alias(
            self, Alias(project, pack_id, name, pin, actor, _now()), row, drain_timeout
        )

    def aliases(self, pack_id: str | None = None, *, project: str = DEFAULT_PROJECT) -> list[Alias]:
        """The aliases of ``project`` (of one pack, when given), by pack and name: ``.name
        .version .actor .at``."""
        _check_project(project)
        if pack_id is not None:
            self._resolver.rows(pack_id, project)
        return [
            a
            for a in self._resolver.all_aliases(project)
            if pack_id is None or a.pack_id == pack_id
        ]

    async def _update_installation(self, installation_id: str, update: Update) -> Installation:
        return (await self._change_installation(installation_id, update))[0]

    async def _change_installation(
        self, installation_id: str, update: Update
    ) -> tuple[Installation, PinEvent | None]:
        async with self._lock:
            changed, event = await self._store.update_installation(installation_id, update)
            events = self._resolver.history(installation_id)
            self._resolver.set_installation(
                changed, kept_events(changed, [*events, event] if event else events)
            )
        if event is not None:
            _log_pin_move(changed.pack_id, event, changed)
        return changed, event

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
        blocked: list[NewEvent] = []
        try:
            await self._apply_each_policy(installations, blocked)
        finally:
            if blocked:
                try:
                    await self._store.append_events(blocked)
                except PackrunError as exc:
                    self._warn("events", f"could not record blocked updates in {self.url}: {exc}")

    async def _apply_each_policy(
        self, installations: Sequence[Installation], blocked: list[NewEvent]
    ) -> None:
        for inst in installations:
            if inst.policy == "manual" or follows(inst.pin):
                continue
            current = self._cells[inst.id].value
            if current is None:
                continue
            target, refused = policy_target(
                inst.policy,
                current.entry,
                self._resolver.rows(inst.pack_id, inst.project),
                inst.allow_prerelease,
                self._diff_of,
                hold=Version.parse(inst.hold) if inst.hold else None,
                soak=self.soak_of(inst.id),
                now=self._clock(),
            )
            blocked.extend(blocked_events(inst, refused))
            for b in refused:  # come back when a soaking version is old enough, a window opens
                if b.until is not None and (self._due is None or b.until < self._due):
                    self._due = b.until
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
        until = None
        if inst.policy != "manual" and not follows(inst.pin):
            until = self.soak_of(inst.id)._soaks_until(target.published_at)
            if until is not None and until <= self._clock():
                until = None
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
            notices_between(rows, current, target) if target.version > current.version else (),
            until,
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

    async def bulk_update(
        self,
        selector: Selector | str,
        *,
        to: str | None = None,
        dry_run: bool = True,
        actor: str = "system",
        acknowledge_breaking: bool = False,
    ) -> BulkPlan:
        """Update every installation ``selector`` picks (a :class:`~packrun.Selector` or text such
        as ``"pack=acme,version=1.1.0,policy=auto_patch"``) to ``to`` (default: each one's update
        available, as :meth:`review_update` takes it).

        With ``dry_run=True`` (the default) nothing moves: the :class:`~packrun.BulkPlan` says what
        would (moves, blocked with reasons, runs in flight, affected workflows). With
        ``dry_run=False`` the same plan is made and applied, one transaction per installation,
        each only if its pin is still the one the plan saw; the plan returned says what moved.
        Majors and breaking targets stay blocked unless ``acknowledge_breaking=True``.
        """
        _check_actor(actor)
        check_flag("dry_run", dry_run)
        check_flag("acknowledge_breaking", acknowledge_breaking)
        plan = bulk_plan(self, "update", selector, to, acknowledge_breaking)
        return plan if dry_run else await bulk_apply(self, plan, actor)

    async def bulk_rollback(
        self,
        selector: Selector | str,
        *,
        to: str,
        dry_run: bool = True,
        actor: str = "system",
        drain_timeout: float | None = None,
    ) -> BulkPlan:
        """Roll back every installation ``selector`` picks to ``to``, as :meth:`bulk_update` does
        (a plan with ``dry_run=True``, the default; the moves with ``dry_run=False``). An update
        policy then holds, as after :meth:`rollback`. With ``drain_timeout``, a real run waits up
        to that many seconds for the moved installations' runs on the versions left to end, and
        reports those still in flight (``drained``, ``still_in_flight``)."""
        _check_actor(actor)
        check_flag("dry_run", dry_run)
        _check_timeout("drain_timeout", drain_timeout)
        plan = bulk_plan(self, "rollback", selector, to, True)
        if dry_run:
            return plan
        done = await bulk_apply(self, plan, actor)
        if drain_timeout is None or not done.moves:
            return done
        return await wait_drained(self, done, drain_timeout)

    def _runs_of(self, installation_id: str, key: str) -> tuple[str, ...]:
        """The runs of one installation in flight on one version (key), here and elsewhere."""
        return self._tracker.runs_of(installation_id, key)

    async def _wait_for_runs(
        self, installation_id: str, pack_id: str, version: str, timeout: float
    ) -> tuple[str, ...]:
        key = version_key(Version.parse(version))
        return await self._tracker.wait(lambda: self._runs_of(installation_id, key), timeout, 0.05)

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
    fleet_interval: float = 1.0,
    count_health: bool = True,
    clock: Callable[[], datetime] | None = None,
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

    Every ``fleet_interval`` seconds the runtime writes its health counts to the store (and reads
    the fleet's: :meth:`Runtime.health`) and takes its turn at driving rollouts;
    ``count_health=False`` turns the counting of calls off.
    ``clock`` (a function returning an aware ``datetime``; default: the system's UTC time) is
    what update policies read for release ages and update windows; tests pass their own.
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
        fleet_interval=fleet_interval,
        count_health=count_health,
        clock=clock,
        retention=retention,
    )
