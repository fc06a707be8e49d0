"""``retire`` reports every installation whose resolution it changes, and refuses, unless
acknowledged, to move one across a major or across breaking findings (DESIGN.md sections 4 and 9).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from packrun import BreakingDiff, InvalidArgument, Runtime
from packrun._bundle import bundle_bytes
from packrun._cli import main

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def variant(base: str, version: str) -> bytes:
    bundle = packrun.read_bundle(dist(base))
    manifest = msgspec.structs.replace(bundle.manifest, version=packrun.Version.parse(version))
    return bundle_bytes(manifest, dict(bundle.files))


def states(rt: Runtime) -> dict[str, str]:
    return {str(e.version): e.state for e in rt.versions("acme")}


async def test_a_retirement_moving_latest_down_across_a_major__is_refused_unless_acknowledged(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        for version in ("1.0.0", "1.1.0", "2.0.0"):
            await rt.publish(dist(version))
        await rt.install("follows", "acme", pin="latest")
        await rt.install("vendor", "acme", pin="latest-vendor")
        await rt.install("exact", "acme", pin="2.0.0")

        with pytest.raises(BreakingDiff) as refused:
            await rt.retire("acme", "2.0.0")
        assert refused.value.code == "breaking_diff"
        message = str(refused.value)
        assert "retiring acme 2.0.0 needs acknowledge_breaking=True" in message
        assert "follows 2.0.0 -> 1.1.0 (a major step down from 2.0.0 to 1.1.0" in message
        assert "breaking finding(s)" in message
        assert [m[:3] for m in refused.value.moves] == [
            ("follows", "2.0.0", "1.1.0"),
            ("vendor", "2.0.0", "1.1.0"),
        ]
        # Nothing was retired.
        assert states(rt)["2.0.0"] == "live"
        assert rt.resolve("follows").version == "2.0.0"

        retirement = await rt.retire("acme", "2.0.0", acknowledge_breaking=True)
        assert retirement.entry.state == "retired"
        assert retirement.pinned == ("exact",)
        assert retirement.needs_acknowledgement
        assert [
            (m.installation_id, m.pin, m.from_version, m.to_version, m.bump, m.step)
            for m in retirement.moves
        ] == [
            ("follows", "latest", "2.0.0", "1.1.0", "downgrade", "major"),
            ("vendor", "latest-vendor", "2.0.0", "1.1.0", "downgrade", "major"),
        ]
        assert any("breaking finding(s)" in r for r in retirement.moves[0].acknowledge)
        assert rt.resolve("follows").version == "1.1.0"
        assert rt.resolve("exact").version == "2.0.0"
        text = str(retirement)
        assert text.startswith("retired acme 2.0.0: out of latest pins and update targets")
        assert (
            "moved follows (pin latest): 2.0.0 -> 1.1.0 (vendor; downgrade, a major step)" in text
        )
        assert "still pinned to it (1): exact" in text


async def test_a_retirement_moving_latest_down_across_breaking_findings__needs_it_too(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.publish(dist("1.1.0"))  # 1.0.0 lacks a tool 1.1.0 has: going back breaks
        await rt.install("follows", "acme", pin="latest")
        with pytest.raises(BreakingDiff) as refused:
            await rt.retire("acme", "1.1.0")
        assert "a major step" not in str(refused.value)
        assert "breaking finding(s)" in str(refused.value)
        assert states(rt)["1.1.0"] == "live"


async def test_a_retirement_without_a_breaking_move__reports_its_moves_and_needs_nothing(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.publish(variant("1.0.0", "1.0.1"))  # the same tools: nothing breaks going back
        await rt.publish(dist("1.1.1"), channel="custom")
        await rt.install("vendor", "acme", pin="latest-vendor")
        await rt.install("custom", "acme", pin="latest-custom")
        await rt.install("follows", "acme", pin="latest")
        await rt.install("elsewhere", "acme", pin="1.0.0")

        patch = await rt.retire("acme", "1.0.1")
        assert not patch.needs_acknowledgement
        assert patch.pinned == ()
        assert [(m.installation_id, m.to_version, m.bump, m.acknowledge) for m in patch.moves] == [
            ("vendor", "1.0.0", "downgrade", ())
        ]

        # latest falls back from the custom channel to the vendor one; latest-custom to nothing.
        custom = await rt.retire("acme", "1.1.1", acknowledge_breaking=True)
        moved = {m.installation_id: m for m in custom.moves}
        assert sorted(moved) == ["custom", "follows"]
        assert (moved["follows"].to_version, moved["follows"].to_channel) == ("1.0.0", "vendor")
        assert moved["custom"].to_version is None
        assert moved["custom"].acknowledge == ()
        assert "moved custom (pin latest-custom): 1.1.1 -> nothing" in str(custom)


async def test_a_retirement__logs_info_records_for_itself_and_each_latest_pinned_move(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("1.0.0"))
        await rt.publish(variant("1.0.0", "1.0.1"))
        await rt.install("vendor", "acme", pin="latest-vendor")
        await rt.install("exact", "acme", pin="1.0.1")
        caplog.clear()
        caplog.set_level(logging.INFO, logger="packrun")
        await rt.retire("acme", "1.0.1")

    def fields(record: logging.LogRecord, *names: str) -> tuple[object, ...]:
        return tuple(getattr(record, name) for name in names)

    records = {getattr(r, "event", None): r for r in caplog.records}
    retired, moved = records["retire"], records["retire_move"]
    assert retired.levelno == moved.levelno == logging.INFO
    assert fields(retired, "pack", "version", "moved", "pinned") == (
        "acme",
        "1.0.1",
        ["vendor"],
        ["exact"],
    )
    assert fields(moved, "installation", "pin", "from_version", "version", "bump", "origin") == (
        "vendor",
        "latest-vendor",
        "1.0.1",
        "1.0.0",
        "downgrade",
        "retire",
    )
    assert (
        "packrun moved vendor (acme, pin latest-vendor) from 1.0.1 to 1.0.0" in moved.getMessage()
    )


async def test_installations_made_by_another_runtime__count(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        for version in ("1.1.0", "2.0.0"):
            await a.publish(dist(version))
        await b.refresh()
        await b.install("follows", "acme", pin="latest")
        with pytest.raises(BreakingDiff):
            await a.retire("acme", "2.0.0")  # a has not refreshed: retire catches up first
        await b.refresh()
        assert states(b)["2.0.0"] == "live"


async def test_acknowledge_breaking__must_be_a_bool() -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("1.0.0"))
        with pytest.raises(InvalidArgument):
            await rt.retire("acme", "1.0.0", acknowledge_breaking="yes")  # type: ignore[arg-type]


async def test_acknowledge_breaking__is_refused_as_every_other_flag_is() -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("1.0.0"))
        with pytest.raises(InvalidArgument) as retire:
            await rt.retire("acme", "1.0.0", acknowledge_breaking="yes")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument) as update:
            await rt.update("acme", acknowledge_breaking="yes")  # type: ignore[arg-type]
    assert str(retire.value) == str(update.value)
    assert "expected True or False" in str(retire.value)


def test_cli_retire__refused_without_the_flag__json_lists_the_moves(sqlite_url: str) -> None:
    async def setup() -> None:
        async with packrun.open_runtime(sqlite_url) as rt:
            for version in ("1.1.0", "2.0.0"):
                await rt.publish(dist(version))
            await rt.install("follows", "acme", pin="latest")

    anyio.run(setup)
    out, err = io.StringIO(), io.StringIO()
    assert main(["retire", "acme", "2.0.0", "--store", sqlite_url], stdout=out, stderr=err) == 2
    assert "[breaking_diff] retiring acme 2.0.0" in err.getvalue()

    out = io.StringIO()
    code = main(
        ["retire", "acme", "2.0.0", "--acknowledge-breaking", "--json", "--store", sqlite_url],
        stdout=out,
    )
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["state"] == "retired"
    assert data["pinned"] == []
    [move] = data["moves"]
    assert {k: move[k] for k in ("installation_id", "pin", "from_version", "to_version")} == {
        "installation_id": "follows",
        "pin": "latest",
        "from_version": "2.0.0",
        "to_version": "1.1.0",
    }
    assert (move["bump"], move["step"], move["to_channel"]) == ("downgrade", "major", "vendor")
    assert move["acknowledge"]
