"""The in-memory store (``memory:``): for tests and one-process experiments; gone when closed.

It keeps the same rules as the persistent stores: writes are serialised, the publish decision is
taken under the same lock that guards the rows, and every write appends to the change log.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio

from packrun._catalog import CatalogEntry, Prepared
from packrun._retention import Retention
from packrun._stores import (
    ACTIVE_ROLLOUT_STATES,
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
    kept_events,
    stream_settings,
)
from packrun._stores._fleet import pin_move_body, publish_body
from packrun.errors import InstallationExists, NotFound, RolloutInProgress, SourceError

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """State in dictionaries of this process. Each ``memory:`` store is private to its runtime."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = anyio.Lock()
        self._settings = Settings()
        self._project_settings: dict[str, dict[str, bool]] = {}
        self._entries: dict[tuple[str, str, str], CatalogEntry] = {}  # pack, project, version key
        self._artifacts: dict[str, bytes] = {}
        self._installations: dict[str, Installation] = {}
        self._events: dict[str, list[PinEvent]] = {}  # by installation, oldest first
        self._event_seq = 0
        self._changes: list[Change] = []
        self._writers: list[str | None] = []  # the writer of each line of ``_changes``
        self._change_times: list[float] = []
        self._horizon = 0  # the newest change-log line pruned
        self._run_seq = 0
        self._touched: dict[str, int] = {}  # run id -> its change sequence, in that order
        self._ended_at: dict[str, float] = {}  # run id -> when it ended (wall clock)
        self._owners: dict[str, str] = {}  # run id -> who started or reopened it last
        self._runs: dict[str, RunRecord] = {}
        self._live: dict[str, tuple[str, float]] = {}  # run id -> (owner, lease until)
        self._declared: dict[tuple[str, str], frozenset[str]] = {}
        self._observed: dict[tuple[str, str], frozenset[str]] = {}
        self._sources: dict[str, tuple[str, str | None]] = {}
        self._source_leases: dict[str, tuple[str, float]] = {}
        self._health: dict[tuple[str, str, str, str, str], int] = {}
        self._rollouts: dict[str, RolloutRow] = {}
        self._rollout_leases: dict[str, tuple[str, float]] = {}
        self._log_events: list[StoredEvent] = []  # oldest first; pruned from the front
        self._log_seq = 0  # the last sequence number given (never reused)
        self._dedupe: dict[str, int] = {}  # dedupe key -> the sequence number of its event
        self._aliases: dict[tuple[str, str, str], Alias] = {}
        self._soak: dict[str, str] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _log(self, kind: str, key: str) -> None:
        seq = self._head() + 1
        self._changes.append(Change(seq, kind, key))  # type: ignore[arg-type]
        self._writers.append(self.writer)
        self._change_times.append(time.time())

    def _head(self) -> int:
        return self._changes[-1].seq if self._changes else self._horizon

    def _touch(self, run_id: str) -> None:
        self._run_seq += 1
        self._touched.pop(run_id, None)
        self._touched[run_id] = self._run_seq

    async def load(self) -> StoreState:
        async with self._lock:
            return StoreState(
                self._settings,
                list(self._entries.values()),
                list(self._installations.values()),
                [
                    e
                    for i in self._installations.values()
                    for e in kept_events(i, self._events.get(i.id, []))
                ],
                self._head(),
                {p: dict(v) for p, v in self._project_settings.items()},
            )

    async def changes(self, since: int) -> list[Change]:
        return [c for c in self._changes if c.seq > since]

    async def changes_since(self, since: int, writer: str | None) -> ChangeBatch:
        head = self._head()
        if head <= since:
            return ChangeBatch([], head)
        first = self._changes[0].seq if self._changes else head + 1
        start = max(0, since + 1 - first)  # lines are numbered without gaps
        return ChangeBatch(
            [
                c
                for c, w in zip(self._changes[start:], self._writers[start:], strict=True)
                if w is None or w != writer
            ],
            head,
            since < self._horizon,
        )

    async def pin_events(
        self, installation_id: str, limit: int, before: int | None = None
    ) -> list[PinEvent]:
        events = self._events.get(installation_id, [])
        older = [e for e in reversed(events) if before is None or e.seq < before]
        return older[:limit]

    async def run_changes(self, cursor: int | None, skip_owner: str | None = None) -> RunDelta:
        now = time.time()
        if cursor is None:
            return RunDelta(self._run_seq, await self.live_runs(now), [], now, full=True)
        live: list[LiveRun] = []
        gone: list[str] = []
        for run_id, seq in reversed(self._touched.items()):
            if seq <= cursor:
                break
            holder = self._live.get(run_id)
            if skip_owner is not None and self._owners.get(run_id) == skip_owner:
                continue
            if holder is not None and holder[1] > now:
                live.append(LiveRun(self._runs[run_id], *holder))
            else:
                gone.append(run_id)
        return RunDelta(self._run_seq, live, gone, now)

    async def gc(
        self,
        retention: Retention,
        *,
        dry_run: bool = False,
        now: float | None = None,
        batch: int = 1000,
        pause: float = 0.0,
    ) -> GcReport:
        async with self._lock:
            now = time.time() if now is None else now
            runs = [
                run_id
                for run_id, at in self._ended_at.items()
                if run_id not in self._live and at < now - retention.ended_runs
            ]
            runs += [
                run_id
                for run_id, (_, until) in self._live.items()
                if until < now - retention.ended_runs
            ]
            pruned: dict[str, list[PinEvent]] = {}
            events = 0
            for iid, kept in self._events.items():
                inst = self._installations.get(iid)
                keep = {e.seq for e in kept_events(inst, kept)} if inst is not None else set()
                old = [
                    e
                    for e in kept
                    if e.seq not in keep and e.at.timestamp() < now - retention.pin_events
                ]
                events += len(old)
                if old:
                    gone = {e.seq for e in old}
                    pruned[iid] = [e for e in kept if e.seq not in gone]
            cutoff = now - retention.change_log
            lines = 0
            for t in self._change_times[:-1]:  # a prefix, never the newest line
                if t >= cutoff:
                    break
                lines += 1
            log_cutoff = now - retention.event_log
            log = [e[0] for e in self._log_events if e[2].timestamp() < log_cutoff]
            report = GcReport(len(runs), events, lines, dry_run, len(log))
            if dry_run:
                return report
            for run_id in runs:
                self._runs.pop(run_id, None)
                self._live.pop(run_id, None)
                self._ended_at.pop(run_id, None)
                self._touched.pop(run_id, None)
                self._owners.pop(run_id, None)
            self._events.update(pruned)
            if lines:
                self._horizon = self._changes[lines - 1].seq
                del self._changes[:lines], self._writers[:lines], self._change_times[:lines]
            if log:
                gone = set(log)
                self._log_events = [e for e in self._log_events if e[0] not in gone]
                self._dedupe = {k: seq for k, seq in self._dedupe.items() if seq not in gone}
            return report

    async def pack_entries(self, pack_id: str) -> list[CatalogEntry]:
        return [e for (p, _, _), e in self._entries.items() if p == pack_id]

    async def installation(
        self, installation_id: str
    ) -> tuple[Installation | None, list[PinEvent]]:
        inst = self._installations.get(installation_id)
        if inst is None:
            return None, []
        return inst, kept_events(inst, self._events.get(installation_id, []))

    async def settings(self) -> Settings:
        return self._settings

    async def project_settings(self) -> dict[str, dict[str, bool]]:
        return {p: dict(v) for p, v in self._project_settings.items()}

    async def publish(self, prepared: Prepared, decide: Decide) -> CatalogEntry:
        async with self._lock:
            entry = dataclasses.replace(prepared.entry, published_at=datetime.now(UTC))
            settings = stream_settings(self._settings, self._project_settings, entry)
            action = decide(await self.pack_entries(entry.pack_id), settings)
            key = (entry.pack_id, entry.project, entry.version_key)
            if action == "replace":  # an overwrite keeps the row's state: a retired row stays so
                entry = dataclasses.replace(entry, state=self._entries[key].state)
            self._entries[key] = entry
            if entry.digest is not None and prepared.artifact is not None:
                self._artifacts.setdefault(entry.digest, prepared.artifact)
            self._log("pack", entry.pack_id)
            self._add_events([("publish", entry.pack_id, entry.project, publish_body(entry), None)])
            return entry

    async def retire(self, pack_id: str, version_key: str, project: str = "") -> CatalogEntry:
        async with self._lock:
            entry = self._entries.get((pack_id, project, version_key))
            if entry is None:
                raise NotFound("version", f"{pack_id} {version_key}")
            retired = dataclasses.replace(entry, state="retired")
            self._entries[(pack_id, project, version_key)] = retired
            self._log("pack", pack_id)
            return retired

    async def set_setting(self, name: str, value: bool, project: str = "") -> Settings:
        async with self._lock:
            if project:
                self._project_settings.setdefault(project, {})[name] = value
            else:
                self._settings = dataclasses.replace(self._settings, **{name: value})
            self._log("settings", f"{project}/{name}" if project else name)
            return self._settings

    def _append_event(self, event: PinEvent) -> PinEvent:
        self._event_seq += 1
        stored = dataclasses.replace(event, seq=self._event_seq)
        self._events.setdefault(event.installation_id, []).append(stored)
        inst = self._installations[event.installation_id]
        self._add_events([("pin_move", inst.pack_id, inst.project, pin_move_body(event), None)])
        return stored

    async def create_installation(self, installation: Installation, event: PinEvent) -> PinEvent:
        async with self._lock:
            existing = self._installations.get(installation.id)
            if existing is not None and existing.project != installation.project:
                raise InstallationExists(existing.id)
            if existing is not None:
                raise InstallationExists(existing.id, existing.pack_id, existing.pin)
            self._installations[installation.id] = installation
            stored = self._append_event(event)
            self._log("installation", installation.id)
            return stored

    async def update_installation(
        self, installation_id: str, update: Update
    ) -> tuple[Installation, PinEvent | None]:
        async with self._lock:
            current = self._installations.get(installation_id)
            if current is None:
                raise NotFound("installation", installation_id)
            changed, event = update(current)
            if changed == current and event is None:
                return current, None  # nothing changed: nothing written, nothing logged
            self._installations[installation_id] = changed
            stored = self._append_event(event) if event is not None else None
            self._log("installation", installation_id)
            return changed, stored

    async def start_runs(
        self, records: Sequence[RunRecord], owner: str, now: float, lease_until: float
    ) -> list[StartedRun]:
        return [self.start_run_now(record, owner, now, lease_until) for record in records]

    def start_run_now(
        self, record: RunRecord, owner: str, now: float, lease_until: float
    ) -> StartedRun:
        run_id = record.run_id
        existing = self._runs.get(run_id)
        if existing is None:
            self._runs[run_id] = record
            self._live[run_id] = (owner, lease_until)
            self._owners[run_id] = owner
            self._touch(run_id)
            return (record, False, None)
        holder = self._live.get(run_id)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return (existing, True, holder[0])
        self._live[run_id] = (owner, lease_until)
        self._owners[run_id] = owner
        self._ended_at.pop(run_id, None)
        self._touch(run_id)
        return (existing, True, None)

    async def end_runs(self, ends: Sequence[RunEnd], owner: str, at: datetime) -> None:
        for run_id, calls in ends:
            holder = self._live.get(run_id)
            if holder is not None and holder[0] == owner:
                del self._live[run_id]
                self._ended_at[run_id] = at.timestamp()
                self._touch(run_id)
            record = self._runs.get(run_id)
            if record is not None and record.workflow_id is not None and calls:
                key = (record.installation_id, record.workflow_id)
                self._observed[key] = self._observed.get(key, frozenset()) | calls
                self._log("usage", record.installation_id)

    async def declare_workflow(
        self, installation_id: str, workflow_id: str, tools: Sequence[str]
    ) -> None:
        self._declared[(installation_id, workflow_id)] = frozenset(tools)
        self._log("usage", installation_id)

    async def all_workflow_tools(self) -> dict[str, WorkflowTools]:
        ids = {i for i, _ in self._declared} | {i for i, _ in self._observed}
        return {i: await self.workflow_tools(i) for i in ids}

    async def workflow_tools(self, installation_id: str) -> WorkflowTools:
        return WorkflowTools(
            {w: t for (i, w), t in self._declared.items() if i == installation_id},
            {w: t for (i, w), t in self._observed.items() if i == installation_id},
        )

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_until: float) -> None:
        for run_id in run_ids:
            holder = self._live.get(run_id)
            if holder is not None and holder[0] == owner:
                self._live[run_id] = (owner, lease_until)
                self._touch(run_id)

    async def live_runs(self, now: float) -> list[LiveRun]:
        return [
            LiveRun(self._runs[run_id], owner, until)
            for run_id, (owner, until) in self._live.items()
            if until > now
        ]

    async def artifact(self, digest: str) -> bytes:
        try:
            return self._artifacts[digest]
        except KeyError:
            raise NotFound("artifact", digest) from None

    # --- pack sources -------------------------------------------------------------------------

    async def sources(self) -> list[SourceRow]:
        return [(name, spec, status) for name, (spec, status) in sorted(self._sources.items())]

    async def add_source(self, name: str, spec: str) -> None:
        async with self._lock:
            if name in self._sources:
                raise SourceError(name, "a source of that name exists: remove it first")
            self._sources[name] = (spec, None)
            self._log("source", name)

    async def remove_source(self, name: str) -> bool:
        async with self._lock:
            if self._sources.pop(name, None) is None:
                return False
            self._source_leases.pop(name, None)
            self._log("source", name)
            return True

    async def claim_source(self, name: str, owner: str, ttl: float) -> str | None:
        async with self._lock:
            if name not in self._sources:
                raise NotFound("source", name, sorted(self._sources))
            now = time.time()
            holder, until = self._source_leases.get(name, (owner, 0.0))
            if holder != owner and until > now:
                return holder
            self._source_leases[name] = (owner, now + ttl)
            return None

    async def release_source(self, name: str, owner: str) -> None:
        async with self._lock:
            if self._source_leases.get(name, ("", 0.0))[0] == owner:
                del self._source_leases[name]

    async def save_source_status(self, name: str, status: str) -> None:
        async with self._lock:
            if name in self._sources:
                self._sources[name] = (self._sources[name][0], status)
                self._log("source", name)

    # --- health, rollouts and events ------------------------------------------------------------

    def _add_events(self, events: Sequence[NewEvent]) -> None:
        at = datetime.now(UTC)
        for kind, pack, project, body, dedupe in events:
            if dedupe is not None:
                if dedupe in self._dedupe:
                    continue
                self._dedupe[dedupe] = self._log_seq + 1
            self._log_seq += 1
            self._log_events.append((self._log_seq, kind, at, pack, project, body))

    async def add_health(self, deltas: Sequence[HealthDelta]) -> None:
        async with self._lock:
            for *key, n in deltas:
                k = (key[0], key[1], key[2], key[3], key[4])
                self._health[k] = self._health.get(k, 0) + n

    async def health_rows(self) -> list[HealthDelta]:
        return [(*k, n) for k, n in self._health.items()]

    async def append_events(self, events: Sequence[NewEvent]) -> None:
        async with self._lock:
            self._add_events(events)

    async def read_events(self, since: int, limit: int) -> list[StoredEvent]:
        start = bisect.bisect_right(self._log_events, since, key=lambda e: e[0])
        return self._log_events[start : start + limit]

    async def create_rollout(
        self, row: RolloutRow, owner: str, ttl: float, events: Sequence[NewEvent]
    ) -> None:
        async with self._lock:
            for other in self._rollouts.values():
                if (
                    other.pack_id == row.pack_id
                    and other.project == row.project
                    and other.state in ACTIVE_ROLLOUT_STATES
                ):
                    version = json.loads(other.body).get("version", "?")
                    raise RolloutInProgress(row.pack_id, row.project, other.id, version)
            self._rollouts[row.id] = row
            self._rollout_leases[row.id] = (owner, time.time() + ttl)
            self._add_events(events)

    async def rollouts(
        self, pack_id: str | None = None, *, active: bool = False
    ) -> list[RolloutRow]:
        return [
            r
            for r in self._rollouts.values()
            if (pack_id is None or r.pack_id == pack_id)
            and (not active or r.state in ACTIVE_ROLLOUT_STATES)
        ]

    async def save_rollout(self, row: RolloutRow, events: Sequence[NewEvent]) -> bool:
        async with self._lock:
            stored = self._rollouts.get(row.id)
            if stored is None or stored.rev != row.rev - 1:
                return False
            self._rollouts[row.id] = row
            self._add_events(events)
            return True

    async def claim_rollout(self, rollout_id: str, owner: str, ttl: float) -> bool:
        async with self._lock:
            now = time.time()
            held = self._rollout_leases.get(rollout_id)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self._rollout_leases[rollout_id] = (owner, now + ttl)
            return True

    # --- aliases and soak settings ------------------------------------------------------------

    async def aliases(self) -> list[Alias]:
        return [self._aliases[k] for k in sorted(self._aliases)]

    async def set_alias(
        self, alias: Alias, moves: AliasMove
    ) -> tuple[Alias | None, list[PinEvent]]:
        async with self._lock:
            key = (alias.project, alias.pack_id, alias.name)
            before = self._aliases.get(key)
            pinned = [
                i
                for i in sorted(self._installations.values(), key=lambda i: i.id)
                if (i.project, i.pack_id, i.pin) == (alias.project, alias.pack_id, f"@{alias.name}")
            ]
            events = moves(before, pinned)
            self._aliases[key] = alias
            stored = []
            for event in events:
                stored.append(self._append_event(event))
                self._log("installation", event.installation_id)
            self._log("alias", f"{alias.project}/{alias.pack_id}/{alias.name}")
            return before, stored

    async def soak_settings(self) -> dict[str, str]:
        return dict(self._soak)

    async def set_soak(self, scope: str, value: str | None) -> None:
        async with self._lock:
            if value is None:
                self._soak.pop(scope, None)
            else:
                self._soak[scope] = value
            self._log("soak", scope)
