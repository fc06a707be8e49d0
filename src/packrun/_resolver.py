"""The resolver: which artifact of an installation runs now, in about one dictionary lookup.

Every installation points at a *cell* holding its current answer. Installations of one project
with the same pin on the same pack share one cell: all ``latest`` installations of ``acme`` in
project ``default`` share the cell ``(default, acme, latest)``, all those pinned to ``acme 1.2.0``
share ``(default, acme, 1.2.0)``. A publish, a retirement or an overwrite recomputes the few cells
of its pack (one per project, pin kind and pinned version; a custom row only its own project's),
never the installations, so its cost does not grow with them; a pin change re-points one
installation. :meth:`Resolver.resolve` reads a cell and does no I/O.

A project sees the vendor rows (global) and its own custom rows, never another project's: every
answer is computed from :meth:`Resolver.rows` of the installation's project.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from packrun._args import check_id
from packrun._catalog import CatalogEntry, Channel, ContentEntry
from packrun._policy import available_update
from packrun._stores import DEFAULT_PROJECT, Alias, Installation, PinEvent
from packrun._versions import Version, version_key
from packrun._views import (
    ContentState,
    LiveVersion,
    UpdateAvailable,
    content_states,
    other_live_versions,
    update_available,
)
from packrun.errors import InvalidArgument, InvalidVersion, NotFound

__all__ = [
    "DYNAMIC_PINS",
    "Explanation",
    "Resolution",
    "Resolver",
    "follows",
    "normalize_pin",
]

DYNAMIC_PINS: Final = ("latest", "latest-vendor", "latest-custom")
_PIN_CHOICES: Final = (
    *DYNAMIC_PINS,
    "an exact version such as 1.2.0",
    "vendor:1.2.0",
    "custom:1.2.0",
    "an alias such as @stable",
)
ALIAS_PIN: Final = re.compile(r"@[a-z][a-z0-9_-]{0,39}")
"""A pin on an alias: ``@`` and the alias's name (lower-case letters, digits, ``_``, ``-``)."""
EXACT_PIN_RULE: Final = (
    "an exact pin X names the project's own custom row X when it has one, else the vendor row X; "
    "vendor:X and custom:X name one of them"
)


def normalize_pin(pin: str, what: str = "pin") -> str:
    """``pin`` as stored: a dynamic pin as is, an exact version in its canonical form (``1.2.0``,
    ``vendor:1.2.0`` or ``custom:1.2.0``).

    Anything else is ``invalid_argument`` naming the pins there are.
    """
    if not isinstance(pin, str):
        raise InvalidArgument(what, pin, _PIN_CHOICES)
    if pin in DYNAMIC_PINS or ALIAS_PIN.fullmatch(pin):
        return pin
    channel, sep, rest = pin.partition(":")
    prefix = f"{channel}:" if sep and channel in ("vendor", "custom") else ""
    try:
        # build metadata does not tell versions apart
        return prefix + version_key(Version.parse(rest if prefix else pin))
    except InvalidVersion:
        raise InvalidArgument(what, pin, _PIN_CHOICES) from None


def follows(pin: str) -> bool:
    """Whether an installation with ``pin`` moves by itself, never by an update policy: a
    ``latest*`` pin follows new versions, an alias pin (``@stable``) follows its alias."""
    return pin in DYNAMIC_PINS or pin.startswith("@")


def exact_pin(row: CatalogEntry, custom_keys: Iterable[str] = ()) -> str:
    """The exact pin that names ``row`` in a project whose custom rows have ``custom_keys``: the
    plain version, unless it would name the project's custom row instead of this vendor row."""
    if row.channel == "vendor" and row.version_key in custom_keys:
        return f"vendor:{row.version_key}"
    return str(row.version)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What runs for an installation now: the version, channel, contract, digest and pin.

    ``version`` is the version's text, like every record of what runs or moved (a run, a pin
    event, a review); ``entry.version`` is the catalog row's :class:`~packrun.Version`. The two
    compare equal: ``res.entry.version == res.version``.
    """

    pack_id: str
    version: str
    channel: Channel
    contract: int | None
    digest: str | None
    pin: str
    entry: CatalogEntry = field(repr=False, compare=False)
    """The catalog row that runs."""


class _Cell:
    """One precomputed answer, shared by every installation with the same pack and pin."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Resolution | None = None


