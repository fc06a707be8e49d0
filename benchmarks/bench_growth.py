"""Growth over time: start-up with a long history, a refresh with nothing changed, disk per run.

Goals (DESIGN section 12): start-up with 100,000 installations, 1,000,000 ended runs and 10 pin
events each at most 1.25x the start-up with the same installations and no runs and no events
(one install event each), in time and in memory; a refresh with nothing changed at most 1.25x
with 10,000 runs in flight (held by another runtime) as with none, on every store.

The two SQLite stores are built in a temporary folder with direct SQL inserts through the store's
own schema (packrun made the schema and published the catalog row). The history store's runs carry
the ids of 1,000 workflows and the tool each called: what a runtime keeps of them is those
workflows' observed tools, which do not grow with runs. Start-up is measured in a fresh
subprocess each time (the best of five, the two stores in turn): the seconds ``open_runtime``
takes to open and load, and how much the process's resident memory grew meanwhile. The disk a
run costs is the growth of the file (checkpointed) when the million runs are inserted, divided by
a million.

The refresh rows time ``await rt.refresh()`` with nothing changed (the best of many), after one
refresh that read the runs in flight. PostgreSQL is measured when ``PACKRUN_BENCH_POSTGRES`` (or
``PACKRUN_TEST_POSTGRES``) names a server (in a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from _harness import Row, main
from bench_fleet import schema_of_its_own, server
from bench_runs import abest_of

import packrun
from packrun._stores import RunRecord

SAMPLES = Path(__file__).resolve().parents[1] / "bundles" / "acme"
INSTALLATIONS = 100_000
RUNS = 1_000_000
EVENTS = 10  # pin events per installation in the history store
WORKFLOWS = 1_000
IN_FLIGHT = 10_000
ROUNDS = 9

START = """\
import json, sys, time
import anyio
import packrun

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

async def main(url):
    before, started = rss(), time.perf_counter()
    async with packrun.open_runtime(url, create=False, refresh_interval=0) as rt:
        took = time.perf_counter() - started
        assert rt.resolve("inst-0").version == "1.0.0"
        print(json.dumps({"seconds": took, "rss": rss() - before}))

anyio.run(main, sys.argv[1])
"""


def sample() -> Path:
    return SAMPLES / "1.0.0" / "dist" / "acme-1.0.0.bundle.tar.gz"


def build(path: Path, *, history: bool) -> int:
    """A store of ``INSTALLATIONS`` installations; with ``history``, ``EVENTS`` pin events each and
    ``RUNS`` ended runs. The bytes a run costs on disk (0 without history)."""

    async def schema() -> None:
        async with packrun.open_runtime(f"sqlite:///{path}", refresh_interval=0) as rt:
            await rt.publish(sample())

    anyio.run(schema)
    digest = packrun.read_bundle(sample()).digest
    events = EVENTS if history else 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        at = "2026-01-01T00:00:00+00:00"
        # Events first (the installations' pointers are then set with the rows themselves).
        conn.executemany(
            "INSERT INTO pin_events (seq, installation_id, actor, origin, from_pin, to_pin, "
            "from_version, to_version, at) VALUES (?, ?, 'ops', ?, ?, '1.0.0', ?, '1.0.0', ?)",
            (
                (
                    n * INSTALLATIONS + i + 1,
                    f"inst-{i}",
                    "install" if n == 0 else "user",
                    None if n == 0 else "1.0.0",
                    None if n == 0 else "1.0.0",
                    at,
                )
                for n in range(events)
                for i in range(INSTALLATIONS)
            ),
        )
        conn.executemany(
            "INSERT INTO installations (id, pack_id, pin, policy, allow_prerelease, created_at, "
            "hold, project, last_event) VALUES (?, 'acme', '1.0.0', 'manual', 0, ?, NULL, "
            "'default', ?)",
            ((f"inst-{i}", at, (events - 1) * INSTALLATIONS + i + 1) for i in range(INSTALLATIONS)),
        )
        conn.execute("COMMIT")
        if not history:
            return 0
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = path.stat().st_size
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO runs (run_id, installation_id, pack_id, version, digest, contract, "
            "channel, workflow_id, started_at, ended_at, owner, lease_until, calls) "
            "SELECT 'run-' || i, 'inst-' || (i % ?), 'acme', '1.0.0', ?, 2, 'vendor', "
            "'wf-' || (i % ?), ?, ?, 'gone', 0, '[\"list_contacts\"]' FROM n",
            (RUNS - 1, WORKFLOWS, digest, WORKFLOWS, at, at),
        )
        conn.executemany(
            "INSERT INTO observed_tools (installation_id, workflow_id, tool) "
            "VALUES (?, ?, 'list_contacts')",
            ((f"inst-{w}", f"wf-{w}") for w in range(WORKFLOWS)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return (path.stat().st_size - before) // RUNS
    finally:
        conn.close()


def start_up(path: Path) -> tuple[float, float]:
    """``(seconds, bytes of RSS growth)`` of opening the store in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", START, f"sqlite:///{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out)
    return found["seconds"], found["rss"]


