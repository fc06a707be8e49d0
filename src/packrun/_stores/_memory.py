"""The in-memory store (``memory:``): for tests and one-process experiments; gone when closed.

It keeps the same rules as the persistent stores: writes are serialised, the publish decision is
taken under the same lock that guards the rows, and every write appends to the change log.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from packrun._catalog import CatalogEntry, Prepared
from packrun._stores import (
    ACTIVE_ROLLOUT_STATES,
    Alias,
    AliasMove,
    Change,
    Decide,
    HealthDelta,
    Installation,
    LiveRun,
    NewEvent,
    PinEvent,
    RolloutRow,
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
    stream_settings,
)
from packrun._stores._fleet import pin_move_body, publish_body
from packrun.errors import InstallationExists, NotFound, RolloutInProgress, SourceError

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """State in dictionaries of this process. Each ``memory:`` store is private to its runtime.

    It keeps the bindings of the latest ended runs for a resume, at least ``ended_runs_kept / 2``
    and at most ``ended_runs_kept`` of them; a run id ended before those starts afresh."""

    ended_runs_kept = 100_000

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = anyio.Lock()
        self._settings = Settings()
        self._project_settings: dict[str, dict[str, bool]] = {}
        self._entries: dict[tuple[str, str, str], CatalogEntry] = {}  # pack, project, version key
        self._artifacts: dict[str, bytes] = {}
        self._installations: dict[str, Installation] = {}
        self._events: list[PinEvent] = []
        self._changes: list[Change] = []
        self._runs: dict[str, RunRecord] = {}  # runs in flight (or held by another owner)
        # Ended runs, for a resume: plain tuples, which the garbage collector stops tracking.
        self._ended: dict[str, tuple[Any, ...]] = {}
        self._ended_before: dict[str, tuple[Any, ...]] = {}  # the half before, dropped whole
        self._live: dict[str, tuple[str, float]] = {}  # run id -> (owner, lease until)
        self._declared: dict[tuple[str, str], frozenset[str]] = {}
        self._observed: dict[tuple[str, str], frozenset[str]] = {}
        self._sources: dict[str, tuple[str, str | None]] = {}
        self._source_leases: dict[str, tuple[str, float]] = {}
        self._health: dict[tuple[str, str, str, str, str], int] = {}
        self._rollouts: dict[str, RolloutRow] = {}
        self._rollout_leases: dict[str, tuple[str, float]] = {}
        self._log_events: list[StoredEvent] = []
        self._dedupe: set[str] = set()
        self._aliases: dict[tuple[str, str, str], Alias] = {}
        self._soak: dict[str, str] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _log(self, kind: str, key: str) -> None:
        self._changes.append(Change(len(self._changes) + 1, kind, key))  # type: ignore[arg-type]

    async def load(self) -> StoreState:
        async with self._lock:
            return StoreState(
                self._settings,
                list(self._entries.values()),
                list(self._installations.values()),
                list(self._events),
                len(self._changes),
                {p: dict(v) for p, v in self._project_settings.items()},
            )

    async def changes(self, since: int) -> list[Change]:
        return self._changes[since:]

    async def pack_entries(self, pack_id: str) -> list[CatalogEntry]:
        return [e for (p, _, _), e in self._entries.items() if p == pack_id]

    async def installation(
        self, installation_id: str
    ) -> tuple[Installation | None, list[PinEvent]]:
        events = [e for e in self._events if e.installation_id == installation_id]
        return self._installations.get(installation_id), events

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
        stored = dataclasses.replace(event, seq=len(self._events) + 1)
        self._events.append(stored)
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
            ended = self._ended.pop(run_id, None) or self._ended_before.pop(run_id, None)
            if ended is None:
                self._runs[run_id] = record
                self._live[run_id] = (owner, lease_until)
                return (record, False, None)
            existing = self._runs[run_id] = RunRecord._make(ended)
        holder = self._live.get(run_id)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return (existing, True, holder[0])
        self._live[run_id] = (owner, lease_until)
        return (existing, True, None)

    async def end_runs(self, ends: Sequence[RunEnd], owner: str, at: datetime) -> None:
        for run_id, calls in ends:
            holder = self._live.get(run_id)
            if holder is not None and holder[0] == owner:
                del self._live[run_id]
                holder = None
            record = self._runs.get(run_id)
            if record is None:
                continue
            if holder is None:
                del self._runs[run_id]
                ended = self._ended
                ended[run_id] = tuple(record)
                if len(ended) >= self.ended_runs_kept // 2:  # two halves: no scan, no per-run cost
                    self._ended_before, self._ended = ended, {}
            if record.workflow_id is not None and calls:
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
                self._dedupe.add(dedupe)
            self._log_events.append((len(self._log_events) + 1, kind, at, pack, project, body))

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
        return self._log_events[since : since + limit]

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