@dataclass(slots=True)
class _Stream:
    """The rows of one publish stream of a pack (its vendor rows, or one project's custom rows)."""

    rows: list[CatalogEntry] = field(default_factory=list)
    by_key: dict[str, CatalogEntry] = field(default_factory=dict)

    def put(self, row: CatalogEntry) -> None:
        old = self.by_key.get(row.version_key)
        if old is not None:
            self.rows[self.rows.index(old)] = row
        else:
            bisect.insort(self.rows, row, key=lambda r: r.version)
        self.by_key[row.version_key] = row


@dataclass(slots=True)
class _Pack:
    """The rows of one pack by stream, and its cells by project, pin and pre-release opt-in."""

    vendor: _Stream = field(default_factory=_Stream)
    custom: dict[str, _Stream] = field(default_factory=dict)
    cells: dict[tuple[str, str, bool], _Cell] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    """The exact pin each alias names, by project and alias pin (``@stable``)."""

    def visible(self, project: str) -> list[CatalogEntry]:
        """The rows ``project`` sees, ascending: the vendor rows and its own custom rows (a vendor
        row before a custom row of the same version)."""
        custom = self.custom.get(project)
        if custom is None or not custom.rows:
            return list(self.vendor.rows)
        return sorted([*self.vendor.rows, *custom.rows], key=lambda r: r.version)

    def has_rows(self, project: str) -> bool:
        custom = self.custom.get(project)
        return bool(self.vendor.rows or (custom is not None and custom.rows))


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
    """For an exact pin: the update available (the newest live version above it on its channel,
    as ``review_update`` and ``update`` take it), with its bump and channel: the bump of the
    integration's artifact version (what :meth:`~packrun.Runtime.review_update` compares), with
    both artifact versions named when they differ from the pack versions."""
    notes: tuple[str, ...]
    last_event: PinEvent | None
    update_blocked: tuple[str, ...] = ()
    """For an installation with an update policy: newer versions the policy did not move to, each
    with its reason (a major, breaking findings, a red verdict, a needed re-authentication)."""
    holding: str | None = None
    """For an installation with an update policy held by a manual move: why, and until what."""
    needs_reauth: tuple[str, ...] = ()
    """What the linked account must re-authenticate with since the last pin move changed the auth
    (the auth mode, a required scope or credential field); empty when nothing."""
    update_available: UpdateAvailable | None = None
    """The update available as a structured value (``update`` is its text), with the notices of
    the releases it crosses and, under an auto policy, whether and until when it soaks."""
    other_live_versions: tuple[LiveVersion, ...] = ()
    """The live catalog versions the project sees other than the one that runs, newest first."""
    contents: tuple[ContentState, ...] = ()
    """The install state of the pack's entries by kind (ontology, KB domain, workflow, data
    source, the integration) with their versions, and what the update available changes."""
    soaking: tuple[str, ...] = ()
    """For an installation with an auto policy: versions it waits for because they are younger
    than its ``min_release_age`` (with until when), or because it is outside its update window."""

    def __str__(self) -> str:
        inst = self.installation
        lines = [
            f"installation {inst.id}: "
            + (f"project {inst.project}, " if inst.project != DEFAULT_PROJECT else "")
            + f"pack {inst.pack_id}, pin {inst.pin}, policy {inst.policy}"
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
        if self.update_available is not None:
            lines.extend(f"notice: {n}" for n in self.update_available.notices)
        lines.extend(f"soaking: {s}" for s in self.soaking)
        if self.update_blocked:
            lines.append("update blocked: breaking_diff (" + "; ".join(self.update_blocked) + ")")
        if self.holding:
            lines.append(f"policy holding: {self.holding}")
        if self.needs_reauth:
            lines.append("needs re-authentication: " + "; ".join(self.needs_reauth))
        lines.extend(f"note: {note}" for note in self.notes)
        if any(c.kind != "integration" for c in self.contents):
            lines.append(
                "contents: "
                + ", ".join(
                    f"{c.kind} {c.id} {c.version}"
                    + (f" (update: {c.update_version})" if c.update_version else "")
                    for c in self.contents
                )
            )
        if self.last_event is not None:
            e = self.last_event
            lines.append(
                f"last pin move: {e.from_pin or '-'} -> {e.to_pin} ({e.from_version or '-'} -> "
                f"{e.to_version or '-'}) by {e.actor} ({e.origin}) at {e.at.isoformat()}"
            )
        return "\n".join(lines)


class Resolver:
    """The in-memory catalog and installations, and the cells the hot path reads."""

    def __init__(self) -> None:
        self._cells: dict[str, _Cell] = {}
        self._packs: dict[str, _Pack] = {}
        self._installations: dict[str, Installation] = {}
        self._auto_by_pack: dict[str, set[str]] = {}  # update policy on an exact pin
        self._events: dict[str, list[PinEvent]] = {}
        self._aliases: dict[tuple[str, str, str], Alias] = {}  # project, pack, name

    # --- choosing -------------------------------------------------------------------------------

    @staticmethod
    def _eligible(row: CatalogEntry, allow_prerelease: bool) -> bool:
        return row.is_live and (allow_prerelease or not row.version.is_prerelease)

    @staticmethod
    def _exact(pack: _Pack, project: str, pin: str) -> CatalogEntry | None:
        # An exact pin is stored as its version key, perhaps with its channel.
        if pin.startswith("vendor:"):
            return pack.vendor.by_key.get(pin[7:])
        custom = pack.custom.get(project)
        if pin.startswith("custom:"):
            return custom.by_key.get(pin[7:]) if custom is not None else None
        row = custom.by_key.get(pin) if custom is not None else None
        return row if row is not None else pack.vendor.by_key.get(pin)

    def _candidates(
        self,
        pack: _Pack,
        project: str,
        pin: str,
        allow_prerelease: bool,
        without: CatalogEntry | None = None,
    ) -> list[CatalogEntry]:
        if pin not in DYNAMIC_PINS:
            if pin.startswith("@"):
                named = pack.aliases.get((project, pin))
                if named is None:
                    return []
                pin = named
            row = self._exact(pack, project, pin)
            return [row] if row is not None else []

        def eligible(r: CatalogEntry) -> bool:
            if without is not None and (r.project, r.version_key) == (
                without.project,
                without.version_key,
            ):
                return False
            return self._eligible(r, allow_prerelease)

        own = pack.custom.get(project)
        custom = [r for r in own.rows if eligible(r)] if own else []
        if pin == "latest-custom":
            return custom
        vendor = [r for r in pack.vendor.rows if eligible(r)]
        if pin == "latest-vendor":
            return vendor
        return custom or vendor

    def pick(
        self,
        pack_id: str,
        pin: str,
        allow_prerelease: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> CatalogEntry | None:
        """The row ``pin`` selects in ``pack_id`` for ``project`` now (the highest candidate)."""
        pack = self._packs.get(pack_id)
        if pack is None:
            return None
        candidates = self._candidates(pack, project, pin, allow_prerelease)
        return candidates[-1] if candidates else None

    def pick_without(
        self,
        pack_id: str,
        pin: str,
        allow_prerelease: bool,
        without: CatalogEntry,
        project: str = DEFAULT_PROJECT,
    ) -> CatalogEntry | None:
        """The row ``pin`` would select for ``project`` were the row ``without`` retired (a
        dynamic pin)."""
        pack = self._packs.get(pack_id)
        if pack is None:
            return None
        candidates = self._candidates(pack, project, pin, allow_prerelease, without)
        return candidates[-1] if candidates else None

    def _answer(
        self, pack_id: str, project: str, pin: str, allow_prerelease: bool
    ) -> Resolution | None:
        row = self.pick(pack_id, pin, allow_prerelease, project)
        if row is None:
            return None
        return Resolution(
            row.pack_id, str(row.version), row.channel, row.contract, row.digest, pin, row
        )

    # --- changes --------------------------------------------------------------------------------

    def set_pack(self, pack_id: str, rows: Iterable[CatalogEntry]) -> None:
        """Replace the rows of a pack and recompute its cells (not its installations)."""
        pack = self._packs.setdefault(pack_id, _Pack())
        pack.vendor = _Stream()
        pack.custom = {}
        for row in sorted(rows, key=lambda r: r.version):
            self._stream_of(pack, row).put(row)
        self._recompute(pack_id, pack, None)

    @staticmethod
    def _stream_of(pack: _Pack, row: CatalogEntry) -> _Stream:
        if row.channel == "vendor":
            return pack.vendor
        return pack.custom.setdefault(row.project, _Stream())

    def set_alias(self, alias: Alias) -> None:
        """Point an alias of a pack in its project at its exact pin, and recompute the cells of
        the installations pinned to it (one per pre-release opt-in): the cost of an alias move
        does not grow with its installations."""
        project, pack_id, pin = alias.project, alias.pack_id, alias.version
        self._aliases[(project, pack_id, alias.name)] = alias
        pack = self._packs.setdefault(pack_id, _Pack())
        key = (project, f"@{alias.name}")
        if pack.aliases.get(key) == pin:
            return
        pack.aliases[key] = pin
        for allow_prerelease in (False, True):
            cell = pack.cells.get((project, key[1], allow_prerelease))
            if cell is not None:
                cell.value = self._answer(pack_id, project, key[1], allow_prerelease)

    def all_aliases(self, project: str) -> list[Alias]:
        """The aliases of ``project``, by pack and name."""
        return [self._aliases[k] for k in sorted(self._aliases) if k[0] == project]

    def put_row(self, row: CatalogEntry) -> None:
        """Insert or replace one row (a publish, an overwrite, a retirement).

        Recomputes the pack's dynamic cells and the cells pinned to this row's version, of every
        project for a vendor row and of its own project for a custom row: the cost depends on the
        pack's versions and projects, never on its installations or other pinned versions.
        """
        pack = self._packs.setdefault(row.pack_id, _Pack())
        self._stream_of(pack, row).put(row)
        self._recompute(row.pack_id, pack, row)

    def _recompute(self, pack_id: str, pack: _Pack, touched: CatalogEntry | None) -> None:
        if touched is None:
            pins: tuple[str, ...] = ()
        else:
            key = touched.version_key
            pins = (*DYNAMIC_PINS, key, f"{touched.channel}:{key}")
            pins += tuple({a for (_, a), named in pack.aliases.items() if named in pins})
        for (project, pin, allow_prerelease), cell in pack.cells.items():
            if touched is not None and (
                pin not in pins or (touched.channel == "custom" and project != touched.project)
            ):
                continue
            cell.value = self._answer(pack_id, project, pin, allow_prerelease)

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
        if installation.policy != "manual" and not follows(installation.pin):
            auto.add(installation.id)
        else:
            auto.discard(installation.id)
        self._events[installation.id] = list(events)
        pack = self._packs.setdefault(installation.pack_id, _Pack())
        key = (installation.project, installation.pin, installation.allow_prerelease)
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

    def packs(self, project: str = DEFAULT_PROJECT) -> list[str]:
        """The ids of every pack ``project`` sees a row of (a vendor row or its own), sorted."""
        return sorted(pack_id for pack_id, pack in self._packs.items() if pack.has_rows(project))

    def rows_or_empty(self, pack_id: str) -> list[CatalogEntry]:
        """Every row of a pack in every stream (for change detection, never for an answer)."""
        pack = self._packs.get(pack_id)
        if pack is None:
            return []
        return [*pack.vendor.rows, *(r for p in sorted(pack.custom) for r in pack.custom[p].rows)]

    def rows(self, pack_id: str, project: str = DEFAULT_PROJECT) -> list[CatalogEntry]:
        """The rows of a pack that ``project`` sees (vendor rows and its own custom rows),
        ascending; ``not_found`` naming the packs it sees when there are none."""
        pack = self._packs.get(pack_id) if isinstance(pack_id, str) else None
        if pack is None or not pack.has_rows(project):
            check_id("pack id", pack_id)
            raise NotFound("pack", pack_id, self.packs(project))
        return pack.visible(project)

    def custom_keys(self, pack_id: str, project: str) -> frozenset[str]:
        """The version keys of ``project``'s custom rows of a pack."""
        pack = self._packs.get(pack_id)
        custom = pack.custom.get(project) if pack is not None else None
        return frozenset(custom.by_key) if custom is not None else frozenset()

    def find_installation(self, installation_id: str) -> Installation | None:
        """One installation, or ``None``."""
        return self._installations.get(installation_id)

    def installation(self, installation_id: str, project: str | None = None) -> Installation:
        """One installation (of ``project``, when given); ``not_found`` naming a few of that
        project's installations otherwise (``default``'s when no project is given)."""
        inst = (
            self._installations.get(installation_id) if isinstance(installation_id, str) else None
        )
        if inst is None or (project is not None and inst.project != project):
            check_id("installation id", installation_id)
            known = [i.id for i in self.installations(project or DEFAULT_PROJECT)]
            raise NotFound("installation", installation_id, known)
        return inst

    def auto_installations_of(self, pack_id: str) -> list[Installation]:
        """The installations of one pack that an update policy may move (an ``auto_*`` policy on an
        exact pin), by id: a publish looks at these, never at the pack's other installations."""
        return [self._installations[i] for i in sorted(self._auto_by_pack.get(pack_id, ()))]

    def auto_installations(self) -> list[Installation]:
        """Every installation an update policy may move, by id."""
        ids = sorted(i for ids in self._auto_by_pack.values() for i in ids)
        return [self._installations[i] for i in ids]

    def installations(self, project: str | None = None) -> list[Installation]:
        """Every installation of ``project`` (of every project when ``None``), by id."""
        return [
            self._installations[i]
            for i in sorted(self._installations)
            if project is None or self._installations[i].project == project
        ]

    def projects(self) -> list[str]:
        """Every project with an installation or a custom row, sorted."""
        found = {i.project for i in self._installations.values()}
        for pack in self._packs.values():
            found.update(p for p, stream in pack.custom.items() if stream.rows)
        return sorted(found)

    def history(self, installation_id: str, project: str | None = None) -> list[PinEvent]:
        """The pin events of an installation, oldest first."""
        self.installation(installation_id, project)
        return sorted(self._events.get(installation_id, []), key=lambda e: e.seq)

    def process_flows(
        self, pack_id: str, project: str = DEFAULT_PROJECT
    ) -> dict[str, ContentEntry]:
        """The process flows of a pack for ``project``: each from the latest live vendor version
        that carries it, replaced by the project's own latest live custom version carrying it."""
        self.rows(pack_id, project)
        pack = self._packs[pack_id]
        flows = self._latest_flows(pack.vendor.rows)
        custom = pack.custom.get(project)
        if custom is not None:
            flows.update(self._latest_flows(custom.rows))
        return flows

    def explain(self, installation_id: str, project: str | None = None) -> Explanation:
        """Why ``installation_id`` resolves as it does (see :class:`Explanation`)."""
        inst = self.installation(installation_id, project)
        pack = self._packs.get(inst.pack_id, _Pack())
        candidates = self._candidates(pack, inst.project, inst.pin, inst.allow_prerelease)
        chosen = {id(c) for c in candidates}
        skipped: list[tuple[str, str]] = []
        for row in pack.visible(inst.project):
            if id(row) in chosen:
                continue
            if inst.pin not in DYNAMIC_PINS and row.version_key == inst.pin.rpartition(":")[2]:
                why = f"{row.channel} row of the pinned version, not the one the pin names"
            elif inst.pin not in DYNAMIC_PINS:
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
        if inst.pin not in DYNAMIC_PINS and ":" not in inst.pin:
            own = pack.custom.get(inst.project)
            if own is not None and inst.pin in own.by_key and inst.pin in pack.vendor.by_key:
                notes.append(f"exact pin: {EXACT_PIN_RULE}")
        if inst.pin.startswith("@"):
            alias = self._aliases.get((inst.project, inst.pack_id, inst.pin[1:]))
            notes.append(
                f"alias {inst.pin} is not set: use set_alias"
                if alias is None
                else f"alias {inst.pin} names {alias.version} (set by {alias.actor} at "
                f"{alias.at.isoformat(timespec='seconds')}); it moves when the alias moves"
            )
        if resolution is not None and not resolution.entry.is_live:
            notes.append(f"pinned to {resolution.version}, which is retired; it keeps working")
        visible = pack.visible(inst.project)
        available = None
        newest = None
        if inst.pin not in DYNAMIC_PINS and resolution is not None:
            newest = available_update(resolution.entry, visible, inst.allow_prerelease)
            if newest is not None:
                available = update_available(resolution.entry, newest, visible)
                update = str(available)
        events = self._events.get(inst.id, [])
        current = None if resolution is None else resolution.entry
        return Explanation(
            inst,
            resolution,
            tuple(candidates),
            tuple(skipped),
            update,
            tuple(notes),
            max(events, key=lambda e: e.seq) if events else None,
            update_available=available,
            other_live_versions=other_live_versions(visible, current),
            contents=() if current is None else content_states(current, newest),
        )
