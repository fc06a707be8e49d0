"""The cost of a run in objects: what a run start + finish makes, keeps and leaves behind.

Counted, never timed: reference cycles left per run, the holds a loaded bundle gets, when the tool
context is made, and which stores record a start without an await.
"""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

import packrun
from packrun import Auth
from packrun._bundle import _finder, _Slot
from test_runs import TRUSTED, setup_probe

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_runs_leave_no_reference_cycle_behind() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        for _ in range(10):  # everything made once (loggers, checks, the bundle) made now
            async with rt.run("inst") as run:
                await run.call("whoami")
        gc.collect()
        gc.disable()
        try:
            for _ in range(500):
                async with rt.run("inst") as run:
                    await run.call("whoami")
            for _ in range(500):
                async with rt.run("inst", auth=Auth.api_key("k-123")):
                    pass
            assert gc.collect() == 0  # freed by reference counts alone: nothing for the collector
        finally:
            gc.enable()


async def test_the_runs_in_flight_on_a_bundle_share_one_hold_on_it() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        digests = await setup_probe(rt, "1.0.0")
        slot = _finder.slots[digests["1.0.0"]]
        async with rt.run("inst") as first:
            assert slot.holds == 1
            async with rt.run("inst"), rt.run("inst"):
                assert slot.holds == 1
                assert rt.in_flight("probe", "1.0.0") == 3
            assert slot.holds == 1
            assert await first.call("whoami") == {"version": "1.0.0", "marker": "m1.0.0"}
        # The last run's end keeps the hold until the ends are written: a run that starts
        # meanwhile takes it over (one hold, not a second).
        assert slot.holds == 1
        async with rt.run("inst"):
            assert slot.holds == 1
        with anyio.fail_after(5):  # then it is given back: the bundle may be evicted again
            while holds(slot):
                await anyio.sleep(0.001)
        assert "inst" not in rt._fast_binds  # nor kept alive by how the runs bound to it
        async with rt.run("inst"):
            assert holds(slot) == 1
    assert holds(slot) == 0  # and nothing is held once the runtime is closed


def holds(slot: _Slot) -> int:
    return slot.holds


async def test_the_tool_context_is_made_by_the_first_call_once() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        async with rt.run("inst") as run:
            assert run._ctx is None  # a run that calls nothing makes none
            await run.call("whoami")
            ctx = getattr(run, "_ctx")  # noqa: B009  (read afresh: mypy holds it None from above)
            assert ctx is not None
            assert ctx.run_id == run.run_id
            await run.call("whoami")
            assert run._ctx is ctx


async def test_the_in_memory_store_records_a_start_without_an_await(tmp_path: Path) -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        async with rt.run("inst"):  # loads the bundle: a later start holds it without an await
            pass
        scope = rt.run("inst", run_id="now")
        entering = scope.__aenter__()
        with pytest.raises(StopIteration) as done:  # finished at its first step: never suspended
            entering.send(None)
        run = done.value.value
        assert run.run_id == "now"
        assert rt.in_flight("probe", "1.0.0") == 1
        await scope.__aexit__(None, None, None)
        assert rt.in_flight("probe", "1.0.0") == 0
    async with packrun.open_runtime(f"sqlite:///{tmp_path / 'state.db'}", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        record = rt.resolve("inst")
        assert rt._tracker._sync_start is False  # a SQLite start is a commit to wait for
        async with rt.run("inst") as run:
            assert run.version == record.version


async def test_starts_that_load_their_bundle_concurrently_give_every_hold_back() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        digests = await setup_probe(rt, "1.0.0")
        rt._dispatchers.clear()  # as after a reload: the next starts load it again, concurrently
        entered = anyio.Event()
        release = anyio.Event()

        async def one() -> None:
            async with rt.run("inst"):
                entered.set()
                await release.wait()

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
            await entered.wait()
            while rt.in_flight("probe", "1.0.0") < 3:
                await anyio.sleep(0.01)
            assert _finder.slots[digests["1.0.0"]].holds >= 1
            release.set()
        with anyio.fail_after(5):  # given back once the ends are written
            while _finder.slots[digests["1.0.0"]].holds:
                await anyio.sleep(0.001)


async def test_a_run_after_a_change_of_check_modes_binds_with_the_new_modes() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        for _ in range(3):  # the installation's runs bound alike: the later ones reuse the first's
            async with rt.run("inst") as run:
                assert run._checks is not None
                assert (run._checks.input_mode, run._checks.output_mode) == ("enforce", "warn")
        rt.check_input = "off"
        rt.check_output = "enforce"
        async with rt.run("inst") as run:
            assert run._checks is not None
            assert (run._checks.input_mode, run._checks.output_mode) == ("off", "enforce")
        # With credentials: checks of its own.
        async with rt.run("inst", auth=Auth.api_key("k-1")) as run:
            assert run._checks is not None
            assert run._checks.input_mode == "off"


async def test_a_run_after_a_pin_move_binds_to_the_new_version() -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0", "2.0.0")
        for _ in range(3):
            assert (await rt.call("inst", "whoami"))["version"] == "1.0.0"
        async with rt.run("inst") as old:
            await rt.set_pin("inst", "2.0.0")
            async with rt.run("inst") as new:
                assert (await new.call("whoami"))["version"] == "2.0.0"
                assert (await old.call("whoami"))["version"] == "1.0.0"
        assert (await rt.call("inst", "whoami"))["version"] == "2.0.0"
