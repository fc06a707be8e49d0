"""Projects: one catalog, many tenants, nothing crossing between them (on every store).

Vendor rows are global; custom rows, installations and the publish settings of a custom stream
belong to one project. The random histories of ``property/test_resolver_model.py`` check the
isolation at large; these tests pin down each rule with a case of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from packrun import Runtime
from packrun._bundle import bundle_bytes

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def dist(pack: str, version: str) -> Path:
    """The built artifact of a sample integration."""
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


def build(pack: str, base: str, *, version: str | None = None, marker: str = "custom") -> bytes:
    """A bundle like the sample ``pack`` ``base`` with other code (a new digest), perhaps another
    version."""
    bundle = packrun.read_bundle(dist(pack, base))
    manifest = bundle.manifest
    if version is not None:
        manifest = msgspec.structs.replace(manifest, version=packrun.Version.parse(version))
    files = dict(bundle.files)
    files["__init__.py"] = files["__init__.py"] + f"\n# {marker}\n".encode()
    return bundle_bytes(manifest, files)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(store_url) as runtime:
        yield runtime


def rows(rt: Runtime, project: str) -> list[tuple[str, str, str]]:
    return [(str(e.version), e.channel, e.project) for e in rt.versions("acme", project=project)]


# --- the model ----------------------------------------------------------------------------------


async def test_custom_rows__are_seen_by_their_project_alone(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.1.0"), channel="custom", project="acme-corp")
    assert rows(rt, "acme-corp") == [("1.0.0", "vendor", ""), ("1.1.0", "custom", "acme-corp")]
    assert rows(rt, "globex") == [("1.0.0", "vendor", "")]
    assert rows(rt, "default") == rt_rows_default(rt)
    await rt.install("acme-1", "acme", pin="latest", project="acme-corp")
    await rt.install("globex-1", "acme", pin="latest", project="globex")
    assert (rt.resolve("acme-1").version, rt.resolve("acme-1").channel) == ("1.1.0", "custom")
    assert (rt.resolve("globex-1").version, rt.resolve("globex-1").channel) == ("1.0.0", "vendor")
    with pytest.raises(packrun.NotFound):
        await rt.install("globex-2", "acme", pin="latest-custom", project="globex")
    assert [i.id for i in rt.installations(project="globex")] == ["globex-1"]
    assert rt.projects() == ["acme-corp", "globex"]


def rt_rows_default(rt: Runtime) -> list[tuple[str, str, str]]:
    return [(str(e.version), e.channel, e.project) for e in rt.versions("acme")]


async def test_a_pack_with_only_another_projects_custom_rows__is_not_found(rt: Runtime) -> None:
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="acme-corp")
    assert rt.packs(project="acme-corp") == ["acme"]
    assert rt.packs() == []
    with pytest.raises(packrun.NotFound) as missing:
        rt.versions("acme", project="globex")
    assert missing.value.known == ()
    with pytest.raises(packrun.NotFound):
        await rt.install("g", "acme", project="globex")


async def test_a_user_who_never_names_a_project__works_in_default(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.1.0"), channel="custom")
    inst = await rt.install("mine", "acme")
    assert inst.project == "default"
    assert rt.versions("acme")[-1].project == "default"
    assert rt.resolve("mine").channel == "custom"
    assert rows(rt, "other") == [("1.0.0", "vendor", "")]


# --- publish rules per stream -------------------------------------------------------------------


async def test_a_vendor_publish__is_never_refused_for_a_projects_custom_row(rt: Runtime) -> None:
    await rt.publish(build("acme", "1.0.0", version="1.2.0"), channel="custom", project="p1")
    vendor = await rt.publish(dist("acme", "1.0.0"))  # below p1's 1.2.0: another stream
    await rt.publish(dist("acme", "1.2.0"))  # p1's number: another stream
    assert vendor.project == ""
    assert rows(rt, "p1") == [
        ("1.0.0", "vendor", ""),
        ("1.2.0", "vendor", ""),
        ("1.2.0", "custom", "p1"),
    ]


async def test_publish_order_and_republish__are_judged_within_the_projects_stream(
    rt: Runtime,
) -> None:
    await rt.publish(build("acme", "1.0.0", version="1.2.0"), channel="custom", project="p1")
    await rt.publish(build("acme", "1.0.0", version="1.1.0"), channel="custom", project="p2")
    with pytest.raises(packrun.DowngradeNotAllowed) as below:
        await rt.publish(build("acme", "1.0.0", version="1.1.0"), channel="custom", project="p1")
    assert below.value.highest == "1.2.0"
    with pytest.raises(packrun.VersionExists) as again:
        await rt.publish(build("acme", "1.0.0", version="1.1.0"), channel="custom", project="p2")
    assert "p1" not in str(again.value)
    assert "1.2.0" not in str(again.value)
    assert "in project p2" in str(again.value)


async def test_publish__a_vendor_row_with_a_project__is_refused(rt: Runtime) -> None:
    with pytest.raises(packrun.InvalidArgument) as refused:
        await rt.publish(dist("acme", "1.0.0"), project="p1")
    assert "vendor rows are global" in str(refused.value)
    with pytest.raises(packrun.InvalidArgument) as bad:
        await rt.publish(dist("acme", "1.0.0"), channel="custom", project="no spaces")
    assert "project" in str(bad.value)
    assert rt.packs() == []


# --- per-project settings -----------------------------------------------------------------------


async def test_immutable_versions__per_project__leave_the_vendor_stream_and_other_projects(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="p1")
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="p2")
    await rt.set_immutable_versions(False, project="p1")  # p1's Danger Zone
    assert rt.project_settings("p1").immutable_versions is False
    assert rt.project_settings("p2").immutable_versions is True
    assert rt.settings.immutable_versions is True
    replaced = await rt.publish(
        build("acme", "1.0.0", marker="again"), channel="custom", project="p1", force=True
    )
    assert rt.versions("acme", project="p1")[-1].digest == replaced.digest
    with pytest.raises(packrun.VersionExists, match="immutable in project p2"):
        await rt.publish(
            build("acme", "1.0.0", marker="again"), channel="custom", project="p2", force=True
        )
    with pytest.raises(packrun.VersionExists, match="immutable in this store"):
        await rt.publish(build("acme", "1.0.0", marker="again"), force=True)


async def test_store_settings__govern_projects_that_set_none_of_their_own(rt: Runtime) -> None:
    await rt.set_immutable_versions(False, project="p1")
    await rt.set_strict_versions(True)
    assert rt.project_settings("p2") == rt.settings  # follows the store
    assert rt.project_settings("p1").strict_versions is True  # follows the store there too
    assert rt.project_settings("p1").immutable_versions is False  # its own
    await rt.set_immutable_versions(True)
    assert rt.project_settings("p1").immutable_versions is False  # its own stays


async def test_strict_versions__per_project(rt: Runtime) -> None:
    await rt.set_strict_versions(True, project="strict")
    rc = build("acme", "1.0.0", version="1.1.0-rc.1")
    with pytest.raises(packrun.InvalidManifest):
        await rt.publish(rc, channel="custom", project="strict")
    await rt.publish(rc, channel="custom", project="loose")
    await rt.publish(rc)  # the vendor stream is not strict
    assert [e.channel for e in rt.versions("acme", project="strict")] == ["vendor"]


async def test_project_settings__persist_and_reach_other_runtimes(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0.05) as a,
        packrun.open_runtime(shared_url, refresh_interval=0.05) as b,
    ):
        await a.set_immutable_versions(False, project="p1")
        with anyio.fail_after(10):
            while b.project_settings("p1").immutable_versions:
                await anyio.sleep(0.05)
        assert b.settings.immutable_versions is True
    async with packrun.open_runtime(shared_url) as again:
        assert again.project_settings("p1").immutable_versions is False
        assert again.project_settings("p2").immutable_versions is True


# --- exact pins ---------------------------------------------------------------------------------


async def test_an_exact_pin__names_the_projects_custom_row_first__else_the_vendor_row(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="p1")
    await rt.install("p1-plain", "acme", pin="1.0.0", project="p1")
    await rt.install("p1-vendor", "acme", pin="vendor:1.0.0", project="p1")
    await rt.install("p2-plain", "acme", pin="1.0.0", project="p2")
    assert rt.resolve("p1-plain").channel == "custom"
    assert rt.resolve("p1-vendor").channel == "vendor"
    assert rt.resolve("p2-plain").channel == "vendor"
    with pytest.raises(packrun.NotFound):
        await rt.install("p2-custom", "acme", pin="custom:1.0.0", project="p2")
    why = rt.explain("p1-plain")
    assert any("custom row" in note and "vendor:X" in note for note in why.notes)
    assert "project p1" in str(why)


async def test_install_without_a_pin__pins_the_vendor_row_it_picked_unambiguously(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0", version="1.0.0"), channel="custom", project="p1")
    await rt.retire("acme", "custom:1.0.0", project="p1")
    inst = await rt.install("p1-1", "acme", project="p1")
    assert inst.pin == "vendor:1.0.0"
    assert rt.resolve("p1-1").channel == "vendor"
    assert rt.versions("acme")[0].state == "live"  # the vendor row was not retired


# --- isolation of installations -----------------------------------------------------------------


async def _settled(answer: object) -> object:
    """``answer``, awaited when it is awaitable (``history`` reads the store)."""
    return await answer if inspect.isawaitable(answer) else answer


async def test_another_projects_installation__is_not_found_and_never_named(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.0.1"))
    await rt.install("secret", "acme", pin="1.0.0", project="p1")
    await rt.install("mine", "acme", pin="1.0.0", project="p2")
    for call in (
        lambda: rt.explain("secret", project="p2"),
        lambda: rt.history("secret", project="p2"),
        lambda: rt.installation("secret", project="p2"),
        lambda: rt.review_update("secret", project="p2"),
    ):
        with pytest.raises(packrun.NotFound) as missing:
            await _settled(call())
        assert missing.value.known == ("mine",)
    with pytest.raises(packrun.NotFound):
        await rt.update("secret", project="p2")
    with pytest.raises(packrun.NotFound):
        await rt.set_pin("secret", "1.0.1", project="p2")
    with pytest.raises(packrun.NotFound):
        await rt.rollback("secret", to="1.0.0", project="p2")
    with pytest.raises(packrun.InstallationExists) as taken:
        await rt.install("secret", "acme", project="p2")
    assert "acme" not in str(taken.value)
    assert "1.0.0" not in str(taken.value)
    assert rt.resolve("secret").version == "1.0.0"
    assert [e.to_version for e in (await rt.history("secret", project="p1"))] == ["1.0.0"]


async def test_not_found_for_a_pin__lists_only_the_rows_the_project_sees(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0", version="1.5.0"), channel="custom", project="p1")
    with pytest.raises(packrun.NotFound) as missing:
        await rt.install("p2-1", "acme", pin="1.5.0", project="p2")
    assert "1.5.0 (custom" not in str(missing.value)
    assert missing.value.known == ("1.0.0 (vendor, live)",)


# --- policies, updates and rollbacks inside a project -------------------------------------------


async def test_an_update_policy__moves_within_its_project_to_the_vendor_row_it_chose(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("p1-auto", "acme", pin="1.0.0", policy="auto_patch", project="p1")
    await rt.install("p2-auto", "acme", pin="1.0.0", policy="auto_patch", project="p2")
    await rt.publish(build("acme", "1.0.0", version="1.0.1"), channel="custom", project="p2")
    assert rt.resolve("p1-auto").version == "1.0.0"  # p2's custom row is not p1's to move to
    assert rt.resolve("p2-auto").version == "1.0.0"  # a policy stays on its channel
    await rt.publish(dist("acme", "1.0.1"))
    assert (rt.installation("p1-auto").pin, rt.resolve("p1-auto").channel) == ("1.0.1", "vendor")
    # p2 has a custom 1.0.1: its installation is pinned to the vendor row by name
    assert (rt.installation("p2-auto").pin, rt.resolve("p2-auto").channel) == (
        "vendor:1.0.1",
        "vendor",
    )


async def test_update_and_rollback__name_rows_as_exact_pins_do(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="p1")
    await rt.publish(dist("acme", "1.0.1"))
    await rt.install("p1-1", "acme", pin="vendor:1.0.0", project="p1")
    review = await rt.update("p1-1", to="1.0.1", project="p1")
    assert review.to_version == "1.0.1"
    back = await rt.rollback("p1-1", to="vendor:1.0.0", project="p1")
    assert back.to_version == "1.0.0"
    assert (rt.installation("p1-1").pin, rt.resolve("p1-1").channel) == ("vendor:1.0.0", "vendor")


# --- process flows ------------------------------------------------------------------------------


async def test_process_flows__a_projects_custom_versions_carry_its_flows(rt: Runtime) -> None:
    await rt.publish(BUNDLES / "helpdesk" / "1.0.0")
    await rt.publish(BUNDLES / "helpdesk" / "1.1.0", channel="custom", project="p1")
    assert str(rt.process_flows("helpdesk", project="p1")["ticket-triage"].version) == "1.1.0"
    assert str(rt.process_flows("helpdesk", project="p2")["ticket-triage"].version) == "1.0.0"
    assert str(rt.process_flows("helpdesk")["ticket-triage"].version) == "1.0.0"


# --- runs in flight -----------------------------------------------------------------------------


async def test_runs_in_flight__counted_per_project_and_per_channel(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0"), channel="custom", project="p1")
    await rt.install("p1-1", "acme", pin="1.0.0", project="p1")
    await rt.install("p2-1", "acme", pin="1.0.0", project="p2")
    async with rt.run("p1-1", run_id="r-p1"), rt.run("p2-1", run_id="r-p2"):
        assert rt.in_flight("acme", "1.0.0") == 2  # every project's, as before
        assert rt.runs_in_flight("acme", "1.0.0", project="p1") == ["r-p1"]
        assert rt.runs_in_flight("acme", "1.0.0", project="p2") == ["r-p2"]
        assert rt.in_flight("acme", "custom:1.0.0") == 1
        assert rt.in_flight("acme", "vendor:1.0.0", project="p1") == 0
        assert rt.pinned_to("acme", "vendor:1.0.0") == ["p2-1"]
        assert rt.pinned_to("acme", "1.0.0", project="p1") == ["p1-1"]
        assert rt.version_status("acme", "vendor:1.0.0", project="p1") == "drained"
        with pytest.raises(packrun.DrainTimeout) as waited:
            await rt.wait_drained("acme", "1.0.0", timeout=0, project="p2")
        assert waited.value.run_ids == ("r-p2",)


async def test_another_runtime__applies_a_projects_changes_to_that_project_only(
    shared_url: str,
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0.05) as a,
        packrun.open_runtime(shared_url, refresh_interval=0.05) as b,
    ):
        await a.publish(dist("acme", "1.0.0"))
        await a.publish(build("acme", "1.0.0", version="1.1.0"), channel="custom", project="p1")
        await a.install("p1-1", "acme", pin="latest", project="p1")
        await a.install("p2-1", "acme", pin="latest", project="p2")
        with anyio.fail_after(10):
            while len(b.installations()) < 2:
                await anyio.sleep(0.05)
        assert rows(b, "p2") == [("1.0.0", "vendor", "")]
        assert rows(b, "p1")[-1] == ("1.1.0", "custom", "p1")
        assert (b.resolve("p1-1").channel, b.resolve("p2-1").channel) == ("custom", "vendor")
        assert [i.id for i in b.installations(project="p2")] == ["p2-1"]


# --- retiring and updating within a project -----------------------------------------------------


async def test_retiring_a_custom_row__moves_only_its_projects_latest_installations(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.0.1"))
    await rt.publish(build("acme", "1.0.1", version="1.0.1"), channel="custom", project="p1")
    await rt.publish(build("acme", "1.0.1", version="1.0.1"), channel="custom", project="p2")
    await rt.install("p1-latest", "acme", pin="latest", project="p1")
    await rt.install("p2-latest", "acme", pin="latest", project="p2")
    await rt.install("v-latest", "acme", pin="latest", project="p1")  # same project, moved too
    retirement = await rt.retire("acme", "custom:1.0.1", project="p1")
    moved = {
        m.installation_id: (m.from_version, m.to_version, m.to_channel) for m in retirement.moves
    }
    assert moved == {
        "p1-latest": ("1.0.1", "1.0.1", "vendor"),
        "v-latest": ("1.0.1", "1.0.1", "vendor"),
    }
    assert rt.resolve("p1-latest").channel == "vendor"
    assert rt.resolve("p2-latest").channel == "custom"  # p2's own row is not retired


async def test_retiring_a_vendor_row__moves_each_project_to_what_it_sees(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.0.1"))
    await rt.publish(build("acme", "1.0.0", version="1.0.0"), channel="custom", project="p1")
    await rt.install("p1-vendor", "acme", pin="latest-vendor", project="p1")
    await rt.install("p2-vendor", "acme", pin="latest-vendor", project="p2")
    await rt.install("p1-latest", "acme", pin="latest", project="p1")  # on its custom 1.0.0
    retirement = await rt.retire("acme", "1.0.1", project="p2")
    moved = {m.installation_id: (m.to_version, m.to_channel) for m in retirement.moves}
    assert moved == {"p1-vendor": ("1.0.0", "vendor"), "p2-vendor": ("1.0.0", "vendor")}
    assert rt.resolve("p1-latest").channel == "custom"


async def test_the_update_available__is_among_the_projects_own_versions(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(build("acme", "1.0.0", version="1.0.0"), channel="custom", project="p1")
    await rt.publish(build("acme", "1.0.0", version="1.0.1"), channel="custom", project="p2")
    await rt.install("p1-1", "acme", pin="custom:1.0.0", project="p1")
    assert rt.explain("p1-1").update is None  # p2's custom 1.0.1 is not p1's to take
    with pytest.raises(packrun.NotFound):
        rt.review_update("p1-1")
    await rt.publish(build("acme", "1.0.0", version="1.0.1"), channel="custom", project="p1")
    assert rt.explain("p1-1").update is not None
    assert rt.review_update("p1-1").to_version == "1.0.1"
