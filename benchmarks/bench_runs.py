"""Runs: ``run.call()`` and run start + finish against plain awaits, SQLite runs/s, memory per run.

Goals (DESIGN section 12): ``run.call()`` on a no-op generation-2 tool at most 5x a direct ``await``
of the same tool (generation 1 through the adapter at most 8x a direct ``await`` of its
``handle``); a run's start + finish on the in-memory store at most 2x a minimal binding-recording
run measured in the same loop (:class:`MinimalRuns`), and at least 5,000 runs/s on SQLite on one
core; at most 1 KiB per run in flight.

Async subjects are timed by :func:`abest_of` inside the event loop their runtime lives in, each
against a baseline timed in the same loop. The SQLite throughput and the memory are stated
against fixed budgets (1/5,000 s a run, 1 KiB a run), so their ratio is what the goal is on.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from _harness import Row, main

import packrun
from packrun._bundle import bundle_bytes

GEN2_CODE = (
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('noop2')\n\n"
    b"@integration.tool('noop')\n"
    b"async def noop(ctx, input):\n"
    b"    return None\n"
)
GEN1_CODE = b'async def handle(action, params, auth):\n    return {"data": None}\n'
INPUT: dict[str, Any] = {}
SQLITE_BUDGET = 1 / 5000  # seconds a run: 5,000 runs/s
MEMORY_BUDGET = 1024  # bytes a run in flight
RUNS_OPEN = 10_000
CONCURRENT_TASKS = 50


def bundle(pack_id: str, contract: int, code: bytes) -> bytes:
    manifest = packrun.decode_manifest(
        {"id": pack_id, "version": "1.0.0", "contract": contract, "tools": [{"id": "noop"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": code})


async def runtime(url: str) -> packrun.Runtime:
    """An open runtime on ``url`` with ``gen2`` (pack ``noop2``) and ``gen1`` (``noop1``)
    installed. Close it with ``await rt.__aexit__(None, None, None)``."""
    rt = packrun.open_runtime(url, refresh_interval=0, in_process={"vendor", "custom"})
    await rt.__aenter__()
    await rt.publish(bundle("noop2", 2, GEN2_CODE))
    await rt.publish(bundle("noop1", 1, GEN1_CODE))
    await rt.install("gen2", "noop2")
    await rt.install("gen1", "noop1")
    for installation in ("gen2", "gen1"):  # load each bundle once, outside the timing
        async with rt.run(installation) as run:
            await run.call("noop", INPUT)
    return rt


async def abest_of(
    body: Callable[[], Awaitable[object]], *, repeat: int = 7, min_time: float = 0.05
) -> float:
    """Seconds per ``await body()``: the best of ``repeat`` rounds, each long enough to be
    measured (at least ``min_time``), with the garbage collector off as ``timeit`` has it.

    Await it inside the event loop the subject lives in, so setup and timing share one
    ``anyio.run``."""

    async def timed(number: int) -> float:
        started = time.perf_counter()
        for _ in range(number):
            await body()
        return time.perf_counter() - started

    enabled = gc.isenabled()
    gc.disable()
    try:
        number = 1
        while (elapsed := await timed(number)) < min_time:
            number = max(number * 2, int(number * min_time * 1.2 / max(elapsed, 1e-9)))
        return min([await timed(number) for _ in range(repeat)]) / number
    finally:
        if enabled:
            gc.enable()


class MinimalRuns:
    """The floor a run start + finish is held to: ``async with runs.run(installation)`` takes an
    id from a counter, stores a binding tuple (installation, pack, version, digest, start time) in
    a dict and counts it in per ``(pack, version)``; on exit counts it out and removes it. No
    store, no bundle, no tool context: what any run that records its binding has to do."""

    def __init__(self) -> None:
        self.ids = itertools.count()
        self.bindings: dict[int, tuple[str, str, str, str, datetime]] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def run(self, installation: str) -> _MinimalRun:
        return _MinimalRun(self, installation)


class _MinimalRun:
    __slots__ = ("installation", "run_id", "runs")

    def __init__(self, runs: MinimalRuns, installation: str) -> None:
        self.runs = runs
        self.installation = installation
        self.run_id = -1

    async def __aenter__(self) -> int:
        runs = self.runs
        run_id = self.run_id = next(runs.ids)
        runs.bindings[run_id] = (self.installation, "noop2", "1.0.0", "sha256:0", datetime.now(UTC))
        key = ("noop2", "1.0.0")
        runs.counts[key] = runs.counts.get(key, 0) + 1
        return run_id

    async def __aexit__(self, *exc: object) -> None:
        runs = self.runs
        key = ("noop2", "1.0.0")
        left = runs.counts[key] - 1
        if left:
            runs.counts[key] = left
        else:
            del runs.counts[key]
        del runs.bindings[self.run_id]


async def minimal_start_finish(runs: MinimalRuns) -> None:
    async with runs.run("gen2"):
        pass


class BookedRuns:
    """A run that keeps only the books DESIGN asks of every run, written as lean as Python
    allows, with none of packrun's checks: ``async with runs.run(installation) as run`` resolves
    the installation (one dict lookup), gives the run a string id unique across processes (a
    random prefix and a counter), records its binding (a 9-field record, its lease and a change
    sequence, in dicts, as the in-memory store does), counts it in per version and per
    installation and in the runtime's runs, and hands back a run object that carries the binding;
    on exit it counts it out and queues its end. What it leaves out and packrun does not: argument
    and contract checks, the bundle hold, tool loggers, health, the adapter and drain books.
    Informational: the least a run with DESIGN's guarantees costs, against the minimal run."""

    def __init__(self) -> None:
        self.resolutions = {"gen2": ("noop2", "1.0.0", "sha256:0", 2, "vendor", "1.0.0")}
        self.prefix = os.urandom(8).hex()
        self.ids = itertools.count()
        self.records: dict[str, tuple[Any, ...]] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.touched: dict[str, int] = {}
        self.seq = 0
        self.runs: dict[str, _BookedRun] = {}
        self.by_version: dict[tuple[str, str], int] = {}
        self.by_installation: dict[str, int] = {}
        self.ends: dict[str, frozenset[str]] = {}

    def run(self, installation: str) -> _BookedScope:
        return _BookedScope(self, installation)


