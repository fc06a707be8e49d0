"""The views the seeds name: per installation the update available (a structured value, with the
notices of the releases it crosses), the other live versions and the install state of the pack's
entries by kind; per pack how many installations have an update; packs of process flows only."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from packrun import InvalidArgument, Notice, Runtime
from packrun._bundle import bundle_bytes
from packrun._cli import main

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
NOTICE = Notice(
    message="list_contacts pages with a cursor now",
    upgrade_deadline=datetime.date(2027, 3, 31),
    migration_url="https://docs.example.com/acme/2",
)


def dist(pack: str, version: str) -> Path:
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


def with_notice(base: str, version: str, notice: Notice) -> bytes:
    bundle = packrun.read_bundle(dist("acme", base))
    manifest = msgspec.structs.replace(
        bundle.manifest, version=packrun.Version.parse(version), notice=notice
    )
    return bundle_bytes(manifest, dict(bundle.files))


async def acme_with_notice(rt: Runtime) -> None:
    """acme 1.0.0, 1.0.1, 1.0.2 (with a notice) and 1.1.0; 1.0.1 retired."""
    for version in ("1.0.0", "1.0.1"):
        await rt.publish(dist("acme", version))
    await rt.publish(with_notice("1.0.1", "1.0.2", NOTICE))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.retire("acme", "1.0.1")


def test_a_notice__round_trips_through_the_manifest_and_bad_ones_name_their_paths() -> None:
    base = {"id": "x", "version": "1.0.0", "tools": [{"id": "t"}]}
    good = {"message": "m", "upgrade_deadline": "2027-03-31", "migration_url": "https://e.x/m"}
    assert packrun.decode_manifest({**base, "notice": good}).notice == Notice(
        message="m", upgrade_deadline=datetime.date(2027, 3, 31), migration_url="https://e.x/m"
    )
    with pytest.raises(packrun.InvalidManifest) as caught:
        packrun.decode_manifest(
            {**base, "notice": {"message": "", "upgrade_deadline": "soon", "migration_url": "x"}}
        )
    paths = {p.path for p in caught.value.problems}
    assert paths == {
        "$.notice.message",
        "$.notice.upgrade_deadline",
        "$.notice.migration_url",
    }


async def test_explain__the_update_available_is_a_value_with_the_notices_it_crosses(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await acme_with_notice(rt)
        await rt.install("crm", "acme", pin="1.0.0")
        why = rt.explain("crm")
        available = why.update_available
        assert available is not None
        assert (available.version, available.channel, available.bump) == (
            "1.1.0",
            "vendor",
            "minor",
        )
        assert available.integration is None
        assert [(n.version, n.message, n.upgrade_deadline) for n in available.notices] == [
            ("1.0.2", NOTICE.message, NOTICE.upgrade_deadline)
        ]
        assert why.update == str(available) == "1.1.0 (minor, vendor)"
        assert (
            "notice: 1.0.2: list_contacts pages with a cursor now (upgrade by 2027-03-31); "
            "migration guide: https://docs.example.com/acme/2"
        ) in str(why)
        assert [(v.version, v.channel) for v in why.other_live_versions] == [
            ("1.1.0", "vendor"),
            ("1.0.2", "vendor"),
        ]  # newest first; not 1.0.0 (it runs) nor the retired 1.0.1
        review = rt.review_update("crm", to="1.0.2")
        assert [n.version for n in review.notices] == ["1.0.2"]
        assert "notice: 1.0.2" in str(review)
        assert rt.review_update("crm", to="1.1.0").notices == review.notices
        await rt.update("crm", to="1.0.2")
        assert rt.explain("crm").update_available.notices == ()  # type: ignore[union-attr]


async def test_explain__contents_show_each_entry_kind_with_its_version_and_the_update(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(BUNDLES / "helpdesk" / "1.0.0")
        await rt.install("desk", "helpdesk")
        why = rt.explain("desk")
        assert [(c.kind, c.id, c.version, c.update_version) for c in why.contents] == [
            ("integration", "helpdesk", "1.0.0", None),
            ("ontology", "support-terms", "1.0.0", None),
        ]  # the process flow has no pin: process_flows() gives it
        await rt.publish(BUNDLES / "helpdesk" / "1.1.0")
        after = {(c.kind, c.id): c.update_version for c in rt.explain("desk").contents}
        new: dict[tuple[str, str], str] = {
            (e.kind, e.id): str(e.version)
            for e in rt.versions("helpdesk")[-1].entries
            if e.kind != "process_flow"
        }
        assert after == {
            key: (None if new.get(key) == "1.0.0" else new.get(key, "removed")) for key in after
        }
        assert "contents: integration helpdesk 1.0.0" in str(rt.explain("desk"))


async def test_pack_updates__counts_the_installations_with_an_update(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await acme_with_notice(rt)
        await rt.install("a", "acme", pin="1.0.0")
        await rt.install("b", "acme", pin="1.0.0")
        await rt.install("c", "acme", pin="1.1.0")
        await rt.install("d", "acme", pin="latest")
        await rt.install("e", "acme", pin="1.0.0", project="acme-corp")
        counts = rt.pack_updates("acme")
        assert (counts.installations, counts.with_update) == (4, 2)
        assert counts.by_version == (("1.1.0", 2, 0), ("1.0.0", 2, 2))
        assert rt.pack_updates("acme", project="acme-corp").with_update == 1


def flows_only_pack(root: Path) -> Path:
    flow = root / "flows" / "triage"
    flow.mkdir(parents=True)
    (flow / "manifest.json").write_text(
        json.dumps({"id": "triage", "version": "1.0.0", "spec": {"steps": []}})
    )
    (root / "pack.json").write_text(
        json.dumps(
            {
                "package": {"id": "playbooks", "version": "1.0.0"},
                "contents": [
                    {
                        "kind": "process_flow",
                        "id": "triage",
                        "version": "1.0.0",
                        "path": "flows/triage",
                    }
                ],
            }
        )
    )
    return root


async def test_a_pack_of_process_flows_only__is_refused_at_install__its_flows_are_read(
    store_url: str, tmp_path: Path
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(flows_only_pack(tmp_path / "playbooks"))
        with pytest.raises(InvalidArgument, match="process flows only") as caught:
            await rt.install("p", "playbooks")
        assert "process_flows" in str(caught.value)
        assert rt.installations() == []
        assert set(rt.process_flows("playbooks")) == {"triage"}


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


def test_cli__status_and_explain_show_the_fleet_views(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def prepare() -> None:
        async with packrun.open_runtime(url) as rt:
            await acme_with_notice(rt)
            await rt.install("crm", "acme", pin="1.0.0")

    anyio.run(prepare)
    code, text = run_cli("status", "--store", url)
    assert code == 0
    assert "crm: notice: 1.0.2: list_contacts pages with a cursor now" in text
    assert "acme: 1 of 1 installation(s) have an update available" in text
    code, text = run_cli("status", "--store", url, "--json")
    shown = json.loads(text)
    [inst] = shown["installations"]
    assert inst["update_available"]["version"] == "1.1.0"
    assert inst["update_available"]["notices"][0]["upgrade_deadline"] == "2027-03-31"
    assert [v["version"] for v in inst["other_live_versions"]] == ["1.1.0", "1.0.2"]
    assert shown["packs"] == [
        {
            "pack_id": "acme",
            "project": "default",
            "installations": 1,
            "with_update": 1,
            "by_version": [["1.0.0", 1, 1]],
        }
    ]
    code, text = run_cli("explain", "crm", "--store", url, "--json")
    assert json.loads(text)["update_available"]["bump"] == "minor"


async def test_the_views_and_the_review__agree_on_the_update_available(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await acme_with_notice(rt)
        await rt.set_alias("acme", "stable", "1.0.2")
        pins = ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "latest", "@stable"]
        for n, pin in enumerate(pins):
            await rt.install(f"i-{n}", "acme", pin=pin)
        with_update = 0
        for n in range(len(pins)):
            why = rt.explain(f"i-{n}")
            available = why.update_available
            assert (available is None) == (why.update is None)
            if available is None:
                continue
            with_update += 1
            review = rt.review_update(f"i-{n}")
            assert review.to_version == available.version
            assert review.notices == available.notices
        assert rt.pack_updates("acme").with_update == with_update == 4
