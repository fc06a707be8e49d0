"""Run bookkeeping: starting and ending runs, their durable bindings, leases and in-flight counts.

The runtime owns one :class:`RunTracker`. It starts a run by recording its binding in the store
(concurrent starts share one transaction), keeps the run's slot in the counts per
``(pack, version)`` and per installation until the run ends however it ends, writes ends behind in
batches, renews the leases of its runs so that other processes count them, and reads the runs
other processes hold. What a run resolves to and how its tools are dispatched are the runtime's,
passed in as functions.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio

from packrun._adapters import Dispatcher
from packrun._auth import Auth
from packrun._resolver import Resolution
from packrun._runs import RedactingLogger, Run, RuntimeStats
from packrun._stores import LiveRun, RunRecord, StartedRun, Store
from packrun._versions import Version, version_key
from packrun.errors import InvalidArgument, NotFound, PackrunError
from packrun.sdk import ToolContext

__all__ = ["RunTracker", "check_id"]

logger = logging.getLogger("packrun")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_END_BATCH_SECONDS = 0.005
_END_RETRY_SECONDS = 1.0  # between attempts to write ends while the store is away
_HELD_RETRIES = 40  # about 0.2 s of waiting for another runtime's end of the run to be written


def _now() -> datetime:
    return datetime.now(UTC)


def check_id(what: str, value: object) -> None:
    """Refuse an id (run, installation, workflow) that is not 1 to 200 safe characters."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = value[:60] if isinstance(value, str) else value
        raise InvalidArgument(
            what,
            shown,
            [
                "1 to 200 characters: letters, digits and . _ : @ / -, starting with a letter or digit"
            ],
        )


class _StartWaiter:
    __slots__ = ("done", "error", "record", "result")

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.done = anyio.Event()
        self.result: StartedRun | None = None
        self.error: BaseException | None = None