class _BookedRun:
    __slots__ = ("channel", "digest", "installation_id", "key", "pack_id", "run_id", "version")

    def __init__(self, run_id: str, installation: str, binding: tuple[Any, ...]) -> None:
        self.run_id = run_id
        self.installation_id = installation
        self.pack_id, self.version, self.digest, _, self.channel, self.key = binding


class _BookedScope:
    __slots__ = ("installation", "run", "runs")

    def __init__(self, runs: BookedRuns, installation: str) -> None:
        self.runs = runs
        self.installation = installation
        self.run: _BookedRun | None = None

    async def __aenter__(self) -> _BookedRun:
        runs, installation = self.runs, self.installation
        binding = runs.resolutions[installation]
        run_id = f"{runs.prefix}-{next(runs.ids):x}"
        now = time.time()
        runs.records[run_id] = (run_id, installation, *binding[:5], None, datetime.now(UTC))
        runs.leases[run_id] = ("owner", now + 30)
        runs.seq += 1
        runs.touched[run_id] = runs.seq
        run = self.run = _BookedRun(run_id, installation, binding)
        runs.runs[run_id] = run
        key = (run.pack_id, run.key)
        runs.by_version[key] = runs.by_version.get(key, 0) + 1
        runs.by_installation[installation] = runs.by_installation.get(installation, 0) + 1
        return run

    async def __aexit__(self, *exc: object) -> None:
        runs, run = self.runs, self.run
        assert run is not None
        self.run = None
        del runs.runs[run.run_id]
        key = (run.pack_id, run.key)
        left = runs.by_version[key] - 1
        if left:
            runs.by_version[key] = left
        else:
            del runs.by_version[key]
        left = runs.by_installation[run.installation_id] - 1
        if left:
            runs.by_installation[run.installation_id] = left
        else:
            del runs.by_installation[run.installation_id]
        runs.ends[run.run_id] = frozenset()


async def booked_start_finish(runs: BookedRuns) -> None:
    async with runs.run("gen2"):
        pass


# --- run.call() -----------------------------------------------------------------------------------


