"""An ASGI executor under load: requests/s of an endpoint that opens a run and calls a no-op tool.

Goals (DESIGN section 12): a plain-ASGI app served by uvicorn, whose endpoint opens a run and
calls a no-op tool, serves at least 0.85x the requests/s of the same app calling the tool directly
on the in-memory store (the tool's channel trusted, ``in_process``), at least 0.6x on SQLite, and
at least 0.5x through the sandbox. The server runs in a process of its own; the load generator
(a small asyncio HTTP/1.1 client keeping ``CONNECTIONS`` connections alive, on loopback only) runs
in this process, on another core when there is one. Each measurement runs for ``SECONDS`` after a
warm-up; the servers are measured by turns, the best of two rounds each.

Rows state throughput as time per request: 0.85x the requests/s is at most 1.18x the time. The time
is the CPU time the server's processes (sandbox workers included) used a request, read from /proc:
a server that has its core to itself serves 1 / that many requests a second, while the requests/s
measured on a shared machine depend on the share of the core it gets (shown as well, with the
latencies). Where /proc is missing, the wall time a request (1 / requests/s) stands in.

Needs ``uvicorn`` (the ``dev`` dependency group). ``python benchmarks/bench_executor.py serve MODE
PORT`` runs one server by hand (MODE: ``direct``, ``memory``, ``sqlite``, ``sandbox``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _harness import Row, main

CONNECTIONS = 64
SECONDS = 3.0
WARM_UP = 0.5
HOST = "127.0.0.1"
REQUEST = b"GET /call HTTP/1.1\r\nHost: bench\r\n\r\n"
MODES = ("direct", "memory", "sqlite", "sandbox")
GOALS = {"memory": 1 / 0.85, "sqlite": 1 / 0.6, "sandbox": 1 / 0.5}
WHAT = {
    "memory": "in-memory store, trusted channel (in_process)",
    "sqlite": "SQLite store, trusted channel (in_process)",
    "sandbox": "in-memory store, through the sandbox",
}
CODE = (
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('noop')\n\n"
    b"@integration.tool('noop')\n"
    b"async def noop(ctx, input):\n"
    b"    return None\n"
)

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]],
    Awaitable[None],
]


# --- the server: a plain ASGI app -----------------------------------------------------------------


def app_for(mode: str, store_dir: str) -> ASGIApp:
    """The app of ``mode``: ``direct`` awaits the no-op tool itself; the others open a run of
    installation ``noop-prod`` on their store and call the tool in it."""
    import packrun
    from packrun._bundle import bundle_bytes
    from packrun.sdk import ToolContext

    runtime: list[packrun.Runtime] = []
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    body = {"type": "http.response.body", "body": b"null"}

    async def noop(ctx: object, input: object) -> None:  # the bundle's tool, as written there
        return None

    ctx = ToolContext(
        "r", "noop-prod", "noop", "1.0.0", packrun.Auth.none(), logging.getLogger("bench")
    )

    async def open_runtime() -> None:
        url = f"sqlite:///{Path(store_dir) / 'state.db'}" if mode == "sqlite" else "memory:"
        trusted = frozenset() if mode == "sandbox" else frozenset({"vendor", "custom"})
        rt = packrun.open_runtime(url, in_process=trusted)
        await rt.__aenter__()
        manifest = packrun.decode_manifest(
            {"id": "noop", "version": "1.0.0", "contract": 2, "tools": [{"id": "noop"}]}
        )
        await rt.publish(bundle_bytes(manifest, {"__init__.py": CODE}))
        await rt.install("noop-prod", "noop")
        await rt.call("noop-prod", "noop")  # load the bundle (or start a worker) once
        runtime.append(rt)

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[..., Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if mode != "direct":
                        await open_runtime()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if runtime:
                        await runtime[0].__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if mode == "direct":
            await noop(ctx, {})
        else:
            async with runtime[0].run("noop-prod") as run:
                await run.call("noop", {})
        await send(start)
        await send(body)

    return app


def serve(mode: str, port: int) -> None:
    """Serve ``mode``'s app on loopback ``port`` until terminated."""
    import uvicorn

    with tempfile.TemporaryDirectory() as store_dir:
        uvicorn.run(
            app_for(mode, store_dir),
            host=HOST,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )


