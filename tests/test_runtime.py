"""The runtime through its public surface: publish rules, installs and pins, history, the resolver,
two runtimes sharing one store, and opening stores.

Every behaviour that does not need a second runtime runs on all three stores (``memory:``, a SQLite
file and a PostgreSQL schema, the last when a server is configured: see ``conftest.py``); those of
two runtimes sharing a store run on SQLite and PostgreSQL. The sample packs in ``bundles/`` are
the artifacts, and variants of them (other code, other versions) are built in memory with
``bundle_bytes``.
"""

from __future__ import annotations

import functools
import inspect
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from packrun import (
    ArtifactMismatch,
    DowngradeNotAllowed,
    InstallationExists,
    IntegrationContractIncompatible,
    InvalidArgument,
    InvalidBundle,
    NotFound,
    PackrunError,
    Runtime,
    StoreError,
    VersionExists,
)
from packrun._bundle import bundle_bytes

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
HELPDESK = BUNDLES / "helpdesk"


def dist(pack: str, version: str) -> Path:
    """The built artifact of a sample integration."""
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


def digest_of(pack: str, version: str) -> str:
    """The digest of a sample artifact, as packrun reads it."""
    return packrun.read_bundle(dist(pack, version)).digest


def variant(base: Path, *, version: str | None = None, marker: str = "variant") -> bytes:
    """A bundle like ``base`` with other code (and, if given, another version): a new digest."""
    bundle = packrun.read_bundle(base)
    manifest = bundle.manifest
    if version is not None:
        manifest = msgspec.structs.replace(manifest, version=packrun.Version.parse(version))
    files = dict(bundle.files)
    files["__init__.py"] = files["__init__.py"] + f"\n# {marker}\n".encode()
    return bundle_bytes(manifest, files)