def call_rows() -> list[Row]:
    found: dict[str, float] = {}

    async def measure() -> None:
        rt = await runtime("memory:")
        try:
            async with rt.run("gen2") as run:
                assert run.adapter is None
                loaded = rt._dispatchers[run.digest or ""].loaded
                assert loaded is not None  # a trusted channel's bundle, loaded in-process
                tool = loaded.tools["noop"]
                ctx = run._context()
                found["gen2"] = await abest_of(lambda: run.call("noop", INPUT))
                found["gen2 direct"] = await abest_of(lambda: tool(ctx, INPUT))
            async with rt.run("gen1") as run:
                assert run.adapter == "1->2"
                loaded = rt._dispatchers[run.digest or ""].loaded
                assert loaded is not None
                handle = loaded.handle
                assert handle is not None
                flat = {"type": "none"}  # what the adapter gives a generation-1 handle
                found["gen1"] = await abest_of(lambda: run.call("noop", INPUT))
                found["gen1 direct"] = await abest_of(lambda: handle("noop", INPUT, flat))
            minimal = MinimalRuns()
            booked = BookedRuns()
            for _ in range(3):  # by turns: the load of a shared machine moves both alike
                found["start+finish"] = min(
                    found.get("start+finish", 1.0), await abest_of(lambda: start_finish(rt, "gen2"))
                )
                found["minimal"] = min(
                    found.get("minimal", 1.0), await abest_of(lambda: minimal_start_finish(minimal))
                )
                found["booked"] = min(
                    found.get("booked", 1.0), await abest_of(lambda: booked_start_finish(booked))
                )
        finally:
            await rt.__aexit__(None, None, None)

    anyio.run(measure)
    return [
        Row(
            "run.call() on a no-op generation-2 tool (in-memory store)",
            "a direct await of the tool function",
            found["gen2"],
            found["gen2 direct"],
            "<= 5",
        ),
        Row(
            "run.call() on a no-op generation-1 tool through the 1->2 adapter",
            "a direct await of its handle(action, params, auth)",
            found["gen1"],
            found["gen1 direct"],
            "<= 8",
        ),
        Row(
            "run start + finish (in-memory store)",
            "a minimal binding-recording run (MinimalRuns)",
            found["start+finish"],
            found["minimal"],
            "<= 2",
        ),
        Row(
            "a run keeping only DESIGN's books, no checks (BookedRuns)",
            "a minimal binding-recording run (MinimalRuns)",
            found["booked"],
            found["minimal"],
        ),
        Row(
            "run start + finish (in-memory store)",
            "a run keeping only DESIGN's books, no checks (BookedRuns)",
            found["start+finish"],
            found["booked"],
        ),
    ]


async def start_finish(rt: packrun.Runtime, installation: str) -> None:
    async with rt.run(installation):
        pass


# --- SQLite throughput ------------------------------------------------------------------------------


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # the calling thread only


@contextmanager
def one_core() -> Iterator[str]:
    """Every thread of the process, and every thread started meanwhile, on one CPU."""
    if not hasattr(os, "sched_setaffinity"):
        yield "all cores: no CPU affinity on this platform"
        return
    before = os.sched_getaffinity(0)
    for tid in _threads():
        os.sched_setaffinity(tid, {min(before)})
    try:
        yield "one core"
    finally:
        for tid in _threads():
            with suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, before)


