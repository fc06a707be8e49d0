"""Pack sources: the three version layers, the pack's pace, the index and dist/ are all checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import packrun
from packrun import CheckReport

CODE = """
from packrun.sdk import Integration

integration = Integration({id!r})


@integration.tool("ping")
def ping(ctx, input):
    return {{"pong": {answer!r}}}
"""


def write_integration(
    folder: Path, id: str = "acme", version: str = "1.0.0", answer: str = "a"
) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    manifest = {"id": id, "version": version, "tools": [{"id": "ping"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "code" / "__init__.py").write_text(CODE.format(id=id, answer=answer))
    return folder


def write_entry(folder: Path, id: str, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"id": id, "version": version, "spec": {}}))


def write_pack(
    folder: Path, version: str, entries: dict[str, str], integration: str = "1.0.0"
) -> Path:
    """A pack source ``helpdesk`` with an integration and process flows ``entries`` (id -> version)."""
    contents: list[dict[str, Any]] = [
        {"kind": "integration", "id": "helpdesk", "version": integration, "path": "integration"}
    ]
    write_integration(folder / "integration", "helpdesk", integration)
    for entry_id, entry_version in entries.items():
        write_entry(folder / "flows" / entry_id, entry_id, entry_version)
        contents.append(
            {
                "kind": "process_flow",
                "id": entry_id,
                "version": entry_version,
                "path": f"flows/{entry_id}",
            }
        )
    pack = {"package": {"id": "helpdesk", "version": version}, "contents": contents}
    (folder / "pack.json").write_text(json.dumps(pack))
    packrun.build_bundle(folder / "integration", folder / "dist")
    return folder


def codes(report: CheckReport) -> list[str]:
    return sorted(f.code for f in report.findings)


def test_check__clean_integration_source__is_ok(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    packrun.build_bundle(src)
    report = packrun.check(src)
    assert report.ok, report.findings
    assert report.checked == [str(src / "dist" / "acme-1.0.0.bundle.tar.gz")]


def test_check__no_dist__reports_it(tmp_path: Path) -> None:
    report = packrun.check(write_integration(tmp_path / "acme"))
    assert codes(report) == ["dist_missing"]


def test_check__source_bumped_without_rebuild__names_both_layers(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    packrun.build_bundle(src)
    write_integration(src, version="1.0.1")
    report = packrun.check(src)
    assert codes(report) == ["artifact_mismatch"]
    layers = {layer.layer: layer.value for layer in report.findings[0].layers}
    assert layers["source"] == "1.0.1"
    assert layers["artifact"] == "acme-1.0.0.bundle.tar.gz"


def test_check__code_changed_after_build__dist_is_stale(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    packrun.build_bundle(src)
    write_integration(src, answer="b")
    report = packrun.verify(src)
    assert codes(report) == ["dist_stale"]
    assert "no longer matches its sources" in report.findings[0].message


def test_check__renamed_artifact__is_a_layer_mismatch(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    built = packrun.build_bundle(src)
    write_integration(src, version="1.0.1")
    built.path.rename(src / "dist" / "acme-1.0.1.bundle.tar.gz")
    report = packrun.check(src)
    assert codes(report) == ["artifact_mismatch"]
    layers = {layer.layer: layer.value for layer in report.findings[0].layers}
    assert layers == {"file name": "acme 1.0.1", "artifact": "acme 1.0.0"}


def test_check__pack_entry_layers_disagree(tmp_path: Path) -> None:
    pack = write_pack(tmp_path / "helpdesk", "1.0.0", {"triage": "1.0.0"})
    write_entry(pack / "flows" / "triage", "triage", "1.1.0")  # entry moved, pack.json did not
    report = packrun.check(pack)
    assert codes(report) == ["artifact_mismatch"]
    layers = {layer.layer: layer.value for layer in report.findings[0].layers}
    assert layers == {"content entry": "triage 1.0.0", "entry manifest": "triage 1.1.0"}


def test_check__pack_integration_artifact_is_checked_against_its_entry(tmp_path: Path) -> None:
    pack = write_pack(tmp_path / "helpdesk", "1.0.0", {})
    write_integration(pack / "integration", "helpdesk", "1.0.0", answer="changed")
    assert codes(packrun.check(pack)) == ["dist_stale"]


def test_check__pack_slower_than_its_fastest_entry(tmp_path: Path) -> None:
    write_pack(tmp_path / "helpdesk" / "1.0.0", "1.0.0", {"triage": "1.0.0"})
    write_pack(tmp_path / "helpdesk" / "1.0.1", "1.0.1", {"triage": "1.1.0"})
    report = packrun.check(tmp_path)
    assert codes(report) == ["pack_version_slower"]
    finding = report.findings[0]
    assert "triage took a minor step" in finding.message
    assert "1.0.0 -> 1.0.1 (patch)" in finding.message


def test_check__pack_as_fast_as_its_entries__is_ok(tmp_path: Path) -> None:
    write_pack(tmp_path / "a", "1.0.0", {"triage": "1.0.0", "escalate": "1.0.0"})
    write_pack(tmp_path / "b", "1.1.0", {"triage": "1.1.0", "escalate": "1.0.1"})
    write_pack(tmp_path / "c", "2.0.0", {"triage": "2.0.0", "escalate": "1.0.1"})
    assert packrun.check(tmp_path).ok


def test_check__entry_removed_needs_a_major(tmp_path: Path) -> None:
    write_pack(tmp_path / "a", "1.0.0", {"triage": "1.0.0", "escalate": "1.0.0"})
    write_pack(tmp_path / "b", "1.1.0", {"triage": "1.0.0"})
    report = packrun.check(tmp_path)
    assert codes(report) == ["pack_version_slower"]
    assert "escalate was removed" in report.findings[0].message


def _index(root: Path, packs: list[tuple[str, str, str]]) -> None:
    entries = [{"id": i, "version": v, "path": p} for i, v, p in packs]
    (root / "index.json").write_text(json.dumps({"packs": entries}))


def test_check__pack_json_bumped_behind_an_unchanged_index_entry__is_reported(
    tmp_path: Path,
) -> None:
    write_pack(tmp_path / "helpdesk", "1.0.0", {"triage": "1.0.0"})
    _index(tmp_path, [("helpdesk", "1.0.0", "helpdesk")])
    assert packrun.check(tmp_path).ok
    write_pack(tmp_path / "helpdesk", "1.1.0", {"triage": "1.1.0"})  # index not updated
    report = packrun.check(tmp_path)
    assert codes(report) == ["index_stale"]
    finding = report.findings[0]
    assert "says helpdesk 1.1.0 but index.json still says helpdesk 1.0.0" in finding.message
    # Reported, never skipped: the pack itself was still checked.
    assert str(tmp_path / "helpdesk" / "pack.json") in report.checked


def test_check__index_lists_nothing_there_and_misses_a_source(tmp_path: Path) -> None:
    write_pack(tmp_path / "helpdesk", "1.0.0", {})
    src = write_integration(tmp_path / "acme")
    packrun.build_bundle(src)
    _index(tmp_path, [("helpdesk", "1.0.0", "helpdesk"), ("gone", "1.0.0", "gone")])
    report = packrun.check(tmp_path)
    assert codes(report) == ["index_dangling", "index_missing"]


def test_check__a_broken_source__does_not_hide_the_others(tmp_path: Path) -> None:
    bad = write_integration(tmp_path / "bad")
    (bad / "manifest.json").write_text('{"id": "bad", "version": "one", "tools": [{"id": "ping"}]}')
    good = write_integration(tmp_path / "good", id="good")
    report = packrun.check(tmp_path)
    assert codes(report) == ["dist_missing", "invalid_manifest"]
    assert any(f.subject == str(good) for f in report.findings)


def test_check__nothing_there(tmp_path: Path) -> None:
    assert codes(packrun.check(tmp_path / "missing")) == ["not_found"]
    assert codes(packrun.check(tmp_path)) == ["not_found"]


def test_verify__one_bundle_file(tmp_path: Path) -> None:
    built = packrun.build_bundle(write_integration(tmp_path / "acme"))
    assert packrun.verify(built.path).ok
    broken = tmp_path / "broken.bundle.tar.gz"
    broken.write_bytes(built.path.read_bytes()[:-20])
    assert codes(packrun.verify(broken)) == ["invalid_bundle"]


def test_verify__older_generation_fixture__is_rebuilt_with_its_own_generation(
    tmp_path: Path,
) -> None:
    src = write_integration(tmp_path / "acme")
    packrun.build_bundle(src, contract=0)
    report = packrun.verify(src)
    assert report.ok, report.findings
    assert any("generation 0" in note for note in report.notes)


def test_check__sample_bundles_tree__is_clean() -> None:
    bundles = Path(__file__).parents[1] / "bundles"
    report = packrun.check(bundles)
    assert report.ok, [f"{f.code}: {f.message}" for f in report.findings]
    assert len(report.checked) >= 10


def test_check__copy_of_samples_with_a_stale_index__is_caught(tmp_path: Path) -> None:
    tree = shutil.copytree(Path(__file__).parents[1] / "bundles", tmp_path / "bundles")
    index = json.loads((tree / "index.json").read_text())
    index["packs"][0]["version"] = "0.9.0"
    (tree / "index.json").write_text(json.dumps(index))
    assert "index_stale" in codes(packrun.check(tree))


def test_check__backport_on_an_older_line__is_compared_within_its_line(tmp_path: Path) -> None:
    write_pack(tmp_path / "a", "1.0.0", {"triage": "1.4.0"})
    write_pack(tmp_path / "b", "2.0.0", {"triage": "2.0.0"})
    write_pack(tmp_path / "c", "1.1.0", {"triage": "1.5.0"})  # a 1.x backport after 2.0.0
    assert packrun.check(tmp_path).ok


def test_check__entry_going_down__names_both_snapshots(tmp_path: Path) -> None:
    write_pack(tmp_path / "a", "1.0.0", {"triage": "1.4.0"})
    write_pack(tmp_path / "b", "1.1.0", {"triage": "1.3.0"})
    report = packrun.check(tmp_path)
    assert codes(report) == ["entry_version_decreased"]
    layers = {layer.layer: layer.value for layer in report.findings[0].layers}
    assert layers == {"pack 1.0.0": "1.4.0", "pack 1.1.0": "1.3.0"}


def test_check__stale_dist__names_both_digests(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    built = packrun.build_bundle(src)
    write_integration(src, answer="b")
    (finding,) = packrun.check(src).findings
    layers = {layer.layer: layer.value for layer in finding.layers}
    assert layers["artifact"] == built.digest
    assert layers["sources, rebuilt"].startswith("sha256:")
    assert layers["sources, rebuilt"] != built.digest


def test_check__index_path_into_a_link_loop__is_reported_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "x").symlink_to(tmp_path / "y")
    (tmp_path / "y").symlink_to(tmp_path / "x")
    write_pack(tmp_path / "helpdesk", "1.0.0", {})
    _index(tmp_path, [("helpdesk", "1.0.0", "helpdesk"), ("z", "1.0.0", "x")])
    assert codes(packrun.check(tmp_path)) == ["index_dangling"]


def test_check__pack_entry_linked_outside_the_pack__is_refused(tmp_path: Path) -> None:
    pack = write_pack(tmp_path / "helpdesk", "1.0.0", {"triage": "1.0.0"})
    outside = tmp_path / "outside"
    write_entry(outside, "triage", "1.0.0")
    shutil.rmtree(pack / "flows" / "triage")
    (pack / "flows" / "triage").symlink_to(outside)
    report = packrun.check(pack)
    assert codes(report) == ["invalid_manifest"]
    assert "leads outside the pack source" in report.findings[0].message


def test_verify__a_device__is_an_invalid_bundle_finding() -> None:
    report = packrun.verify("/dev/zero")
    assert codes(report) == ["invalid_bundle"]
    assert "not a regular file" in report.findings[0].message


def test_check__sources_deeper_than_searched__are_noted(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*"abcdefg")
    packrun.build_bundle(write_integration(deep))
    report = packrun.check(tmp_path)
    assert codes(report) == ["not_found"]
    assert any("not searched" in note for note in report.notes)
