"""Growth over time: what a store keeps (:class:`Retention`), paged pin history
(:class:`HistoryPage`), and the runs other processes hold in flight, kept up to date from
incremental reads (:class:`RemoteRuns`).

A store prunes by policy: ended runs after ``ended_runs`` seconds, change-log lines after
``change_log`` seconds, pin events after ``pin_events`` seconds (an audit trail, kept longest;
each installation's last event and the one that set its hold are never pruned), the fleet's event
log after ``event_log`` seconds (cursors stay valid: sequence numbers are never reused). A runtime runs
the pass in the background every ``interval`` seconds, in transactions of ``batch`` rows with
``pause`` seconds between them, so no write waits long behind it; ``packrun gc`` runs it at once.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, overload

import anyio

from packrun._args import check_seconds, check_whole
from packrun.errors import InvalidArgument

if TYPE_CHECKING:
    from packrun._stores import LiveRun, PinEvent, RunDelta, Store

__all__ = [
    "DAY",
    "HISTORY_LIMIT",
    "HistoryPage",
    "RemoteRuns",
    "Retention",
    "check_history_page",
    "gc_loop",
]

DAY: Final = 86_400.0
"""Seconds in a day."""

HISTORY_LIMIT: Final = 100
"""Pin events in one page of :meth:`Runtime.history` unless told otherwise."""
_MAX_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a store keeps what grows with time, and how the automatic pass runs.

    Every duration is in seconds. The defaults: ended runs 7 days (a run id seen again within
    them resumes with its original binding), the change log 1 day (a runtime that falls further
    behind reloads in full), pin events 365 days (each installation's last event and the one
    that set its hold are kept for ever), the fleet's event log 365 days (a reader whose cursor is
    older than the oldest event kept gets the events still kept). ``interval`` is how often a
    runtime runs the pass in the background (``0`` turns it off; ``packrun gc`` still works),
    ``batch`` the most rows one of its transactions deletes, and ``pause`` the seconds between
    two of them.
    """

    ended_runs: float = 7 * DAY
    change_log: float = 1 * DAY
    pin_events: float = 365 * DAY
    event_log: float = 365 * DAY
    interval: float = 3600.0
    batch: int = 1000
    pause: float = 0.05

    def __post_init__(self) -> None:
        for name in ("ended_runs", "change_log", "pin_events", "event_log"):
            check_seconds(f"retention {name}", getattr(self, name), zero=False)
        check_seconds("retention interval", self.interval)
        check_seconds("retention pause", self.pause)
        check_whole("retention batch", self.batch, 1, 1_000_000)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of an installation's pin moves (:meth:`Runtime.history`), oldest first.

    ``events`` are the newest moves before the cursor the page was asked with; ``before`` is the
    cursor of the next (older) page, ``None`` when this page reaches the installation's first
    move still kept. A page iterates, indexes and counts as its events.
    """

    events: tuple[PinEvent, ...]
    before: int | None

    def __iter__(self) -> Iterator[PinEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, index: int) -> PinEvent: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PinEvent, ...]: ...
    def __getitem__(self, index: int | slice) -> PinEvent | tuple[PinEvent, ...]:
        return self.events[index]


def check_history_page(limit: object, before: object) -> None:
    """``limit`` a whole number from 1 to 10,000; ``before`` ``None`` or a sequence number."""
    check_whole("limit", limit, 1, _MAX_LIMIT)
    if before is not None and (
        isinstance(before, bool) or not isinstance(before, int) or before < 1
    ):
        raise InvalidArgument(
            "before (a history page's cursor)",
            before,
            ["None, or the .before of a previous page (a whole number of 1 or more)"],
        )


class RemoteRuns:
    """The runs other runtimes hold in flight, kept from :class:`~packrun._stores.RunDelta`
    reads: a read applies only what changed, and leases that ran out without a write are dropped
    when the earliest of them passes (not by looking at every run on every refresh)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.cursor: int | None = None
        self.runs: dict[str, LiveRun] = {}
        self._expiry: list[tuple[float, str]] = []  # (lease until, run id); stale entries too
        self.rows_read = 0
        """Runs read from the store so far (what a refresh with nothing changed keeps at 0)."""

    def apply(self, delta: RunDelta) -> bool:
        """Apply one read; whether the set of runs changed."""
        self.cursor = delta.cursor
        self.rows_read += len(delta.live) + len(delta.gone)
        changed = False
        if delta.full:
            changed = bool(self.runs)
            self.runs = {}
            self._expiry = []
        for run_id in delta.gone:
            changed |= self.runs.pop(run_id, None) is not None
        for run in delta.live:
            if run.owner == self.owner:  # this runtime's own: counted exactly elsewhere
                changed |= self.runs.pop(run.record.run_id, None) is not None
                continue
            self.runs[run.record.run_id] = run
            heapq.heappush(self._expiry, (run.lease_until, run.record.run_id))
            changed = True
        if len(self._expiry) > 2 * len(self.runs) + 1024:  # renewals leave stale entries
            self._expiry = [(r.lease_until, i) for i, r in self.runs.items()]
            heapq.heapify(self._expiry)
        return self.expire(delta.now) or changed

    def expire(self, now: float) -> bool:
        """Drop the runs whose lease ran out by ``now``; whether any was dropped."""
        dropped = False
        while self._expiry and self._expiry[0][0] <= now:
            until, run_id = heapq.heappop(self._expiry)
            run = self.runs.get(run_id)
            if run is not None and run.lease_until <= now and math.isclose(run.lease_until, until):
                del self.runs[run_id]
                dropped = True
        return dropped

    def listed(self) -> list[LiveRun]:
        return list(self.runs.values())


async def gc_loop(store: Store, retention: Retention, warn: Callable[[str, str], None]) -> None:
    """The background pass: every ``retention.interval`` seconds (with jitter, so the runtimes of
    a fleet do not prune at once), prune in batches of ``retention.batch`` rows with
    ``retention.pause`` seconds between them. A failure is a warning; the next pass tries again."""
    while True:
        await anyio.sleep(retention.interval * random.uniform(0.5, 1.0))
        try:
            await store.gc(retention, batch=retention.batch, pause=retention.pause)
        except Exception as exc:  # never let pruning take the host's code down
            warn("gc", f"could not prune {store.url}: {exc}")