class RunTracker:
    """The runs of one runtime: their start and end, leases and counts."""

    def __init__(
        self,
        store: Store,
        *,
        lease_ttl: float,
        tool_threads: int,
        resolve: Callable[[str], Resolution],
        dispatcher: Callable[[str, str, str], Awaitable[Dispatcher]],
        observe: Callable[[str, str, frozenset[str]], None],
        warn: Callable[[str], None],
    ) -> None:
        self._store = store
        self._resolve = resolve
        self._dispatcher = dispatcher
        self._observe = observe
        self._warn = warn
        self.lease_ttl = lease_ttl
        """Seconds a run's lease lasts unless renewed; a dead process's runs expire after it."""
        self.owner = uuid.uuid4().hex
        """The id this tracker holds run leases under."""
        self.runs: dict[str, Run] = {}
        """This runtime's runs in flight, by run id."""
        self.remote: list[LiveRun] = []
        """Runs other processes hold under live leases, as of the last :meth:`refresh_remote`."""
        self._by_version: Counter[tuple[str, str]] = Counter()
        self._by_installation: Counter[str] = Counter()
        self._runs_started = 0
        self._adapter_runs: Counter[tuple[str, str, str]] = Counter()
        self._adapter_warned: dict[tuple[str, str], float] = {}
        self._pending_starts: list[_StartWaiter] = []
        self._starting: set[str] = set()
        # Sync tools get threads of their own: a runtime full of slow tools must still renew its
        # leases and record its runs (those use anyio's default threads).
        self._tool_threads = anyio.CapacityLimiter(tool_threads)
        self._start_leader = False
        self._pending_ends: dict[str, frozenset[str]] = {}  # run id -> the tools it called
        self._ends_ready = anyio.Event()

    async def close(self) -> None:
        """End the runs still open and write every pending end (shielded: it must finish)."""
        with anyio.CancelScope(shield=True):
            for run in list(self.runs.values()):
                self.end(run)
            await self.flush_ends()

    async def start(
        self, installation_id: str, run_id: str | None, workflow_id: str | None, auth: Auth
    ) -> Run:
        res = self._resolve(installation_id)
        if res.digest is None:
            raise NotFound("integration to run in pack", res.pack_id)
        if run_id is None:
            run_id = uuid.uuid4().hex
        else:
            check_id("run id", run_id)
        if run_id in self.runs or run_id in self._starting:
            raise InvalidArgument("run id", run_id, ["an id that is not in flight in this runtime"])
        self._starting.add(run_id)  # reserved before the first await: a concurrent start is refused
        self._pending_ends.pop(run_id, None)  # ended a moment ago and reopened: its end is moot
        try:
            return await self._open(run_id, installation_id, res, workflow_id, auth)
        finally:
            self._starting.discard(run_id)

    async def _open(
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
        run = Run(bound, dispatcher, ctx, resumed, key, self._tool_threads)
        self.runs[run.run_id] = run
        self._by_version[(run.pack_id, key)] += 1
        self._by_installation[run.installation_id] += 1
        self._runs_started += 1
        if run.adapter is not None:
            self._count_adapter_run(run)
        return run

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

    def end(self, run: Run) -> None:
        run._ended = True
        if self.runs.pop(run.run_id, None) is not run:
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
            self._observe(run.installation_id, run.workflow_id, calls)
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

    async def end_loop(self) -> None:
        while True:
            await self._ends_ready.wait()
            await anyio.sleep(_END_BATCH_SECONDS)  # let the ends of a busy moment share a write
            self._ends_ready = anyio.Event()
            if not await self.flush_ends():
                await anyio.sleep(_END_RETRY_SECONDS)  # the store is away: try again later
                self._ends_ready.set()

    async def flush_ends(self) -> bool:
        """Write the pending ends; ``False`` when the store failed (they are pending again)."""
        if not self._pending_ends:
            return True
        batch, self._pending_ends = list(self._pending_ends.items()), {}
        try:
            with anyio.CancelScope(shield=True):  # taken from the queue: it must reach the store
                await self._store.end_runs(batch, self.owner, _now())
        except PackrunError as exc:  # kept for the next attempt; meanwhile the leases run out
            for run_id, calls in batch:
                if run_id not in self.runs and run_id not in self._pending_ends:
                    self._pending_ends[run_id] = calls  # unless reopened or ended again since
            self._warn(
                f"could not record the end of {len(batch)} run(s) in {self._store.url}: {exc}"
            )
            return False
        return True

    def in_flight(self, pack_id: str, version: str) -> int:
        """Runs in flight on ``pack_id`` ``version``: this runtime's, exactly, plus those other
        processes hold under live leases (as of the last refresh)."""
        key = (pack_id, version_key(Version.parse(version)))
        remote = sum(
            1 for r in self.remote if (r.record.pack_id, version_key(r.record.version)) == key
        )
        return self._by_version.get(key, 0) + remote

    def in_flight_for(self, installation_id: str) -> int:
        """Runs in flight of one installation (this runtime's plus other processes')."""
        remote = sum(1 for r in self.remote if r.record.installation_id == installation_id)
        return self._by_installation.get(installation_id, 0) + remote

    def runs_in_flight(self, pack_id: str, version: str) -> list[str]:
        """The ids of the runs in flight on ``pack_id`` ``version``, here and elsewhere."""
        key = version_key(Version.parse(version))
        mine = [
            r.run_id for r in self.runs.values() if r.pack_id == pack_id and r.version_key == key
        ]
        theirs = [
            r.record.run_id
            for r in self.remote
            if r.record.pack_id == pack_id and version_key(r.record.version) == key
        ]
        return sorted(mine + theirs)

    def stats(self) -> RuntimeStats:
        """Counters: runs started and in flight here, and runs served through adapters."""
        return RuntimeStats(self._runs_started, len(self.runs), dict(self._adapter_runs))

    async def lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            if self.runs:
                try:
                    with anyio.CancelScope(shield=True):
                        await self._store.renew_leases(
                            self.owner, list(self.runs), time.time() + self.lease_ttl
                        )
                except Exception as exc:
                    self._warn(f"could not renew run leases in {self._store.url}: {exc}")

    async def refresh_remote(self) -> None:
        live = await self._store.live_runs(time.time())
        self.remote = [r for r in live if r.owner != self.owner]

    def runs_of(self, installation_id: str, key: str) -> tuple[str, ...]:
        """The runs of one installation in flight on one version (key), here and elsewhere."""
        mine = [
            r.run_id
            for r in self.runs.values()
            if r.installation_id == installation_id and r.version_key == key
        ]
        theirs = [
            r.record.run_id
            for r in self.remote
            if r.record.installation_id == installation_id and version_key(r.record.version) == key
        ]
        return tuple(sorted(mine + theirs))