def start_ups(*paths: Path) -> list[tuple[float, float]]:
    """The best start-up of each store over five turns, the stores taken in turn (so that a busy
    moment of the machine weighs on each alike)."""
    best = [(float("inf"), float("inf"))] * len(paths)
    for _ in range(5):
        for n, path in enumerate(paths):
            seconds, rss = start_up(path)
            best[n] = (min(best[n][0], seconds), min(best[n][1], rss))
    return best


def start_up_rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        base, long = Path(folder) / "none.db", Path(folder) / "history.db"
        build(base, history=False)
        per_run = build(long, history=True)
        (base_time, base_rss), (long_time, long_rss) = start_ups(base, long)
    what = f"{INSTALLATIONS:,} installations"
    history = f"{what}, {RUNS:,} ended runs, {EVENTS} pin events each"
    return [
        Row(
            f"start-up: {history}",
            f"{what}, no runs, 1 event each",
            long_time,
            base_time,
            "<= 1.25",
        ),
        Row(
            f"start-up memory (RSS growth): {history}",
            f"{what}, no runs, 1 event each",
            long_rss,
            base_rss,
            "<= 1.25",
            unit="B",
        ),
        Row("disk per ended run (SQLite, with its indexes)", "1 byte", per_run, 1, unit="B"),
    ]


async def holding(rt: packrun.Runtime, in_flight: int) -> None:
    """Publish, install, and have another runtime hold ``in_flight`` runs; read them once."""
    await rt.publish(sample())
    await rt.install("inst", "acme", pin="1.0.0")
    res = rt.resolve("inst")
    now = time.time()
    for first in range(0, in_flight, 1000):
        records = [
            RunRecord(
                f"r-{n}",
                "inst",
                "acme",
                "1.0.0",
                res.digest,
                2,
                "vendor",
                None,
                packrun._runtime._now(),
            )
            for n in range(first, min(first + 1000, in_flight))
        ]
        await rt._store.start_runs(records, "elsewhere", now, now + 3600)
    await rt.refresh()
    assert rt.in_flight("acme", "1.0.0") == in_flight


async def refresh_costs(none_url: str, many_url: str) -> tuple[float, float]:
    """Seconds of a refresh with nothing changed with no run in flight and with ``IN_FLIGHT``:
    both runtimes open at once and timed in turns, so that a busy moment of the machine weighs on
    both alike (the best of the turns)."""
    async with (
        packrun.open_runtime(none_url, refresh_interval=0) as none,
        packrun.open_runtime(many_url, refresh_interval=0) as many,
    ):
        await holding(none, 0)
        await holding(many, IN_FLIGHT)
        best = [float("inf"), float("inf")]
        for _ in range(ROUNDS):
            best[0] = min(best[0], await abest_of(none.refresh, repeat=5))
            best[1] = min(best[1], await abest_of(many.refresh, repeat=5))
        return best[0], best[1]


def refresh_rows() -> list[Row]:
    found: list[Row] = []

    def measure(name: str, none_url: str, many_url: str) -> None:
        none, many = anyio.run(refresh_costs, none_url, many_url)
        found.append(
            Row(
                f"refresh with nothing changed, {IN_FLIGHT:,} runs in flight ({name})",
                f"the same with none ({name})",
                many,
                none,
                "<= 1.25",
            )
        )

    measure("memory", "memory:", "memory:")
    with tempfile.TemporaryDirectory() as folder:
        measure("SQLite", f"sqlite:///{folder}/none.db", f"sqlite:///{folder}/many.db")
    url = server()
    if url:
        with schema_of_its_own(url) as a, schema_of_its_own(url) as b:
            measure("PostgreSQL", a, b)
    return found


def rows() -> list[Row]:
    logging.getLogger("packrun").setLevel(logging.ERROR)
    return [*start_up_rows(), *refresh_rows()]


if __name__ == "__main__":
    main(rows)
