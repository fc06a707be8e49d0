"""Aliases: named pins (``stable``, ``canary``) of a pack in a project, moved once for all.

An installation pinned ``@stable`` runs the version the alias ``stable`` of its pack in its
project names. Moving the alias (:meth:`~packrun.Runtime.set_alias`) moves every installation on
it in one transaction, recording a pin event with origin ``alias`` for each (from and to version;
the pin itself stays ``@stable``); runs in flight finish on their version, as with every move, and
the call can wait for them to drain. The resolver keeps one precomputed answer per alias (per
project and pre-release opt-in), so a move recomputes that one answer, never the installations,
and ``resolve()`` stays one dictionary lookup. Update policies leave installations on an alias
alone: the alias is the operator's lever. Aliases live in the store and every runtime of a fleet
sees a move within its refresh interval.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Final

import anyio

from packrun._catalog import CatalogEntry
from packrun._stores import Alias, Installation, PinEvent
from packrun.errors import InvalidArgument

if TYPE_CHECKING:
    from packrun._runtime import Runtime

__all__ = ["AliasChange", "alias_events", "check_alias_name", "move_alias"]

_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def check_alias_name(name: object) -> str:
    """An alias name: 1 to 40 lower-case letters, digits, ``_`` or ``-``, starting with a letter."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            "alias name",
            name,
            ["1 to 40 lower-case letters, digits, _ or -, starting with a letter (stable, canary)"],
        )
    return name


@dataclass(frozen=True, slots=True)
class AliasChange:
    """What moving an alias did: the alias now, the version it named before (``None`` when it is
    new), the installations it moved, and whether the version left behind drained."""

    alias: Alias
    from_version: str | None
    to_version: str
    installations: tuple[str, ...]
    """The installations on the alias, each moved with a pin event of origin ``alias``."""
    drained: bool | None = None
    """``None`` when the call did not wait; else whether the runs of those installations on
    ``from_version`` all ended within ``drain_timeout``."""
    still_in_flight: tuple[str, ...] = ()
    """Their runs still in flight on ``from_version`` when it stopped waiting."""

    def __str__(self) -> str:
        a = self.alias
        head = (
            f"alias {a.name} of {a.pack_id}"
            + (f" (project {a.project})" if a.project != "default" else "")
            + f": {self.from_version or '-'} -> {self.to_version} by {a.actor}; "
            f"{len(self.installations)} installation(s) moved"
        )
        if self.drained is not None:
            head += (
                "; drained" if self.drained else f"; still in flight: {len(self.still_in_flight)}"
            )
        return head


def alias_events(
    pinned: Sequence[Installation],
    old: CatalogEntry | None,
    new: CatalogEntry,
    actor: str,
    at: datetime,
) -> list[PinEvent]:
    """The pin events of an alias move from ``old`` to ``new``: one per installation on it whose
    version changes (none when the alias names the same row again)."""
    if old is not None and (old.channel, old.version_key) == (new.channel, new.version_key):
        return []
    return [
        PinEvent(
            0,
            inst.id,
            actor,
            "alias",
            inst.pin,
            inst.pin,
            None if old is None else str(old.version),
            str(new.version),
            at,
        )
        for inst in pinned
    ]


async def move_alias(
    rt: Runtime, alias: Alias, row: CatalogEntry, drain_timeout: float | None
) -> AliasChange:
    """Store ``alias`` (naming ``row``) with the pin events of the installations on it, apply it
    to ``rt``'s resolver, and wait for the drain of the version left when asked."""
    from packrun._runtime import _log_pin_move

    old_rows: list[CatalogEntry | None] = [None]

    def moves(before: Alias | None, pinned: Sequence[Installation]) -> list[PinEvent]:
        old = None
        if before is not None:  # read in the store's transaction: what the alias named then
            old = rt._resolver.pick(alias.pack_id, before.version, True, alias.project)
        old_rows[0] = old
        return alias_events(pinned, old, row, alias.actor, alias.at)

    async with rt._lock:
        _, events = await rt._store.set_alias(alias, moves)
        rt._resolver.set_alias(alias)
        for event in events:
            rt._resolver.add_event(event)
    for event in events:
        _log_pin_move(alias.pack_id, event)
    old = old_rows[0]
    moved = tuple(e.installation_id for e in events)
    change = AliasChange(alias, None if old is None else str(old.version), str(row.version), moved)
    if drain_timeout is None or old is None or not moved:
        return change
    deadline = anyio.current_time() + drain_timeout
    while True:
        await rt._refresh_remote_runs()
        still = tuple(r for i in moved for r in rt._runs_of(i, old.version_key))
        left = deadline - anyio.current_time()
        if not still or left <= 0:
            return replace(change, drained=not still, still_in_flight=still)
        await anyio.sleep(min(0.05, left))