# --- the load generator -----------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending a request as soon as the previous answer is in."""

    def __init__(self, latencies: list[float], counting: list[bool]) -> None:
        self.latencies = latencies
        self.counting = counting
        self.buffer = b""
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"the server answered {head[:40]!r}")
            self.buffer = self.buffer[end + 4 + length :]
            if self.counting[0]:
                self.latencies.append(time.perf_counter() - self.sent)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants alive now (sandbox workers
    included); 0 where /proc is not available."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        child = int(entry.parent.name)
        parents[child] = int(fields[1])
        used[child] = (int(fields[11]) + int(fields[12])) / tick
    tree, total = {pid}, 0.0
    for child in sorted(parents):  # parents come before their children in pid order, mostly
        if parents[child] in tree:
            tree.add(child)
    for child in list(parents):  # and any child whose parent was found after it
        if parents[child] in tree:
            tree.add(child)
    for member in tree:
        total += used.get(member, 0.0)
    return total


async def load(
    port: int, seconds: float, server: int | None = None
) -> tuple[float, list[float], float]:
    """Requests/s over ``seconds`` (after ``WARM_UP``) with ``CONNECTIONS`` connections, every
    request's latency, sorted, and the CPU seconds the ``server`` process tree used a request."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    counting = [False]
    connections = [
        (await loop.create_connection(lambda: _Connection(latencies, counting), HOST, port))[1]
        for _ in range(CONNECTIONS)
    ]
    await asyncio.sleep(WARM_UP)
    cpu = tree_cpu(server) if server is not None else 0.0
    counting[0] = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting[0] = False
    elapsed = time.perf_counter() - started
    served = len(latencies)
    cpu = (tree_cpu(server) - cpu) / max(served, 1) if server is not None else 0.0
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    await asyncio.gather(*(c.closed for c in connections))
    return served / elapsed, sorted(latencies), cpu


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _cores() -> tuple[set[int] | None, set[int] | None]:
    """The server's core and the load generator's: two different ones when there are two."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, {cores[1]}


def measure(mode: str, seconds: float = SECONDS) -> tuple[float, float, float, float]:
    """Requests/s, p50 and p99 latency of ``mode``'s server under the load generator, and the
    CPU seconds its processes used a request."""
    port = _free_port()
    server_core, client_core = _cores()
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", mode, str(port)],
        preexec_fn=(lambda: os.sched_setaffinity(0, server_core)) if server_core else None,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up once it accepts a connection (its lifespan startup done)
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {mode} server did not start") from None
                time.sleep(0.05)
        before = os.sched_getaffinity(0) if client_core else None
        if client_core:
            os.sched_setaffinity(0, client_core)
        try:
            rate, latencies, cpu = asyncio.run(load(port, seconds, server.pid))
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
    finally:
        server.terminate()
        server.wait(30)
    return rate, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)], cpu


def rows(rounds: int = 2) -> list[Row]:
    import uvicorn  # noqa: F401  (the dev group has it; a clear error when it is missing)

    # By turns, the best of ``rounds`` for each: the load of a shared machine moves them alike.
    found: dict[str, tuple[float, float, float, float]] = {}
    for _ in range(rounds):
        for mode in MODES:
            figures = measure(mode)
            if mode not in found or 0 < figures[3] < found[mode][3] or not found[mode][3]:
                found[mode] = figures
    direct, d50, d99, dcpu = found["direct"]
    result = []
    for mode in ("memory", "sqlite", "sandbox"):
        rate, p50, p99, cpu = found[mode]
        use_cpu = cpu > 0 and dcpu > 0  # where /proc tells the CPU time (Linux)
        result.append(
            Row(
                f"an ASGI endpoint opening a run and calling a no-op tool, {WHAT[mode]}: "
                f"{'CPU time' if use_cpu else 'wall time'} a request ({rate:,.0f} requests/s "
                f"measured, {rate / direct:.2f}x; p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms "
                f"at {CONNECTIONS} connections)",
                f"the same app awaiting the tool directly ({direct:,.0f} requests/s, "
                f"p50 {d50 * 1e3:.2f} ms, p99 {d99 * 1e3:.2f} ms)",
                cpu if use_cpu else 1 / rate,
                dcpu if use_cpu else 1 / direct,
                f"<= {GOALS[mode]:.2f}",
            )
        )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        logging.getLogger("packrun").setLevel(logging.ERROR)
        main(rows)
