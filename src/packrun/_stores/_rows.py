"""The rows the SQL stores share: their columns, and catalog rows to and from their values.

The SQLite store keeps times as ISO 8601 text and PostgreSQL as ``TIMESTAMPTZ``; each passes how
it writes (``stamp``) and reads (``when``) a time, and everything else is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import msgspec

from packrun._catalog import CatalogEntry, ContentEntry
from packrun._manifest import decode_manifest, encode_manifest
from packrun._stores import Installation, PinEvent, RunRecord
from packrun._versions import Version

__all__ = [
    "CATALOG_COLUMNS",
    "EVENT_COLUMNS",
    "INSTALLATION_COLUMNS",
    "RUN_COLUMNS",
    "entry_from",
    "entry_row",
    "event_from",
    "installation_from",
    "run_from",
]

CATALOG_COLUMNS: Final = (
    "pack_id, version, channel, entries, manifest, digest, contract, published_at, state, project"
)
INSTALLATION_COLUMNS: Final = (
    "id, pack_id, pin, policy, allow_prerelease, created_at, hold, project"
)
EVENT_COLUMNS: Final = (
    "seq, installation_id, actor, origin, from_pin, to_pin, from_version, to_version, at"
)
RUN_COLUMNS: Final = (
    "run_id, installation_id, pack_id, version, digest, contract, channel, workflow_id, started_at"
)


def _same(value: Any) -> Any:
    return value


class _EntryRecord(msgspec.Struct, frozen=True):
    kind: str
    id: str
    version: str
    name: str = ""
    spec: dict[str, Any] = {}


_ENTRIES = msgspec.json.Encoder()
_ENTRIES_DECODER = msgspec.json.Decoder(list[_EntryRecord])


def entry_row(entry: CatalogEntry, stamp: Callable[[datetime], Any] = _same) -> tuple[Any, ...]:
    """A catalog row's values: ``pack_id, version_key`` and then :data:`CATALOG_COLUMNS`'s
    after ``pack_id`` (the project last: empty for a vendor row)."""
    entries = [
        _EntryRecord(e.kind, e.id, str(e.version), e.name, dict(e.spec)) for e in entry.entries
    ]
    return (
        entry.pack_id,
        entry.version_key,
        str(entry.version),
        entry.channel,
        _ENTRIES.encode(entries),
        encode_manifest(entry.manifest) if entry.manifest is not None else None,
        entry.digest,
        entry.contract,
        stamp(entry.published_at),
        entry.state,
        entry.project,
    )


def entry_from(row: Sequence[Any], when: Callable[[Any], datetime] = _same) -> CatalogEntry:
    """The catalog entry of a row read as :data:`CATALOG_COLUMNS`."""
    pack_id, version, channel, entries, manifest, digest, contract, published_at, state = row[:9]
    return CatalogEntry(
        pack_id=pack_id,
        version=Version.parse(version),
        channel=channel,
        entries=tuple(
            ContentEntry(r.kind, r.id, Version.parse(r.version), r.name, MappingProxyType(r.spec))  # type: ignore[arg-type]
            for r in _ENTRIES_DECODER.decode(bytes(entries))
        ),
        manifest=decode_manifest(bytes(manifest), source=f"catalog row {pack_id} {version}")
        if manifest is not None
        else None,
        digest=digest,
        contract=contract,
        published_at=when(published_at),
        state=state,
        project=row[9],
    )


def installation_from(row: Sequence[Any], when: Callable[[Any], datetime] = _same) -> Installation:
    """The installation of a row read as :data:`INSTALLATION_COLUMNS`."""
    iid, pack_id, pin, policy, allow_prerelease, created_at, hold, project = row
    return Installation(
        iid,
        pack_id,
        pin,
        policy,
        bool(allow_prerelease),
        when(created_at),
        hold=hold,
        project=project,
    )


def event_from(row: Sequence[Any], when: Callable[[Any], datetime] = _same) -> PinEvent:
    """The pin event of a row read as :data:`EVENT_COLUMNS`."""
    seq, iid, actor, origin, from_pin, to_pin, from_version, to_version, at = row[:9]
    return PinEvent(seq, iid, actor, origin, from_pin, to_pin, from_version, to_version, when(at))


def run_from(row: Sequence[Any], when: Callable[[Any], datetime] = _same) -> RunRecord:
    """The run record of a row whose first columns are :data:`RUN_COLUMNS`."""
    run_id, iid, pack_id, version, digest, contract, channel, workflow_id, started_at = row[:9]
    return RunRecord(
        run_id, iid, pack_id, version, digest, contract, channel, workflow_id, when(started_at)
    )
