"""Runs across real processes sharing one real SQLite store file (DESIGN.md section 7).

Worker processes (``_runs_worker.py``, run with ``sys.executable``) hold, resume and drain runs on
a store file under ``tmp_path``; this process sets the store up, moves pins and watches. What the
design promises: a run id opened again in another process gets its original binding back; a
process killed with runs in flight leaves leases that expire, so another process counts those runs
until then and a drain ends; a live process renews its leases, so its runs keep counting however
long they take; ``wait_drained`` in one process waits for the runs of another. Nothing is mocked.

Waits are bounded by generous timeouts that only turn a hang into a failure; no assertion is
about how long something took.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import pytest
from _runs_worker import PACK, probe_bundle
from _worker_process import WorkerProcess, spawning

import packrun
from packrun import DrainTimeout, Runtime

WORKER = Path(__file__).resolve().with_name("_runs_worker.py")
TIMEOUT = 30.0
"""The bound on every wait for a worker: generous, it only turns a hang into a failure."""


def url(db: Path) -> str:
    return f"sqlite:///{db}"


class Worker(WorkerProcess):
    """A worker process running this module's worker script."""

    script = WORKER
    timeout = TIMEOUT


Spawn: TypeAlias = Callable[[dict[str, Any]], Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start workers; every one still running at the end of the test is killed and reaped."""
    with spawning(Worker, tmp_path) as start:
        yield start


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with ``probe`` 1.0.0 (marker ``m1``) and 2.0.0 (``m2``), and ``inst`` pinned to
    1.0.0."""
    path = tmp_path / "state.db"

    async def setup() -> None:
        async with packrun.open_runtime(url(path), refresh_interval=0) as rt:
            await rt.publish(probe_bundle("1.0.0", "m1"))
            await rt.publish(probe_bundle("2.0.0", "m2"))
            await rt.install("inst", PACK, pin="1.0.0")

    anyio.run(setup)
    return path


def run_rows(db: Path, run_ids: list[str]) -> dict[str, tuple[str | None, float | None]]:
    """``run_id -> (ended_at, lease_until)`` as the store file holds them."""
    conn = sqlite3.connect(db, timeout=30.0)
    try:
        rows = conn.execute(
            f"SELECT run_id, ended_at, lease_until FROM runs WHERE run_id IN "
            f"({', '.join('?' for _ in run_ids)})",
            run_ids,
        ).fetchall()
    finally:
        conn.close()
    return {str(r): (e, lease) for r, e, lease in rows}


async def move(db: Path, pin: str, *, overwrite: str | None = None) -> None:
    """Move ``inst`` to ``pin``; with ``overwrite``, also force-publish 1.0.0 with that marker."""
    async with packrun.open_runtime(url(db), refresh_interval=0) as rt:
        await rt.set_pin("inst", pin)
        if overwrite is not None:
            await rt.set_immutable_versions(False)
            await rt.publish(probe_bundle("1.0.0", overwrite), force=True)


async def wait_until(rt: Runtime, count: int, version: str = "1.0.0") -> None:
    """Until ``rt`` counts ``count`` runs in flight on ``version`` (through its refreshes)."""
    with anyio.fail_after(TIMEOUT):
        while rt.in_flight(PACK, version) != count:
            await anyio.sleep(0.02)


# --- a run resumed in another process --------------------------------------------------------


@pytest.mark.parametrize("first_process", ["alive", "killed"])
def test_a_run_started_in_one_process_is_resumed_in_another_with_its_original_binding(
    db: Path, tmp_path: Path, spawn: Spawn, first_process: str
) -> None:
    stop = tmp_path / "stop-a"
    a = spawn(
        {
            "mode": "hold",
            "db": str(db),
            "iid": "inst",
            "run_ids": ["wf-1"],
            "stop": str(stop),
            "lease_ttl": 1.0,
        }
    )
    started = a.wait_event("started", run_id="wf-1")
    assert (started["version"], started["marker"], started["resumed"]) == ("1.0.0", "m1", False)
    a.wait_event("holding")
    if first_process == "killed":
        a.kill()
        time.sleep(1.5)  # the dead process's lease on wf-1 expires; then it may be resumed

    # The pin moves, and even the artifact of 1.0.0 is overwritten.
    anyio.run(lambda: move(db, "2.0.0", overwrite="m1-forced"))

    if first_process == "alive":
        # A run id is open in one place at a time: A ends its run (a suspended workflow), and
        # only then is it resumed elsewhere.
        stop.touch()
        answers = a.result()["answers"]
        assert [(x["version"], x["marker"]) for x in answers] == [("1.0.0", "m1")] * 2

    b = spawn({"mode": "resume", "db": str(db), "iid": "inst", "run_id": "wf-1"})
    result = b.result()
    resumed = result["resumed"]
    assert resumed["resumed"] is True
    assert resumed["installation_id"] == "inst"
    assert (resumed["version"], resumed["digest"]) == ("1.0.0", started["digest"])
    assert resumed["answer"] == {"version": "1.0.0", "marker": "m1", "run_id": "wf-1"}
    fresh = result["fresh"]
    assert fresh["resumed"] is False
    assert (fresh["version"], fresh["answer"]["marker"]) == ("2.0.0", "m2")


# --- leases: a killed process, a live one ------------------------------------------------------


def test_the_runs_of_a_killed_process_count_until_their_leases_expire_then_drain(
    db: Path, tmp_path: Path, spawn: Spawn
) -> None:
    run_ids = ["k1", "k2", "k3"]
    a = spawn(
        {
            "mode": "hold",
            "db": str(db),
            "iid": "inst",
            "run_ids": run_ids,
            "stop": str(tmp_path / "never"),
            "lease_ttl": 1.0,
        }
    )
    a.wait_event("holding")

    async def watch() -> None:
        async with packrun.open_runtime(url(db), refresh_interval=0.1) as rt:
            await wait_until(rt, 3)
            assert rt.runs_in_flight(PACK, "1.0.0") == run_ids
            assert rt.in_flight_for("inst") == 3
            await rt.set_pin("inst", "2.0.0")
            assert rt.version_status(PACK, "1.0.0") == "draining"

            a.kill()
            now = time.time()
            counted = rt.in_flight(PACK, "1.0.0")
            leases = [lease for _, lease in run_rows(db, run_ids).values()]
            assert all(lease is not None for lease in leases)
            if min(lease for lease in leases if lease is not None) > now:
                assert counted == 3  # the leases still hold: the runs still count

            with anyio.fail_after(TIMEOUT):
                await rt.wait_drained(PACK, "1.0.0", timeout=TIMEOUT - 5)
            after = time.time()
            rows = run_rows(db, run_ids)
            assert all(ended is None for ended, _ in rows.values())  # nobody ended them ...
            assert all(lease is not None and lease <= after for _, lease in rows.values())
            assert rt.in_flight(PACK, "1.0.0") == 0  # ... their leases expired
            assert rt.in_flight_for("inst") == 0
            assert rt.version_status(PACK, "1.0.0") == "drained"

    anyio.run(watch)


def test_a_live_process_renews_its_leases_so_long_runs_keep_counting(
    db: Path, tmp_path: Path, spawn: Spawn
) -> None:
    run_ids = ["l1", "l2"]
    stop = tmp_path / "stop-b"
    b = spawn(
        {
            "mode": "hold",
            "db": str(db),
            "iid": "inst",
            "run_ids": run_ids,
            "stop": str(stop),
            "lease_ttl": 1.0,
        }
    )
    b.wait_event("holding")

    async def watch() -> None:
        async with packrun.open_runtime(url(db), refresh_interval=0.1) as rt:
            await wait_until(rt, 2)
            first = {r: lease for r, (_, lease) in run_rows(db, run_ids).items()}
            held_since = time.time()
            await anyio.sleep(3.5)  # several lease_ttl periods
            assert time.time() - held_since > 3 * 1.0
            renewed = {r: lease for r, (_, lease) in run_rows(db, run_ids).items()}
            for run_id in run_ids:
                before, now_lease = first[run_id], renewed[run_id]
                assert before is not None
                assert now_lease is not None
                assert now_lease > before + 2.0, (run_id, before, now_lease)
            assert rt.in_flight(PACK, "1.0.0") == 2
            assert rt.runs_in_flight(PACK, "1.0.0") == run_ids
            with pytest.raises(DrainTimeout) as still:
                await rt.wait_drained(PACK, "1.0.0", timeout=0.3)
            assert still.value.run_ids == tuple(run_ids)

            stop.touch()
            await rt.wait_drained(PACK, "1.0.0", timeout=TIMEOUT)
            assert rt.in_flight(PACK, "1.0.0") == 0

    anyio.run(watch)
    answers = b.result()["answers"]
    assert {(x["version"], x["marker"]) for x in answers} == {("1.0.0", "m1")}
    assert all(ended is not None for ended, _ in run_rows(db, run_ids).values())


# --- drain across processes ------------------------------------------------------------------


def test_wait_drained_in_one_process_waits_for_the_runs_of_another(
    db: Path, tmp_path: Path, spawn: Spawn
) -> None:
    run_ids = ["d1", "d2"]
    stop, close = tmp_path / "stop-b", tmp_path / "close-b"
    b = spawn(
        {
            "mode": "hold",
            "db": str(db),
            "iid": "inst",
            "run_ids": run_ids,
            "stop": str(stop),
            "close": str(close),
        }
    )
    b.wait_event("holding")
    anyio.run(lambda: move(db, "2.0.0"))

    a = spawn(
        {
            "mode": "drain",
            "db": str(db),
            "pack": PACK,
            "version": "1.0.0",
            "short_timeout": 0.5,
            "timeout": TIMEOUT - 5,
        }
    )
    timed_out = a.wait_event("timeout")
    assert timed_out["code"] == "drain_timeout"
    assert timed_out["run_ids"] == run_ids
    a.wait_event("waiting")

    stopped_at = time.time()
    stop.touch()
    ending = b.wait_event("ending")
    b.wait_event("ended")
    result = a.result()
    close.touch()  # B's runtime stays open until A has drained: B's own ends drained A
    b.result()

    assert result["drained_at"] >= stopped_at
    assert result["drained_at"] >= ending["t"]  # B was ending its runs before A drained
    assert result["in_flight"] == 0
    assert result["runs_in_flight"] == []
    assert all(e is not None for e, _ in run_rows(db, run_ids).values())


# --- run starts from several processes at once -------------------------------------------------


def test_bursts_of_starts_in_several_processes_are_each_durable_and_counted_exactly(
    db: Path, tmp_path: Path, spawn: Spawn
) -> None:
    processes, count = 3, 40
    stop = tmp_path / "stop-burst"
    workers = [
        spawn(
            {
                "mode": "burst",
                "db": str(db),
                "iid": "inst",
                "count": count,
                "prefix": f"p{i}",
                "stop": str(stop),
            }
        )
        for i in range(processes)
    ]
    for worker in workers:
        assert worker.wait_event("holding")["in_flight"] == count  # its own, exactly

    async def watch() -> None:
        async with packrun.open_runtime(url(db), refresh_interval=0.1) as rt:
            await wait_until(rt, processes * count)
            expected = sorted(f"p{i}-{n}" for i in range(processes) for n in range(count))
            assert rt.runs_in_flight(PACK, "1.0.0") == expected
            stop.touch()
            await rt.wait_drained(PACK, "1.0.0", timeout=TIMEOUT)

    anyio.run(watch)
    for worker in workers:
        result = worker.result()
        assert result["missing"] == []
        assert result["in_flight_after"] == 0
    ids = [f"p{i}-{n}" for i in range(processes) for n in range(count)]
    rows = run_rows(db, ids)
    assert len(rows) == processes * count
    assert all(ended is not None for ended, _ in rows.values())