def summary(rt: Runtime, pack: str) -> list[tuple[str, str, str | None, str]]:
    """``(version, channel, digest, state)`` of every row of a pack, as the runtime lists them."""
    return [(str(e.version), e.channel, e.digest, e.state) for e in rt.versions(pack)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(store_url) as runtime:
        yield runtime


# --- 1. publish rules ---------------------------------------------------------------------------


async def test_republish_is_refused_when_versions_are_immutable_and_force_changes_nothing(
    rt: Runtime,
) -> None:
    assert rt.settings.immutable_versions is True
    first = await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(VersionExists) as plain:
        await rt.publish(dist("acme", "1.0.0"))
    assert plain.value.code == "version_exists"
    with pytest.raises(VersionExists) as forced:
        await rt.publish(variant(dist("acme", "1.0.0")), force=True)
    assert "force=True changes nothing" in str(forced.value)
    assert summary(rt, "acme") == [("1.0.0", "vendor", first.digest, "live")]


async def test_republish_needs_force_when_versions_are_mutable_and_force_replaces_the_artifact(
    rt: Runtime,
) -> None:
    original = await rt.publish(dist("acme", "1.0.0"))
    await rt.install("pinned", "acme", pin="1.0.0")
    await rt.install("follows", "acme", pin="latest")
    await rt.set_immutable_versions(False)
    assert rt.settings.immutable_versions is False
    replacement = variant(dist("acme", "1.0.0"))

    with pytest.raises(VersionExists) as refused:
        await rt.publish(replacement)
    assert "force=True" in str(refused.value)
    assert rt.resolve("pinned").digest == original.digest

    entry = await rt.publish(replacement, force=True)
    new_digest = packrun.read_bundle(replacement).digest
    assert entry.digest == new_digest != original.digest
    assert rt.resolve("pinned").digest == new_digest
    assert rt.resolve("follows").digest == new_digest
    assert rt.resolve("pinned").version == "1.0.0"
    assert summary(rt, "acme") == [("1.0.0", "vendor", new_digest, "live")]
    assert await rt.artifact(new_digest) == replacement


async def test_a_version_below_the_highest_of_its_line_is_refused(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.2.0"))
    before = summary(rt, "acme")
    with pytest.raises(DowngradeNotAllowed) as refused:
        await rt.publish(dist("acme", "1.1.1"))
    assert refused.value.code == "downgrade_not_allowed"
    assert refused.value.highest == "1.2.0"
    assert summary(rt, "acme") == before


async def test_a_backport_on_an_older_major_line_is_accepted(rt: Runtime) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0", "1.2.0"):
        await rt.publish(dist("acme", version))
    assert [str(e.version) for e in rt.versions("acme")] == ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]


async def test_publish__a_custom_version_may_share_its_number_with_a_vendor_version(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.1.0"), channel="vendor")
    await rt.publish(variant(dist("acme", "1.1.0")), channel="custom")
    assert [e.channel for e in rt.versions("acme")] == ["vendor", "custom"]
    await rt.install("mine", "acme", pin="1.1.0")
    await rt.install("theirs", "acme", pin="vendor:1.1.0")
    assert rt.resolve("mine").channel == "custom"  # the project's own row comes first
    assert rt.resolve("theirs").channel == "vendor"
    assert any("vendor:X and custom:X" in note for note in rt.explain("mine").notes)


async def test_build_metadata_does_not_make_a_new_version(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(VersionExists):
        await rt.publish(variant(dist("acme", "1.0.0"), version="1.0.0+b"))
    assert [str(e.version) for e in rt.versions("acme")] == ["1.0.0"]


async def test_a_generation_0_bundle_is_refused_at_publish(rt: Runtime) -> None:
    with pytest.raises(IntegrationContractIncompatible) as refused:
        await rt.publish(dist("ancient", "1.0.0"))
    assert refused.value.code == "integration_contract_incompatible"
    assert refused.value.generation == 0
    assert refused.value.direction == "too_old"
    with pytest.raises(NotFound):
        rt.versions("ancient")


async def test_a_runtime_limited_to_generation_2_refuses_a_generation_1_bundle(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, generations={2}) as rt:
        with pytest.raises(IntegrationContractIncompatible) as refused:
            await rt.publish(dist("legacy-crm", "1.0.0"))
        assert refused.value.generation == 1
        assert refused.value.supported == (2,)
        with pytest.raises(NotFound):
            rt.versions("legacy-crm")


async def test_the_default_runtime_accepts_a_generation_1_bundle(rt: Runtime) -> None:
    entry = await rt.publish(dist("legacy-crm", "1.0.0"))
    assert entry.contract == 1
    assert [e.contract for e in rt.versions("legacy-crm")] == [1]


async def test_a_pack_source_publishes_its_entries_and_the_integration_digest(
    rt: Runtime,
) -> None:
    entry = await rt.publish(HELPDESK / "1.0.0")
    expected_digest = packrun.read_bundle(
        HELPDESK / "1.0.0" / "dist" / "helpdesk-1.0.0.bundle.tar.gz"
    ).digest
    assert entry.pack_id == "helpdesk"
    assert str(entry.version) == "1.0.0"
    assert entry.digest == expected_digest
    assert entry.contract == 2
    kinds = {(e.kind, e.id, str(e.version)) for e in entry.entries}
    assert kinds == {
        ("integration", "helpdesk", "1.0.0"),
        ("process_flow", "ticket-triage", "1.0.0"),
        ("ontology", "support-terms", "1.0.0"),
    }
    [row] = rt.versions("helpdesk")
    assert {(e.kind, e.id) for e in row.entries} == {(k, i) for k, i, _ in kinds}
    await rt.install("desk", "helpdesk")
    assert rt.resolve("desk").digest == expected_digest


async def test_a_pack_source_whose_layers_disagree_is_refused_naming_the_layers(
    rt: Runtime, tmp_path: Path
) -> None:
    source = tmp_path / "helpdesk"
    shutil.copytree(HELPDESK / "1.0.0", source)
    flow = source / "flows" / "ticket-triage" / "manifest.json"
    document = json.loads(flow.read_text(encoding="utf-8"))
    document["version"] = "1.0.1"
    flow.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ArtifactMismatch) as refused:
        await rt.publish(source)
    assert refused.value.code == "artifact_mismatch"
    values = {layer.value for layer in refused.value.layers}
    assert any("1.0.0" in v for v in values)
    assert any("1.0.1" in v for v in values)
    assert len({layer.layer for layer in refused.value.layers}) >= 2
    message = str(refused.value)
    assert "1.0.0" in message
    assert "1.0.1" in message
    with pytest.raises(NotFound):
        rt.versions("helpdesk")


async def test_strict_versions_refuse_a_pre_release(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.2.0"))
    rc = variant(dist("acme", "1.2.0"), version="1.3.0-rc.1")
    defaults = rt.settings
    assert defaults.strict_versions is False
    await rt.set_strict_versions(True)
    assert rt.settings.strict_versions is True
    with pytest.raises(PackrunError) as refused:
        await rt.publish(rc)
    assert refused.value.code in ("invalid_version", "invalid_manifest")
    assert "1.3.0-rc.1" in str(refused.value)
    assert [str(e.version) for e in rt.versions("acme")] == ["1.2.0"]

    await rt.set_strict_versions(False)
    await rt.publish(rc)
    assert [str(e.version) for e in rt.versions("acme")] == ["1.2.0", "1.3.0-rc.1"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
async def test_a_corrupt_bundle_is_refused_and_nothing_is_stored(rt: Runtime, damage: str) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    before = summary(rt, "acme")
    good = dist("acme", "1.1.0").read_bytes()
    data = good[: len(good) // 2] if damage == "truncated" else b"not a bundle at all"
    with pytest.raises(InvalidBundle) as refused:
        await rt.publish(data)
    assert refused.value.code == "invalid_bundle"
    assert summary(rt, "acme") == before


# --- 2. installs and pins -----------------------------------------------------------------------


async def test_install_without_a_pin_pins_the_version_latest_picks_then(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    inst = await rt.install("acme-prod", "acme")
    assert inst.pin == "1.1.0"
    await rt.publish(dist("acme", "1.2.0"))
    resolution = rt.resolve("acme-prod")
    assert (resolution.version, resolution.pin) == ("1.1.0", "1.1.0")
    assert rt.installations() == [inst]


async def test_latest_prefers_the_latest_custom_version_over_a_higher_vendor_one(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.install("latest", "acme", pin="latest")
    await rt.install("vendor", "acme", pin="latest-vendor")
    assert (rt.resolve("latest").version, rt.resolve("latest").channel) == ("1.1.0", "vendor")

    await rt.publish(dist("acme", "1.1.1"), channel="custom")
    await rt.install("custom", "acme", pin="latest-custom")
    assert (rt.resolve("latest").version, rt.resolve("latest").channel) == ("1.1.1", "custom")
    assert rt.resolve("vendor").version == "1.1.0"

    await rt.publish(dist("acme", "2.0.0"))
    assert (rt.resolve("latest").version, rt.resolve("latest").channel) == ("1.1.1", "custom")
    assert (rt.resolve("vendor").version, rt.resolve("vendor").channel) == ("2.0.0", "vendor")
    assert (rt.resolve("custom").version, rt.resolve("custom").channel) == ("1.1.1", "custom")


async def test_latest_custom_without_a_custom_version_is_not_found(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(NotFound):
        await rt.install("c", "acme", pin="latest-custom")
    assert rt.installations() == []


async def test_latest_pins_ignore_pre_releases_unless_allowed_and_exact_pins_may_name_one(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.2.0"))
    await rt.publish(variant(dist("acme", "1.2.0"), version="1.3.0-rc.1"))
    await rt.install("stable", "acme", pin="latest")
    await rt.install("stable-vendor", "acme", pin="latest-vendor")
    await rt.install("eager", "acme", pin="latest", allow_prerelease=True)
    await rt.install("exact", "acme", pin="1.3.0-rc.1")
    unpinned = await rt.install("unpinned-eager", "acme", allow_prerelease=True)
    assert rt.resolve("stable").version == "1.2.0"
    assert rt.resolve("stable-vendor").version == "1.2.0"
    assert rt.resolve("eager").version == "1.3.0-rc.1"
    assert rt.resolve("exact").version == "1.3.0-rc.1"
    assert unpinned.pin == "1.3.0-rc.1"


async def test_retired_versions_leave_latest_pins_but_exact_pins_keep_resolving(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.install("follows", "acme", pin="latest")
    await rt.install("pinned", "acme", pin="1.1.0")
    retired = await rt.retire("acme", "1.1.0", acknowledge_breaking=True)
    assert retired.entry.state == "retired"
    assert [e.state for e in rt.versions("acme")] == ["live", "retired"]
    assert rt.resolve("follows").version == "1.0.0"
    assert rt.resolve("pinned").version == "1.1.0"

    notes = " ".join(rt.explain("pinned").notes)
    assert "retired" in notes
    assert "retired" in str(rt.explain("pinned"))
    skipped = dict(rt.explain("follows").skipped)
    assert "retired" in skipped["1.1.0"]

    late = await rt.install("late", "acme", pin="1.1.0")
    assert late.pin == "1.1.0"
    assert rt.resolve("late").version == "1.1.0"
    assert (await rt.install("late-latest", "acme")).pin == "1.0.0"


async def test_install_of_an_unknown_pack_is_not_found_listing_known_packs(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(HELPDESK / "1.0.0")
    with pytest.raises(NotFound) as refused:
        await rt.install("x", "acmee")
    assert refused.value.code == "not_found"
    assert set(refused.value.known) >= {"acme", "helpdesk"}
    assert "acme" in str(refused.value)


@pytest.mark.parametrize("pin", ["lastest", "LATEST", "v1.0.0", "1.0", ""])
async def test_an_unknown_pin_is_an_invalid_argument(rt: Runtime, pin: str) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(InvalidArgument) as refused:
        await rt.install("x", "acme", pin=pin)
    assert refused.value.code == "invalid_argument"
    assert "latest" in refused.value.allowed
    assert rt.installations() == []
    await rt.install("y", "acme", pin="1.0.0")
    with pytest.raises(InvalidArgument):
        await rt.set_pin("y", pin)
    assert rt.resolve("y").pin == "1.0.0"
    assert len(await rt.history("y")) == 1


async def test_an_exact_pin_to_a_missing_version_is_not_found(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(NotFound) as refused:
        await rt.install("x", "acme", pin="1.0.1")
    assert "1.0.1" in str(refused.value)
    assert rt.installations() == []


async def test_installing_the_same_id_twice_is_refused(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.install("acme-prod", "acme", pin="1.0.0")
    with pytest.raises(InstallationExists) as refused:
        await rt.install("acme-prod", "acme", pin="1.1.0")
    assert refused.value.code == "installation_exists"
    assert rt.resolve("acme-prod").version == "1.0.0"
    assert len(await rt.history("acme-prod")) == 1


async def test_an_unknown_policy_is_an_invalid_argument(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(InvalidArgument):
        await rt.install("x", "acme", policy="auto")  # type: ignore[arg-type]
    assert rt.installations() == []
    await rt.install("y", "acme", policy="auto_patch")
    with pytest.raises(InvalidArgument):
        await rt.set_policy("y", "auto")  # type: ignore[arg-type]
    assert rt.installations()[0].policy == "auto_patch"


async def test_installing_a_version_outside_the_runtime_generations_is_refused(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url) as default:
        await default.publish(dist("legacy-crm", "1.0.0"))
        await default.publish(dist("legacy-crm", "1.1.0"))
    async with packrun.open_runtime(shared_url, generations={2}) as restricted:
        assert [str(e.version) for e in restricted.versions("legacy-crm")] == ["1.0.0", "1.1.0"]
        for pin in (None, "latest", "1.0.0"):
            with pytest.raises(IntegrationContractIncompatible) as refused:
                await restricted.install("crm", "legacy-crm", pin=pin)
            assert refused.value.supported == (2,)
        assert restricted.installations() == []


async def test_an_exact_pin_with_build_metadata_names_the_same_version(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.install("x", "acme", pin="1.0.0+local")
    assert rt.resolve("x").version == "1.0.0"
    assert rt.resolve("x").digest == digest_of("acme", "1.0.0")


async def test_a_pin_left_without_a_version_resolves_to_not_found_and_explain_says_so(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.1.0"))
    await rt.publish(dist("acme", "1.1.1"), channel="custom")
    await rt.install("c", "acme", pin="latest-custom")
    await rt.install("l", "acme", pin="latest")
    # "l" moves down to 1.1.0 across a changed default of an optional input (breaking)
    await rt.retire("acme", "1.1.1", acknowledge_breaking=True)
    with pytest.raises(NotFound):
        rt.resolve("c")
    assert rt.explain("c").resolution is None
    assert "nothing" in str(rt.explain("c"))
    assert (rt.resolve("l").version, rt.resolve("l").channel) == ("1.1.0", "vendor")


async def test_retiring_an_unknown_pack_or_version_is_not_found(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    with pytest.raises(NotFound):
        await rt.retire("acme", "9.9.9")
    with pytest.raises(NotFound):
        await rt.retire("nope", "1.0.0")
    assert summary(rt, "acme") == [("1.0.0", "vendor", digest_of("acme", "1.0.0"), "live")]


async def test_concurrent_publishes_of_one_version_have_exactly_one_winner(rt: Runtime) -> None:
    contenders = [variant(dist("acme", "1.0.0"), marker=f"contender {n}") for n in range(4)]
    outcomes: list[str] = []

    async def contend(data: bytes) -> None:
        try:
            entry = await rt.publish(data)
        except VersionExists:
            outcomes.append("refused")
        else:
            assert entry.digest is not None
            outcomes.append(entry.digest)

    async with anyio.create_task_group() as tg:
        for data in contenders:
            tg.start_soon(contend, data)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1
    assert outcomes.count("refused") == len(contenders) - 1
    assert summary(rt, "acme") == [("1.0.0", "vendor", winners[0], "live")]


async def test_concurrent_installs_of_one_id_have_exactly_one_winner(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    outcomes: list[str] = []

    async def contend(pin: str) -> None:
        try:
            await rt.install("one", "acme", pin=pin)
        except InstallationExists:
            outcomes.append("refused")
        else:
            outcomes.append(pin)

    async with anyio.create_task_group() as tg:
        for pin in ("1.0.0", "1.1.0", "latest"):
            tg.start_soon(contend, pin)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1
    assert rt.resolve("one").pin == winners[0]
    assert len(await rt.history("one")) == 1


# --- 3. history ---------------------------------------------------------------------------------


async def test_every_pin_move_is_recorded_with_actor_origin_and_versions(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("h", "acme", actor="alice")
    await rt.publish(dist("acme", "1.1.0"))
    await rt.set_pin("h", "latest", actor="bob")
    await rt.set_pin("h", "1.0.0", actor="carol")

    first, second, third = await rt.history("h")
    assert (first.origin, first.actor) == ("install", "alice")
    assert (first.from_pin, first.to_pin) == (None, "1.0.0")
    assert (first.from_version, first.to_version) == (None, "1.0.0")
    assert (second.origin, second.actor) == ("user", "bob")
    assert (second.from_pin, second.to_pin) == ("1.0.0", "latest")
    assert (second.from_version, second.to_version) == ("1.0.0", "1.1.0")
    assert (third.origin, third.actor) == ("user", "carol")
    assert (third.from_pin, third.to_pin) == ("latest", "1.0.0")
    assert (third.from_version, third.to_version) == ("1.1.0", "1.0.0")
    for event in (first, second, third):
        assert isinstance(event.at, datetime)
        assert event.at.tzinfo is not None
        assert event.at.utcoffset() is not None
        assert event.installation_id == "h"
    assert first.at <= second.at <= third.at
    assert rt.explain("h").last_event == third
    assert rt.resolve("h").version == "1.0.0"


async def test_set_policy_records_no_pin_event(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("h", "acme")
    updated = await rt.set_policy("h", "auto_minor")
    assert updated.policy == "auto_minor"
    assert rt.installations()[0].policy == "auto_minor"
    assert [e.origin for e in (await rt.history("h"))] == ["install"]
    assert rt.resolve("h").pin == "1.0.0"


async def test_an_unknown_installation_is_not_found(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("known", "acme")
    with pytest.raises(NotFound):
        (await rt.history("nope"))
    with pytest.raises(NotFound):
        rt.resolve("nope")
    with pytest.raises(NotFound):
        rt.explain("nope")
    with pytest.raises(NotFound):
        await rt.set_pin("nope", "latest")
    with pytest.raises(NotFound):
        await rt.set_policy("nope", "manual")


# --- 4. the resolver ----------------------------------------------------------------------------


async def test_resolve_is_synchronous_and_gives_version_channel_contract_digest_and_pin(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.1.1"), channel="custom")
    await rt.install("c", "acme", pin="latest-custom")
    assert not inspect.iscoroutinefunction(rt.resolve)
    resolution = rt.resolve("c")
    assert not inspect.isawaitable(resolution)
    assert resolution.version == "1.1.1"
    assert resolution.channel == "custom"
    assert resolution.contract == 2
    assert resolution.digest == digest_of("acme", "1.1.1")
    assert resolution.pin == "latest-custom"


async def test_a_publish_moves_every_latest_installation_while_exact_pins_stay(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    followers = [f"tenant-{n}" for n in range(5)]
    for iid in followers:
        await rt.install(iid, "acme", pin="latest")
    await rt.install("pinned", "acme", pin="1.0.0")
    await rt.install("unpinned", "acme")

    await rt.publish(dist("acme", "1.1.0"))
    answers = {rt.resolve(iid) for iid in followers}
    assert len(answers) == 1
    [answer] = answers
    assert (answer.version, answer.digest) == ("1.1.0", digest_of("acme", "1.1.0"))
    assert rt.resolve("pinned").version == "1.0.0"
    assert rt.resolve("unpinned").version == "1.0.0"


async def test_explain_names_candidates_skipped_rows_and_an_available_update(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "1.1.0"))
    await rt.publish(variant(dist("acme", "1.1.0"), version="1.2.0-rc.1"))
    await rt.install("behind", "acme", pin="1.0.0")
    await rt.install("follows", "acme", pin="latest-vendor")

    behind = rt.explain("behind")
    assert [str(c.version) for c in behind.candidates] == ["1.0.0"]
    assert behind.update is not None
    assert "1.1.0" in behind.update
    text = str(behind)
    assert "update available" in text
    assert "candidates" in text
    assert "1.1.0" in text

    follows = rt.explain("follows")
    assert [str(c.version) for c in follows.candidates] == ["1.0.0", "1.1.0"]
    assert follows.update is None
    skipped = dict(follows.skipped)
    assert "pre-release" in skipped["1.2.0-rc.1"]
    text = str(follows)
    assert "skipped" in text
    assert "1.2.0-rc.1" in text
    assert "update available" not in text
    assert follows.resolution == rt.resolve("follows")


async def test_explain_names_the_channel_a_pin_leaves_out(rt: Runtime) -> None:
    await rt.publish(dist("acme", "1.1.0"))
    await rt.publish(dist("acme", "1.1.1"), channel="custom")
    await rt.install("v", "acme", pin="latest-vendor")
    skipped = dict(rt.explain("v").skipped)
    assert "custom" in skipped["1.1.1"]
    assert rt.resolve("v").version == "1.1.0"


async def test_process_flows_track_the_latest_live_version(rt: Runtime) -> None:
    await rt.publish(HELPDESK / "1.0.0")
    assert str(rt.process_flows("helpdesk")["ticket-triage"].version) == "1.0.0"
    await rt.publish(HELPDESK / "1.1.0")
    flow = rt.process_flows("helpdesk")["ticket-triage"]
    assert str(flow.version) == "1.1.0"
    assert "auto_reply" in json.dumps(dict(flow.spec))
    assert set(rt.process_flows("helpdesk")) == {"ticket-triage"}
    await rt.retire("helpdesk", "1.1.0")
    flow = rt.process_flows("helpdesk")["ticket-triage"]
    assert str(flow.version) == "1.0.0"
    assert "auto_reply" not in json.dumps(dict(flow.spec))


# --- 5. two runtimes on one SQLite file ---------------------------------------------------------


async def test_a_second_runtime_sees_publishes_and_pin_changes_after_refresh(
    shared_url: str,
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await a.publish(dist("acme", "1.0.0"))
        await a.install("shared", "acme", pin="latest")
        await b.refresh()
        assert b.resolve("shared").version == "1.0.0"

        await a.publish(dist("acme", "1.1.0"))
        await b.refresh()
        assert b.resolve("shared") == a.resolve("shared")
        assert b.resolve("shared").version == "1.1.0"

        await a.set_pin("shared", "1.0.0", actor="ops")
        await b.refresh()
        assert b.resolve("shared").version == "1.0.0"
        assert b.resolve("shared").pin == "1.0.0"
        assert (await b.history("shared"))[-1].actor == "ops"
        assert await b.history("shared") == await a.history("shared")

        await a.retire("acme", "1.1.0")
        await a.set_immutable_versions(False)
        await b.refresh()
        assert [e.state for e in b.versions("acme")] == ["live", "retired"]
        assert b.settings.immutable_versions is False


async def test_a_second_runtime_catches_up_on_its_own(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url) as a,
        packrun.open_runtime(shared_url, refresh_interval=0.05) as b,
    ):
        await a.publish(dist("acme", "1.0.0"))
        await a.install("shared", "acme", pin="latest")

        async def wait_for(version: str, pin: str) -> None:
            with anyio.fail_after(10):
                while True:
                    try:
                        got = b.resolve("shared")
                    except NotFound:
                        pass
                    else:
                        if (got.version, got.pin) == (version, pin):
                            return
                    await anyio.sleep(0.02)

        await wait_for("1.0.0", "latest")
        await a.publish(dist("acme", "1.1.0"))
        await wait_for("1.1.0", "latest")
        await a.set_pin("shared", "1.0.0", actor="ops")
        await wait_for("1.0.0", "1.0.0")


async def test_a_stale_runtime_publishes_under_the_store_settings(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await a.publish(dist("acme", "1.2.0"))
        await a.set_immutable_versions(False)
        await a.set_strict_versions(True)
        # b has not refreshed: its copy of the settings is the defaults, the store's are not.
        with pytest.raises(PackrunError) as strict:
            await b.publish(variant(dist("acme", "1.2.0"), version="1.3.0-rc.1"))
        assert strict.value.code in ("invalid_version", "invalid_manifest")
        replacement = variant(dist("acme", "1.2.0"))
        entry = await b.publish(replacement, force=True)
        assert entry.digest == packrun.read_bundle(replacement).digest
        await a.refresh()
        assert summary(a, "acme") == [("1.2.0", "vendor", entry.digest, "live")]


async def test_two_runtimes_publishing_one_version_have_exactly_one_winner(
    shared_url: str,
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        outcomes: list[str] = []

        async def contend(runtime: Runtime, marker: str) -> None:
            try:
                entry = await runtime.publish(variant(dist("acme", "1.0.0"), marker=marker))
            except VersionExists:
                outcomes.append("refused")
            else:
                assert entry.digest is not None
                outcomes.append(entry.digest)

        async with anyio.create_task_group() as tg:
            tg.start_soon(contend, a, "from a")
            tg.start_soon(contend, b, "from b")
        winners = [o for o in outcomes if o != "refused"]
        assert len(winners) == 1
        assert outcomes.count("refused") == 1
        await a.refresh()
        await b.refresh()
        assert summary(a, "acme") == summary(b, "acme") == [("1.0.0", "vendor", winners[0], "live")]


async def test_the_state_survives_closing_and_reopening_the_runtime(shared_url: str) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.publish(dist("acme", "1.1.0"))
        await rt.publish(dist("acme", "1.1.1"), channel="custom")
        await rt.publish(HELPDESK / "1.0.0")
        await rt.retire("acme", "1.1.0")
        await rt.install("a", "acme", pin="latest-vendor", actor="alice")
        await rt.install("b", "acme", pin="1.1.0", policy="auto_patch")
        await rt.set_pin("a", "latest", actor="bob")
        await rt.set_immutable_versions(False)
        before = {
            "acme": rt.versions("acme"),
            "helpdesk": rt.versions("helpdesk"),
            "installations": rt.installations(),
            "history": {i.id: await rt.history(i.id) for i in rt.installations()},
            "resolve": {i.id: rt.resolve(i.id) for i in rt.installations()},
            "flows": rt.process_flows("helpdesk"),
        }
    async with packrun.open_runtime(shared_url) as rt:
        assert rt.versions("acme") == before["acme"]
        assert rt.versions("helpdesk") == before["helpdesk"]
        assert rt.installations() == before["installations"]
        assert {i.id: await rt.history(i.id) for i in rt.installations()} == before["history"]
        assert {i.id: rt.resolve(i.id) for i in rt.installations()} == before["resolve"]
        assert rt.process_flows("helpdesk") == before["flows"]
        assert rt.settings.immutable_versions is False
        assert rt.resolve("a").version == "1.1.1"
        assert rt.resolve("b").version == "1.1.0"
        assert all(e.at.tzinfo is not None for e in (await rt.history("a")))
        assert await rt.artifact(digest_of("acme", "1.0.0")) == dist("acme", "1.0.0").read_bytes()


# --- 6. stores ----------------------------------------------------------------------------------


async def test_an_unknown_store_scheme_lists_the_valid_ones() -> None:
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime("redis://localhost/0"):
            pass
    assert refused.value.code == "store_error"
    assert "memory" in str(refused.value)
    assert "sqlite" in str(refused.value)


async def test_a_store_written_by_a_newer_schema_is_refused(sqlite_url: str) -> None:
    async with packrun.open_runtime(sqlite_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime(sqlite_url):
            pass
    assert "newer" in str(refused.value)


async def test_a_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('x')")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError):
        async with packrun.open_runtime(f"sqlite:///{path}"):
            pass
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"customers"}


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the droids you are looking for\n" * 200)
    with pytest.raises(StoreError):
        async with packrun.open_runtime(f"sqlite:///{path}"):
            pass


async def test_a_store_path_whose_parent_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    with pytest.raises(StoreError):
        async with packrun.open_runtime(f"sqlite:///{blocker / 'state.db'}"):
            pass


async def test_create_false__refuses_a_missing_sqlite_store_and_creates_neither_folder_nor_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing" / "state.db"
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime(f"sqlite:///{path}", create=False):
            pass
    assert refused.value.code == "store_error"
    assert f"no store at {path}" in str(refused.value)
    assert not path.parent.exists()
    (tmp_path / "missing").mkdir()
    with pytest.raises(StoreError):
        async with packrun.open_runtime(f"sqlite:///{path}", create=False):
            pass
    assert list((tmp_path / "missing").iterdir()) == []


async def test_create_false__refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError, match="not a packrun store"):
        async with packrun.open_runtime(f"sqlite:///{path}", create=False):
            pass
    assert path.read_bytes() == b""


async def test_create_false__opens_an_existing_store(shared_url: str) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
    async with packrun.open_runtime(shared_url, create=False) as rt:
        assert [str(e.version) for e in rt.versions("acme")] == ["1.0.0"]
    async with packrun.open_runtime("memory:", create=False) as rt:  # always fine
        assert rt.installations() == []


async def test_create_false__refuses_a_postgresql_schema_without_a_store_and_creates_nothing(
    postgres_url: str,
) -> None:
    from _store_sql import split

    base, schema = split(postgres_url)
    with pytest.raises(StoreError) as refused:
        async with packrun.open_runtime(postgres_url, create=False):
            pass
    assert f"no store in schema {schema!r}" in str(refused.value)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None  # the schema was not created
        conn.execute(f'CREATE SCHEMA "{schema}"')  # a schema without packrun's tables
    with pytest.raises(StoreError, match="no store in schema"):
        async with packrun.open_runtime(postgres_url, create=False):
            pass
    with psycopg.connect(base, autocommit=True) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
        assert tables.fetchall() == []


async def test_the_default_store_honours_packrun_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv("PACKRUN_STORE", url)
    monkeypatch.chdir(tmp_path)
    async with packrun.open_runtime() as rt:
        assert rt.url == url
        await rt.publish(dist("acme", "1.0.0"))
    assert (tmp_path / "from-env.db").is_file()
    assert not (tmp_path / ".packrun").exists()


async def test_the_default_store_is_the_embedded_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    async with packrun.open_runtime() as rt:
        await rt.publish(dist("acme", "1.0.0"))
    assert (tmp_path / ".packrun" / "state.db").is_file()
    async with packrun.open_runtime(f"sqlite:///{tmp_path / '.packrun' / 'state.db'}") as rt:
        assert [str(e.version) for e in rt.versions("acme")] == ["1.0.0"]


async def test_publish__forced_overwrite_of_a_retired_version__keeps_it_retired(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.retire("acme", "1.0.0")
        await rt.set_immutable_versions(False)
        replacement = variant(dist("acme", "1.0.0"))
        entry = await rt.publish(replacement, force=True)
        assert entry.state == "retired"
        assert summary(rt, "acme") == [
            ("1.0.0", "vendor", packrun.read_bundle(replacement).digest, "retired")
        ]


# --- writes that race, rows that rot, files that vanish ------------------------------------------


async def test_set_pin_and_set_policy_at_once__neither_is_lost(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        for version in ("1.0.0", "1.0.1", "1.1.0"):
            await rt.publish(dist("acme", version))
        await rt.install("i", "acme", pin="1.0.0")
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.set_policy, "i", "auto_minor")
            tg.start_soon(functools.partial(rt.set_pin, "i", "1.0.1", actor="a"))
            tg.start_soon(functools.partial(rt.set_pin, "i", "1.1.0", actor="b"))
        inst = rt.installation("i")
        assert inst.policy == "auto_minor"
        moves = [(e.from_pin, e.to_pin) for e in (await rt.history("i"))[1:]]
        # Each move is recorded from what it replaced: the two moves chain.
        assert moves[0][0] == "1.0.0"
        assert moves[1][0] == moves[0][1]
        assert inst.pin == moves[1][1]
    async with packrun.open_runtime(store_url) as again:
        if store_url != "memory:":
            assert again.installation("i") == inst


async def test_a_stale_runtime_changing_the_policy__does_not_move_the_pin_back(
    shared_url: str,
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        for version in ("1.0.0", "1.1.0"):
            await a.publish(dist("acme", version))
        await a.install("i", "acme", pin="1.0.0")
        await b.refresh()
        await b.set_pin("i", "1.1.0", actor="ops-b")
        await a.set_policy("i", "auto_minor")  # a has not seen b's move
        assert (a.installation("i").pin, a.installation("i").policy) == ("1.1.0", "auto_minor")
        assert a.resolve("i").version == "1.1.0"
        await b.refresh()
        assert b.installation("i").policy == "auto_minor"


async def test_refresh__a_damaged_row_is_skipped_and_later_changes_still_arrive(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        packrun.open_runtime(sqlite_url, refresh_interval=0.05) as a,
        packrun.open_runtime(sqlite_url, refresh_interval=0.05) as b,
    ):
        await a.publish(dist("acme", "1.0.0"))
        with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(
                "INSERT INTO installations (id, pack_id, pin, policy, allow_prerelease, "
                "created_at, hold, project) VALUES "
                "('bad', 'acme', '1.0.0', 'manual', 0, 'not-a-date', NULL, 'default')"
            )
            conn.execute("INSERT INTO changes (kind, key) VALUES ('installation', 'bad')")
        await a.install("good", "acme")
        with anyio.fail_after(10):
            while "good" not in [i.id for i in b.installations()]:
                await anyio.sleep(0.05)
        assert b.resolve("good").version == "1.0.0"
        assert "skipped installation bad" in caplog.text


async def test_sqlite__a_store_file_deleted_while_open__refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with packrun.open_runtime(f"sqlite:///{path}", refresh_interval=0) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("i", "acme")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(packrun.StoreError, match="gone"):
            await rt.publish(dist("acme", "1.0.1"))
        with pytest.raises(packrun.StoreError, match="gone"):
            await rt.set_pin("i", "1.0.0")
        assert rt.resolve("i").version == "1.0.0"  # the hot path keeps answering from memory


async def test_publish__force_never_moves_a_version_to_the_other_channel(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        vendor = await rt.publish(dist("acme", "1.0.0"))
        await rt.set_immutable_versions(False)
        await rt.publish(variant(dist("acme", "1.0.0")), channel="custom", force=True)
        rows = rt.versions("acme")
        assert [e.channel for e in rows] == ["vendor", "custom"]
        assert rows[0].digest == vendor.digest  # the vendor row is untouched


@pytest.mark.parametrize("iid", ["", " x", "a" * 201, "tab\tid", "nul\x00", "-dash-first"])
async def test_install__an_unusable_installation_id__is_invalid_argument(
    store_url: str, iid: str
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        with pytest.raises(packrun.InvalidArgument, match="installation id"):
            await rt.install(iid, "acme")
        assert rt.installations() == []


@pytest.mark.parametrize("actor", ["", "a" * 201, "nul\x00", "line\nbreak", 7])
async def test_an_actor_that_cannot_be_recorded_is_invalid_argument_on_every_store(
    store_url: str, actor: object
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        with pytest.raises(packrun.InvalidArgument, match="not a valid actor"):
            await rt.install("i", "acme", actor=actor)  # type: ignore[arg-type]
        await rt.install("i", "acme", actor="Jane Doe <jane@example.com>")
        with pytest.raises(packrun.InvalidArgument, match="not a valid actor"):
            await rt.set_pin("i", "1.0.0", actor=actor)  # type: ignore[arg-type]
        assert [(e.actor, e.origin) for e in (await rt.history("i"))] == [
            ("Jane Doe <jane@example.com>", "install")
        ]


async def test_validation__origin_and_settings_take_only_their_values(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("i", "acme")
        with pytest.raises(packrun.InvalidArgument, match="origin"):
            await rt.set_pin("i", "1.0.0", origin="hacker")  # type: ignore[arg-type]
        with pytest.raises(packrun.InvalidArgument, match="immutable versions"):
            await rt.set_immutable_versions("false")  # type: ignore[arg-type]
        assert rt.settings.immutable_versions is True


async def test_retire__reports_the_installations_still_pinned_to_it(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.publish(dist("acme", "1.0.1"))
        await rt.install("pinned", "acme", pin="1.0.0")
        await rt.install("follows", "acme", pin="latest")
        await rt.retire("acme", "1.0.0")
        assert rt.pinned_to("acme", "1.0.0") == ["pinned"]
        assert "1 installation(s) pinned to it keep running it: pinned" in caplog.text


async def test_install__a_pin_nothing_satisfies__names_the_pin_and_the_versions(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        with pytest.raises(packrun.NotFound) as exc:
            await rt.install("i", "acme", pin="9.9.9")
        assert "no version of acme satisfying pin '9.9.9'; known: 1.0.0 (vendor, live)" in str(
            exc.value
        )


async def test_publish__a_folder_that_is_no_source__says_what_was_expected(
    store_url: str, tmp_path: Path
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        with pytest.raises(packrun.InvalidBundle, match="not a source folder"):
            await rt.publish(tmp_path)
