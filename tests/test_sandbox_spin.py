"""Waiting awake on a worker's channel: polling while the cores have room, blocking when not.

Both ends of a sandbox channel poll their socket for a few microseconds before they sleep in the
kernel; a poll that finds the process was taken off its core, or two looks in a row that find the
machine crowded, turn polling off for a while. The rules are checked on a fake clock; the calls
themselves, and a worker's reading of its channel, are checked with polling on and off.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time

import msgspec
import pytest

import packrun
from packrun._bundle import bundle_bytes
from packrun._dispatch import _host, _serve
from packrun._dispatch._protocol import Call, frame
from packrun._dispatch._spin import OFF_SECONDS, PREEMPTED, SAMPLE_SECONDS, Spin, ready_to_run
from test_sandbox import HAVE_BWRAP, IN_CI

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.yields = 0
        self.ready = 1  # processes running or ready to run on the fake machine
        self.looks = 0

    def ready_to_run(self) -> int:
        self.looks += 1
        return self.ready

    def spin(self, cores: int = 2) -> Spin:
        return Spin(self.perf_counter, self.sched_yield, self.ready_to_run, cores)

    def perf_counter(self) -> float:
        return self.now

    def sched_yield(self) -> None:
        self.yields += 1


LOOK = SAMPLE_SECONDS * 1.01  # the time between two looks, with room for rounding
STEP = 2.0**-20  # about 1 µs, exact in binary: no rounding in the sums below


def test_a_wait_polls_until_its_end_yielding_the_core_between_polls() -> None:
    clock = FakeClock()
    spin = clock.spin()
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
    spin = clock.spin()
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


def test_two_crowded_looks_in_a_row_stop_polling_for_a_while() -> None:
    clock = FakeClock()
    spin = clock.spin(cores=2)
    clock.ready = 2  # this end and the other one polling: not crowded
    for _ in range(5):
        assert spin.start(20e-6) > 0
        clock.now += LOOK
    clock.ready = 3  # a third process wants a core
    assert spin.start(20e-6) > 0  # one look is not enough (a process passing by)
    clock.now += SAMPLE_SECONDS * 0.6
    assert spin.start(20e-6) > 0  # too soon to look again
    assert clock.looks == 6
    clock.now += SAMPLE_SECONDS * 0.6
    assert spin.start(20e-6) == 0.0  # the second look in a row: off
    assert spin.off_until == clock.now + OFF_SECONDS
    looks = clock.looks
    clock.now += OFF_SECONDS / 2
    assert spin.start(20e-6) == 0.0
    assert clock.looks == looks  # no looks while off
    clock.now += OFF_SECONDS
    assert spin.start(20e-6) > 0  # on again: it takes two new crowded looks to turn it off
    clock.now += LOOK
    assert spin.start(20e-6) == 0.0


def test_a_crowded_look_between_two_quiet_ones_leaves_polling_on() -> None:
    clock = FakeClock()
    spin = clock.spin(cores=4)
    for ready in (5, 4, 5, 1, 5, 3, 5):
        clock.ready = ready
        assert spin.start(20e-6) > 0
        clock.now += LOOK
    assert spin.off_until == 0.0


def test_the_machine_s_processes_ready_to_run_count_the_looker() -> None:
    assert ready_to_run() >= 1


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


@pytest.mark.parametrize("polling", [True, False])
def test_a_worker_reads_calls_sent_in_pieces_with_polling_on_or_off(
    polling: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_serve._SPIN_STATE, "off_until", 0.0 if polling else math.inf)
    host, worker = socket.socketpair()
    channel = _serve._Channel(worker.detach(), 1 << 20)
    encoder = msgspec.msgpack.Encoder()
    data = b"".join(frame(encoder, Call(n, "echo", {"n": n, "pad": "x" * n})) for n in range(50))

    def send() -> None:  # some at once, some a byte at a time, some after a pause
        host.sendall(data[:700])
        for i in range(700, 760):
            host.sendall(data[i : i + 1])
        time.sleep(0.05)  # past any polling: the worker blocks
        host.sendall(data[760:])

    sender = threading.Thread(target=send)
    sender.start()
    try:
        for n in range(50):
            message = channel.receive()
            assert message == Call(n, "echo", {"n": n, "pad": "x" * n})
    finally:
        sender.join()
        host.close()
        channel.sock.close()
    assert not channel.pending


def test_a_worker_whose_host_closed_the_channel_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_serve._SPIN_STATE, "off_until", math.inf)
    host, worker = socket.socketpair()
    channel = _serve._Channel(worker.detach(), 1 << 20)
    host.close()
    exits: list[int] = []

    def exit_(code: int) -> None:
        exits.append(code)
        raise SystemExit

    monkeypatch.setattr(os, "_exit", exit_)
    with pytest.raises(SystemExit):
        channel.receive()
    assert exits == [0]
    channel.sock.close()
