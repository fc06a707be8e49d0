"""Aliases: a named pin per pack and project that an operator moves once for every installation
pinned ``@name``; recorded per installation (origin ``alias``), drain-aware, shared by a fleet."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import packrun
from packrun import InvalidArgument, NotFound, Runtime

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
TRUSTED = {"vendor", "custom"}


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def catalog(rt: Runtime) -> None:
    for version in ("1.0.0", "1.0.1", "1.1.0"):
        await rt.publish(dist(version))


async def test_moving_an_alias__moves_every_installation_on_it(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await catalog(rt)
        first = await rt.set_alias("acme", "stable", "1.0.0", actor="ops")
        assert (first.from_version, first.to_version, first.installations) == (None, "1.0.0", ())
        await rt.install("a", "acme", pin="@stable")
        await rt.install("b", "acme", pin="@stable", policy="auto_minor")
        await rt.install("c", "acme", pin="1.0.0")
        assert rt.resolve("a").version == rt.resolve("b").version == "1.0.0"
        assert rt.resolve("a").pin == "@stable"
        change = await rt.set_alias("acme", "stable", "1.1.0", actor="ops")
        assert (change.from_version, change.to_version) == ("1.0.0", "1.1.0")
        assert change.installations == ("a", "b")
        assert "2 installation(s) moved" in str(change)
        assert rt.resolve("a").version == rt.resolve("b").version == "1.1.0"
        assert rt.resolve("c").version == "1.0.0"
        for iid in ("a", "b"):
            last = (await rt.history(iid))[-1]
            assert (last.origin, last.actor, last.from_pin, last.to_pin) == (
                "alias",
                "ops",
                "@stable",
                "@stable",
            )
            assert (last.from_version, last.to_version) == ("1.0.0", "1.1.0")
        [alias] = rt.aliases("acme")
        assert (alias.name, alias.version, alias.actor) == ("stable", "1.1.0", "ops")
        same = await rt.set_alias("acme", "stable", "1.1.0")
        assert same.installations == ()  # naming the same version again moves nothing
        assert len(await rt.history("a")) == 2


async def test_an_alias__is_one_answer_for_its_installations__not_moved_by_policies(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.set_alias("acme", "canary", "1.0.0")
        await rt.install("a", "acme", pin="@canary", policy="auto_patch")
        await rt.install("b", "acme", pin="@canary")
        assert rt._cells["a"] is rt._cells["b"]  # one precomputed answer for both
        await rt.publish(dist("1.0.1"))
        assert rt.resolve("a").version == "1.0.0"  # the alias is the operator's lever
        assert rt.explain("a").update == "1.0.1 (patch, vendor)"
        assert "note: alias @canary names 1.0.0 (set by system at" in str(rt.explain("a"))
        plan = await rt.bulk_update("pack=acme", to="1.0.1")
        assert {b.kind for b in plan.blocked} == {"dynamic_pin"}


async def test_aliases__belong_to_one_project(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await catalog(rt)
        await rt.set_alias("acme", "stable", "1.0.0")
        await rt.set_alias("acme", "stable", "1.1.0", project="acme-corp")
        await rt.install("here", "acme", pin="@stable")
        await rt.install("there", "acme", pin="@stable", project="acme-corp")
        assert rt.resolve("here").version == "1.0.0"
        assert rt.resolve("there").version == "1.1.0"
        assert [a.version for a in rt.aliases(project="acme-corp")] == ["1.1.0"]
        with pytest.raises(NotFound, match="@canary"):
            await rt.install("nowhere", "acme", pin="@canary")


async def test_an_alias_move__leaves_runs_in_flight_and_can_wait_for_the_drain(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await catalog(rt)
        await rt.set_alias("acme", "stable", "1.0.0")
        await rt.install("a", "acme", pin="@stable")
        async with rt.run("a", run_id="r-1") as run:
            change = await rt.set_alias("acme", "stable", "1.0.1", drain_timeout=0)
            assert (change.drained, change.still_in_flight) == (False, ("r-1",))
            assert run.version == "1.0.0"
            assert rt.resolve("a").version == "1.0.1"

        async def end_soon() -> None:
            async with rt.run("a", run_id="r-2"):
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(end_soon)
            await anyio.sleep(0.01)
            change = await rt.set_alias("acme", "stable", "1.1.0", drain_timeout=30)
        assert (change.drained, change.still_in_flight) == (True, ())


async def test_bad_alias_moves__are_refused_and_change_nothing(store_url: str) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await catalog(rt)
        with pytest.raises(InvalidArgument, match="alias name"):
            await rt.set_alias("acme", "Stable!", "1.0.0")
        with pytest.raises(NotFound, match=r"9\.9\.9"):
            await rt.set_alias("acme", "stable", "9.9.9")
        with pytest.raises(InvalidArgument, match="exact version"):
            await rt.set_alias("acme", "stable", "latest")
        with pytest.raises(NotFound, match="pack"):
            await rt.set_alias("nope", "stable", "1.0.0")
        assert rt.aliases() == []


async def test_an_alias_move__is_seen_by_every_runtime_of_the_fleet(shared_url: str) -> None:
    async with packrun.open_runtime(shared_url) as one, packrun.open_runtime(shared_url) as two:
        await catalog(one)
        await one.set_alias("acme", "stable", "1.0.0")
        await one.install("a", "acme", pin="@stable")
        await two.refresh()
        assert two.resolve("a").version == "1.0.0"
        await one.set_alias("acme", "stable", "1.1.0", actor="ops")
        await two.refresh()
        assert two.resolve("a").version == "1.1.0"
        assert (await two.history("a"))[-1].origin == "alias"
        assert [(a.name, a.version) for a in two.aliases("acme")] == [("stable", "1.1.0")]
    async with packrun.open_runtime(shared_url, create=False) as rt:  # and after a restart
        assert rt.resolve("a").version == "1.1.0"
        assert [e.origin for e in (await rt.history("a"))] == ["install", "alias"]


async def test_two_operators_moving_one_alias_at_once__leave_a_consistent_history(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await catalog(rt)
        await rt.set_alias("acme", "stable", "1.0.0")
        for n in range(5):
            await rt.install(f"i-{n}", "acme", pin="@stable")

    async def operator(version: str) -> None:
        async with packrun.open_runtime(shared_url) as rt:
            await rt.set_alias("acme", "stable", version)

    async with anyio.create_task_group() as tg:
        tg.start_soon(operator, "1.0.1")
        tg.start_soon(operator, "1.1.0")
    async with packrun.open_runtime(shared_url, create=False) as rt:
        [alias] = rt.aliases("acme")
        for n in range(5):
            moves = [(e.from_version, e.to_version) for e in (await rt.history(f"i-{n}"))[1:]]
            # each move starts where the one before it ended, and the last is the alias now
            assert len(moves) == 2
            assert moves[0][0] == "1.0.0"
            assert moves[0][1] == moves[1][0]
            assert moves[1][1] == alias.version == rt.resolve(f"i-{n}").version


async def test_alias_and_bulk_moves__reach_the_event_log_with_their_origin(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await catalog(rt)
        await rt.set_alias("acme", "stable", "1.0.0", actor="ops")
        await rt.install("a", "acme", pin="@stable")
        await rt.install("b", "acme", pin="1.0.0")
        await rt.set_alias("acme", "stable", "1.0.1", actor="ops")
        await rt.bulk_update("pack=acme,pin=1.0.0", to="1.0.1", dry_run=False)
        moves = [
            (e.data["installation"], e.data["origin"], e.data["to_version"])
            async for e in rt.events()
            if e.kind == "pin_move" and e.data["origin"] in ("alias", "bulk")
        ]
        assert moves == [("a", "alias", "1.0.1"), ("b", "bulk", "1.0.1")]
