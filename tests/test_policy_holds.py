"""Manual moves hold update policies fleet-wide, and one answer to "which update is available".

A rollback (or an update down) of an ``auto_*`` installation is stored as a *hold*: in every
runtime on the store, a policy moves that installation again only to a version above the one the
manual move left, or after an explicit ``set_policy``; ``explain`` says the policy is holding and
why. ``explain``, ``review_update`` and ``update`` (without a target) and the policies all take the
update available from one function, so they agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from _store_sql import execute, undo_projects
from packrun import Runtime
from packrun._bundle import bundle_bytes
from packrun._stores import Policy

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def variant(base: str, version: str) -> bytes:
    """The sample acme ``base`` under another version number (the same tools)."""
    bundle = packrun.read_bundle(dist(base))
    manifest = msgspec.structs.replace(bundle.manifest, version=packrun.Version.parse(version))
    return bundle_bytes(manifest, dict(bundle.files))


async def moves(rt: Runtime, iid: str) -> list[tuple[str, str | None, str | None]]:
    return [(e.origin, e.from_version, e.to_version) for e in await rt.history(iid)]


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(store_url) as runtime:
        yield runtime


async def on_1_1_0(rt: Runtime, policy: Policy = "auto_minor") -> None:
    """acme 1.0.0, 1.0.1 and 1.1.0 published; ``crm`` installed on 1.0.0, moved on by policy."""
    for version in ("1.0.0", "1.0.1", "1.1.0"):
        await rt.publish(dist(version))
    await rt.install("crm", "acme", pin="1.0.0", policy=policy)
    assert rt.resolve("crm").version == "1.1.0"


# --- in one runtime -----------------------------------------------------------------------------


async def test_rollback__holds_the_policy_until_a_version_above_the_one_left(rt: Runtime) -> None:
    await on_1_1_0(rt)
    await rt.rollback("crm", "1.0.0", actor="ops")
    assert rt.installation("crm").hold == "1.1.0"

    await rt.publish(dist("2.0.0"))  # the policy looks again: 1.0.1 and 1.1.0 are held back
    assert rt.resolve("crm").version == "1.0.0"
    why = rt.explain("crm")
    assert why.holding is not None
    assert "auto_minor holds at 1.0.0 (rolled back from 1.1.0 by ops)" in why.holding
    assert "only to a version above 1.1.0, or after set_policy" in why.holding
    assert "policy holding: auto_minor holds at 1.0.0" in str(why)
    # Held versions are not "waiting for a review": only the major is.
    assert [b.split(":")[0] for b in why.update_blocked] == ["2.0.0"]

    await rt.publish(variant("1.1.0", "1.1.1"))  # above the version left: the policy moves again
    assert rt.resolve("crm").version == "1.1.1"
    assert (await moves(rt, "crm"))[-1] == ("policy", "1.0.0", "1.1.1")
    assert rt.installation("crm").hold is None
    assert rt.explain("crm").holding is None


async def test_update_down_by_set_pin__holds_too(rt: Runtime) -> None:
    await on_1_1_0(rt)
    await rt.set_pin("crm", "1.0.0", actor="ops")
    await rt.publish(dist("2.0.0"))
    assert rt.resolve("crm").version == "1.0.0"
    holding = rt.explain("crm").holding
    assert holding is not None
    assert "(moved down from 1.1.0 by ops)" in holding


async def test_a_manual_step_up_below_the_hold__keeps_it(rt: Runtime) -> None:
    for version in ("1.0.0", "1.0.1"):
        await rt.publish(dist(version))
    await rt.publish(variant("1.0.1", "1.0.2"))
    await rt.install("crm", "acme", pin="1.0.0", policy="auto_patch")
    assert rt.resolve("crm").version == "1.0.2"
    await rt.rollback("crm", "1.0.0")
    await rt.update("crm", to="1.0.1")  # up, still below the 1.0.2 left
    assert rt.installation("crm").hold == "1.0.2"
    await rt.publish(dist("2.0.0"))
    assert rt.resolve("crm").version == "1.0.1"
    await rt.update("crm", to="1.0.2")  # at the hold: it ends
    assert rt.installation("crm").hold is None


async def test_set_policy__ends_the_hold_and_applies_at_once(rt: Runtime) -> None:
    await on_1_1_0(rt)
    await rt.rollback("crm", "1.0.0")
    assert rt.resolve("crm").version == "1.0.0"
    await rt.set_policy("crm", "auto_minor")
    assert rt.installation("crm").hold is None
    assert rt.resolve("crm").version == "1.1.0"
    assert (await moves(rt, "crm"))[-1] == ("policy", "1.0.0", "1.1.0")


async def test_a_manual_installation__records_the_hold_but_says_nothing(rt: Runtime) -> None:
    await on_1_1_0(rt)
    await rt.set_policy("crm", "manual")
    await rt.rollback("crm", "1.0.0")
    assert rt.explain("crm").holding is None  # no policy to hold
    await rt.set_policy("crm", "auto_patch")  # an explicit policy starts from where it is
    assert rt.resolve("crm").version == "1.0.1"


# --- across runtimes and processes --------------------------------------------------------------


async def test_another_runtimes_refresh__does_not_undo_a_rollback(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await on_1_1_0(a)
        await b.refresh()
        assert b.resolve("crm").version == "1.1.0"
        await a.rollback("crm", "1.0.0", actor="ops")
        await b.refresh()  # b learns of a change it did not make: it applies policies to it
        assert b.resolve("crm").version == "1.0.0"
        assert b.installation("crm").hold == "1.1.0"
        assert b.explain("crm").holding is not None
        await a.refresh()
        assert a.resolve("crm").version == "1.0.0"
        assert (await moves(a, "crm"))[-1] == ("rollback", "1.1.0", "1.0.0")

        await b.publish(dist("2.0.0"))  # a publisher elsewhere holds it too
        await a.refresh()
        assert a.resolve("crm").version == b.resolve("crm").version == "1.0.0"
        await b.publish(variant("1.1.0", "1.1.1"))
        await a.refresh()
        assert a.resolve("crm").version == "1.1.1"


async def test_idle_runtimes_with_their_refresh_loops__keep_the_rollback(shared_url: str) -> None:
    async with packrun.open_runtime(shared_url) as a:
        await on_1_1_0(a)
        async with packrun.open_runtime(shared_url) as idle:
            await a.rollback("crm", "1.0.0", actor="ops")
            with anyio.fail_after(10):
                while idle.resolve("crm").version != "1.0.0":
                    await anyio.sleep(0.01)
        # Closing waits for the refresh that read the rollback, policy step included.
        await a.refresh()
        assert a.resolve("crm").version == "1.0.0"
        assert [m[0] for m in (await moves(a, "crm"))] == ["install", "policy", "rollback"]


async def test_a_policy_move_decided_before_a_rollback_elsewhere__is_not_written(
    shared_url: str,
) -> None:
    """b has not seen a's rollback (its pin is 1.0.0 again, as b last saw before the policy moved
    it); the hold, read in the transaction, stops b's stale policy step."""
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await a.publish(dist("1.0.0"))
        await a.install("crm", "acme", pin="1.0.0")
        await a.publish(dist("1.1.0"))
        await b.refresh()  # b knows crm (manual, on 1.0.0) and 1.1.0
        await a.set_policy("crm", "auto_minor")  # a moves crm to 1.1.0 ...
        await a.rollback("crm", "1.0.0")  # ... and back: b has seen neither
        await b.set_pin(
            "crm", "1.1.0", origin="policy", actor="policy:auto_minor", expect_pin="1.0.0"
        )
        await a.refresh()
        assert a.resolve("crm").version == "1.0.0"
        assert (await moves(a, "crm"))[-1] == ("rollback", "1.1.0", "1.0.0")


# --- the stored hold: a store made by the previous schema migrates --------------------------------


async def test_a_store_of_the_previous_schema__migrates_and_holds(shared_url: str) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await on_1_1_0(rt)
    # Back to the previous schema, as the previous release wrote it: no hold column (nor the
    # projects that came after it).
    undo_projects(shared_url)
    execute(shared_url, "ALTER TABLE installations DROP COLUMN hold")
    if shared_url.startswith("sqlite:"):
        execute(shared_url, "PRAGMA user_version = 3")
    else:
        execute(shared_url, "UPDATE packrun_meta SET value = '1' WHERE key = 'schema_version'")

    async with packrun.open_runtime(shared_url) as rt:
        assert rt.installation("crm").hold is None
        assert rt.resolve("crm").version == "1.1.0"
        assert (await moves(rt, "crm")) == [
            ("install", None, "1.0.0"),
            ("policy", "1.0.0", "1.1.0"),
        ]
        await rt.rollback("crm", "1.0.0")
    async with packrun.open_runtime(shared_url) as rt:
        assert rt.installation("crm").hold == "1.1.0"
        await rt.publish(dist("2.0.0"))
        assert rt.resolve("crm").version == "1.0.0"
