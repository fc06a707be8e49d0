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
import math
import time
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
from packrun._auth import Auth
from packrun._bundle import load_bundle, read_bundle
from packrun._catalog import (
    CHANNELS,
    CatalogEntry,
    Channel,
    ContentEntry,
    decide_publish,
    prepare,
    strict_check,
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
    Rollback,
    UpdateReview,
    affected_workflows,
    changed_tools,
    newer_rows,
    policy_target,
    why_acknowledge,
)
from packrun._resolver import DYNAMIC_PINS, Explanation, Resolution, Resolver, normalize_pin
from packrun._runs import RunScope, RuntimeStats
from packrun._stores import (
    ORIGINS,
    POLICIES,
    Installation,
    Origin,
    PinEvent,
    Policy,
    Settings,
    Store,
    Update,
    WorkflowTools,
    default_url,
    open_store,
)
from packrun._tracker import RunTracker
from packrun._tracker import check_id as _check_id
from packrun._versions import Version, version_key
from packrun.errors import (
    BreakingDiff,
    DrainTimeout,
    InvalidArgument,
    InvalidBundle,
    NotFound,
    PackrunError,
)

__all__ = ["Runtime", "open_runtime"]

logger = logging.getLogger("packrun")


def _now() -> datetime:
    return datetime.now(UTC)


def _manifest_of(row: CatalogEntry) -> Manifest:
    """A row's integration manifest; a pack without one diffs as a manifest of its version only."""
    if row.manifest is not None:
        return row.manifest
    return decode_manifest({"id": row.pack_id, "version": str(row.version), "tools": [{"id": "_"}]})


