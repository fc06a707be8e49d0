"""Bulk updates and rollbacks over a selector: the dry run's plan, and a real run that does exactly
that plan, one transaction per installation, on every store."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import packrun
from packrun import BulkPlan, InvalidArgument, Runtime, Selector

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
TRUSTED = {"vendor", "custom"}


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def fleet(rt: Runtime) -> None:
    """acme 1.0.0 1.0.1 1.1.0 1.2.0 2.0.0; old-a and old-b on 1.0.0, mid on 1.0.1 (auto_patch),
    top on 1.2.0, follow on latest, other-project on 1.0.0 in project acme-corp."""
    for version in ("1.0.0", "1.0.1", "1.1.0", "1.2.0", "2.0.0"):
        await rt.publish(dist(version))
    await rt.install("old-a", "acme", pin="1.0.0")
    await rt.install("old-b", "acme", pin="1.0.0")
    await rt.install("mid", "acme", pin="1.0.1", policy="auto_patch")
    await rt.install("top", "acme", pin="1.2.0")
    await rt.install("follow", "acme", pin="latest")
    await rt.install("other-project", "acme", pin="1.0.0", project="acme-corp")


def same_plan(a: BulkPlan, b: BulkPlan) -> bool:
    return (a.action, a.selector, a.to, a.moves, a.blocked) == (
        b.action,
        b.selector,
        b.to,
        b.moves,
        b.blocked,
    )


async def test_bulk_update__dry_run__plans_moves_and_blocks_and_changes_nothing(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        before = {
            i.id: (rt.resolve(i.id).version, len(await rt.history(i.id)))
            for i in rt.installations()
        }
        async with rt.run("old-a", run_id="r-1", workflow_id="wf"):
            plan = await rt.bulk_update("pack=acme,project=default", to="1.1.0")
        assert plan.dry_run
        assert [(m.installation_id, m.from_version, m.to_version, m.bump) for m in plan.moves] == [
            ("mid", "1.0.1", "1.1.0", "minor"),
            ("old-a", "1.0.0", "1.1.0", "minor"),
            ("old-b", "1.0.0", "1.1.0", "minor"),
        ]
        assert {b.installation_id: b.kind for b in plan.blocked} == {
            "follow": "dynamic_pin",
            "top": "not_above",
        }
        assert plan.moves[1].runs_in_flight == ("r-1",)
        assert plan.runs_in_flight == 1
        assert "would move: 3; blocked: 2" in str(plan)
        after = {
            i.id: (rt.resolve(i.id).version, len(await rt.history(i.id)))
            for i in rt.installations()
        }
        assert after == before


async def test_bulk_update__for_real__does_exactly_what_the_dry_run_planned(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        planned = await rt.bulk_update("pack=acme,version=1.0.0", to="1.1.0")
        done = await rt.bulk_update(
            "pack=acme,version=1.0.0", to="1.1.0", dry_run=False, actor="ops"
        )
        assert not done.dry_run
        assert same_plan(planned, done)
        assert [m.installation_id for m in done.moves] == ["old-a", "old-b", "other-project"]
        for iid in ("old-a", "old-b", "other-project"):
            assert rt.resolve(iid).version == "1.1.0"
            last = (await rt.history(iid))[-1]
            assert (last.origin, last.actor, last.from_version, last.to_version) == (
                "bulk",
                "ops",
                "1.0.0",
                "1.1.0",
            )
        assert rt.resolve("mid").version == "1.0.1"


async def test_bulk_update__a_major__is_blocked_unless_acknowledged(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        plan = await rt.bulk_update(Selector(pack="acme", pin="1.2.0"))
        assert [(b.installation_id, b.kind, b.to_version) for b in plan.blocked] == [
            ("top", "breaking", "2.0.0")
        ]
        assert "acknowledge_breaking=True" in plan.blocked[0].reason
        done = await rt.bulk_update(
            Selector(pack="acme", pin="1.2.0"), dry_run=False, acknowledge_breaking=True
        )
        assert [(m.installation_id, m.to_version) for m in done.moves] == [("top", "2.0.0")]
        assert rt.resolve("top").version == "2.0.0"


async def test_bulk_rollback__moves_down_and_holds_the_policy(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        planned = await rt.bulk_rollback("policy=auto_patch", to="1.0.0")
        done = await rt.bulk_rollback("policy=auto_patch", to="1.0.0", dry_run=False)
        assert same_plan(planned, done)
        assert [(m.installation_id, m.bump) for m in done.moves] == [("mid", "downgrade")]
        assert rt.resolve("mid").version == "1.0.0"
        assert rt.installation("mid").hold == "1.0.1"
        assert (await rt.history("mid"))[-1].origin == "bulk"
        up = await rt.bulk_rollback("pack=acme,version=1.0.0,project=default", to="1.0.1")
        assert {b.kind for b in up.blocked} == {"not_below"}


async def test_bulk_update__an_installation_moved_after_the_plan__is_left_alone(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        plan = await rt.bulk_update("version=1.0.0,project=default", to="1.1.0")
        await rt.update("old-b", to="1.0.1", actor="someone")
        from packrun._bulk import bulk_apply

        done = await bulk_apply(rt, plan, "ops")
        assert [m.installation_id for m in done.moves] == ["old-a"]
        assert [(b.installation_id, b.kind) for b in done.blocked] == [("old-b", "moved_meanwhile")]
        assert rt.resolve("old-b").version == "1.0.1"


async def test_bulk_update__two_runtimes_at_once__move_each_installation_once(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url, in_process=TRUSTED) as rt:
        for version in ("1.0.0", "1.1.0"):
            await rt.publish(dist(version))
        for n in range(12):
            await rt.install(f"i-{n:02}", "acme", pin="1.0.0")
    results: list[BulkPlan] = []

    async def operator(name: str) -> None:
        async with packrun.open_runtime(shared_url, in_process=TRUSTED) as rt:
            results.append(await rt.bulk_update("pack=acme", to="1.1.0", dry_run=False, actor=name))

    async with anyio.create_task_group() as tg:
        tg.start_soon(operator, "ops-1")
        tg.start_soon(operator, "ops-2")
    moved = [m.installation_id for r in results for m in r.moves]
    assert sorted(moved) == [f"i-{n:02}" for n in range(12)]  # each exactly once
    async with packrun.open_runtime(shared_url, create=False) as rt:
        for n in range(12):
            events = [e for e in (await rt.history(f"i-{n:02}")) if e.origin == "bulk"]
            assert len(events) == 1
            assert rt.resolve(f"i-{n:02}").version == "1.1.0"


@pytest.mark.parametrize(
    "text",
    ["", "pack", "pack=", "color=red", "pack=a,pack=b", "version=one", "policy=sometimes", "pin=x"],
)
def test_selector__bad_text__is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument, match="selector"):
        Selector.parse(text)


def test_selector__text__round_trips() -> None:
    text = "pack=acme,version=vendor:1.2.0,project=acme-corp,policy=auto_minor,pin=@stable"
    assert str(Selector.parse(text)) == text
    assert Selector.parse(text) == Selector(
        pack="acme", version="vendor:1.2.0", project="acme-corp", policy="auto_minor", pin="@stable"
    )


async def test_bulk_update__a_target_outside_the_contract_window__is_refused_in_the_plan(
    shared_url: str,
) -> None:
    legacy = BUNDLES / "legacy-crm"
    async with packrun.open_runtime(shared_url, in_process=TRUSTED) as rt:
        for version in ("1.0.0", "1.1.0"):
            await rt.publish(legacy / version / "dist" / f"legacy-crm-{version}.bundle.tar.gz")
        await rt.install("crm", "legacy-crm", pin="1.0.0")
    async with packrun.open_runtime(shared_url, generations={2}) as rt:
        plan = await rt.bulk_update("pack=legacy-crm", to="1.1.0")
        done = await rt.bulk_update("pack=legacy-crm", to="1.1.0", dry_run=False)
        assert same_plan(plan, done)
        [refused] = done.blocked
        assert (refused.kind, refused.to_version) == ("refused", "1.1.0")
        assert "integration_contract_incompatible" in refused.reason
        assert rt.resolve("crm").version == "1.0.0"


async def test_bulk_rollback__can_wait_for_the_versions_left_to_drain(store_url: str) -> None:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await fleet(rt)
        async with rt.run("top", run_id="r-1"):
            done = await rt.bulk_rollback("pin=1.2.0", to="1.1.0", dry_run=False, drain_timeout=0)
            assert (done.drained, done.still_in_flight) == (False, ("r-1",))
            assert "still in flight on the versions left: r-1" in str(done)
        back = await rt.bulk_rollback("pin=1.1.0", to="1.0.0", dry_run=False, drain_timeout=5)
        assert (back.drained, back.still_in_flight) == (True, ())
        assert rt.resolve("top").version == "1.0.0"
