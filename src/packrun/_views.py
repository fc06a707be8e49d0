"""The views a platform's pages show: per installation the update available (a structured value),
the other live catalog versions and the install state of the pack's entries by kind; per pack how
many installations have an update; the notices of the releases an installation could move to.

They are read from the resolver's rows (no I/O); :func:`~packrun._policy.available_update` stays
the one answer to "which update is available".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from packrun._catalog import CatalogEntry
from packrun._manifest import Notice
from packrun._stores import Installation
from packrun._versions import Version, bump_kind

if TYPE_CHECKING:
    from packrun._resolver import Resolution

__all__ = [
    "ContentState",
    "LiveVersion",
    "PackUpdates",
    "ReleaseNotice",
    "UpdateAvailable",
    "content_states",
    "notices_between",
    "other_live_versions",
    "pack_updates",
    "update_available",
]


@dataclass(frozen=True, slots=True)
class ReleaseNotice:
    """The notice a release carries (its manifest's ``notice``): why and by when to move."""

    version: str
    message: str
    upgrade_deadline: date | None
    migration_url: str | None

    def __str__(self) -> str:
        text = f"{self.version}: {self.message}"
        if self.upgrade_deadline is not None:
            text += f" (upgrade by {self.upgrade_deadline.isoformat()})"
        if self.migration_url is not None:
            text += f"; migration guide: {self.migration_url}"
        return text


def notices_between(
    rows: Iterable[CatalogEntry], low: CatalogEntry, high: CatalogEntry
) -> tuple[ReleaseNotice, ...]:
    """The notices of the live rows of ``low``'s channel above ``low`` up to ``high``."""
    out = []
    for row in rows:
        notice = row.manifest.notice if row.manifest is not None else None
        if (
            isinstance(notice, Notice)
            and row.is_live
            and row.channel == low.channel
            and low.version < row.version <= high.version
        ):
            out.append(
                ReleaseNotice(
                    str(row.version), notice.message, notice.upgrade_deadline, notice.migration_url
                )
            )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class UpdateAvailable:
    """The update available to an installation (what ``review_update`` and ``update`` take
    without a target).

    ``bump`` is the step of the integration's artifact version when both rows carry one (what an
    update review compares), else of the pack version; ``integration`` names both artifact
    versions when they differ from the pack versions. ``notices`` are those of the releases the
    update crosses. For an installation with an auto policy, ``soaking_until`` says when the
    policy may take it (its ``min_release_age``), and ``blocked`` why the policy waits for it
    (``major``, ``breaking``, ``red``, ``needs_reauth``, ``outside_policy``, ``held``,
    ``soaking``, ``window``), ``None`` when it would take it.
    """

    version: str
    channel: str
    bump: str
    integration: tuple[str, str] | None
    notices: tuple[ReleaseNotice, ...] = ()
    soaking_until: datetime | None = None
    blocked: str | None = None

    def __str__(self) -> str:
        detail = (
            "" if self.integration is None else "; integration {} -> {}".format(*self.integration)
        )
        return f"{self.version} ({self.bump}, {self.channel}{detail})"


def update_available(
    current: CatalogEntry, newest: CatalogEntry, rows: Sequence[CatalogEntry]
) -> UpdateAvailable:
    """The view of ``newest`` as the update of an installation on ``current``."""
    a, b = current.manifest, newest.manifest
    notices = notices_between(rows, current, newest)
    if a is None or b is None:
        kind = bump_kind(current.version, newest.version)
        return UpdateAvailable(str(newest.version), newest.channel, kind, None, notices)
    same = (a.version, b.version) == (current.version, newest.version)
    integration = None if same else (str(a.version), str(b.version))
    return UpdateAvailable(
        str(newest.version), newest.channel, bump_kind(a.version, b.version), integration, notices
    )


@dataclass(frozen=True, slots=True)
class LiveVersion:
    """A live catalog version an installation could be moved to (other than the one it runs)."""

    version: str
    channel: str
    published_at: datetime


def other_live_versions(
    rows: Iterable[CatalogEntry], current: CatalogEntry | None
) -> tuple[LiveVersion, ...]:
    """The live rows other than ``current``, newest first."""
    out = [
        LiveVersion(str(r.version), r.channel, r.published_at)
        for r in rows
        if r.is_live
        and (
            current is None or (r.channel, r.version_key) != (current.channel, current.version_key)
        )
    ]
    return tuple(reversed(out))


@dataclass(frozen=True, slots=True)
class ContentState:
    """One entry of the pack an installation runs: its kind (``integration``, ``ontology``,
    ``kb_domain``, ``workflow``, ``data_source``), id and installed version, and the version the
    update available brings (``None`` when it brings no other; ``"removed"`` when it drops it)."""

    kind: str
    id: str
    version: str
    update_version: str | None = None


def content_states(current: CatalogEntry, update: CatalogEntry | None) -> tuple[ContentState, ...]:
    """The install state of ``current``'s entries by kind (process flows are not installed: they
    have no pin), with what ``update`` would change."""
    after = {(e.kind, e.id): str(e.version) for e in update.entries} if update is not None else {}
    out = []
    for e in sorted(current.entries, key=lambda e: (e.kind, e.id)):
        if e.kind == "process_flow":
            continue
        version = str(e.version)
        if update is None:
            changed = None
        else:
            new = after.get((e.kind, e.id), "removed")
            changed = None if new == version else new
        out.append(ContentState(e.kind, e.id, version, changed))
    return tuple(out)


def flows_only(row: CatalogEntry) -> bool:
    """Whether a row holds process flows and nothing else (nothing to install or pin)."""
    return bool(row.entries) and all(e.kind == "process_flow" for e in row.entries)


@dataclass(frozen=True, slots=True)
class PackUpdates:
    """Per pack and project: how many installations there are, and how many have an update
    available (by the version they run)."""

    pack_id: str
    project: str
    installations: int
    with_update: int
    by_version: tuple[tuple[str, int, int], ...]
    """``(version, installations on it, of which with an update)``, newest first."""


def pack_updates(
    pack_id: str,
    project: str,
    rows: Sequence[CatalogEntry],
    installations: Iterable[tuple[Installation, Resolution | None]],
) -> PackUpdates:
    """The counts of :class:`PackUpdates` for the installations of one pack (with what each
    resolves to): an update is available as ``explain`` says (exact and alias pins only)."""
    from packrun._policy import available_update  # the one rule; _policy imports this module

    counts: dict[tuple[Version | None, str], list[int]] = {}
    for inst, res in installations:
        has = (
            res is not None
            and inst.pin not in ("latest", "latest-vendor", "latest-custom")
            and available_update(res.entry, rows, inst.allow_prerelease) is not None
        )
        key = (None, "-") if res is None else (res.entry.version, res.version)
        seen = counts.setdefault(key, [0, 0])
        seen[0] += 1
        seen[1] += int(has)
    ordered = sorted(
        counts.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or _ZERO), reverse=True
    )
    by_version = tuple((v, n, u) for (_, v), (n, u) in ordered)
    return PackUpdates(
        pack_id,
        project,
        sum(n for _, n, _ in by_version),
        sum(u for _, _, u in by_version),
        by_version,
    )


_ZERO = Version(0, 0, 0)
