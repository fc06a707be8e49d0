"""The sandbox pool under contention: calls that wait for a worker are woken one at a time.

Calls beyond ``workers_per_digest`` (or beyond ``workers`` in all) wait; each worker or slot that
comes free wakes one waiting call, never all of them (which made a busy executor spend its time
waking calls that went back to waiting). A waiting call that is cancelled passes on what woke it.
"""

from __future__ import annotations

import anyio
import pytest

import packrun
from packrun import SandboxLimits, SandboxMode
from packrun._bundle import bundle_bytes
from test_sandbox import HAVE_BWRAP, IN_CI

pytestmark = pytest.mark.anyio

CODE = (
    b"import asyncio\n"
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('{pack}')\n\n"
    b"@integration.tool('nap')\n"
    b"async def nap(ctx, input):\n"
    b"    await asyncio.sleep(input['s'])\n"
    b"    return input['n']\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["process", "bwrap"])
def mode(request: pytest.FixtureRequest) -> SandboxMode:
    if request.param == "bwrap" and not HAVE_BWRAP:
        if IN_CI:
            pytest.fail("CI runs the sandbox tests with bubblewrap: install it")
        pytest.skip("bubblewrap (bwrap) is not installed")
    return "bwrap" if request.param == "bwrap" else "process"


def napper(pack: str) -> bytes:
    manifest = packrun.decode_manifest(
        {"id": pack, "version": "1.0.0", "contract": 2, "tools": [{"id": "nap"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": CODE.replace(b"{pack}", pack.encode())})


async def test_each_worker_that_comes_free_wakes_one_waiting_call(mode: SandboxMode) -> None:
    calls = 20
    limits = SandboxLimits(workers_per_digest=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(napper("nap"), channel="custom")
        await rt.install("nap-inst", "nap")
        assert await rt.call("nap-inst", "nap", {"s": 0, "n": -1}) == -1  # the worker is up
        results: list[int] = []

        async def one(n: int) -> None:
            results.append(await rt.call("nap-inst", "nap", {"s": 0.005, "n": n}))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(calls):
                    tg.start_soon(one, n)
        assert sorted(results) == list(range(calls))
        assert len(rt.sandbox_workers) == 1
        # One wake-up for each time the worker came free with calls waiting (a broadcast would
        # wake every waiting call each time: about calls * calls / 2).
        assert rt._pool.wakeups <= calls
        assert rt.in_flight("nap", "1.0.0") == 0


async def test_waiting_calls_that_are_cancelled_leave_the_others_served(mode: SandboxMode) -> None:
    limits = SandboxLimits(workers_per_digest=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(napper("nap"), channel="custom")
        await rt.install("nap-inst", "nap")
        served: list[int] = []
        cancelled: list[int] = []

        async def one(n: int, scope: anyio.CancelScope | None) -> None:
            if scope is None:
                served.append(await rt.call("nap-inst", "nap", {"s": 0.05, "n": n}))
                return
            with scope:
                served.append(await rt.call("nap-inst", "nap", {"s": 0.05, "n": n}))
            if scope.cancelled_caught:
                cancelled.append(n)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, 0, None)  # holds the worker
                await anyio.sleep(0.02)
                scopes = {n: anyio.CancelScope() for n in range(1, 9, 2)}
                for n in range(1, 9):
                    tg.start_soon(one, n, scopes.get(n))
                await anyio.wait_all_tasks_blocked()
                for scope in scopes.values():  # the odd ones give up while they wait
                    scope.cancel()
        assert sorted(cancelled) == [1, 3, 5, 7]
        assert sorted(served) == [0, 2, 4, 6, 8]
        assert rt.in_flight("nap", "1.0.0") == 0
        assert rt.stats().runs_in_flight == 0


async def test_calls_waiting_for_room_under_the_total_are_served(mode: SandboxMode) -> None:
    limits = SandboxLimits(workers=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        for pack in ("nap-a", "nap-b"):
            await rt.publish(napper(pack), channel="custom")
            await rt.install(f"{pack}-inst", pack)
        served: list[tuple[str, int]] = []

        async def one(pack: str, n: int) -> None:
            out = await rt.call(f"{pack}-inst", "nap", {"s": 0.01, "n": n})
            served.append((pack, out))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(one, "nap-a", n)
                    tg.start_soon(one, "nap-b", n)
        assert sorted(served) == [(p, n) for p in ("nap-a", "nap-b") for n in range(4)]
        assert len(rt.sandbox_workers) <= 1
