"""Run bookkeeping: which runs are in flight, here and elsewhere, and their durable records.

A :class:`RunTracker` belongs to one runtime. It gives runs their ids, writes their starts to the
store (on PostgreSQL concurrent starts share one transaction it leads; SQLite groups them in a
writer thread of its own), counts them in and out per ``(pack, version)`` and per installation,
writes their ends behind in batches, renews their leases, reads the runs other processes hold, and
waits for drains. The runtime binds a run (its resolution, its dispatcher, its checks); the tracker
keeps the books.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from typing import TypeVar

import anyio

from packrun._retention import RemoteRuns
from packrun._runs import Run
from packrun._stores import LiveRun, RunRecord, StartedRun, Store
from packrun._versions import version_key
from packrun.errors import InvalidArgument, PackrunError

__all__ = ["RunTracker"]

logger = logging.getLogger("packrun")

_T = TypeVar("_T")

END_BATCH_SECONDS = 0.005  # ends of a busy moment share one write
_END_RETRY_SECONDS = 1.0  # between attempts to write ends while the store is away
_HELD_RETRIES = 40  # about 0.2 s of waiting for another runtime's end of the run to be written
_NO_CALLS: frozenset[str] = frozenset()


class _StartWaiter:
    __slots__ = ("done", "error", "record", "result")

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.done = anyio.Event()
        self.result: StartedRun | None = None
        self.error: BaseException | None = None


class RunTracker:
    """The run books of one runtime (``owner`` in the store's leases).

    ``warn(kind, message)`` reports a failure of a background write (rate-limited by the runtime);
    ``ends_written()`` is called after each background write of run ends.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        lease_ttl: float,
        warn: Callable[[str, str], None],
        ends_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._ends_written = ends_written
        self.owner = owner
        self.lease_ttl = lease_ttl
        self._warn = warn
        self.runs: dict[str, Run] = {}
        """This runtime's runs in flight, by id."""
        self.remote: list[LiveRun] = []
        self.remote_runs = RemoteRuns(owner)
        """Other runtimes' runs in flight, as of the last :meth:`refresh_remote`."""
        self.by_version: dict[tuple[str, str], int] = {}  # (pack, version key) -> runs here
        self.by_installation: dict[str, int] = {}
        self.started = 0
        self.adapter_runs: dict[tuple[str, str, str], int] = {}
        self._adapter_warned: dict[tuple[str, str], float] = {}
        self._starting: set[str] = set()
        self._pending_starts: list[_StartWaiter] = []
        self._start_leader = False
        self._pending_ends: dict[str, frozenset[str]] = {}  # run id -> the tools it called
        self._ends_ready = anyio.Event()
        self._ends_signalled = False  # whether _ends_ready is set (cheaper to read than to ask)
        self._ids = count()
        # Whether the store records a start without an await (see begin_now).
        self._sync_start = type(store).start_run_now is not Store.start_run_now
        self._id_prefix = os.urandom(8).hex()

    # --- starts ---------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A run id unique across processes: this runtime's 16 random hex digits, ``-``, and a
        counter in hex (``3f9c2a7be01d4c55-1a``)."""
        return f"{self._id_prefix}-{next(self._ids):x}"

    def begin_now(self, record: RunRecord, fresh: bool = False) -> StartedRun | None:
        """:meth:`begin` without an await, on a store that records a start at once (the
        in-memory store); ``None`` when the start has to be awaited (:meth:`begin` then). Nothing
        here suspends, so a run starts on that store with no checkpoint, as it would through
        :meth:`begin`. A ``fresh`` run id (one :meth:`new_id` gave) cannot be in flight, queued
        to end or started concurrently: it needs no reservation."""
        if not self._sync_start:
            return None
        run_id = record.run_id
        if not fresh and (run_id in self.runs or run_id in self._starting):
            raise InvalidArgument("run id", run_id, ["an id that is not in flight in this runtime"])
        now = time.time()
        started = self._store.start_run_now(record, self.owner, now, now + self.lease_ttl)
        if started is None or started[2] is not None:
            return None  # held elsewhere: begin() waits a moment for its end, then refuses it
        if not fresh:
            self._starting.add(run_id)
            self._pending_ends.pop(run_id, None)  # ended a moment ago and reopened: moot now
        return started

    async def begin(self, record: RunRecord) -> StartedRun:
        """Reserve the run's id, write its start and return its binding (the original one for a
        run id seen before). The reservation lasts until :meth:`admit` or :meth:`abandon`."""
        run_id = record.run_id
        if run_id in self.runs or run_id in self._starting:
            raise InvalidArgument("run id", run_id, ["an id that is not in flight in this runtime"])
        self._starting.add(run_id)  # reserved before the first await: a concurrent start is refused
        self._pending_ends.pop(run_id, None)  # ended a moment ago and reopened: its end is moot
        try:
            store = self._store
            if store.group_commit:
                started = await self._record_start(record)
            else:  # the in-memory store: no write to share, one frame fewer
                now = time.time()
                started = (
                    await store.start_runs((record,), self.owner, now, now + self.lease_ttl)
                )[0]
            for _ in range(_HELD_RETRIES):
                if started[2] is None:
                    return started
                # Ended elsewhere a moment ago? Ends are written behind, within a few milliseconds.
                await anyio.sleep(END_BATCH_SECONDS)
                started = await self._record_start(record)
            held_by = started[2]
            if held_by is None:
                return started
            raise InvalidArgument(
                "run id",
                run_id,
                [
                    f"an id not in flight elsewhere (runtime {held_by[:8]} holds it under a live lease)"
                ],
            )
        except BaseException:
            self._starting.discard(run_id)
            raise

    def admit(self, run: Run) -> None:
        """Count a bound run in (its id was reserved by :meth:`begin`)."""
        self._starting.discard(run.run_id)
        self.runs[run.run_id] = run
        key = (run.pack_id, run.version_key)
        by_version = self.by_version
        by_version[key] = by_version.get(key, 0) + 1
        by_installation = self.by_installation
        by_installation[run.installation_id] = by_installation.get(run.installation_id, 0) + 1
        self.started += 1
        if run.adapter is not None:
            self._count_adapter_run(run)

    def abandon(self, run_id: str) -> None:
        """A run whose start was written but which could not be bound: end it in the store."""
        self._starting.discard(run_id)
        self.queue_end(run_id)

    def _count_adapter_run(self, run: Run) -> None:
        assert run.adapter is not None
        key3 = (run.pack_id, run.version, run.adapter)
        self.adapter_runs[key3] = self.adapter_runs.get(key3, 0) + 1
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
        # must reach the caller's cleanup with it rather than lose it here.
        with anyio.CancelScope(shield=True):
            await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    # --- ends -----------------------------------------------------------------------------------

    def end(self, run: Run) -> frozenset[str] | None:
        """Count ``run`` out and queue its end for the store; return the tools it called when
        it is a workflow's run (else none: only a workflow's usage records them; ``None`` when
        it was not in flight here: ended already, or replaced)."""
        run._end()
        if self.runs.pop(run.run_id, None) is not run:
            return None
        key = (run.pack_id, run.version_key)
        by_version = self.by_version
        left = by_version[key] - 1
        if left:
            by_version[key] = left
        else:
            del by_version[key]
        by_installation = self.by_installation
        left = by_installation[run.installation_id] - 1
        if left:
            by_installation[run.installation_id] = left
        else:
            del by_installation[run.installation_id]
        # The tools called matter to the store only for a run of a workflow (its usage).
        calls = frozenset(run._calls) if run._calls and run.workflow_id is not None else _NO_CALLS
        self._pending_ends[run.run_id] = calls
        if not self._ends_signalled:
            self._ends_signalled = True
            self._ends_ready.set()
        return calls

    def queue_end(self, run_id: str, calls: frozenset[str] = frozenset()) -> None:
        self._pending_ends[run_id] = calls
        if not self._ends_signalled:
            self._ends_signalled = True
            self._ends_ready.set()

    async def end_loop(self) -> None:
        """Write queued ends in batches, until cancelled."""
        while True:
            await self._ends_ready.wait()
            await anyio.sleep(END_BATCH_SECONDS)  # let the ends of a busy moment share a write
            self._ends_ready = anyio.Event()
            self._ends_signalled = False
            if not await self.flush_ends():
                await anyio.sleep(_END_RETRY_SECONDS)  # the store is away: try again later
                self._ends_signalled = True
                self._ends_ready.set()
            self._ends_written()

    async def flush_ends(self) -> bool:
        """Write the pending ends; ``False`` when the store failed (they are pending again)."""
        if not self._pending_ends:
            return True
        batch, self._pending_ends = list(self._pending_ends.items()), {}
        try:
            with anyio.CancelScope(shield=True):  # taken from the queue: it must reach the store
                await self._store.end_runs(batch, self.owner, datetime.now(UTC))
        except PackrunError as exc:  # kept for the next attempt; meanwhile the leases run out
            for run_id, calls in batch:
                if run_id not in self.runs and run_id not in self._pending_ends:
                    self._pending_ends[run_id] = calls  # unless reopened or ended again since
            self._warn(
                "run ends",
                f"could not record the end of {len(batch)} run(s) in {self._store.url}: {exc}",
            )
            return False
        return True

    # --- leases and other processes' runs -------------------------------------------------------

    async def lease_loop(self) -> None:
        """Renew this runtime's leases every third of their length, until cancelled."""
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            if self.runs:
                try:
                    with anyio.CancelScope(shield=True):
                        await self._store.renew_leases(
                            self.owner, list(self.runs), time.time() + self.lease_ttl
                        )
                except Exception as exc:
                    self._warn("lease", f"could not renew run leases in {self._store.url}: {exc}")

    async def refresh_remote(self) -> None:
        """Read which runs other runtimes hold under live leases: only what changed since the last
        read (leases that ran out are dropped as they pass)."""
        delta = await self._store.run_changes(self.remote_runs.cursor, self.owner)
        if self.remote_runs.apply(delta):
            self.remote = self.remote_runs.listed()

    # --- in-flight queries ----------------------------------------------------------------------

    def in_flight(self, pack_id: str, key: str) -> int:
        """Runs in flight on ``pack_id`` at version key ``key``, here and elsewhere."""
        remote = sum(
            1
            for r in self.remote
            if r.record.pack_id == pack_id and version_key(r.record.version) == key
        )
        return self.by_version.get((pack_id, key), 0) + remote

    def in_flight_for(self, installation_id: str) -> int:
        """Runs in flight of one installation, here and elsewhere."""
        remote = sum(1 for r in self.remote if r.record.installation_id == installation_id)
        return self.by_installation.get(installation_id, 0) + remote

    def runs_on(self, pack_id: str, key: str, counts: Callable[[str, str], bool]) -> list[str]:
        """The ids of the runs in flight on ``pack_id`` at version key ``key``, here and
        elsewhere, whose ``(installation, channel)`` ``counts`` accepts; sorted."""
        mine = [
            r.run_id
            for r in self.runs.values()
            if r.pack_id == pack_id
            and r.version_key == key
            and counts(r.installation_id, r.channel)
        ]
        theirs = [
            r.record.run_id
            for r in self.remote
            if r.record.pack_id == pack_id
            and version_key(r.record.version) == key
            and counts(r.record.installation_id, r.record.channel)
        ]
        return sorted(mine + theirs)

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

    async def wait(self, still: Callable[[], _T], timeout: float | None, poll: float) -> _T:
        """Poll (reading other processes' runs each time) until ``still()`` is empty or zero, or
        ``timeout`` seconds pass; return its last answer."""
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            await self.refresh_remote()
            left_runs = still()
            if not left_runs:
                return left_runs
            left = None if deadline is None else deadline - anyio.current_time()
            if left is not None and left <= 0:
                return left_runs
            await anyio.sleep(min(poll, left or poll))
