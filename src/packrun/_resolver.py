"""The resolver: which artifact of an installation runs now, in about one dictionary lookup.

Every installation points at a *cell* holding its current answer. Installations with the same pin
on the same pack share one cell: all ``latest`` installations of ``acme`` share the cell
``(acme, latest)``, all installations pinned to ``acme 1.2.0`` share ``(acme, 1.2.0)``. A publish,
a retirement or an overwrite recomputes the few cells of its pack (one per pin kind, one per
pinned version), never the installations, so its cost does not grow with them; a pin change
re-points one installation. :meth:`Resolver.resolve` reads a cell and does no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from packrun._catalog import CatalogEntry, Channel, ContentEntry
from packrun._stores import Installation, PinEvent
from packrun._versions import Version, bump_kind, version_key
from packrun.errors import InvalidArgument, InvalidVersion, NotFound

__all__ = [
    "DYNAMIC_PINS",
    "Explanation",
    "Resolution",
    "Resolver",
    "normalize_pin",
]

DYNAMIC_PINS: Final = ("latest", "latest-vendor", "latest-custom")
_PIN_CHOICES: Final = (*DYNAMIC_PINS, "an exact version such as 1.2.0")


def normalize_pin(pin: str) -> str:
    """``pin`` as stored: a dynamic pin as is, an exact version in its canonical form.

    Anything else is ``invalid_argument`` naming the pins there are.
    """
    if pin in DYNAMIC_PINS:
        return pin
    try:
        return version_key(Version.parse(pin))  # build metadata does not tell versions apart
    except InvalidVersion:
        raise InvalidArgument("pin", pin, _PIN_CHOICES) from None


@dataclass(frozen=True, slots=True)
class Resolution:
    """What runs for an installation now: the version, channel, contract, digest and pin."""

    pack_id: str
    version: str
    channel: Channel
    contract: int | None
    digest: str | None
    pin: str
    entry: CatalogEntry = field(repr=False, compare=False)


class _Cell:
    """One precomputed answer, shared by every installation with the same pack and pin."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Resolution | None = None


