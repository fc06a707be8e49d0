"""The sandbox: a no-op ``run.call()`` in a warm worker, pool throughput and a digest's cold start.

Goals (DESIGN section 12): a sandboxed ``run.call()`` on a no-op tool (warm worker) has a p50 at
most 1.5x a bare msgspec request/response over a socketpair between two processes, measured in the
same run; the pool's throughput at least 0.6x that bare pair's; the cold start of a digest (its
first call: a worker started and the bundle imported) at most 2x starting a bare
``python -I -c "import packrun.sdk"`` process. Each sandbox row is measured in ``process`` mode, and
in ``bwrap`` mode when bubblewrap is installed.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import anyio
import msgspec
from _harness import Row, main

import packrun
from packrun._bundle import bundle_bytes
from packrun._dispatch import bwrap_path

CODE = (
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('noop')\n\n"
    b"@integration.tool('noop')\n"
    b"async def noop(ctx, input):\n"
    b"    return None\n"
)
CALLS = 3000
CONCURRENCY = 4
HEADER = struct.Struct(">I")

# The bare pair's far side: receive a msgpack request, answer a msgpack response, as a worker does.
ECHO = """\
import socket, struct, sys
import msgspec
header = struct.Struct(">I")
sock = socket.socket(fileno=int(sys.argv[1]))
enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
while True:
    (size,) = header.unpack(exactly(4))
    request = dec.decode(exactly(size))
    body = enc.encode({"id": request["id"], "output": None})
    sock.sendall(header.pack(len(body)) + body)
"""


def bundle() -> bytes:
    manifest = packrun.decode_manifest(
        {"id": "noop", "version": "1.0.0", "contract": 2, "tools": [{"id": "noop"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": CODE})


def bare_pair() -> tuple[float, float]:
    """(p50 seconds of one round trip, round trips per second) over a socketpair to a process."""
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", ECHO, str(child.fileno())], pass_fds=(child.fileno(),)
    )
    child.close()
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += host.recv(n - len(data))
        return data

    def round_trip(i: int) -> Any:
        body = enc.encode({"id": i, "tool": "noop", "input": {}})
        host.sendall(HEADER.pack(len(body)) + body)
        (size,) = HEADER.unpack(exactly(4))
        return dec.decode(exactly(size))

    try:
        for i in range(200):
            round_trip(i)
        times = []
        started = time.perf_counter()
        for i in range(CALLS):
            t = time.perf_counter()
            round_trip(i)
            times.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    finally:
        host.close()
        proc.wait()
    return statistics.median(times), CALLS / elapsed


def bare_pair_async() -> float:
    """p50 of the same round trip driven from an event loop (the host side of any async
    executor): the floor below which no sandboxed ``run.call()`` can go."""
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", ECHO, str(child.fileno())], pass_fds=(child.fileno(),)
    )
    child.close()
    host.setblocking(False)
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    times: list[float] = []

    async def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            try:
                data += host.recv(n - len(data))
            except BlockingIOError:
                await anyio.wait_readable(host)
        return data

    async def measure() -> None:
        for i in range(200 + CALLS):
            t = time.perf_counter()
            body = enc.encode({"id": i, "tool": "noop", "input": {}})
            host.send(HEADER.pack(len(body)) + body)
            (size,) = HEADER.unpack(await exactly(4))
            dec.decode(await exactly(size))
            if i >= 200:
                times.append(time.perf_counter() - t)

    try:
        anyio.run(measure)
    finally:
        host.close()
        proc.wait()
    return statistics.median(times)


def sandboxed(mode: packrun.SandboxMode) -> tuple[float, float, float]:
    """(p50 of a warm run.call, calls per second across the pool, seconds of a cold start)."""
    found: dict[str, float] = {}
    data = bundle()

    async def measure() -> None:
        limits = packrun.SandboxLimits(workers_per_digest=CONCURRENCY)
        async with packrun.open_runtime(
            "memory:", refresh_interval=0, sandbox=mode, sandbox_limits=limits
        ) as rt:
            await rt.publish(data, channel="custom")
            await rt.install("noop", "noop")
            started = time.perf_counter()
            async with rt.run("noop") as run:
                await run.call("noop", {})
            found["cold"] = time.perf_counter() - started
            async with rt.run("noop") as run:
                for _ in range(200):
                    await run.call("noop", {})
                times = []
                for _ in range(CALLS):
                    t = time.perf_counter()
                    await run.call("noop", {})
                    times.append(time.perf_counter() - t)
            found["p50"] = statistics.median(times)

            async def caller(count: int) -> None:
                async with rt.run("noop") as run:
                    for _ in range(count):
                        await run.call("noop", {})

            async with anyio.create_task_group() as tg:  # warm the pool's workers
                for _ in range(CONCURRENCY):
                    tg.start_soon(caller, 20)
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(CONCURRENCY):
                    tg.start_soon(caller, CALLS // CONCURRENCY)
            found["throughput"] = (CALLS // CONCURRENCY * CONCURRENCY) / (
                time.perf_counter() - started
            )

    anyio.run(measure)
    # The cold start again, each in a fresh runtime, the best of five.
    colds = [found["cold"]]
    for _ in range(4):

        async def cold() -> None:
            async with packrun.open_runtime("memory:", refresh_interval=0, sandbox=mode) as rt:
                await rt.publish(data, channel="custom")
                await rt.install("noop", "noop")
                started = time.perf_counter()
                async with rt.run("noop") as run:
                    await run.call("noop", {})
                colds.append(time.perf_counter() - started)

        anyio.run(cold)
    return found["p50"], found["throughput"], min(colds)


def bare_start() -> float:
    """Seconds to start ``python -I -c "import packrun.sdk"`` to its end, the best of five."""
    env = {"PATH": os.environ.get("PATH", "")}
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "import packrun.sdk"], check=True, env=env)
        best = min(best, time.perf_counter() - started)
    return best


def rows() -> list[Row]:
    logging.getLogger("packrun").setLevel(logging.ERROR)
    p50_bare, rate_bare = bare_pair()
    p50_async = bare_pair_async()
    start_bare = bare_start()
    modes: list[packrun.SandboxMode] = ["process"]
    if bwrap_path() is not None:
        modes.append("bwrap")
    out: list[Row] = [
        Row(
            "the bare pair's round trip driven from an event loop (the floor of an async host)",
            "p50 of a bare msgspec request/response over a socketpair",
            p50_async,
            p50_bare,
        )
    ]
    for mode in modes:
        p50, rate, cold = sandboxed(mode)
        out += [
            Row(
                f"sandboxed run.call() p50, no-op tool, warm worker ({mode})",
                "p50 of a bare msgspec request/response over a socketpair",
                p50,
                p50_bare,
                "<= 1.5",
            ),
            Row(
                f"pool: time per call, {CONCURRENCY} concurrent runs ({mode}); "
                "throughput >= 0.6x is time <= 1.67x",
                "the bare pair's time per round trip, back to back",
                1 / rate,
                1 / rate_bare,
                "<= 1.67",
            ),
            Row(
                f"cold start: first call of a digest ({mode})",
                'python -I -c "import packrun.sdk"',
                cold,
                start_bare,
                "<= 2",
            ),
        ]
    return out


if __name__ == "__main__":
    main(rows)