def sqlite_rows() -> list[Row]:
    found: dict[str, float] = {}

    async def measure(url: str) -> None:
        rt = await runtime(url)
        try:
            found["sequential"] = await abest_of(
                lambda: start_finish(rt, "gen2"), repeat=5, min_time=0.3
            )
            found["concurrent"] = await concurrent(rt)
            waits = await start_waits(rt)
            found["wait p50"] = waits[len(waits) // 2]
            found["wait p99"] = waits[int(len(waits) * 0.99)]
        finally:
            await rt.__aexit__(None, None, None)

    with tempfile.TemporaryDirectory() as tmp, one_core() as cores:
        anyio.run(measure, f"sqlite:///{Path(tmp) / 'state.db'}")
    budget = "a budget of 1/5,000 s a run (5,000 runs/s)"
    return [
        Row(
            f"run start + finish on SQLite, one after another ({cores}; "
            f"{1 / found['sequential']:,.0f} runs/s)",
            budget,
            found["sequential"],
            SQLITE_BUDGET,
            "<= 1",
        ),
        Row(
            f"run start + finish on SQLite, {CONCURRENT_TASKS} tasks each in a loop ({cores}; "
            f"{1 / found['concurrent']:,.0f} runs/s)",
            budget,
            found["concurrent"],
            SQLITE_BUDGET,
            "<= 1",
        ),
        Row(
            f"a run start's wait for its group commit on SQLite, 5,000 starts/s ({cores}): p50",
            budget,
            found["wait p50"],
            SQLITE_BUDGET,
        ),
        Row(
            f"a run start's wait for its group commit on SQLite, 5,000 starts/s ({cores}): p99",
            budget,
            found["wait p99"],
            SQLITE_BUDGET,
        ),
    ]


async def start_waits(
    rt: packrun.Runtime, *, rate: int = 5000, seconds: float = 1.0
) -> list[float]:
    """Seconds each run start waited (``__aenter__`` of its scope: the binding written and
    committed, in a group with whatever other starts came meanwhile), with runs started at
    ``rate`` a second for ``seconds`` (each a task of its own that ends its run at once: an open
    load, so a wait is the write's and not a queue of the benchmark's own tasks); sorted."""
    waits: list[float] = []

    async def one() -> None:
        scope = rt.run("gen2")
        started = time.perf_counter()
        await scope.__aenter__()
        waits.append(time.perf_counter() - started)
        await scope.__aexit__(None, None, None)

    async with anyio.create_task_group() as tg:
        begin = anyio.current_time()
        for n in range(int(rate * seconds)):
            delay = begin + n / rate - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
            tg.start_soon(one)
    return sorted(waits)


async def concurrent(rt: packrun.Runtime, *, rounds: int = 5, min_time: float = 0.3) -> float:
    """Seconds a run (wall time / runs) with ``CONCURRENT_TASKS`` tasks each starting and
    finishing runs in a loop: the best of ``rounds``."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await start_finish(rt, "gen2")

    async def timed(per_task: int) -> float:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENT_TASKS):
                tg.start_soon(worker, per_task)
        return time.perf_counter() - started

    per_task = 1
    while (elapsed := await timed(per_task)) < min_time:
        per_task = max(per_task * 2, int(per_task * min_time * 1.2 / max(elapsed, 1e-9)))
    return min([await timed(per_task) for _ in range(rounds)]) / (per_task * CONCURRENT_TASKS)


# --- memory per run in flight ---------------------------------------------------------------------


def rss() -> int:
    """The process's resident set size in bytes (0 where /proc is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_rows() -> list[Row]:
    found: dict[str, float] = {}

    async def hold(measure: Callable[[], int], key: str) -> None:
        rt = await runtime("memory:")
        try:
            for _ in range(2):  # warm up: first runs, counters, dict growth of a small table
                await open_runs(rt, 100, lambda: 0)
            found[key] = await open_runs(rt, RUNS_OPEN, measure) / RUNS_OPEN
            assert rt.stats().runs_in_flight == 0
        finally:
            await rt.__aexit__(None, None, None)

    def traced() -> int:
        return tracemalloc.get_traced_memory()[0]

    anyio.run(hold, rss, "rss")
    tracemalloc.start()
    try:
        anyio.run(hold, traced, "traced")
    finally:
        tracemalloc.stop()
    budget = "a budget of 1 KiB a run"
    return [
        Row(
            f"memory a run in flight, {RUNS_OPEN:,} open: traced Python allocations",
            budget,
            found["traced"],
            MEMORY_BUDGET,
            "<= 1",
            unit="B",
        ),
        Row(
            f"memory a run in flight, {RUNS_OPEN:,} open: RSS growth",
            budget,
            found["rss"],
            MEMORY_BUDGET,
            "<= 1",
            unit="B",
        ),
    ]


async def open_runs(rt: packrun.Runtime, count: int, measure: Callable[[], int]) -> int:
    """Open ``count`` runs at once (their scopes entered and kept) and return how much
    ``measure()`` grew while they were open; then close them all."""
    gc.collect()
    before = measure()
    scopes = [rt.run("gen2") for _ in range(count)]
    for scope in scopes:
        await scope.__aenter__()
    assert rt.stats().runs_in_flight == count
    gc.collect()
    grown = measure() - before
    for scope in scopes:
        await scope.__aexit__(None, None, None)
    return grown


def rows() -> list[Row]:
    logging.getLogger("packrun").setLevel(logging.ERROR)  # the adapter's rebuild warning
    return [*call_rows(), *sqlite_rows(), *memory_rows()]


if __name__ == "__main__":
    main(rows)