def _check_timeout(what: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise InvalidArgument(what, value, ["None (no limit) or a number of seconds of 0 or more"])


def _check_actor(value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or not value.isprintable():
        shown = value[:60] if isinstance(value, str) else value
        raise InvalidArgument(
            "actor", shown, ["1 to 200 printable characters (no control characters)"]
        )


_NO_AUTH = Auth.none()


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
        in_process: Collection[str] = frozenset(),
        sandbox: SandboxMode = "auto",
        sandbox_limits: SandboxLimits | None = None,
    ) -> None:
        if isinstance(in_process, str) or not all(c in CHANNELS for c in in_process):
            raise InvalidArgument(
                "channels trusted to run in-process",
                sorted(in_process) if not isinstance(in_process, str) else in_process,
                [f"a set of channels among {', '.join(CHANNELS)}"],
            )
        if sandbox_limits is not None and not isinstance(sandbox_limits, SandboxLimits):
            raise InvalidArgument("sandbox_limits", sandbox_limits, ["a packrun.SandboxLimits"])
        effective_mode(sandbox)  # a mode outside process, bwrap, auto is refused here
        if lease_ttl <= 0:
            raise InvalidArgument("lease_ttl", lease_ttl, ["a number of seconds above 0"])
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
        self._seq = 0
        self._lock = anyio.Lock()  # orders this runtime's writes and refreshes
        self._task_group: anyio.abc.TaskGroup | None = None
        self._last_warning: dict[str, float] = {}
        self._dispatchers: dict[str, Dispatcher] = {}
        self._sandboxed: dict[tuple[str, str], Dispatcher] = {}
        self.in_process = frozenset(in_process)
        """The channels whose code this runtime trusts to run in its own process."""
        self.sandbox = sandbox
        """How other channels' code is contained: ``process``, ``bwrap`` or ``auto``."""
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        """The limits sandbox workers run under."""
        self._pool = WorkerPool(sandbox, self.sandbox_limits, self.generations)
        self._diffs: dict[tuple[object, ...], DiffReport] = {}
        self._usage: dict[str, WorkflowTools] = {}
        self._tracker = RunTracker(
            store,
            lease_ttl=lease_ttl,
            tool_threads=tool_threads,
            resolve=self.resolve,
            dispatcher=self._dispatcher,
            observe=self._observe_calls,
            warn=self._warn,
        )

    @property
    def lease_ttl(self) -> float:
        """Seconds a run's lease lasts unless renewed; a dead process's runs expire after it."""
        return self._tracker.lease_ttl

    @property
    def owner(self) -> str:
        """This runtime's id as the holder of run leases."""
        return self._tracker.owner

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._store.url

    @property
    def settings(self) -> Settings:
        """The store-wide settings as last seen."""
        return self._settings

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
            self._task_group.start_soon(self._tracker.lease_loop)
            self._task_group.start_soon(self._tracker.end_loop)
            self._task_group.start_soon(self._reap_loop)
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
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
                self._task_group = None
            await self._tracker.close()  # runs still open when the runtime closes
        finally:
            try:
                await self._pool.close()
            finally:
                await self._store.close()

    async def _load(self) -> None:
        state = await self._store.load()
        self._settings = state.settings
        by_pack: dict[str, list[CatalogEntry]] = {}
        for entry in state.entries:
            by_pack.setdefault(entry.pack_id, []).append(entry)
        for pack_id, rows in by_pack.items():
            self._resolver.set_pack(pack_id, rows)
        events: dict[str, list[PinEvent]] = {}
        for event in state.events:
            events.setdefault(event.installation_id, []).append(event)
        for inst in state.installations:
            self._resolver.set_installation(inst, events.get(inst.id, []))
        self._usage = await self._store.all_workflow_tools()
        self._seq = state.seq

    async def _refresh_loop(self) -> None:
        while True:
            # Returns early when the store hears of a change (PostgreSQL's NOTIFY).
            await self._store.wait_for_change(self.refresh_interval)
            try:
                with anyio.CancelScope(shield=True):  # a close waits for it: no query cancelled
                    await self.refresh()
            except Exception as exc:  # never let a refresh take the host's code down
                self._warn(f"could not refresh from {self.url}: {exc}")

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(self.sandbox_limits.idle_timeout / 2)
            with anyio.CancelScope(shield=True):
                await self._pool.reap_idle()

    @property
    def sandbox_workers(self) -> list[int]:
        """The process ids of this runtime's sandbox workers alive now."""
        return self._pool.pids

    def _warn(self, message: str) -> None:
        # The hot path keeps answering from memory; say so, at most once a minute per kind.
        kind = message.split(" ", 2)[1] if message.count(" ") >= 2 else message
        now = time.monotonic()
        if now - self._last_warning.get(kind, -120.0) > 60:
            self._last_warning[kind] = now
            logger.warning("packrun %s", message)

    async def refresh(self) -> None:
        """Apply what other runtimes wrote to the store since the last refresh, and read which
        runs other processes hold in flight. Runs on its own every ``refresh_interval`` seconds;
        call it to catch up at once."""
        async with self._lock:
            await self._tracker.refresh_remote()
            changes = await self._store.changes(self._seq)
            if not changes:
                return
            packs = {c.key for c in changes if c.kind == "pack"}
            installations = {c.key for c in changes if c.kind == "installation"}
            self._seq = changes[-1].seq
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

    async def _refresh_one(self, what: str, reload: Awaitable[None]) -> None:
        # A row that cannot be read is skipped with a warning; it must not hold back the others.
        try:
            await reload
        except PackrunError as exc:
            self._warn(f"skipped {what} while refreshing from {self.url}: {exc}")
        except (ValueError, TypeError) as exc:  # a row damaged outside packrun
            self._warn(f"skipped {what} while refreshing from {self.url}: unreadable row ({exc})")

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
        except KeyError:
            raise NotFound("installation", installation_id) from None
        if value is None:
            raise NotFound("version satisfying the pin of installation", installation_id)
        return value

    def explain(self, installation_id: str) -> Explanation:
        """Why ``installation_id`` resolves as it does: pin, policy, candidates, what was skipped
        and why, an available update, and the last pin move."""
        why = self._resolver.explain(installation_id)
        inst = why.installation
        if inst.policy == "manual" or why.resolution is None or inst.pin in DYNAMIC_PINS:
            return why
        _, blocked = policy_target(
            inst.policy,
            why.resolution.entry,
            self._resolver.rows(inst.pack_id),
            inst.allow_prerelease,
            self._diff_of,
        )
        waiting = tuple(str(b) for b in blocked if b.waits_for_review)
        return dataclasses.replace(why, update_blocked=waiting)

    # --- catalog --------------------------------------------------------------------------------

    async def publish(
        self, source: bytes | str | Path, *, channel: Channel = "vendor", force: bool = False
    ) -> CatalogEntry:
        """Publish a bundle (its bytes or file) or a source folder (pack or integration source).

        Checks the version layers, the contract generation and the code against its manifest, then
        applies the publish rules inside the store's transaction: immutable versions (on by
        default; ``force`` changes nothing then), a republish needing ``force`` when they are off,
        the per-line order, and one version number per pack whatever its channel. The row and
        the artifact are stored atomically. Resolutions pick the new row up at once.
        """
        prepared = await anyio.to_thread.run_sync(
            partial(
                prepare,
                source,
                channel=channel,
                generations=self.generations,
                strict_versions=self._settings.strict_versions,
                now=_now(),
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
        # Catch up first: installations made elsewhere meanwhile must count too. The publish has
        # committed: a failed catch-up is a warning, and policies apply to what is known.
        try:
            await self.refresh()
        except PackrunError as exc:
            self._warn(f"could not refresh from {self.url} after a publish: {exc}")
        await self._apply_policies(self._resolver.auto_installations_of(entry.pack_id))
        return entry

    async def _write_row(self, write: Awaitable[CatalogEntry]) -> CatalogEntry:
        async with self._lock:
            entry = await write
            self._resolver.put_row(entry)
            return entry

    async def retire(self, pack_id: str, version: str) -> CatalogEntry:
        """Take a version out of ``latest`` pins and update targets; exact pins keep working."""
        key = version_key(Version.parse(version))
        self._resolver.rows(pack_id)  # not_found naming the known packs
        entry = await self._write_row(self._store.retire(pack_id, key))
        pinned = self.pinned_to(pack_id, key)
        if pinned:
            shown = ", ".join(pinned[:10]) + (", ..." if len(pinned) > 10 else "")
            logger.warning(
                "packrun retired %s %s; %d installation(s) pinned to it keep running it: %s",
                pack_id,
                key,
                len(pinned),
                shown,
            )
        return entry

    def pinned_to(self, pack_id: str, version: str) -> list[str]:
        """The installations whose pin resolves to ``pack_id`` ``version`` now (by id)."""
        key = version_key(Version.parse(version))
        return [
            inst.id
            for inst in self._resolver.installations()
            if inst.pack_id == pack_id
            and (res := self._cells[inst.id].value) is not None
            and res.entry.version_key == key
        ]

    def packs(self) -> list[str]:
        """The ids of every pack with a published version, sorted."""
        return self._resolver.packs()

    def versions(self, pack_id: str) -> list[CatalogEntry]:
        """Every published version of a pack, ascending, live and retired."""
        return self._resolver.rows(pack_id)

    def process_flows(self, pack_id: str) -> dict[str, ContentEntry]:
        """A pack's process flows: each from the latest live version that carries it."""
        return self._resolver.process_flows(pack_id)

    async def set_immutable_versions(self, on: bool) -> None:
        """Immutable versions (on by default): a republish is refused whatever ``force`` says."""
        await self._set_setting("immutable_versions", on)

    async def set_strict_versions(self, on: bool) -> None:
        """Strict versions (off by default): only ``MAJOR.MINOR.PATCH`` may be published."""
        await self._set_setting("strict_versions", on)

    async def _set_setting(self, name: str, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidArgument(name.replace("_", " "), value, ["True", "False"])
        async with self._lock:
            self._settings = await self._store.set_setting(name, value)

    async def artifact(self, digest: str) -> bytes:
        """The bytes of a published artifact."""
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
        return RunScope(self._tracker, installation_id, run_id, workflow_id, auth or _NO_AUTH)

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
        async with self.run(
            installation_id, run_id=run_id, workflow_id=workflow_id, auth=auth
        ) as r:
            return await r.call(tool, input)

    async def _dispatcher(self, digest: str, channel: str, installation_id: str) -> Dispatcher:
        if channel not in self.in_process:
            return await self._sandbox_dispatcher(digest, installation_id)
        dispatcher = self._dispatchers.get(digest)
        if dispatcher is None:
            data = await self._store.artifact(digest)
            loaded = await anyio.to_thread.run_sync(
                partial(
                    load_bundle,
                    data,
                    expected_digest=digest,
                    generations=self.generations,
                    stage="run",
                )
            )
            dispatcher = self._dispatchers[digest] = dispatcher_for(loaded, self.generations)
        return dispatcher

    async def _sandbox_dispatcher(self, digest: str, installation_id: str) -> Dispatcher:
        # One worker serves one digest of one project: credentials never reach a worker that
        # another project's code runs in.
        try:
            installation = self._resolver.installation(installation_id)
            project = str(getattr(installation, "project", "default"))
        except NotFound:
            project = "default"
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

    def in_flight(self, pack_id: str, version: str) -> int:
        """Runs in flight on ``pack_id`` ``version``: this runtime's, exactly, plus those other
        processes hold under live leases (as of the last refresh)."""
        return self._tracker.in_flight(pack_id, version)

    def in_flight_for(self, installation_id: str) -> int:
        """Runs in flight of one installation (this runtime's plus other processes')."""
        return self._tracker.in_flight_for(installation_id)

    def runs_in_flight(self, pack_id: str, version: str) -> list[str]:
        """The ids of the runs in flight on ``pack_id`` ``version``, here and elsewhere."""
        return self._tracker.runs_in_flight(pack_id, version)

    def stats(self) -> RuntimeStats:
        """Counters: runs started and in flight here, and runs served through adapters."""
        return self._tracker.stats()

    def _observe_calls(self, installation_id: str, workflow_id: str, calls: frozenset[str]) -> None:
        """Record the tools a workflow's run called (the observed usage reviews report)."""
        usage = self._usage.get(installation_id, WorkflowTools({}, {}))
        observed = dict(usage.observed)
        observed[workflow_id] = observed.get(workflow_id, frozenset()) | calls
        self._usage[installation_id] = WorkflowTools(usage.declared, observed)

    def version_status(
        self, pack_id: str, version: str
    ) -> Literal["active", "draining", "drained"]:
        """``active`` while an installation resolves to the version, then ``draining`` while runs
        are still in flight on it, then ``drained``."""
        if self.pinned_to(pack_id, version):
            return "active"
        return "draining" if self.in_flight(pack_id, version) else "drained"

    async def wait_drained(self, pack_id: str, version: str, timeout: float | None = None) -> None:
        """Wait until no run is in flight on ``pack_id`` ``version`` in any process (runs of a
        process that died count until their leases expire). ``drain_timeout`` after ``timeout``
        seconds, naming the runs still in flight."""
        _check_timeout("timeout", timeout)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            await self._tracker.refresh_remote()
            if not self.in_flight(pack_id, version):
                return
            left = None if deadline is None else deadline - anyio.current_time()
            if left is not None and left <= 0:
                break
            await anyio.sleep(min(0.05, self.refresh_interval or 0.05, left or 0.05))
        raise DrainTimeout(pack_id, version, timeout or 0.0, self.runs_in_flight(pack_id, version))

    # --- installations --------------------------------------------------------------------------

    def _target(
        self, installation_id: str, pack_id: str, pin: str, allow_prerelease: bool
    ) -> CatalogEntry:
        row = self._resolver.pick(pack_id, pin, allow_prerelease)
        if row is None:
            rows = self._resolver.rows(pack_id)
            raise NotFound(
                f"version of {pack_id} that pin",
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
    ) -> Installation:
        """Install ``pack_id`` as ``installation_id``.

        Without a pin, the installation is pinned to the exact version ``latest`` picks now, so
        later releases are inert until an update. ``pin`` may be ``latest``, ``latest-vendor``,
        ``latest-custom`` or an exact version (which may be a pre-release or retired).
        """
        _check_id("installation id", installation_id)
        _check_actor(actor)
        self._resolver.rows(pack_id)  # not_found naming the known packs
        if policy not in POLICIES:
            raise InvalidArgument("policy", policy, POLICIES)
        if pin is None:
            pin = str(self._target(installation_id, pack_id, "latest", allow_prerelease).version)
        pin = normalize_pin(pin)
        row = self._target(installation_id, pack_id, pin, allow_prerelease)
        now = _now()
        inst = Installation(installation_id, pack_id, pin, policy, allow_prerelease, now)
        event = PinEvent(
            0, installation_id, actor, "install", None, pin, None, str(row.version), now
        )
        async with self._lock:
            stored = await self._store.create_installation(inst, event)
            self._resolver.set_installation(inst, [stored])
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
    ) -> Installation:
        """Move an installation's pin; the move is recorded with ``actor`` and ``origin``.

        The pin's previous value and version are read inside the store's transaction, so
        concurrent moves (in this process or another) are each recorded from what they replaced.
        With ``expect_pin``, the move happens only if the pin is still that (as read in the
        transaction): how update policies avoid undoing a concurrent manual update.
        """
        if origin not in ORIGINS:
            raise InvalidArgument("origin", origin, ORIGINS)
        _check_actor(actor)
        current = self._resolver.installation(installation_id)
        pin = normalize_pin(pin)
        row = self._target(installation_id, current.pack_id, pin, current.allow_prerelease)
        at = _now()

        def update(stored: Installation) -> tuple[Installation, PinEvent | None]:
            if expect_pin is not None and stored.pin != expect_pin:
                return stored, None  # moved meanwhile (here or elsewhere): leave it as it is
            before = self._resolver.pick(stored.pack_id, stored.pin, stored.allow_prerelease)
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
            return dataclasses.replace(stored, pin=pin), event

        return await self._update_installation(installation_id, update)

    async def set_policy(self, installation_id: str, policy: Policy) -> Installation:
        """Change how an installation follows new versions: ``manual``, ``auto_patch``,
        ``auto_minor``. Recorded on the installation; no pin moves."""
        if policy not in POLICIES:
            raise InvalidArgument("policy", policy, POLICIES)
        self._resolver.installation(installation_id)  # not_found naming known installations
        changed = await self._update_installation(
            installation_id, lambda stored: (dataclasses.replace(stored, policy=policy), None)
        )
        await self._apply_policies([changed])
        return self._resolver.installation(installation_id)

    async def _update_installation(self, installation_id: str, update: Update) -> Installation:
        async with self._lock:
            changed, event = await self._store.update_installation(installation_id, update)
            events = self._resolver.history(installation_id)
            self._resolver.set_installation(changed, [*events, event] if event else events)
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
                self._resolver.rows(inst.pack_id),
                inst.allow_prerelease,
                self._diff_of,
            )
            if target is None:
                continue
            try:
                await self.set_pin(
                    inst.id,
                    str(target.version),
                    actor=f"policy:{inst.policy}",
                    origin="policy",
                    expect_pin=inst.pin,  # a concurrent update wins over this policy move
                )
            except PackrunError as exc:  # one installation must not hold back the others
                self._warn(f"update policy could not move {inst.id} to {target.version}: {exc}")

    def review_update(self, installation_id: str, to: str | None = None) -> UpdateReview:
        """What updating ``installation_id`` to ``to`` (default: the newest version on its channel)
        would do: from/to, bump, findings, verdict, the workflows that use a changed tool (declared
        with :meth:`declare_workflow`, and observed from runs), and the runs in flight."""
        inst = self._resolver.installation(installation_id)
        current = self.resolve(installation_id).entry
        rows = self._resolver.rows(inst.pack_id)
        if to is None:
            newer = newer_rows(current, rows, inst.allow_prerelease)
            if not newer:
                raise NotFound(
                    f"newer version of {inst.pack_id} on the {current.channel} channel than "
                    f"{current.version} for installation",
                    installation_id,
                )
            target = newer[-1]
        else:
            target = self._row(inst.pack_id, to)
        report = self._diff_of(current, target)
        tools = {t.id for e in (current, target) if e.manifest for t in e.manifest.tools}
        changed = changed_tools(report.findings, tools)
        usage = self._usage.get(installation_id, WorkflowTools({}, {}))
        in_flight = self._tracker.runs_of(installation_id, current.version_key)
        return UpdateReview(
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
        )

    def _row(self, pack_id: str, version: str) -> CatalogEntry:
        key = version_key(Version.parse(version))
        for row in self._resolver.rows(pack_id):
            if row.version_key == key:
                return row
        raise NotFound(
            f"version of {pack_id}", version, [str(r.version) for r in self._resolver.rows(pack_id)]
        )

    async def declare_workflow(
        self, installation_id: str, workflow_id: str, tools: Sequence[str]
    ) -> None:
        """Declare which tools of an installation a workflow uses, for update reviews."""
        self._resolver.installation(installation_id)
        _check_id("workflow id", workflow_id)
        if isinstance(tools, str) or not all(isinstance(t, str) and t for t in tools):
            raise InvalidArgument(
                "list of tool ids", tools, ["a list of tool ids, such as ['list_contacts']"]
            )
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
    ) -> UpdateReview:
        """Move an installation's pin to ``to`` (default: the newest version on its channel).

        Runs in flight finish on their version; new runs use the new one. A major, or a target
        with breaking findings or a red verdict, needs ``acknowledge_breaking=True`` (the admin has
        seen :meth:`review_update`); without it the call fails with ``breaking_diff``. Returns the
        review of the update made.
        """
        review = self.review_update(installation_id, to)
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
        await self.set_pin(installation_id, review.to_version, actor=actor, origin="user")
        return review

    async def rollback(
        self,
        installation_id: str,
        to: str,
        *,
        actor: str = "system",
        drain_timeout: float | None = None,
    ) -> Rollback:
        """Move an installation's pin back to an earlier version ``to`` (live or retired).

        The version left behind drains: its runs finish on it. With ``drain_timeout``, the call
        waits up to that many seconds for this installation's runs on it to end, and reports the
        runs still in flight when the time runs out. An update policy still applies afterwards: set
        the policy to ``manual`` to hold the installation where the rollback put it.
        """
        _check_timeout("drain_timeout", drain_timeout)
        current = self.resolve(installation_id).entry
        target = self._row(current.pack_id, to)
        if target.version >= current.version:
            raise InvalidArgument(
                "rollback target", to, [f"a version below the current {current.version}"]
            )
        await self.set_pin(installation_id, str(target.version), actor=actor, origin="rollback")
        left = str(current.version)
        if drain_timeout is None:
            return Rollback(installation_id, left, str(target.version), None, ())
        still = await self._wait_for_runs(installation_id, current.pack_id, left, drain_timeout)
        return Rollback(installation_id, left, str(target.version), not still, still)

    async def _wait_for_runs(
        self, installation_id: str, pack_id: str, version: str, timeout: float
    ) -> tuple[str, ...]:
        deadline = anyio.current_time() + timeout
        key = version_key(Version.parse(version))
        while True:
            await self._tracker.refresh_remote()
            still = self._tracker.runs_of(installation_id, key)
            left = deadline - anyio.current_time()
            if not still or left <= 0:
                return still
            await anyio.sleep(min(0.05, left))

    def installations(self) -> list[Installation]:
        """Every installation, by id."""
        return self._resolver.installations()

    def installation(self, installation_id: str) -> Installation:
        """One installation."""
        return self._resolver.installation(installation_id)

    def history(self, installation_id: str) -> list[PinEvent]:
        """Every pin move of an installation, oldest first: ``.actor .origin .from_version
        .to_version .at``."""
        return self._resolver.history(installation_id)


def open_runtime(
    url: str | None = None,
    *,
    generations: Collection[int] = DEFAULT_GENERATIONS,
    refresh_interval: float = 0.1,
    lease_ttl: float = 30.0,
    tool_threads: int = 40,
    in_process: Collection[str] = frozenset(),
    sandbox: SandboxMode = "auto",
    sandbox_limits: SandboxLimits | None = None,
) -> Runtime:
    """A runtime on the store at ``url``; use it with ``async with``.

    ``url`` defaults to ``$PACKRUN_STORE``, else the embedded SQLite file ``./.packrun/state.db``.
    ``generations`` restricts the contract generations admitted (``{2}`` retires generation 1).
    ``refresh_interval`` bounds how stale this process may be on writes by other processes,
    ``lease_ttl`` how long the runs of a process that died keep counting as in flight, and
    ``tool_threads`` how many sync tools may run at once (in worker threads of their own).

    Bundle code runs in sandbox worker processes (``sandbox``: ``"process"``, ``"bwrap"``, or
    ``"auto"``: bubblewrap when installed) under ``sandbox_limits``, except the code of the
    channels listed in ``in_process`` (``{"vendor"}``), which this process trusts to import.

    >>> import anyio, packrun
    >>> async def main():
    ...     async with packrun.open_runtime("memory:") as rt:
    ...         return rt.installations()
    >>> anyio.run(main)
    []
    """
    return Runtime(
        open_store(default_url() if url is None else url),
        generations=generations,
        refresh_interval=refresh_interval,
        lease_ttl=lease_ttl,
        tool_threads=tool_threads,
        in_process=in_process,
        sandbox=sandbox,
        sandbox_limits=sandbox_limits,
    )
