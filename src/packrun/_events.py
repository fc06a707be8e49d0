"""The fleet's event log: publishes, pin moves (with their origin), blocked updates, and rollout
starts, steps, promotions, aborts and completions, in the order they were committed.

Every event carries its ``cursor`` (its position in the store's log). ``rt.events(since=c)``
yields the events after ``c``: a consumer that keeps the cursor of the last event it handled
(in its own storage, written with what the event did) gets every event exactly once across
restarts, whichever runtime or process it reads through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import anyio

from packrun._policy import Blocked
from packrun._stores import Installation, NewEvent, Store, StoredEvent
from packrun._stores._fleet import encode_body

__all__ = ["EVENT_KINDS", "Event", "EventKind", "blocked_events", "read_events"]

EventKind: TypeAlias = Literal[
    "publish",
    "pin_move",
    "update_blocked",
    "rollout_started",
    "rollout_step",
    "rollout_promoted",
    "rollout_aborted",
    "rollout_completed",
]
"""What an event records (see docs/rollouts.md for the data each carries)."""

EVENT_KINDS: Final[tuple[EventKind, ...]] = (
    "publish",
    "pin_move",
    "update_blocked",
    "rollout_started",
    "rollout_step",
    "rollout_promoted",
    "rollout_aborted",
    "rollout_completed",
)

_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the fleet's log.

    ``cursor`` is its position: pass it as ``since`` to resume after it. ``project`` is the
    project of the installation or rollout (empty for the publish of a vendor version, which every
    project sees). ``data`` holds the rest: for a ``pin_move``, ``installation``, ``actor``,
    ``origin``, ``from_pin``, ``to_pin``, ``from_version``, ``to_version``; for a ``publish``,
    ``version``, ``channel``, ``digest``; for ``update_blocked``, ``installation``, ``version``,
    ``kind`` and ``reason``; for a rollout's events, ``rollout``, ``version``, ``step`` and the
    gate's figures (``health``, ``baseline``), and for an abort ``reason``, ``moved`` and
    ``draining``.
    """

    cursor: int
    kind: EventKind
    at: datetime
    pack_id: str
    project: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (one line of ``packrun events --json``)."""
        return {
            "cursor": self.cursor,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "pack": self.pack_id,
            "project": self.project,
            "data": dict(self.data),
        }

    def __str__(self) -> str:
        data = ", ".join(f"{k}={v}" for k, v in sorted(self.data.items()) if v is not None)
        where = f" [{self.project}]" if self.project else ""
        return (
            f"{self.cursor} {self.at:%Y-%m-%dT%H:%M:%S} {self.kind} {self.pack_id}{where}: {data}"
        )


def _event(row: StoredEvent) -> Event:
    seq, kind, at, pack, project, body = row
    return Event(seq, kind, at, pack, project, json.loads(body))  # type: ignore[arg-type]


async def read_events(store: Store, since: int, follow: bool, poll: float) -> AsyncIterator[Event]:
    """The events after ``since``; with ``follow``, then every new one as it comes (read every
    ``poll`` seconds), until the consumer stops."""
    cursor = since
    while True:
        batch = await store.read_events(cursor, _PAGE)
        for row in batch:
            event = _event(row)
            cursor = event.cursor
            yield event
        if len(batch) == _PAGE:
            continue
        if not follow:
            return
        await anyio.sleep(poll)


def blocked_events(inst: Installation, refused: tuple[Blocked, ...]) -> list[NewEvent]:
    """``update_blocked`` events for the versions an update policy would not move to because they
    wait for a review (not those merely outside the policy or held). Each is recorded once, however
    many runtimes apply the policy."""
    return [
        (
            "update_blocked",
            inst.pack_id,
            inst.project,
            encode_body(
                {
                    "installation": inst.id,
                    "policy": inst.policy,
                    "version": b.version,
                    "kind": b.kind,
                    "reason": b.reason,
                }
            ),
            f"blocked:{inst.id}:{b.version}:{b.kind}",
        )
        for b in refused
        if b.waits_for_review
    ]
