"""Fleet health, ramped rollouts behind health gates, and the fleet's event log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import packrun
from _fleet_packs import shop
from packrun import (
    Event,
    InvalidArgument,
    NotFound,
    RolloutInProgress,
    RolloutStatus,
    Runtime,
    ToolFailed,
)
from packrun._rollouts import ramped

pytestmark = pytest.mark.anyio

FLEET = [f"inst-{n:02d}" for n in range(10)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[Runtime]:
    options.setdefault("fleet_interval", 0.05)
    async with packrun.open_runtime(url, in_process={"vendor", "custom"}, **options) as rt:
        yield rt


async def fleet_on(rt: Runtime, tmp: Path, *, fail: bool = False) -> None:
    """shop 1.0.0, ten installations on ``latest``, then shop 1.1.0 (failing, or not): the
    dynamic pins take 1.1.0 at once, which is what a rollout then ramps."""
    await rt.publish(shop(tmp, "1.0.0"))
    for iid in FLEET:
        await rt.install(iid, "shop", "latest")
    await rt.publish(shop(tmp, "1.1.0", fail=fail))


def versions(rt: Runtime) -> dict[str, str]:
    return {iid: rt.resolve(iid).version for iid in FLEET}


async def until(
    rt: Runtime, check: Callable[[RolloutStatus], bool], timeout: float = 20
) -> RolloutStatus:
    with anyio.fail_after(timeout):
        while True:
            status = await rt.rollout_status("shop")
            if check(status):
                return status
            await anyio.sleep(0.02)


async def all_events(rt: Runtime, since: int = 0) -> list[Event]:
    return [e async for e in rt.events(since=since)]


# --- health -----------------------------------------------------------------------------------


async def test_health__counts_calls_errors_and_latency_per_version_and_project(
    tmp_path: Path,
) -> None:
    async with opened("memory:") as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.publish(shop(tmp_path, "1.1.0", fail=True))
        await rt.install("good", "shop", "1.0.0")
        await rt.install("bad", "shop", "1.1.0", project="acme-corp")
        for _ in range(3):
            assert await rt.call("good", "ping") == {"pong": "1.0.0"}
        for _ in range(2):
            with pytest.raises(ToolFailed):
                await rt.call("bad", "ping")
        good = rt.health("shop", "1.0.0")
        assert (good.calls, good.errors, good.error_rate) == (3, 0, 0.0)
        assert good.p50 is not None
        assert good.p99 is not None
        assert good.p50 <= good.p99
        bad = rt.health("shop", "1.1.0")
        assert (bad.calls, bad.tool_errors, bad.error_rate) == (2, 2, 1.0)
        assert rt.health("shop", "1.1.0", project="acme-corp", per_project=True).calls == 2
        assert rt.health("shop", "1.1.0", per_project=True).calls == 0  # default's own: none


async def test_health__count_health_false__counts_nothing(tmp_path: Path) -> None:
    async with opened("memory:", count_health=False) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.install("good", "shop", "1.0.0")
        await rt.call("good", "ping")
        assert rt.health("shop", "1.0.0").calls == 0


async def test_health__two_runtimes_on_one_store__see_the_sum(
    tmp_path: Path, shared_url: str
) -> None:
    async with opened(shared_url) as a, opened(shared_url) as b:
        await a.publish(shop(tmp_path, "1.0.0"))
        await a.install("good", "shop", "1.0.0")
        await b.refresh()
        for _ in range(3):
            await a.call("good", "ping")
        for _ in range(2):
            await b.call("good", "ping")
        with anyio.fail_after(10):
            while a.health("shop", "1.0.0").calls != 5 or b.health("shop", "1.0.0").calls != 5:
                await anyio.sleep(0.02)


# --- rollouts ---------------------------------------------------------------------------------


async def test_rollout__failing_version__aborts_at_the_first_gate_and_everyone_goes_back_drained(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="packrun")
    async with opened(store_url) as rt:
        await fleet_on(rt, tmp_path, fail=True)
        status = await rt.start_rollout(
            "shop", "1.1.0", steps=(20, 50, 100), step_interval=0, min_calls=3, actor="ops"
        )
        assert (status.state, status.step, status.installations, status.ramped) == (
            "running", 20, 10, 2
        )  # fmt: skip
        on_new = sorted(i for i, v in versions(rt).items() if v == "1.1.0")
        assert on_new == sorted(ramped(FLEET, 20))
        async with rt.run(on_new[0]) as run:  # in flight on 1.1.0 when the gate fails
            for _ in range(3):
                with pytest.raises(ToolFailed):
                    await run.call("ping")
            status = await until(rt, lambda s: s.state == "aborted")
            assert run.version == "1.1.0"  # the run keeps its version
            assert status.draining == 1
        assert set(versions(rt).values()) == {"1.0.0"}
        assert rt.in_flight("shop", "1.1.0") == 0
        assert (status.step, status.ramped) == (0, 0)
        assert "above max_error_rate" in (status.reason or "")
        assert (status.health.calls, status.health.tool_errors) == (3, 3)
        aborts = [e for e in await all_events(rt) if e.kind == "rollout_aborted"]
        assert len(aborts) == 1
        assert aborts[0].data["moved"] == on_new
        assert aborts[0].data["health"]["error_rate"] == 1.0
        assert not [e for e in await all_events(rt) if e.kind == "rollout_step"]
        moves = [e for e in (await rt.history(on_new[0])) if e.origin == "rollout"]
        assert [(e.from_version, e.to_version) for e in moves] == [("1.1.0", "1.0.0")]
        assert moves[-1].actor == f"rollout:{status.id}"
    assert any(getattr(r, "event", None) == "rollout_aborted" for r in caplog.records)


async def test_rollout__healthy_version__steps_through_every_gate_to_100(
    tmp_path: Path, store_url: str
) -> None:
    async with opened(store_url) as rt:
        await fleet_on(rt, tmp_path)
        first = ramped(FLEET, 10)
        status = await rt.start_rollout(
            "shop", "1.1.0", steps=(10, 50, 100), step_interval=0, min_calls=2
        )
        assert status.ramped == 1
        for _ in range(2):
            assert await rt.call(first[0], "ping") == {"pong": "1.1.0"}
        status = await until(rt, lambda s: s.state == "completed")
        assert (status.step, status.ramped) == (100, 10)
        assert set(versions(rt).values()) == {"1.1.0"}
        assert {rt.installation(i).pin for i in FLEET} == {"latest"}  # their own pins again
        kinds = [e.kind for e in await all_events(rt) if e.kind.startswith("rollout")]
        assert kinds == ["rollout_started", "rollout_step", "rollout_step", "rollout_completed"]
        steps = [e.data["step"] for e in await all_events(rt) if e.kind == "rollout_step"]
        assert steps == [50, 100]


async def test_rollout__waits_at_a_gate_until_min_calls(tmp_path: Path) -> None:
    async with opened("memory:") as rt:
        await fleet_on(rt, tmp_path)
        await rt.start_rollout("shop", "1.1.0", steps=(10, 100), step_interval=0, min_calls=5)
        await anyio.sleep(0.3)  # several ticks without a call: the gate keeps the step
        status = await rt.rollout_status("shop")
        assert (status.state, status.step) == ("running", 10)


async def test_rollout__relative_gate__aborts_when_worse_than_the_version_it_replaces(
    tmp_path: Path,
) -> None:
    async with opened("memory:") as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        for iid in FLEET:
            await rt.install(iid, "shop", "latest")
        for _ in range(10):
            await rt.call(FLEET[0], "ping")  # 1.0.0: no errors
        await rt.publish(shop(tmp_path, "1.1.0", fail=True))
        await rt.start_rollout(
            "shop",
            "1.1.0",
            steps=(50, 100),
            step_interval=0,
            min_calls=2,
            max_error_rate=1.0,  # the absolute gate lets anything through
            max_error_increase=0.1,
        )
        with pytest.raises(ToolFailed):
            await rt.call(ramped(FLEET, 50)[0], "ping")
        with pytest.raises(ToolFailed):
            await rt.call(ramped(FLEET, 50)[0], "ping")
        status = await until(rt, lambda s: s.state == "aborted")
        assert "max_error_increase" in (status.reason or "")
        assert status.baseline.calls == 10


async def test_rollout__promote_jumps_to_100_and_abort_by_request_moves_back(
    tmp_path: Path,
) -> None:
    async with opened("memory:", fleet_interval=60) as rt:  # no background ticks: the calls act
        await fleet_on(rt, tmp_path)
        await rt.start_rollout("shop", "1.1.0", steps=(10, 100), step_interval=3600)
        status = await rt.promote_rollout("shop", actor="ops")
        assert (status.state, status.step) == ("completed", 100)
        assert set(versions(rt).values()) == {"1.1.0"}
        kinds = [e.kind for e in await all_events(rt) if e.kind.startswith("rollout")]
        assert kinds == ["rollout_started", "rollout_promoted", "rollout_completed"]
        with pytest.raises(NotFound):
            await rt.abort_rollout("shop")  # nothing running any more
        await rt.publish(shop(tmp_path, "1.2.0"))
        await rt.start_rollout("shop", "1.2.0", steps=(50, 100), step_interval=3600)
        assert "1.2.0" in versions(rt).values()
        status = await rt.abort_rollout("shop", actor="ops", drain_timeout=1)
        assert (status.state, status.reason, status.draining) == ("aborted", "aborted by ops", 0)
        assert set(versions(rt).values()) == {"1.1.0"}


async def test_rollout__auto_policy_and_selector_installations__are_ramped(
    tmp_path: Path,
) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.install("auto", "shop", "1.0.0", policy="auto_minor")
        await rt.install("manual", "shop", "1.0.0")
        await rt.install("other", "shop", "1.0.0")
        await rt.publish(shop(tmp_path, "1.1.0"))
        assert rt.resolve("auto").version == "1.1.0"  # the policy took it at publish
        status = await rt.start_rollout("shop", "1.1.0", steps=(1, 100), step_interval=3600)
        assert status.installations == 1
        await rt.abort_rollout("shop")
        assert rt.resolve("auto").version == "1.0.0"
        await rt.refresh()
        assert rt.resolve("auto").version == "1.0.0"  # the policy does not take it again
        status = await rt.start_rollout(
            "shop", "1.1.0", steps=(100,), step_interval=0, selector=["manual"]
        )
        assert (status.state, status.installations) == ("completed", 1)
        assert (rt.resolve("manual").version, rt.resolve("other").version) == ("1.1.0", "1.0.0")


async def test_rollout__one_per_pack_and_project(tmp_path: Path) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await fleet_on(rt, tmp_path)
        await rt.start_rollout("shop", "1.1.0", step_interval=3600)
        with pytest.raises(RolloutInProgress) as exc:
            await rt.start_rollout("shop", "1.1.0", step_interval=3600)
        assert (exc.value.code, exc.value.pack, exc.value.version) == (
            "rollout_in_progress", "shop", "1.1.0"
        )  # fmt: skip


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("steps", ()),
        ("steps", (50, 10, 100)),
        ("steps", (10, 50)),
        ("steps", (0, 100)),
        ("step_interval", -1),
        ("max_error_rate", 1.5),
        ("max_error_increase", float("nan")),
        ("min_calls", -1),
        ("selector", "inst-00"),
    ],
)
async def test_start_rollout__bad_arguments__are_invalid_argument(
    tmp_path: Path, argument: str, value: object
) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await fleet_on(rt, tmp_path)
        options: dict[str, Any] = {argument: value}
        with pytest.raises(InvalidArgument) as exc:
            await rt.start_rollout("shop", "1.1.0", **options)
        assert argument in str(exc.value)
        assert not [e for e in await all_events(rt) if e.kind == "rollout_started"]


async def test_start_rollout__nothing_would_take_the_version__is_refused(tmp_path: Path) -> None:
    async with opened("memory:") as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.install("manual", "shop", "1.0.0")
        await rt.publish(shop(tmp_path, "1.1.0"))
        with pytest.raises(InvalidArgument, match="would take"):
            await rt.start_rollout("shop", "1.1.0")


@given(st.sets(st.text(min_size=1, max_size=8), max_size=40), st.integers(1, 99))
def test_ramped__is_a_growing_prefix_of_one_order(ids: set[str], share: int) -> None:
    smaller, larger = ramped(ids, share), ramped(ids, share + 1)
    assert larger[: len(smaller)] == smaller
    assert (
        ramped(sorted(ids, reverse=True), share) == smaller
    )  # the order does not depend on the input's
    assert (len(smaller) > 0) == bool(ids)


async def test_resolve_during_a_rollout__reads_the_same_cells(tmp_path: Path) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await fleet_on(rt, tmp_path)
        await rt.start_rollout("shop", "1.1.0", steps=(50, 100), step_interval=3600)
        for iid in FLEET:
            assert rt.resolve(iid) is rt._cells[iid].value


# --- events -----------------------------------------------------------------------------------


async def test_events__publishes_pin_moves_with_origin_and_rollouts(tmp_path: Path) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await fleet_on(rt, tmp_path)
        await rt.start_rollout("shop", "1.1.0", steps=(50, 100), step_interval=3600)
        events = await all_events(rt)
        cursors = [e.cursor for e in events]
        assert cursors == sorted(set(cursors))
        publishes = [e.data["version"] for e in events if e.kind == "publish"]
        assert publishes == ["1.0.0", "1.1.0"]
        origins = {e.data["origin"] for e in events if e.kind == "pin_move"}
        assert origins == {"install", "rollout"}
        assert events[-1].kind == "pin_move" or events[-1].kind == "rollout_started"
        assert events[0].to_json()["kind"] == "publish"
        later = await all_events(rt, since=cursors[2])
        assert later == events[3:]


async def test_events__a_blocked_update_is_recorded_once(tmp_path: Path, shared_url: str) -> None:
    async with opened(shared_url) as a, opened(shared_url) as b:
        await a.publish(shop(tmp_path, "1.0.0"))
        await a.install("auto", "shop", "1.0.0", policy="auto_minor")
        await b.refresh()
        await a.publish(shop(tmp_path, "2.0.0"))  # a major: the policy waits for a review
        await b.refresh()
        await a.refresh()
        blocked = [e for e in await all_events(a) if e.kind == "update_blocked"]
        assert len(blocked) == 1
        assert blocked[0].data["installation"] == "auto"
        assert (blocked[0].data["version"], blocked[0].data["kind"]) == ("2.0.0", "major")


async def test_events__resumed_from_a_cursor_across_a_restart__exactly_once(
    tmp_path: Path, shared_url: str
) -> None:
    seen: list[Event] = []
    async with opened(shared_url) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        for iid in FLEET[:3]:
            await rt.install(iid, "shop", "latest")
        async for event in rt.events(since=0):
            seen.append(event)
            if len(seen) == 2:
                break  # the consumer stops here, keeping the cursor of what it handled
    cursor = seen[-1].cursor
    async with opened(shared_url) as rt:  # a restart: another runtime, the same store
        await rt.publish(shop(tmp_path, "1.1.0"))
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for event in rt.events(since=cursor, follow=True):
                    seen.append(event)
                    if event.kind == "pin_move" and event.data["installation"] == "late":
                        tg.cancel_scope.cancel()

            tg.start_soon(follow)
            await anyio.sleep(0.2)
            await rt.install("late", "shop", "latest")
        every = await all_events(rt)
    assert seen == every
    assert len({e.cursor for e in seen}) == len(seen)


def test_blocking__has_the_rollout_and_event_names(tmp_path: Path) -> None:
    from packrun import blocking

    with blocking.open_runtime("memory:", in_process={"vendor"}, fleet_interval=60) as rt:
        rt.publish(shop(tmp_path, "1.0.0"))
        rt.install("i", "shop", "latest")
        rt.publish(shop(tmp_path, "1.1.0"))
        status = rt.start_rollout("shop", "1.1.0", steps=(100,), step_interval=0)
        assert rt.rollout_status("shop") == status
        kinds = [e.kind for e in rt.events(since=0)]
        assert kinds[-1] == "rollout_completed"
        with pytest.raises(InvalidArgument):
            rt.events(since=-1)


def test_call_checks__sort_failures_into_timeouts_crashes_and_tool_errors() -> None:
    from packrun._checks import CallChecks, HealthCounters

    counters = HealthCounters()
    checks = CallChecks({}, counters, "off", "off", "shop", "1.0.0", lambda kind, text: None)
    checks.failed(packrun.ToolTimeout("shop", "1.0.0", "ping", 5.0), 5.0)
    checks.failed(packrun.SandboxCrashed("shop", "1.0.0", "ping", "killed"), None)
    checks.failed(ToolFailed("ping", "broken", "no"), 0.001)
    checks.failed(ValueError("raw"), None)
    checks.failed(asyncio.CancelledError(), None)  # the caller's cancellation: no error
    assert (counters.timeouts, counters.crashes, counters.tool_errors) == (1, 1, 2)
    assert sum(counters.buckets) == 2


async def test_opentelemetry__exports_the_health_counters(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from packrun._health import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with opened("memory:") as rt:
        await rt.publish(shop(tmp_path, "1.0.0", fail=True))
        await rt.install("bad", "shop", "1.0.0")
        assert instrument(rt._health_book, provider)
        for _ in range(2):
            with pytest.raises(ToolFailed):
                await rt.call("bad", "ping")
        data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: [
            (dict(p.attributes or {}), int(getattr(p, "value", 0))) for p in metric.data.data_points
        ]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    where = {"pack": "shop", "stream": "vendor", "version": "1.0.0", "project": "default"}
    assert points["packrun.calls"] == [(where, 2)]
    assert points["packrun.tool_errors"] == [(where, 2)]
    latency = points["packrun.call.latency"]
    assert sum(n for _, n in latency) == 1  # the first call of every sixteen is timed


async def test_a_rollout_selector__picks_the_installations_it_matches_when_it_starts(
    tmp_path: Path,
) -> None:
    async with opened("memory:", fleet_interval=60) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.install("auto", "shop", "1.0.0", policy="auto_minor")
        await rt.install("m1", "shop", "1.0.0")
        await rt.install("m2", "shop", "1.0.0")
        await rt.publish(shop(tmp_path, "1.1.0"))
        with pytest.raises(InvalidArgument, match="selector"):
            await rt.start_rollout("shop", "1.1.0", selector="pack=other")
        with pytest.raises(InvalidArgument, match="selector"):
            await rt.start_rollout("shop", "1.1.0", selector="nonsense")
        status = await rt.start_rollout(
            "shop", "1.1.0", steps=(100,), step_interval=0, selector="policy=manual,pin=1.0.0"
        )
        assert status.installations == 2  # m1 and m2; "auto" is on 1.1.0 already
        await rt.install("m3", "shop", "1.0.0")  # after the start: not in the rollout's list
        await until(rt, lambda s: s.state == "completed")
        versions = {i: rt.resolve(i).version for i in ("auto", "m1", "m2", "m3")}
        assert versions == {"auto": "1.1.0", "m1": "1.1.0", "m2": "1.1.0", "m3": "1.0.0"}
