"""Pack sources: finding them, checking their three version layers, verifying their built artifacts.

A *source tree* (such as ``bundles/``) holds source folders and may hold an ``index.json`` listing
them. A source folder is either

* an **integration source**: ``manifest.json`` and ``code/``, with built artifacts in ``dist/``; or
* a **pack source**: ``pack.json`` naming its content entries (each a folder with a
  ``manifest.json``; the integration entry also has ``code/``), with the built integration in
  ``dist/``.

Three layers carry a version and must agree: the pack (``pack.json`` → ``package.version`` or, for
an integration source, its manifest), the content entry (``pack.json`` → ``contents[].version`` and
the entry's own ``manifest.json``) and the artifact (the manifest stamped inside the built bundle).
:func:`check` reports every disagreement as a :class:`Finding`; it never stops at the first one.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from packrun._args import check_path
from packrun._bundle import (
    BUNDLE_SUFFIX,
    Bundle,
    build_source,
    bundle_filename,
    digest_of,
    read_bundle,
)
from packrun._contract import DEFAULT_GENERATIONS
from packrun._dispatch import check_code
from packrun._manifest import (
    EntryManifest,
    Manifest,
    PackManifest,
    decode_entry_manifest,
    decode_index,
    decode_manifest,
    decode_pack_manifest,
    read_document,
)
from packrun._versions import Version, bump_kind, release_line
from packrun.errors import ArtifactError, ArtifactMismatch, LayerValue, PackrunError

__all__ = ["CheckReport", "Finding", "SourceFolder", "check", "discover", "verify"]

_SKIP_DIRS: Final = {"dist", "code", "__pycache__", "node_modules"}
_MAX_DEPTH: Final = 6


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found wrong. ``code`` is stable; ``layers`` lists what each layer said."""

    code: str
    subject: str
    message: str
    layers: tuple[LayerValue, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (for ``--json``)."""
        return {
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "layers": [{"layer": v.layer, "where": v.where, "value": v.value} for v in self.layers],
        }


@dataclass(slots=True)
class CheckReport:
    """The findings of :func:`check` or :func:`verify` and what was looked at."""

    root: str
    checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (for ``--json``)."""
        return {
            "root": self.root,
            "ok": self.ok,
            "checked": self.checked,
            "findings": [f.to_dict() for f in self.findings],
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class SourceFolder:
    """A source folder found under a tree: what kind, where, and its id and version as declared."""

    kind: Literal["integration", "pack"]
    path: Path
    id: str
    version: Version


def _real(path: Path) -> Path:
    """``path`` with links followed; unlike ``Path.resolve`` on Python 3.11, a link loop is no error."""
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    return _real(path).is_relative_to(_real(folder))


def _finding(exc: PackrunError, subject: str) -> Finding:
    layers = exc.layers if isinstance(exc, ArtifactMismatch) else ()
    return Finding(exc.code, subject, exc.detail, layers)


# --- discovery ----------------------------------------------------------------------------------


def _kind_of(folder: Path) -> Literal["integration", "pack"] | None:
    if (folder / "pack.json").is_file():
        return "pack"
    if (folder / "manifest.json").is_file() and (folder / "code").is_dir():
        return "integration"
    return None


def _walk(root: Path, depth: int = 0, notes: list[str] | None = None) -> Iterator[Path]:
    if _kind_of(root) is not None:
        yield root
        return
    if depth >= _MAX_DEPTH:
        if notes is not None:
            notes.append(f"{root}: not searched, deeper than {_MAX_DEPTH} folders below the root")
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        if child.name in _SKIP_DIRS or child.name.startswith("."):
            continue
        yield from _walk(child, depth + 1, notes)


def _declare(folder: Path) -> SourceFolder | None:
    """The source at ``folder`` with its declared id and version; raises on a malformed document."""
    kind = _kind_of(folder)
    if kind == "pack":
        pack_file = folder / "pack.json"
        pack = decode_pack_manifest(read_document(pack_file), source=str(pack_file))
        return SourceFolder("pack", folder, pack.package.id, pack.package.version)
    if kind == "integration":
        manifest_file = folder / "manifest.json"
        manifest = decode_manifest(read_document(manifest_file), source=str(manifest_file))
        return SourceFolder("integration", folder, manifest.id, manifest.version)
    return None


def _declared(folder: Path, report: CheckReport) -> SourceFolder | None:
    try:
        return _declare(folder)
    except ArtifactError as exc:
        report.findings.append(_finding(exc, str(folder)))
        return None


def discover(root: str | Path) -> list[SourceFolder]:
    """The source folders under ``root`` (``root`` itself when it is one), sorted by path.

    Raises :class:`~packrun.errors.InvalidManifest` for a source whose manifest is malformed.
    """
    return [s for f in _walk(Path(root)) if (s := _declare(f)) is not None]


# --- artifacts ----------------------------------------------------------------------------------


def _tar_payload(data: bytes) -> bytes:
    return gzip.decompress(data)


def _check_artifact(
    src: Path,
    manifest: Manifest,
    dist: Path,
    subject: str,
    report: CheckReport,
    *,
    load: bool,
) -> None:
    """Compare the built artifact in ``dist`` with the integration source ``src``."""
    expected = dist / bundle_filename(manifest.id, manifest.version)
    others = (
        sorted(
            p.name for p in dist.glob(f"{manifest.id}-*{BUNDLE_SUFFIX}") if p.name != expected.name
        )
        if dist.is_dir()
        else []
    )
    if not expected.is_file():
        layers = [LayerValue("source", str(src / "manifest.json"), str(manifest.version))]
        layers += [LayerValue("artifact", str(dist / name), name) for name in others]
        hint = f"; dist/ holds {', '.join(others)} (stale)" if others else ""
        report.findings.append(
            Finding(
                "dist_missing" if not others else "artifact_mismatch",
                subject,
                f"no built artifact {expected.name} in {dist}{hint}: run packrun build {src}",
                tuple(layers),
            )
        )
        return
    try:
        bundle = read_bundle(expected)
    except PackrunError as exc:
        report.findings.append(_finding(exc, str(expected)))
        return
    _compare_layers(src, manifest, bundle, subject, report)
    try:
        _, rebuilt = build_source(src, contract=bundle.contract)
    except PackrunError as exc:
        report.findings.append(_finding(exc, str(src)))
        return
    if rebuilt != bundle.data:
        if _tar_payload(rebuilt) == _tar_payload(bundle.data):
            report.notes.append(
                f"{expected}: same content as its sources, compressed differently (another zlib)"
            )
        else:
            report.findings.append(
                Finding(
                    "dist_stale",
                    str(expected),
                    f"{expected.name} no longer matches its sources in {src}: "
                    f"run packrun build {src} --contract {bundle.contract}",
                    (
                        LayerValue("sources, rebuilt", str(src), digest_of(rebuilt)),
                        LayerValue("artifact", str(expected), bundle.digest),
                    ),
                )
            )
    if load:
        if bundle.contract in DEFAULT_GENERATIONS:
            try:
                check_code(bundle, DEFAULT_GENERATIONS)
            except PackrunError as exc:
                report.findings.append(_finding(exc, str(expected)))
        else:
            report.notes.append(
                f"{expected.name}: contract generation {bundle.contract} is outside this runtime's "
                f"window ({', '.join(str(g) for g in sorted(DEFAULT_GENERATIONS))}); not imported"
            )
    report.checked.append(str(expected))


def _compare_layers(
    src: Path, manifest: Manifest, bundle: Bundle, subject: str, report: CheckReport
) -> None:
    if (bundle.id, bundle.manifest.version) != (manifest.id, manifest.version):
        report.findings.append(
            Finding(
                "artifact_mismatch",
                subject,
                "the built artifact and its source disagree: rebuild it with packrun build",
                (
                    LayerValue(
                        "source manifest",
                        str(src / "manifest.json"),
                        f"{manifest.id} {manifest.version}",
                    ),
                    LayerValue("artifact", bundle.source, f"{bundle.id} {bundle.manifest.version}"),
                ),
            )
        )


# --- checks -------------------------------------------------------------------------------------


def _check_integration_source(src: Path, report: CheckReport, *, load: bool) -> None:
    try:
        manifest = decode_manifest(
            read_document(src / "manifest.json"), source=str(src / "manifest.json")
        )
    except ArtifactError as exc:
        report.findings.append(_finding(exc, str(src)))
        return
    _check_artifact(src, manifest, src / "dist", str(src), report, load=load)


@dataclass(frozen=True, slots=True)
class _PackSnapshot:
    pack: PackManifest
    entries: dict[str, Version]


def _check_pack_source(src: Path, report: CheckReport, *, load: bool) -> _PackSnapshot | None:
    pack_file = src / "pack.json"
    try:
        pack = decode_pack_manifest(read_document(pack_file), source=str(pack_file))
    except ArtifactError as exc:
        report.findings.append(_finding(exc, str(src)))
        return None
    entries: dict[str, Version] = {}
    for ref in pack.contents:
        folder = src / ref.path
        entry_file = folder / "manifest.json"
        subject = f"{src} {ref.kind} {ref.id}"
        if not _inside(entry_file, src):
            report.findings.append(
                Finding(
                    "invalid_manifest",
                    subject,
                    f"{entry_file} leads outside the pack source {src} (through a link); "
                    "entries must live inside it",
                )
            )
            continue
        if not entry_file.is_file():
            report.findings.append(
                Finding(
                    "invalid_manifest",
                    subject,
                    f"{entry_file} is missing (pack.json names {ref.path!r})",
                )
            )
            continue
        try:
            entry: Manifest | EntryManifest
            if ref.kind == "integration":
                entry = decode_manifest(read_document(entry_file), source=str(entry_file))
            else:
                entry = decode_entry_manifest(read_document(entry_file), source=str(entry_file))
        except ArtifactError as exc:
            report.findings.append(_finding(exc, subject))
            continue
        entries[ref.id] = entry.version
        if (entry.id, entry.version) != (ref.id, ref.version):
            report.findings.append(
                Finding(
                    "artifact_mismatch",
                    subject,
                    "the content entry's version layers disagree: update pack.json or the entry",
                    (
                        LayerValue(
                            "content entry",
                            f"{pack_file} contents[{ref.id}]",
                            f"{ref.id} {ref.version}",
                        ),
                        LayerValue(
                            "entry manifest", str(entry_file), f"{entry.id} {entry.version}"
                        ),
                    ),
                )
            )
        if ref.kind == "integration" and isinstance(entry, Manifest):
            _check_artifact(folder, entry, src / "dist", subject, report, load=load)
    report.checked.append(str(pack_file))
    return _PackSnapshot(pack, entries)


# How far a step moved, for the pack's pace. A pre-release step of an entry (1.0.0-rc.1 to 1.0.0)
# asks only that the pack moves at all: read as a major it would force a major for every release
# candidate an entry goes through.
_RANK: Final = {"none": 0, "prerelease": 1, "patch": 1, "minor": 2, "major": 3}


def _check_pack_pace(
    src_by_version: Sequence[tuple[Path, _PackSnapshot]], report: CheckReport
) -> None:
    """Between consecutive snapshots of a pack, its version moves at least as fast as any entry."""
    for (_, old), (new_path, new) in itertools.pairwise(src_by_version):
        old_v, new_v = old.pack.package.version, new.pack.package.version
        pack_step = bump_kind(old_v, new_v)
        needed: list[tuple[str, str]] = []
        for entry_id, version in new.entries.items():
            before = old.entries.get(entry_id)
            step: str = "minor" if before is None else bump_kind(before, version)
            if step == "downgrade":
                report.findings.append(
                    Finding(
                        "entry_version_decreased",
                        f"{new_path}",
                        f"entry {entry_id} went down from {before} to {version} between pack "
                        f"{old_v} and {new_v}",
                        (
                            LayerValue(f"pack {old_v}", entry_id, str(before)),
                            LayerValue(f"pack {new_v}", entry_id, str(version)),
                        ),
                    )
                )
                continue
            needed.append((entry_id, step))
        needed += [(e, "major") for e in old.entries if e not in new.entries]
        fastest = max(needed, key=lambda item: _RANK[item[1]], default=None)
        if fastest is not None and _RANK[fastest[1]] > _RANK.get(pack_step, 0):
            entry_id, step = fastest
            what = "was removed" if entry_id not in new.entries else f"took a {step} step"
            report.findings.append(
                Finding(
                    "pack_version_slower",
                    str(new_path),
                    f"pack {new.pack.package.id} went {old_v} -> {new_v} ({pack_step}) but entry "
                    f"{entry_id} {what}: the pack version must move at least as fast as its "
                    f"fastest content entry",
                    (
                        LayerValue("pack", str(new_path / "pack.json"), str(new_v)),
                        LayerValue(
                            "content entry", entry_id, str(new.entries.get(entry_id, "removed"))
                        ),
                    ),
                )
            )


def _check_index(root: Path, found: Sequence[SourceFolder], report: CheckReport) -> None:
    index_file = root / "index.json"
    if not index_file.is_file():
        return
    try:
        index = decode_index(read_document(index_file), source=str(index_file))
    except ArtifactError as exc:
        report.findings.append(_finding(exc, str(index_file)))
        return
    by_path = {_real(s.path): s for s in found}
    listed: set[Path] = set()
    for entry in index.packs:
        folder = _real(root / entry.path)
        listed.add(folder)
        source = by_path.get(folder)
        if source is None:
            report.findings.append(
                Finding(
                    "index_dangling",
                    str(index_file),
                    f"index.json lists {entry.id} {entry.version} at {entry.path!r}, "
                    f"but no pack source is there",
                )
            )
            continue
        if (source.id, source.version) != (entry.id, entry.version):
            declared_in = "pack.json" if source.kind == "pack" else "manifest.json"
            report.findings.append(
                Finding(
                    "index_stale",
                    str(source.path),
                    f"{declared_in} at {entry.path} says {source.id} {source.version} but index.json "
                    f"still says {entry.id} {entry.version}: update the index entry",
                    (
                        LayerValue("index", str(index_file), f"{entry.id} {entry.version}"),
                        LayerValue(
                            "pack", str(source.path / declared_in), f"{source.id} {source.version}"
                        ),
                    ),
                )
            )
    for source in found:
        if _real(source.path) not in listed:
            report.findings.append(
                Finding(
                    "index_missing",
                    str(source.path),
                    f"{source.id} {source.version} at {source.path.relative_to(root)} is not listed "
                    f"in index.json",
                )
            )
    report.checked.append(str(index_file))


def _run(root: str | Path, *, load: bool, layers: bool) -> CheckReport:
    base = Path(root)
    report = CheckReport(str(base))
    if not base.exists():
        report.findings.append(Finding("not_found", str(base), f"{base} does not exist"))
        return report
    if not base.is_dir():
        return _verify_file(base, report)
    folders = list(_walk(base, notes=report.notes))
    if not folders:
        report.findings.append(
            Finding(
                "not_found",
                str(base),
                f"no pack source under {base}: expected pack.json, or manifest.json with code/",
            )
        )
        return report
    found = [s for f in folders if (s := _declared(f, report)) is not None]
    snapshots: dict[str, list[tuple[Path, _PackSnapshot]]] = defaultdict(list)
    for source in found:
        if source.kind == "integration":
            _check_integration_source(source.path, report, load=load)
        elif (snapshot := _check_pack_source(source.path, report, load=load)) is not None:
            snapshots[source.id].append((source.path, snapshot))
    if layers:
        for versions in snapshots.values():
            # Each release line moves on its own: a 1.x backport after 2.0.0 is compared with 1.x.
            lines: dict[tuple[int, ...], list[tuple[Path, _PackSnapshot]]] = defaultdict(list)
            for path, snapshot in versions:
                lines[release_line(snapshot.pack.package.version)].append((path, snapshot))
            for line in lines.values():
                line.sort(key=lambda item: item[1].pack.package.version)
                _check_pack_pace(line, report)
        _check_index(base, found, report)
    return report


def _verify_file(path: Path, report: CheckReport) -> CheckReport:
    try:
        bundle = read_bundle(path)
        if bundle.contract in DEFAULT_GENERATIONS:
            check_code(bundle, DEFAULT_GENERATIONS)
        else:
            report.notes.append(
                f"{path.name}: contract generation {bundle.contract} is outside this runtime's window; "
                "read but not imported"
            )
        report.checked.append(str(path))
    except PackrunError as exc:
        report.findings.append(_finding(exc, str(path)))
    return report


def check(root: str | Path) -> CheckReport:
    """Check a pack source, an integration source or a tree of them (``packrun check``).

    Reports layers that disagree (``artifact_mismatch``), a pack version slower than its fastest
    content entry (``pack_version_slower``), index entries out of step with their ``pack.json``
    (``index_stale``, ``index_missing``, ``index_dangling``), and artifacts in ``dist/`` that are
    missing or no longer match their sources (``dist_missing``, ``dist_stale``).
    """
    check_path("root", root)
    return _run(root, load=True, layers=True)


def verify(path: str | Path) -> CheckReport:
    """Rebuild every integration under ``path`` and compare it with ``dist/`` (``packrun verify``).

    ``path`` may also be a single bundle file, which is read and its code loaded and checked.
    """
    check_path("path", path)
    return _run(path, load=True, layers=False)
