"""The reconciler: from a fetched pack tree and the catalog, what to publish and what to skip.

It reads the tree's ``index.json``; for every entry it compares the index with the pack's own
``pack.json`` (or an integration source's ``manifest.json``): an entry whose pack moved while the
index did not is reported ``index_stale``. An entry whose version the catalog already holds is
unchanged. Every other entry goes through the three-layer check and the verify gate (a rebuild
from source compared with the committed ``dist/``), and, when the trust policy asks, a byte-for-byte
comparison with that rebuild. What passes is a candidate for publishing. One entry's failure never
stops the others.

Nothing here imports bundle code: the checks read manifests and rebuild archives only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packrun._bundle import build_source, bundle_filename, read_bundle
from packrun._manifest import (
    Manifest,
    decode_index,
    decode_manifest,
    decode_pack_manifest,
    read_document,
)
from packrun._source import _declare, _inside, _run
from packrun._sources._model import SyncItem
from packrun._versions import Version, version_key
from packrun.errors import PackrunError

__all__ = ["Candidate", "Plan", "plan"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pack version to publish: its folder in the tree."""

    pack_id: str
    version: Version
    folder: Path


@dataclass(slots=True)
class Plan:
    """What a sync is to publish, what it skipped and why, and how many entries were unchanged."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[SyncItem] = field(default_factory=list)
    errors: list[SyncItem] = field(default_factory=list)
    unchanged: int = 0


def _rebuild_differs(folder: Path) -> str | None:
    """Why the built artifact of ``folder`` is not byte-identical to a rebuild, or ``None``."""
    integrations: list[tuple[Path, Path]] = []
    if (folder / "pack.json").is_file():
        pack = decode_pack_manifest(read_document(folder / "pack.json"), source=str(folder))
        integrations = [
            (folder / ref.path, folder / "dist" / bundle_filename(ref.id, ref.version))
            for ref in pack.contents
            if ref.kind == "integration"
        ]
    else:
        manifest: Manifest = decode_manifest(
            read_document(folder / "manifest.json"), source=str(folder)
        )
        integrations = [(folder, folder / "dist" / bundle_filename(manifest.id, manifest.version))]
    for src, dist in integrations:
        bundle = read_bundle(dist)
        _, rebuilt = build_source(src, contract=bundle.contract)
        if rebuilt != bundle.data:
            return (
                f"{dist.name} is not byte-identical to a rebuild from its sources "
                "(the trust policy requires it): rebuild it with packrun build and commit it"
            )
    return None


def plan(
    root: Path,
    is_known: Callable[[str, str], bool],
    *,
    require_rebuild: bool = False,
) -> Plan:
    """Reconcile the tree at ``root`` with the catalog (``is_known(pack_id, version_key)``)."""
    result = Plan()
    index_file = root / "index.json"
    if not index_file.is_file():
        result.errors.append(
            SyncItem(
                "source_error",
                "the source has no index.json at its root: expected the index listing its packs "
                "and versions",
            )
        )
        return result
    try:
        index = decode_index(read_document(index_file), source="index.json")
    except PackrunError as exc:
        result.errors.append(SyncItem(exc.code, exc.detail))
        return result
    for entry in index.packs:
        pack_id, version = entry.id, str(entry.version)

        def skip(code: str, message: str, pack_id: str = pack_id, version: str = version) -> None:
            result.skipped.append(SyncItem(code, message, pack_id, version))

        folder = root / entry.path
        if not _inside(folder, root):
            skip(
                "invalid_manifest",
                f"index.json puts {pack_id} at {entry.path!r}, outside the source",
            )
            continue
        try:
            declared = _declare(folder)
        except PackrunError as exc:
            skip(exc.code, exc.detail)
            continue
        if declared is None:
            skip(
                "index_dangling",
                f"index.json lists {pack_id} {version} at {entry.path!r}, but no pack source is there",
            )
            continue
        if (declared.id, declared.version) != (entry.id, entry.version):
            what = "pack.json" if declared.kind == "pack" else "manifest.json"
            skip(
                "index_stale",
                f"{what} at {entry.path} says {declared.id} {declared.version} but index.json "
                f"still says {pack_id} {version}: bump the index entry (the reconciler keys on it)",
            )
            continue
        if is_known(pack_id, version_key(entry.version)):
            result.unchanged += 1
            continue
        report = _run(folder, load=False, layers=False)  # the three layers and the verify gate
        if report.findings:
            first = report.findings[0]
            skip(first.code, "; ".join(f.message for f in report.findings))
            continue
        if require_rebuild:
            try:
                why = _rebuild_differs(folder)
            except PackrunError as exc:
                skip(exc.code, exc.detail)
                continue
            if why is not None:
                skip("untrusted_source", why)
                continue
        result.candidates.append(Candidate(pack_id, entry.version, folder))
    result.candidates.sort(key=lambda c: (c.pack_id, c.version))
    return result
