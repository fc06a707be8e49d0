"""Stores: where a runtime keeps the catalog, the artifacts, the installations and their history.

One interface, :class:`Store`, with an implementation per URL scheme (see :func:`open_store`).
Every write is one transaction, and the rules that depend on what exists (the publish rules) are
decided inside it, against the rows as they are then: two processes publishing the same version
race to exactly one winner. Every write also appends to a change log, which other runtimes on the
same store read to refresh their in-memory state.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, NamedTuple, TypeAlias, TypeVar

import anyio

from packrun._catalog import CatalogEntry, Prepared
from packrun._retention import Retention
from packrun._stores._pg_url import mask_url
from packrun.errors import StoreError

_Spec = TypeVar("_Spec")

__all__ = [
    "DEFAULT_PROJECT",
    "Alias",
    "AliasMove",
    "SCHEMES",
    "Change",
    "ChangeBatch",
    "Decide",
    "HealthDelta",
    "GcReport",
    "gc_in_batches",
    "Installation",
    "LiveRun",
    "Origin",
    "PinEvent",
    "Policy",
    "RunDelta",
    "RunEnd",
    "RunRecord",
    "RolloutRow",
    "Settings",
    "SourceRow",
    "StartedRun",
    "Store",
    "StoreState",
    "StoredEvent",
    "NewEvent",
    "Update",
    "WorkflowTools",
    "default_url",
    "kept_events",
    "open_store",
    "stream_settings",
]

Policy: TypeAlias = Literal["manual", "auto_patch", "auto_minor"]
"""How an installation follows new versions: ``manual`` (the default), ``auto_patch``, ``auto_minor``."""

POLICIES: Final[tuple[Policy, ...]] = ("manual", "auto_patch", "auto_minor")

Origin: TypeAlias = Literal["user", "policy", "rollback", "install", "rollout", "bulk", "alias"]
"""What moved a pin: a person (``user``), an update policy, a rollback, the install itself, a
ramped rollout (``rollout``: a step, a promotion or an abort), a bulk operation (``bulk``), or the
move of the alias the installation is pinned to (``alias``)."""

ORIGINS: Final[tuple[Origin, ...]] = (
    "user",
    "policy",
    "rollback",
    "install",
    "rollout",
    "bulk",
    "alias",
)

Decide: TypeAlias = Callable[[Sequence[CatalogEntry], "Settings"], Literal["insert", "replace"]]
"""The publish decision, given every row of the pack and the settings as they are inside the
store's transaction."""

Update: TypeAlias = Callable[["Installation"], "tuple[Installation, PinEvent | None]"]
"""An installation change, computed from the row as it is inside the store's transaction."""

SCHEMES: Final = ("memory", "sqlite", "postgresql")

DEFAULT_PROJECT: Final = "default"
"""The project of installations and custom rows made without naming one (and of every row and
installation of a store made before projects existed)."""


@dataclass(frozen=True, slots=True)
class Installation:
    """A pack installed for a tenant: what it is pinned to and how it follows new versions.

    ``pin`` is ``latest``, ``latest-vendor``, ``latest-custom`` or an exact version (``1.2.0``,
    ``vendor:1.2.0``, ``custom:1.2.0``). It belongs to one ``project``.
    """

    id: str
    pack_id: str
    pin: str
    policy: Policy
    allow_prerelease: bool
    created_at: datetime
    hold: str | None = None
    """The version a manual move (an update or a rollback) took the installation down from:
    an update policy moves it again only to a version above this one, or after ``set_policy``.
    ``None`` when no manual move holds it."""
    project: str = DEFAULT_PROJECT


@dataclass(frozen=True, slots=True)
class PinEvent:
    """One move of an installation's pin: who, why, from what to what, and when.

    ``from_version``/``to_version`` are what the pin resolved to before and after the move.
    """

    seq: int
    installation_id: str
    actor: str
    origin: Origin
    from_pin: str | None
    to_pin: str
    from_version: str | None
    to_version: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Alias:
    """A named pin (``stable``, ``canary``) of one pack in one project: the exact version it
    names now (``1.2.0``, ``vendor:1.2.0`` or ``custom:1.2.0``), who moved it last, and when.
    Installations pinned ``@name`` run what it names."""

    project: str
    pack_id: str
    name: str
    version: str
    actor: str
    at: datetime