@dataclass(slots=True)
class _Pack:
    """The rows of one pack, ascending, and its cells by pin (and pre-release opt-in)."""

    rows: list[CatalogEntry] = field(default_factory=list)
    by_key: dict[str, CatalogEntry] = field(default_factory=dict)
    cells: dict[tuple[str, bool], _Cell] = field(default_factory=dict)
    flows: dict[str, ContentEntry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an installation resolves as it does. ``str()`` gives a readable account."""

    installation: Installation
    resolution: Resolution | None
    candidates: tuple[CatalogEntry, ...]
    """The rows the pin chooses among, ascending (the pinned row itself for an exact pin)."""
    skipped: tuple[tuple[str, str], ...]
    """Rows of the pack left out, with why: ``("1.3.0-rc.1", "pre-release")``."""
    update: str | None
    """For an exact pin: the version ``latest`` would pick when it is higher, with its bump: the
    bump of the integration's artifact version (what :meth:`~packrun.Runtime.review_update`
    compares), with both artifact versions named when they differ from the pack versions."""
    notes: tuple[str, ...]
    last_event: PinEvent | None
    update_blocked: tuple[str, ...] = ()
    """For an installation with an update policy: newer versions the policy did not move to, each
    with its reason (a major, breaking findings, a red verdict, a needed re-authentication)."""
    needs_reauth: tuple[str, ...] = ()
    """What the linked account must re-authenticate with since the last pin move changed the auth
    (the auth mode, a required scope or credential field); empty when nothing."""

    def __str__(self) -> str:
        inst = self.installation
        lines = [
            f"installation {inst.id}: pack {inst.pack_id}, pin {inst.pin}, policy {inst.policy}"
            + (", pre-releases allowed" if inst.allow_prerelease else ""),
        ]
        if self.resolution is None:
            lines.append("resolves to: nothing (no version satisfies the pin)")
        else:
            r = self.resolution
            lines.append(
                f"resolves to: {r.pack_id} {r.version} ({r.channel}, contract {r.contract}, "
                f"{r.digest})"
            )
        shown = ", ".join(f"{c.version} ({c.channel})" for c in self.candidates) or "none"
        lines.append(f"candidates: {shown}")
        lines.extend(f"skipped: {version}: {why}" for version, why in self.skipped)
        if self.update:
            lines.append(f"update available: {self.update}")
        if self.update_blocked:
            lines.append("update blocked: breaking_diff (" + "; ".join(self.update_blocked) + ")")
        if self.needs_reauth:
            lines.append("needs re-authentication: " + "; ".join(self.needs_reauth))
        lines.extend(f"note: {note}" for note in self.notes)
        if self.last_event is not None:
            e = self.last_event
            lines.append(
                f"last pin move: {e.from_pin or '-'} -> {e.to_pin} ({e.from_version or '-'} -> "
                f"{e.to_version or '-'}) by {e.actor} ({e.origin}) at {e.at.isoformat()}"
            )
        return "\n".join(lines)


def _update_text(current: CatalogEntry, newest: CatalogEntry) -> str:
    """An available update: the pack version it moves to, and the bump -- of the integration's
    artifact version when both rows carry one (what an update review compares), so a pack release
    that leaves its integration unchanged reads as ``none`` here as in the review."""
    a, b = current.manifest, newest.manifest
    if a is None or b is None:
        return f"{newest.version} ({bump_kind(current.version, newest.version)}, {newest.channel})"
    kind = bump_kind(a.version, b.version)
    same = (a.version, b.version) == (current.version, newest.version)
    detail = "" if same else f"; integration {a.version} -> {b.version}"
    return f"{newest.version} ({kind}, {newest.channel}{detail})"


class Resolver:
    """The in-memory catalog and installations, and the cells the hot path reads."""

    def __init__(self) -> None:
        self._cells: dict[str, _Cell] = {}
        self._packs: dict[str, _Pack] = {}
        self._installations: dict[str, Installation] = {}
        self._auto_by_pack: dict[str, set[str]] = {}  # update policy on an exact pin
        self._events: dict[str, list[PinEvent]] = {}

    # --- choosing -------------------------------------------------------------------------------

    @staticmethod
    def _eligible(row: CatalogEntry, allow_prerelease: bool) -> bool:
        return row.is_live and (allow_prerelease or not row.version.is_prerelease)

    def _candidates(self, pack: _Pack, pin: str, allow_prerelease: bool) -> list[CatalogEntry]:
        if pin not in DYNAMIC_PINS:
            row = pack.by_key.get(pin)  # an exact pin is stored as its version key
            return [row] if row is not None else []
        eligible = [r for r in pack.rows if self._eligible(r, allow_prerelease)]
        if pin == "latest-vendor":
            return [r for r in eligible if r.channel == "vendor"]
        if pin == "latest-custom":
            return [r for r in eligible if r.channel == "custom"]
        custom = [r for r in eligible if r.channel == "custom"]
        return custom or [r for r in eligible if r.channel == "vendor"]

    def pick(self, pack_id: str, pin: str, allow_prerelease: bool = False) -> CatalogEntry | None:
        """The row ``pin`` selects in ``pack_id`` now (the highest candidate), if any."""
        pack = self._packs.get(pack_id)
        if pack is None:
            return None
        candidates = self._candidates(pack, pin, allow_prerelease)
        return candidates[-1] if candidates else None

    def _answer(self, pack_id: str, pin: str, allow_prerelease: bool) -> Resolution | None:
        row = self.pick(pack_id, pin, allow_prerelease)
        if row is None:
            return None
        return Resolution(
            row.pack_id, str(row.version), row.channel, row.contract, row.digest, pin, row
        )

    # --- changes --------------------------------------------------------------------------------

    def set_pack(self, pack_id: str, rows: Iterable[CatalogEntry]) -> None:
        """Replace the rows of a pack and recompute its cells (not its installations)."""
        pack = self._packs.setdefault(pack_id, _Pack())
        pack.rows = sorted(rows, key=lambda r: r.version)
        pack.by_key = {r.version_key: r for r in pack.rows}
        self._recompute(pack_id, pack, None)

    def put_row(self, row: CatalogEntry) -> None:
        """Insert or replace one row (a publish, an overwrite, a retirement).

        Recomputes the pack's dynamic cells and the cells pinned to this row's version: the cost
        depends on the pack's versions, never on its installations or other pinned versions.
        """
        pack = self._packs.setdefault(row.pack_id, _Pack())
        old = pack.by_key.get(row.version_key)
        if old is not None:
            pack.rows[pack.rows.index(old)] = row
        else:
            bisect.insort(pack.rows, row, key=lambda r: r.version)
        pack.by_key[row.version_key] = row
        self._recompute(row.pack_id, pack, row.version_key)

    def _recompute(self, pack_id: str, pack: _Pack, touched: str | None) -> None:
        for (pin, allow_prerelease), cell in pack.cells.items():
            if touched is None or pin in DYNAMIC_PINS or pin == touched:
                cell.value = self._answer(pack_id, pin, allow_prerelease)
        pack.flows = self._latest_flows(pack.rows)

    @staticmethod
    def _latest_flows(rows: Sequence[CatalogEntry]) -> dict[str, ContentEntry]:
        flows: dict[str, ContentEntry] = {}
        for row in rows:
            if not row.is_live or row.version.is_prerelease:
                continue
            for entry in row.entries:
                if entry.kind == "process_flow" and (
                    entry.id not in flows or entry.version >= flows[entry.id].version
                ):
                    flows[entry.id] = entry
        return flows

    def set_installation(self, installation: Installation, events: Sequence[PinEvent]) -> None:
        """Add or replace an installation (and its pin events) and point it at its cell."""
        self._installations[installation.id] = installation
        auto = self._auto_by_pack.setdefault(installation.pack_id, set())
        if installation.policy != "manual" and installation.pin not in DYNAMIC_PINS:
            auto.add(installation.id)
        else:
            auto.discard(installation.id)
        self._events[installation.id] = list(events)
        pack = self._packs.setdefault(installation.pack_id, _Pack())
        key = (installation.pin, installation.allow_prerelease)
        cell = pack.cells.get(key)
        if cell is None:
            cell = pack.cells[key] = _Cell()
            cell.value = self._answer(installation.pack_id, *key)
        self._cells[installation.id] = cell

    def add_event(self, event: PinEvent) -> None:
        """Record a pin event of a known installation."""
        events = self._events.setdefault(event.installation_id, [])
        if all(e.seq != event.seq for e in events):
            events.append(event)

    # --- reading --------------------------------------------------------------------------------

    def packs(self) -> list[str]:
        """The ids of every pack with at least one row, sorted."""
        return sorted(pack_id for pack_id, pack in self._packs.items() if pack.rows)

    def rows_or_empty(self, pack_id: str) -> list[CatalogEntry]:
        """Every row of a pack, ascending; empty for an unknown pack."""
        pack = self._packs.get(pack_id)
        return list(pack.rows) if pack is not None else []

    def rows(self, pack_id: str) -> list[CatalogEntry]:
        """Every row of a pack, ascending; ``not_found`` for an unknown pack."""
        pack = self._packs.get(pack_id)
        if pack is None or not pack.rows:
            raise NotFound("pack", pack_id, self.packs())
        return list(pack.rows)

    def find_installation(self, installation_id: str) -> Installation | None:
        """One installation, or ``None``."""
        return self._installations.get(installation_id)

    def installation(self, installation_id: str) -> Installation:
        """One installation; ``not_found`` naming a few known ones otherwise."""
        try:
            return self._installations[installation_id]
        except KeyError:
            raise NotFound("installation", installation_id, sorted(self._installations)) from None

    def auto_installations_of(self, pack_id: str) -> list[Installation]:
        """The installations of one pack that an update policy may move (an ``auto_*`` policy on an
        exact pin), by id: a publish looks at these, never at the pack's other installations."""
        return [self._installations[i] for i in sorted(self._auto_by_pack.get(pack_id, ()))]

    def installations(self) -> list[Installation]:
        """Every installation, by id."""
        return [self._installations[i] for i in sorted(self._installations)]

    def history(self, installation_id: str) -> list[PinEvent]:
        """The pin events of an installation, oldest first."""
        self.installation(installation_id)
        return sorted(self._events.get(installation_id, []), key=lambda e: e.seq)

    def process_flows(self, pack_id: str) -> dict[str, ContentEntry]:
        """The process flows of a pack, each from the latest live version that carries it."""
        self.rows(pack_id)
        return dict(self._packs[pack_id].flows)

    def explain(self, installation_id: str) -> Explanation:
        """Why ``installation_id`` resolves as it does (see :class:`Explanation`)."""
        inst = self.installation(installation_id)
        pack = self._packs.get(inst.pack_id, _Pack())
        candidates = self._candidates(pack, inst.pin, inst.allow_prerelease)
        chosen = {id(c) for c in candidates}
        skipped: list[tuple[str, str]] = []
        for row in pack.rows:
            if id(row) in chosen:
                continue
            if inst.pin not in DYNAMIC_PINS:
                why = f"not the pinned version {inst.pin}"
            elif not row.is_live:
                why = "retired"
            elif row.version.is_prerelease and not inst.allow_prerelease:
                why = "pre-release (allow_prerelease is off)"
            else:
                why = f"{row.channel} channel, not chosen by pin {inst.pin}"
            skipped.append((str(row.version), why))
        resolution = self._cells[inst.id].value
        notes: list[str] = []
        update = None
        if resolution is not None and not resolution.entry.is_live:
            notes.append(f"pinned to {resolution.version}, which is retired; it keeps working")
        if inst.pin not in DYNAMIC_PINS and resolution is not None:
            newest = self.pick(inst.pack_id, "latest", inst.allow_prerelease)
            if newest is not None and newest.version > resolution.entry.version:
                update = _update_text(resolution.entry, newest)
        events = self._events.get(inst.id, [])
        return Explanation(
            inst,
            resolution,
            tuple(candidates),
            tuple(skipped),
            update,
            tuple(notes),
            max(events, key=lambda e: e.seq) if events else None,
        )
