"""Waiting awake on a worker's channel: polling while the cores have room, blocking when not.

Both ends of a sandbox channel poll their socket for a few microseconds before they sleep in the
kernel; a poll that finds the process was taken off its core turns polling off for a while. The
rules are checked on a fake clock; the calls themselves are checked with polling on and off.
"""

from __future__ import annotations

import pytest

import packrun
from packrun._bundle import bundle_bytes
from packrun._dispatch import _host
from packrun._dispatch._spin import OFF_SECONDS, PREEMPTED, Spin
from test_sandbox import HAVE_BWRAP, IN_CI

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.yields = 0

    def perf_counter(self) -> float:
        return self.now

    def sched_yield(self) -> None:
        self.yields += 1


STEP = 2.0**-20  # about 1 µs, exact in binary: no rounding in the sums below


def test_a_wait_polls_until_its_end_yielding_the_core_between_polls() -> None:
    clock = FakeClock()
    spin = Spin(clock.perf_counter, clock.sched_yield)
    until = spin.start(16 * STEP)
    assert until == 100.0 + 16 * STEP
    polls = 0
    while True:
        clock.now += STEP  # a poll that found nothing
        if not spin.waiting(until):
            break
        polls += 1
    assert polls == 15  # the 16th poll is at the end
    assert clock.yields == 15
    assert spin.off_until == 0.0  # never taken off its core: polling stays on
    assert spin.start(16 * STEP) > 0


def test_a_process_taken_off_its_core_stops_polling_for_a_while() -> None:
    clock = FakeClock()
    spin = Spin(clock.perf_counter, clock.sched_yield)
    until = spin.start(1.0)  # a long wait: only the gap can end it
    clock.now += STEP
    assert spin.waiting(until)
    clock.now += PREEMPTED * 2  # another process had the core meanwhile
    assert not spin.waiting(until)
    assert spin.off_until == clock.now + OFF_SECONDS
    clock.now += OFF_SECONDS / 2
    assert spin.start(20e-6) == 0.0  # off: the next waits block at once
    clock.now += OFF_SECONDS
    assert spin.start(20e-6) > 0  # and on again afterwards


@pytest.mark.parametrize("polling", [True, False])
@pytest.mark.parametrize("mode", ["process", "bwrap"])
async def test_calls_are_answered_with_the_host_polling_or_not(
    mode: packrun.SandboxMode, polling: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode == "bwrap" and not HAVE_BWRAP:
        if IN_CI:
            pytest.fail("CI runs the sandbox tests with bubblewrap: install it")
        pytest.skip("bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(_host.SPIN, "off_until", 0.0 if polling else float("inf"))
    code = (
        b"import asyncio\n"
        b"from packrun.sdk import Integration\n"
        b"integration = Integration('echo')\n\n"
        b"@integration.tool('echo')\n"
        b"async def echo(ctx, input):\n"
        b"    return input\n\n"
        b"@integration.tool('later')\n"
        b"async def later(ctx, input):\n"
        b"    await asyncio.sleep(0.01)\n"
        b"    return input\n"
    )
    manifest = packrun.decode_manifest(
        {
            "id": "echo",
            "version": "1.0.0",
            "contract": 2,
            "tools": [{"id": "echo"}, {"id": "later"}],
        }
    )
    async with packrun.open_runtime("memory:", refresh_interval=0, sandbox=mode) as rt:
        await rt.publish(bundle_bytes(manifest, {"__init__.py": code}), channel="custom")
        await rt.install("echo", "echo")
        async with rt.run("echo") as run:
            for n in range(200):  # answers in order, each to its own call
                assert await run.call("echo", {"n": n}) == {"n": n}
            # An answer that comes after the polling ended is waited for on the event loop.
            assert await run.call("later", {"n": -1}) == {"n": -1}
            assert await run.call("echo", {"n": 200}) == {"n": 200}