AliasMove: TypeAlias = Callable[["Alias | None", "Sequence[Installation]"], "list[PinEvent]"]
"""The pin events of an alias move, computed inside the store's transaction from the alias as it
was (``None`` when new) and the installations pinned to it then."""


class RunRecord(NamedTuple):
    """The durable binding of a run: what it runs, from its start to its end, whatever pins do.

    Credentials are never part of it: they live only in the process that runs the run. (A named
    tuple rather than a frozen dataclass: one is made per run start, and it is made 3x faster.)
    """

    run_id: str
    installation_id: str
    pack_id: str
    version: str
    digest: str | None
    contract: int | None
    channel: str
    workflow_id: str | None
    started_at: datetime


RunEnd: TypeAlias = tuple[str, "frozenset[str]"]
"""A run's end as written: its id and the tools it called."""


@dataclass(frozen=True, slots=True)
class WorkflowTools:
    """Which tools the workflows of an installation use: ``declared`` through the API, and
    ``observed`` from the runs that called them."""

    declared: Mapping[str, frozenset[str]]
    observed: Mapping[str, frozenset[str]]


StartedRun: TypeAlias = tuple["RunRecord", bool, "str | None"]
"""What ``start_runs`` says of one run: its binding, whether it was resumed, and the owner that
holds it live elsewhere (``None`` when it was started or reopened here)."""


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A run in flight somewhere: its binding, the runtime that holds it, and its lease."""

    record: RunRecord
    owner: str
    lease_until: float
    """Wall-clock seconds (``time.time()``; on PostgreSQL, the server's clock) until which the
    owner vouches for the run."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Publish settings: immutable versions (on by default) and strict versions (off).

    The store's own settings govern the vendor stream, and every project that has not set its own.
    """

    immutable_versions: bool = True
    strict_versions: bool = False


SETTING_NAMES: Final = ("immutable_versions", "strict_versions")


def stream_settings(
    base: Settings, overrides: Mapping[str, Mapping[str, bool]], entry: CatalogEntry | str | None
) -> Settings:
    """The settings that govern a stream: the store's for the vendor stream (``None`` or a vendor
    row), and for a project (a custom row, or a project id) the store's overlaid with what that
    project set itself."""
    if entry is None or (isinstance(entry, CatalogEntry) and entry.channel == "vendor"):
        return base
    project = entry.project if isinstance(entry, CatalogEntry) else entry
    own = overrides.get(project)
    return dataclasses.replace(base, **own) if own else base


@dataclass(frozen=True, slots=True)
class Change:
    """One line of the change log: something about ``key`` (a pack id, an installation id) changed."""

    seq: int
    kind: Literal["pack", "installation", "settings", "usage", "source", "alias", "soak"]
    key: str


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """What :meth:`Store.changes_since` read: the lines other writers logged after a position."""

    changes: list[Change]
    """Lines after the position written by other runtimes, oldest first."""
    head: int
    """The newest line of the log (this runtime's own included): the position to read from next."""
    behind: bool = False
    """Lines after the position were pruned by retention: the reader must reload in full."""


@dataclass(frozen=True, slots=True)
class RunDelta:
    """What :meth:`Store.run_changes` read: the runs whose start, end, owner or lease changed
    since a cursor (or, for a first read, every run in flight)."""

    cursor: int
    """Where the next read starts."""
    live: list[LiveRun]
    """Runs changed (or, on a full read, every run) that are in flight under a live lease."""
    gone: list[str]
    """Ids of runs changed that are no longer in flight (ended, or their lease expired)."""
    now: float
    """The store's clock (seconds since the epoch): what leases are measured on."""
    full: bool = False
    """Whether this was a full read (``live`` is then every run in flight)."""


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one garbage collection pass deleted (or, with ``dry_run``, would delete)."""

    ended_runs: int = 0
    """Ended runs older than their retention (and abandoned runs: never ended, lease long expired)."""
    pin_events: int = 0
    """Pin events older than their retention, except each installation's last one and the one
    that set its hold."""
    changes: int = 0
    """Change-log lines older than their retention (never the newest line)."""
    dry_run: bool = False
    log_events: int = 0
    """Events of the fleet's event log (``rt.events``) older than their retention."""


async def gc_in_batches(
    kinds: Mapping[str, _Spec],
    count: Callable[[_Spec], Awaitable[int]],
    prune: Callable[[_Spec], Awaitable[int]],
    *,
    dry_run: bool,
    batch: int,
    pause: float,
) -> GcReport:
    """A garbage collection pass of a store that deletes in batches: for each kind
    (``ended_runs``, ``pin_events``, ``changes``, ``log_events``) and its store-specific ``spec``,
    ``count(spec)`` the rows with ``dry_run``, else ``prune(spec)`` one batch at a time (a batch
    is never cut by a close: the shield) with ``pause`` seconds between full batches."""
    counts: dict[str, int] = {}
    for kind, spec in kinds.items():
        if dry_run:
            counts[kind] = await count(spec)
            continue
        counts[kind] = 0
        while True:
            with anyio.CancelScope(shield=True):  # a close cancels between batches only
                deleted = await prune(spec)
            counts[kind] += deleted
            if deleted < batch:
                break
            await anyio.sleep(pause)
    return GcReport(
        counts["ended_runs"],
        counts["pin_events"],
        counts["changes"],
        dry_run,
        counts["log_events"],
    )


SourceRow: TypeAlias = tuple[str, str, "str | None"]
"""A pack source as stored: its name, its spec and its sync status (both JSON text; the status
``None`` until its first sync)."""


HealthDelta: TypeAlias = tuple[str, str, str, str, str, int]
"""What a runtime adds to the fleet's health figures: ``(pack, stream, version key, project,
metric, amount)``; the store keeps one sum per key and metric."""

NewEvent: TypeAlias = tuple[str, str, str, str, "str | None"]
"""An event to append: ``(kind, pack, project, body as JSON, dedupe key)``. An event whose
dedupe key is already in the log is not appended again (``None``: always appended)."""

StoredEvent: TypeAlias = tuple[int, str, datetime, str, str, str]
"""An event as read: ``(seq, kind, at, pack, project, body as JSON)``."""


@dataclass(frozen=True, slots=True)
class RolloutRow:
    """A rollout as stored: its state and its whole description (JSON). ``rev`` grows with every
    save: a save names the ``rev`` it read, so a concurrent change is never overwritten."""

    id: str
    pack_id: str
    project: str
    state: str
    rev: int
    body: str


ACTIVE_ROLLOUT_STATES: Final = ("running", "aborting")


@dataclass(slots=True)
class StoreState:
    """Everything a runtime holds in memory, as loaded from a store (artifacts excepted)."""

    settings: Settings
    entries: list[CatalogEntry] = field(default_factory=list)
    installations: list[Installation] = field(default_factory=list)
    events: list[PinEvent] = field(default_factory=list)
    """Per installation, the events resolution keeps (:func:`kept_events`), not its history; in
    no particular order."""
    seq: int = 0
    """The change-log position this state reflects."""
    project_settings: dict[str, dict[str, bool]] = field(default_factory=dict)
    """The settings projects set themselves, by project (see :func:`stream_settings`)."""


class Store(ABC):
    """The one store interface. Implementations: ``memory:``, ``sqlite:///path`` and
    ``postgresql://…``.

    What an implementation must guarantee:

    * ``publish`` and ``update_installation`` run their callback inside the write transaction,
      against rows that no concurrent writer can change before the commit: SQLite gets this from
      ``BEGIN IMMEDIATE``; PostgreSQL from an advisory lock per schema, taken first in every
      transaction that logs a change. Without it, two versions of one line could both pass the
      publish rule.
    * Change-log sequence numbers become visible in increasing order, so a reader that has seen
      ``n`` never misses a line below ``n`` later. PostgreSQL's sequence values can commit out of
      order, so its log inserts are serialised by that same lock.
    """

    url: str
    writer: str | None = None
    """The id of the runtime writing through this store: its change-log lines carry it, so that
    it can skip the echo of its own writes (:meth:`changes_since`)."""
    create: bool = True
    """Whether ``open`` may create the store (a file, a schema) when it does not exist yet; when
    false, a missing store is a ``store_error`` and nothing is created."""
    group_commit: bool = False
    """Whether the runtime should group concurrent run starts into one write (worth it when a
    write is a database transaction; not for the in-memory store, nor for SQLite, whose writer
    thread groups them itself)."""
    notifications: int = 0
    """Change notifications this store has received (PostgreSQL's ``NOTIFY``; 0 on the others)."""

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. The store may be opened again."""

    @abstractmethod
    async def load(self) -> StoreState:
        """Everything but the artifacts, consistently, with the change-log position it reflects."""

    @abstractmethod
    async def changes(self, since: int) -> list[Change]:
        """Change-log lines after ``since``, oldest first."""

    @abstractmethod
    async def changes_since(self, since: int, writer: str | None) -> ChangeBatch:
        """The lines after ``since`` that another writer than ``writer`` logged, the log's head,
        and whether lines after ``since`` were pruned meanwhile (a reader that far behind must
        reload). A read with nothing new costs one indexed lookup."""

    @abstractmethod
    async def pin_events(
        self, installation_id: str, limit: int, before: int | None = None
    ) -> list[PinEvent]:
        """Up to ``limit`` pin events of an installation with a sequence number below ``before``
        (all when ``None``), newest first."""

    @abstractmethod
    async def run_changes(self, cursor: int | None, skip_owner: str | None = None) -> RunDelta:
        """The runs whose start, end, owner or lease changed since ``cursor`` (a previous
        :attr:`RunDelta.cursor`), but those ``skip_owner`` holds (the reader's own writes); with
        ``None``, every run in flight. A read with nothing changed reads no run, however many are
        in flight.

        A run the reader takes over from another owner is not read either: that can happen only
        once the other owner ended it (read as gone) or its lease ran out (dropped as it passes)."""

    @abstractmethod
    async def gc(
        self,
        retention: Retention,
        *,
        dry_run: bool = False,
        now: float | None = None,
        batch: int = 1000,
        pause: float = 0.0,
    ) -> GcReport:
        """Delete what ``retention`` no longer keeps, in transactions of at most ``batch`` rows
        with ``pause`` seconds between them; with ``dry_run``, count it and delete nothing.
        ``now`` (seconds since the epoch) defaults to the store's clock."""

    @abstractmethod
    async def pack_entries(self, pack_id: str) -> list[CatalogEntry]:
        """Every row of one pack."""

    @abstractmethod
    async def installation(
        self, installation_id: str
    ) -> tuple[Installation | None, list[PinEvent]]:
        """One installation (``None`` when there is none) and the pin events resolution keeps
        (:func:`kept_events`): its last one, and the one that set its hold."""

    @abstractmethod
    async def settings(self) -> Settings:
        """The store-wide settings."""

    @abstractmethod
    async def project_settings(self) -> dict[str, dict[str, bool]]:
        """The settings projects set themselves, by project and name."""

    @abstractmethod
    async def publish(self, prepared: Prepared, decide: Decide) -> CatalogEntry:
        """Store a row and its artifact atomically; ``decide`` runs inside the transaction, given
        every row of the pack and the settings of the row's stream (:func:`stream_settings`), and
        the row's ``published_at`` is taken there too (so times follow commit order)."""

    @abstractmethod
    async def retire(self, pack_id: str, version_key: str, project: str = "") -> CatalogEntry:
        """Mark a row retired (a vendor row, or with ``project`` that project's custom row); raise
        ``not_found`` when there is no such row."""

    @abstractmethod
    async def set_setting(self, name: str, value: bool, project: str = "") -> Settings:
        """Change one store-wide setting, or with ``project`` that project's own; returns the
        store-wide settings."""

    @abstractmethod
    async def create_installation(self, installation: Installation, event: PinEvent) -> PinEvent:
        """Store a new installation and its install event; ``installation_exists`` if the id is taken."""

    @abstractmethod
    async def update_installation(
        self, installation_id: str, update: Update
    ) -> tuple[Installation, PinEvent | None]:
        """Change an installation: ``update`` gets the row as it is inside the transaction and
        returns the new row and, when the pin moved, its event (``from_*`` taken from that row).
        Only ``pin``, ``policy`` and ``hold`` may change. ``not_found`` when there is no such installation."""

    @abstractmethod
    async def start_runs(
        self, records: Sequence[RunRecord], owner: str, now: float, lease_until: float
    ) -> list[StartedRun]:
        """Record runs' starts in one transaction; for a run id seen before, reopen it instead.

        Per record, in order: ``(binding, resumed, held_by)``. A resumed run keeps its original
        binding, whatever it was given now. ``held_by`` names another owner whose lease on that
        run id is still live at ``now``: the run is then not reopened (it is open elsewhere)."""

    def start_run_now(
        self, record: RunRecord, owner: str, now: float, lease_until: float
    ) -> StartedRun | None:
        """:meth:`start_runs` of one record without an await, for a store held in this process;
        ``None`` where a start is a write to wait for (the runtime then awaits ``start_runs``)."""
        return None

    @abstractmethod
    async def end_runs(self, ends: Sequence[RunEnd], owner: str, at: datetime) -> None:
        """Mark runs ended, those of them ``owner`` still holds (a run reopened elsewhere since
        is left alone), recording the tools each called."""

    @abstractmethod
    async def declare_workflow(
        self, installation_id: str, workflow_id: str, tools: Sequence[str]
    ) -> None:
        """Record (or replace) which tools of an installation a workflow uses."""

    @abstractmethod
    async def all_workflow_tools(self) -> dict[str, WorkflowTools]:
        """:meth:`workflow_tools` of every installation that has any."""

    @abstractmethod
    async def workflow_tools(self, installation_id: str) -> WorkflowTools:
        """Per workflow of an installation: the tools it declared, and the tools its runs called."""

    @abstractmethod
    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_until: float) -> None:
        """Extend the leases of ``owner``'s runs ``run_ids``."""

    @abstractmethod
    async def live_runs(self, now: float) -> list[LiveRun]:
        """Every run not ended whose lease has not expired at ``now``."""

    @abstractmethod
    async def sources(self) -> list[SourceRow]:
        """Every pack source, by name."""

    @abstractmethod
    async def add_source(self, name: str, spec: str) -> None:
        """Store a new pack source; ``source_error`` when the name is taken."""

    @abstractmethod
    async def remove_source(self, name: str) -> bool:
        """Forget a pack source; whether there was one."""

    @abstractmethod
    async def claim_source(self, name: str, owner: str, ttl: float) -> str | None:
        """Take the sync lease of a source for ``ttl`` seconds: ``None`` when ``owner`` holds it
        now, else the owner whose lease is still live (then nothing changes). ``not_found`` when
        there is no such source. Clocks: the process's on SQLite, the server's on PostgreSQL."""

    @abstractmethod
    async def release_source(self, name: str, owner: str) -> None:
        """End ``owner``'s sync lease of a source, if it still holds it."""

    @abstractmethod
    async def save_source_status(self, name: str, status: str) -> None:
        """Record a source's sync status (a change other runtimes hear of); a source removed
        meanwhile is left removed."""

    # --- health, rollouts and events ------------------------------------------------------------

    @abstractmethod
    async def add_health(self, deltas: Sequence[HealthDelta]) -> None:
        """Add to the fleet's health sums, in one transaction."""

    @abstractmethod
    async def health_rows(self) -> list[HealthDelta]:
        """Every health sum of the fleet."""

    @abstractmethod
    async def append_events(self, events: Sequence[NewEvent]) -> None:
        """Append events to the fleet's event log, in one transaction (sequence numbers become
        visible in increasing order, as the change log's)."""

    @abstractmethod
    async def read_events(self, since: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events after ``since``, oldest first."""

    @abstractmethod
    async def create_rollout(
        self, row: RolloutRow, owner: str, ttl: float, events: Sequence[NewEvent]
    ) -> None:
        """Store a new rollout, held by ``owner`` for ``ttl`` seconds, and append ``events``;
        ``rollout_in_progress`` when the pack has an active rollout in the project."""

    @abstractmethod
    async def rollouts(
        self, pack_id: str | None = None, *, active: bool = False
    ) -> list[RolloutRow]:
        """Rollouts (of one pack, or every pack; only the active ones with ``active``), oldest
        first."""

    @abstractmethod
    async def save_rollout(self, row: RolloutRow, events: Sequence[NewEvent]) -> bool:
        """Write ``row`` (its ``rev`` one above the stored one) and append ``events``, if the
        stored rollout is still at ``row.rev - 1``; whether it was written."""

    @abstractmethod
    async def claim_rollout(self, rollout_id: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease on driving a rollout for ``ttl`` seconds: whether ``owner``
        holds it now (``False`` while another owner's lease is live)."""

    @abstractmethod
    async def aliases(self) -> list[Alias]:
        """Every alias of every pack and project."""

    @abstractmethod
    async def set_alias(
        self, alias: Alias, moves: AliasMove
    ) -> tuple[Alias | None, list[PinEvent]]:
        """Create or move an alias in one transaction with the pin events of the installations
        pinned to it (``moves`` computes them there): the alias as it was (``None`` when new) and
        the events as stored. Every installation with an event is logged as changed."""

    @abstractmethod
    async def soak_settings(self) -> dict[str, str]:
        """The soak and update-window settings, by scope (``project:<id>``,
        ``installation:<id>``), as JSON text."""

    @abstractmethod
    async def set_soak(self, scope: str, value: str | None) -> None:
        """Set (or with ``None`` clear) the soak settings of one scope."""

    async def listen(self) -> None:
        """Start hearing of other runtimes' changes, for stores that can (a no-op otherwise)."""
        return

    async def wait_for_change(self, timeout: float) -> None:
        """Return when another runtime may have written, or after ``timeout`` seconds at most.

        Stores that can be told of changes (PostgreSQL's ``NOTIFY``) return early; the others
        wait the whole time, and the runtime reads the change log then.
        """
        await anyio.sleep(timeout)

    @abstractmethod
    async def artifact(self, digest: str) -> bytes:
        """The bytes of an artifact; ``not_found`` when the store has none with that digest."""


def kept_events(installation: Installation, events: Sequence[PinEvent]) -> list[PinEvent]:
    """Of an installation's pin events, those a runtime keeps in memory: the last one (what
    ``explain`` shows and re-authentication is judged on) and, while a manual move holds its
    policy, the newest manual move down from the held version (what ``explain`` says of the
    hold). Oldest first; at most two, however long the history."""
    if not events:
        return []
    ordered = sorted(events, key=lambda e: e.seq)
    kept = [ordered[-1]]
    if installation.hold is not None:
        hold = next(
            (
                e
                for e in reversed(ordered)
                if e.origin in ("user", "rollback") and e.from_version == installation.hold
            ),
            None,
        )
        if hold is not None and hold.seq != kept[0].seq:
            kept.insert(0, hold)
    return kept


def default_url() -> str:
    """``$PACKRUN_STORE``, else the embedded SQLite file ``./.packrun/state.db``."""
    return os.environ.get("PACKRUN_STORE") or f"sqlite:///{Path('.packrun') / 'state.db'}"


def open_store(url: str, *, create: bool = True) -> Store:
    """The store for ``url``: ``memory:``, ``sqlite:///path/to/state.db`` or
    ``postgresql://user:password@host/db?schema=packrun`` (with the ``postgres`` extra).

    An unknown scheme is a ``store_error`` that lists the valid ones. With ``create=False`` the
    store refuses to open (``store_error``) unless it exists already, and creates nothing.
    """
    if "\x00" in url:  # no store takes one; SQLite and libpq would fail less clearly on it
        raise StoreError(f"cannot open store {mask_url(url)!r}: expected a URL without NUL bytes")
    store = _store_for(url)
    store.create = create
    return store


def _store_for(url: str) -> Store:
    scheme, sep, rest = url.partition(":")
    if scheme == "memory" and sep:
        from packrun._stores._memory import MemoryStore

        return MemoryStore(url)
    if scheme in ("postgresql", "postgres") and rest.startswith("//"):
        from packrun._stores._postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "sqlite" and rest.startswith("///") and len(rest) > 3 and "?" not in rest:
        from packrun._stores._sqlite import SQLiteStore

        return SQLiteStore(url, Path(rest[3:]))
    shown = mask_url(url)
    if len(shown) > 200:
        shown = shown[:120] + "..." + shown[-40:]
    raise StoreError(
        f"cannot open store {shown!r}: expected memory:, sqlite:///path/to/state.db (no query "
        f"parameters) or postgresql://host/db (valid schemes: {', '.join(SCHEMES)})"
    )
