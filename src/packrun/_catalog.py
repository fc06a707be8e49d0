"""The catalog: what a published version is, how a publish is prepared, and the publish rules.

A catalog entry is one ``(pack_id, version)`` row: its channel, the pack's content entries, the
integration's manifest and artifact digest, its contract generation, when it was published, and
whether it is ``live`` or ``retired``. Rows never disappear on their own.

Preparing a publish (reading and checking the bundle or pack source) is separate from deciding it
(:func:`decide_publish`, a pure function of the rows that exist), so a store can take the decision
inside its own transaction, against the rows as they are at that moment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from packrun._bundle import Bundle, read_bundle
from packrun._contract import check_generation
from packrun._dispatch import SandboxLimits, check_code
from packrun._manifest import (
    ContentKind,
    Manifest,
    decode_entry_manifest,
    decode_manifest,
    decode_pack_manifest,
)
from packrun._manifest import read_document as _read_document
from packrun._source import check as _check_source
from packrun._versions import Version, check_publish_order, version_key
from packrun.errors import (
    ArtifactMismatch,
    InvalidArgument,
    InvalidBundle,
    InvalidManifest,
    InvalidVersion,
    Problem,
    VersionExists,
)

__all__ = [
    "CatalogEntry",
    "Channel",
    "ContentEntry",
    "EntryState",
    "Prepared",
    "decide_publish",
    "prepare",
    "strict_check",
]

Channel: TypeAlias = Literal["vendor", "custom"]
"""``vendor``: the platform's own releases; ``custom``: a project's own versions of a connector."""

EntryState: TypeAlias = Literal["live", "retired"]
"""``retired`` rows leave ``latest`` pins and update targets; exact pins on them keep working."""

CHANNELS: tuple[Channel, ...] = ("vendor", "custom")


@dataclass(frozen=True, slots=True)
class ContentEntry:
    """One content entry of a published pack: its kind, id and version, and its own payload.

    ``spec`` is the entry manifest's ``spec`` (the steps of a process flow, the terms of an
    ontology); it is empty for the integration entry, whose manifest is the catalog entry's.
    """

    kind: ContentKind
    id: str
    version: Version
    name: str = ""
    spec: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One published version of a pack."""

    pack_id: str
    version: Version
    channel: Channel
    entries: tuple[ContentEntry, ...]
    manifest: Manifest | None = field(repr=False)
    """The integration's manifest, or ``None`` for a pack without an integration entry."""
    digest: str | None
    """``sha256:…`` of the integration artifact, or ``None`` without an integration entry."""
    contract: int | None
    published_at: datetime
    """When the row was written (or last overwritten), stamped inside the store's transaction (on
    PostgreSQL, by the server's clock): publishes of a store are in the order of their times."""
    state: EntryState = "live"
    project: str = ""
    """The project a custom row belongs to; empty for a vendor row (vendor rows are global)."""

    @property
    def stream(self) -> str:
        """The publish stream of the row: ``vendor``, or ``custom:<project>``. The publish rules,
        immutability and strict versions apply per stream."""
        return f"custom:{self.project}" if self.channel == "custom" else "vendor"

    @property
    def version_key(self) -> str:
        """The version without build metadata: two versions equal in precedence share it."""
        return version_key(self.version)

    @property
    def is_live(self) -> bool:
        """True unless the row was retired."""
        return self.state == "live"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A publish that was read and checked, waiting for its decision: the row and its artifact."""

    entry: CatalogEntry
    artifact: bytes | None = field(repr=False)


def strict_check(entry: CatalogEntry, source: str) -> None:
    """Refuse a row whose versions are not plain ``MAJOR.MINOR.PATCH`` (a store's strict mode)."""
    problems = []
    for path, version in [("$.version", entry.version)] + [
        (f"$.contents[{e.id}].version", e.version) for e in entry.entries
    ]:
        try:
            Version.parse(str(version), strict=True)
        except InvalidVersion as exc:
            problems.append(Problem(path, f"{str(version)!r}: expected {exc.expected}"))
    if problems:
        raise InvalidManifest(source, problems)


def _from_bundle(bundle: Bundle, channel: Channel, now: datetime) -> Prepared:
    manifest = bundle.manifest
    integration = ContentEntry("integration", manifest.id, manifest.version, manifest.name)
    entry = CatalogEntry(
        pack_id=manifest.id,
        version=manifest.version,
        channel=channel,
        entries=(integration,),
        manifest=manifest,
        digest=bundle.digest,
        contract=bundle.contract,
        published_at=now,
    )
    return Prepared(entry, bundle.data)


def _raise_for_source(folder: Path) -> None:
    report = _check_source(folder)
    for finding in report.findings:
        if finding.code in ("artifact_mismatch", "dist_stale"):
            raise ArtifactMismatch(finding.subject, finding.layers, finding.message)
        if finding.code == "invalid_manifest":
            raise InvalidManifest(finding.subject, [Problem("$", finding.message)])
        raise InvalidBundle(finding.subject, finding.message)


def _from_pack_source(folder: Path, channel: Channel, now: datetime) -> Prepared:
    _raise_for_source(folder)  # the three layers, the artifact against its sources
    pack_file = folder / "pack.json"
    pack = decode_pack_manifest(_read_document(pack_file), source=str(pack_file))
    entries: list[ContentEntry] = []
    bundle: Bundle | None = None
    for ref in pack.contents:
        if ref.kind == "integration":
            dist = folder / "dist" / f"{ref.id}-{ref.version}.bundle.tar.gz"
            bundle = read_bundle(dist)
            entries.append(ContentEntry("integration", ref.id, ref.version, bundle.manifest.name))
            continue
        entry_file = folder / ref.path / "manifest.json"
        doc = decode_entry_manifest(_read_document(entry_file), source=str(entry_file))
        entries.append(
            ContentEntry(ref.kind, ref.id, ref.version, doc.name, MappingProxyType(dict(doc.spec)))
        )
    entry = CatalogEntry(
        pack_id=pack.package.id,
        version=pack.package.version,
        channel=channel,
        entries=tuple(entries),
        manifest=bundle.manifest if bundle else None,
        digest=bundle.digest if bundle else None,
        contract=bundle.contract if bundle else None,
        published_at=now,
    )
    return Prepared(entry, bundle.data if bundle else None)


def prepare(
    source: bytes | str | Path,
    *,
    channel: Channel,
    generations: Collection[int],
    strict_versions: bool,
    now: datetime,
    project: str = "",
    sandbox: str = "auto",
    limits: SandboxLimits | None = None,
) -> Prepared:
    """Read and check what is to be published: a bundle's bytes or file, or a source folder.

    A source folder is a pack source (``pack.json``) or an integration source (``manifest.json``
    and ``code/``); its built artifact in ``dist/`` is published after the three version layers
    and the artifact are checked against the sources. A custom row belongs to ``project``; a
    vendor row to none (``project`` is ignored). The contract generation must be in
    ``generations``, and a generation the runtime can import is imported once, in a sandbox worker
    (``sandbox`` mode, under ``limits``; never in this process), so that a bundle
    whose code does not match its manifest never enters the catalog.
    """
    if channel not in CHANNELS:
        raise InvalidArgument("channel", channel, CHANNELS)
    if isinstance(source, str | Path) and Path(source).is_dir():
        folder = Path(source)
        if (folder / "pack.json").is_file():
            prepared = _from_pack_source(folder, channel, now)
        elif not (folder / "manifest.json").is_file():
            raise InvalidBundle(
                str(folder),
                "not a source folder: expected pack.json (a pack source), or manifest.json with "
                "code/ (an integration source), or give a bundle file",
            )
        else:
            _raise_for_source(folder)
            manifest_file = folder / "manifest.json"
            manifest = decode_manifest(_read_document(manifest_file), source=str(manifest_file))
            dist = folder / "dist" / f"{manifest.id}-{manifest.version}.bundle.tar.gz"
            prepared = _from_bundle(read_bundle(dist), channel, now)
        label = str(folder)
    else:
        bundle = read_bundle(source)
        prepared = _from_bundle(bundle, channel, now)
        label = bundle.source
    if channel == "custom":
        prepared = Prepared(replace(prepared.entry, project=project), prepared.artifact)
    entry = prepared.entry
    if strict_versions:
        strict_check(entry, label)
    if entry.contract is not None and prepared.artifact is not None:
        check_generation(entry.pack_id, str(entry.version), entry.contract, generations)
        bundle = read_bundle(prepared.artifact, source=label)
        check_code(bundle, generations, mode=sandbox, limits=limits or SandboxLimits())
    return prepared


def decide_publish(
    existing: Sequence[CatalogEntry], new: CatalogEntry, *, immutable: bool, force: bool
) -> Literal["insert", "replace"]:
    """Apply the publish rules to ``new`` given every row of its pack: insert, replace or refuse.

    The rules apply per stream (:attr:`CatalogEntry.stream`): the vendor rows of the pack, or one
    project's custom rows of it. Rows of other streams never refuse a publish, and no message
    names them.

    * An equal version (build metadata ignored) in the stream is a republish. With immutable
      versions (the default) it is refused (``version_exists``) and ``force`` changes nothing;
      with them off it needs ``force=True`` and replaces the row.
    * Otherwise the version must be above every existing version of its release line in the
      stream (``downgrade_not_allowed``); see :func:`packrun.check_publish_order`. Retired rows
      count.
    """
    existing = [e for e in existing if e.stream == new.stream]
    where = "in this store" if new.channel == "vendor" else f"in project {new.project}"
    same = next((e for e in existing if e.version_key == new.version_key), None)
    if same is not None:
        if immutable:
            raise VersionExists(
                new.pack_id,
                str(new.version),
                f"versions are immutable {where}, so force=True changes nothing",
            )
        if not force:
            raise VersionExists(
                new.pack_id,
                str(new.version),
                "publish it again with force (force=True, or packrun publish --force) to overwrite it",
            )
        return "replace"
    check_publish_order(new.pack_id, [e.version for e in existing], new.version)
    return "insert"
