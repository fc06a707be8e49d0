"""A fleet of real processes sharing one real PostgreSQL store (DESIGN.md sections 5, 7 and 10).

Each test gets a schema of its own (the ``postgres_url`` fixture) and starts worker processes
(``_pg_worker.py``, run with ``sys.executable``) on it; this process sets the store up, makes
changes, reads the tables directly and, for the last two tests, acts on the server itself
(terminating a backend, restarting the server). What the design promises a fleet:

1. processes publishing one version at once race to exactly one winner, and a process killed
   inside its publish transaction leaves no row, no artifact and no lock behind;
2. a publish or a pin move in one process is seen by every other process: by the ``NOTIFY``
   alone (their periodic read of the change log set to once an hour), and by the periodic read
   alone when every notification is lost (a listener deafened inside the worker);
3. a run resumed in another process gets its original binding back;
4. a drain counts the runs of every process, those of a killed process until their leases expire;
5. a listening connection killed by the server is replaced, and the change made meanwhile is read
   from the change log;
6. a restart of the server in the middle of work (publishes, installs, pin moves and runs) loses
   no committed write, and every process recovers on its own.

Nothing is mocked. Waits are bounded by generous timeouts that only turn a hang into a failure;
no test asserts how fast anything is (the delays are printed; ``benchmarks/bench_fleet.py``
measures them).

Test 6 restarts the server with ``$PACKRUN_TEST_POSTGRES_CTL restart`` (for example
``PACKRUN_TEST_POSTGRES_CTL="pg_ctlcluster 15 main"``); it skips without it, except in CI.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import anyio.to_thread
import pytest
from _pg_worker import PROBE, make_bundle, probe_bundle
from _worker_process import WorkerProcess, spawning

import packrun
from _store_sql import execute, split
from packrun import Runtime

WORKER = Path(__file__).resolve().with_name("_pg_worker.py")
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT = 60.0
"""The bound on every wait for a worker: generous, it only turns a hang into a failure."""
SEEN_WITHIN = 10.0
"""How long another process may take to see a change before the test fails (tests 2 and 5)."""
HOUR = 3600.0
"""A periodic read so rare that it never comes within a test."""


def sample(version: str) -> Path:
    """The sample artifact of ``acme`` ``version``."""
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of_sample(version: str) -> str:
    return sha256(sample(version).read_bytes())


# --- the server, read directly -------------------------------------------------------------------


def with_app(url: str, name: str) -> str:
    """``url`` with a libpq ``application_name``: the worker's connections carry it."""
    return f"{url}&application_name={name}"


def channel(url: str) -> str:
    return f"packrun_changes_{split(url)[1]}"


def listeners(url: str, on: str | None = None) -> list[int]:
    """The backends that LISTEN on the store's change channel, or on ``on`` (pids): their last
    statement was the ``LISTEN``, and it has completed (they are idle)."""
    rows = execute(
        url,
        "SELECT pid FROM pg_stat_activity WHERE query = %s AND state = 'idle' ORDER BY pid",
        (f'LISTEN "{on or channel(url)}"',),
    )
    return [int(pid) for (pid,) in rows]


def wait_for(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


# --- worker processes ----------------------------------------------------------------------------


class Worker(WorkerProcess):
    """A worker process running ``_pg_worker.py``."""

    script = WORKER
    timeout = TIMEOUT


Spawn: TypeAlias = Callable[[dict[str, Any]], Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start workers; every one still running at the end of the test is killed and reaped."""
    with spawning(Worker, tmp_path) as start:
        yield start


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking wait off the event loop (the parent's runtime keeps running)."""
    return await anyio.to_thread.run_sync(fn)


# --- 1. six processes publish one version at once: exactly one winner ---------------------------


def test_six_processes_publishing_one_version_race_to_exactly_one_winner(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    # The schema does not exist yet: the six workers create and migrate it together, too.
    versions = ["1.0.0", "1.1.0", "2.0.0"]
    barrier = tmp_path / "go"
    workers = [
        spawn(
            {
                "mode": "publish",
                "url": postgres_url,
                "barrier": str(barrier),
                "items": [
                    {"pack": "acme", "version": v, "variant": f"round{r}-process{n}"}
                    for r, v in enumerate(versions)
                ],
            }
        )
        for n in range(6)
    ]
    winners: dict[str, str] = {}
    for round_, version in enumerate(versions):
        for worker in workers:
            worker.wait_event("ready", round=round_)
        Path(f"{barrier}-{round_}").touch()
        outcomes = [worker.wait_event("published", round=round_) for worker in workers]
        won = [(o, w) for o, w in zip(outcomes, workers, strict=True) if o["result"] == "ok"]
        lost = [o for o in outcomes if o["result"] != "ok"]
        assert len(won) == 1, outcomes
        assert [o["code"] for o in lost] == ["version_exists"] * 5, outcomes
        assert all(f"acme {version}" in o["message"] for o in lost), outcomes
        winner, worker = won[0]
        variant = worker.spec["items"][round_]["variant"]
        assert winner["digest"] == sha256(make_bundle("acme", version, variant))
        winners[version] = winner["digest"]
        print(f"acme {version}: won by {variant}; 5 clean version_exists")

    for worker in workers:  # every process ends up seeing the winners' rows, and only those
        seen = worker.result()["seen"]["acme"]
        assert seen == [[v, d] for v, d in winners.items()], worker.describe()

    # The store: one row per version, each with the winner's artifact, whose bytes hash to the
    # row's digest; no loser's artifact; one change-log line per winning publish.
    rows = execute(postgres_url, "SELECT version, digest FROM catalog ORDER BY version_key")
    assert rows == list(winners.items())
    artifacts = dict(execute(postgres_url, "SELECT digest, data FROM artifacts"))
    assert set(artifacts) == set(winners.values())
    for digest, data in artifacts.items():
        assert sha256(bytes(data)) == digest
    changes = execute(postgres_url, "SELECT kind, key FROM changes ORDER BY seq")
    assert changes == [("pack", "acme")] * 3

    async def fresh() -> None:
        async with packrun.open_runtime(postgres_url, refresh_interval=0) as rt:
            assert [(str(e.version), e.digest) for e in rt.versions("acme")] == list(
                winners.items()
            )
            for digest in winners.values():
                assert sha256(await rt.artifact(digest)) == digest

    anyio.run(fresh)


def test_a_process_killed_inside_its_publish_transaction_leaves_nothing_and_holds_no_lock(
    postgres_url: str, spawn: Spawn
) -> None:
    async def scenario() -> None:
        async with packrun.open_runtime(postgres_url, refresh_interval=0) as rt:
            await rt.publish(sample("1.0.0"))
            worker = spawn(
                {"mode": "fault_publish", "url": postgres_url, "pack": "acme", "version": "1.1.0"}
            )
            paused = await in_thread(partial(worker.wait_event, "paused"))
            # Everything is written but not committed; the worker's backend holds the lock.
            state = execute(
                postgres_url,
                "SELECT state FROM pg_stat_activity WHERE pid IN (SELECT pid FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = %s)",
                (zlib.crc32(split(postgres_url)[1].encode()) & 0x7FFFFFFF,),
            )
            assert state == [("idle in transaction",)], paused
            worker.kill()

            # The server rolled the transaction back when the connection died: no row, no
            # artifact, no change-log line; and the lock is free, so this publish goes through.
            entry = await rt.publish(make_bundle("acme", "1.1.0", "after-the-kill"))
            assert entry.digest == sha256(make_bundle("acme", "1.1.0", "after-the-kill"))
        rows = execute(postgres_url, "SELECT version, digest FROM catalog ORDER BY version_key")
        assert rows == [("1.0.0", digest_of_sample("1.0.0")), ("1.1.0", entry.digest)]
        artifacts = {d for (d,) in execute(postgres_url, "SELECT digest FROM artifacts")}
        assert artifacts == {digest_of_sample("1.0.0"), entry.digest}
        changes = execute(postgres_url, "SELECT kind, key FROM changes ORDER BY seq")
        assert changes == [("pack", "acme")] * 2

    anyio.run(scenario)


# --- 2. a change in one process is seen by the others, and fast ---------------------------------

# (description, the call, what every watcher must then see: installation -> version)
CHANGES: list[tuple[str, Callable[[Runtime], Any], dict[str, str]]] = [
    ("publish 1.0.1", lambda rt: rt.publish(sample("1.0.1")), {"a": "1.0.1", "c": "1.0.1"}),
    ("set_pin b 1.0.1", lambda rt: rt.set_pin("b", "1.0.1", actor="ops"), {"b": "1.0.1"}),
    ("set_pin a 1.0.0", lambda rt: rt.set_pin("a", "1.0.0", actor="ops"), {"a": "1.0.0"}),
    (
        "publish 1.1.1 custom",
        lambda rt: rt.publish(sample("1.1.1"), channel="custom"),
        {"c": "1.1.1"},
    ),
    ("set_pin a latest", lambda rt: rt.set_pin("a", "latest", actor="ops"), {"a": "1.1.1"}),
    (
        "set_pin c latest-vendor",
        lambda rt: rt.set_pin("c", "latest-vendor", actor="ops"),
        {"c": "1.0.1"},
    ),
]
EXPECTED_SEEN = {  # what each watcher sees of each installation, in order, start included
    "a": ["1.0.0", "1.0.1", "1.0.0", "1.1.1"],
    "b": ["1.0.0", "1.0.1"],
    "c": ["1.0.0", "1.0.1", "1.1.1", "1.0.1"],
}
EXPECTED_HISTORY = {
    "a": [["install", "ops", "latest"], ["user", "ops", "1.0.0"], ["user", "ops", "latest"]],
    "b": [["install", "ops", "1.0.0"], ["user", "ops", "1.0.1"]],
    "c": [["install", "ops", "latest"], ["user", "ops", "latest-vendor"]],
}


async def _propagation(
    url: str, tmp_path: Path, spawn: Spawn, refresh_interval: float, deaf: bool
) -> dict[str, list[float]]:
    """Three watchers (each watching ``a``, ``b`` and ``c``); the parent makes the changes of
    :data:`CHANGES` one after another, each once every watcher saw the one before. Returns the
    delays of each change, one per watcher and installation: the time it was seen minus the time
    the parent's call returned (its write committed; a watcher may even see it a moment before)."""
    stop = tmp_path / "stop-watching"
    delays: dict[str, list[float]] = {}
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        await rt.publish(sample("1.0.0"))
        await rt.install("a", "acme", pin="latest", actor="ops")
        await rt.install("b", "acme", pin="1.0.0", actor="ops")
        await rt.install("c", "acme", pin="latest", actor="ops")
        watchers = [
            spawn(
                {
                    "mode": "watch",
                    "url": url,
                    "iids": ["a", "b", "c"],
                    "stop": str(stop),
                    "refresh_interval": refresh_interval,
                    "deaf": deaf,
                }
            )
            for _ in range(3)
        ]
        for watcher in watchers:
            for iid in "abc":
                await in_thread(partial(watcher.wait_event, "seen", iid=iid))
        # A runtime LISTENs before its first read of the store: once a watcher saw the state,
        # it hears every later change.
        if deaf:
            assert listeners(url) == []
            assert len(listeners(url, "packrun_changes_nobody")) == 3
        else:
            assert len(listeners(url)) == 3
        for what, change, expected in CHANGES:
            started = time.time()
            await change(rt)
            returned = time.time()
            seen: list[float] = []
            for watcher in watchers:
                for iid, version in expected.items():
                    event = await in_thread(
                        partial(
                            watcher.wait_event,
                            "seen",
                            timeout=SEEN_WITHIN,
                            iid=iid,
                            version=version,
                        )
                    )
                    seen.append(event["t"])
            delays[what] = [t - returned for t in seen]
            print(
                f"{what}: seen by 3 watchers {min(seen) - returned:+.3f} .. "
                f"{max(seen) - returned:+.3f} s after the call returned "
                f"(the call took {returned - started:.3f} s)"
            )
        stop.touch()
        results = [await in_thread(w.result) for w in watchers]
    for watcher, result in zip(watchers, results, strict=True):
        sequences: dict[str, list[str | None]] = {}
        for event in watcher.history:
            if event.get("event") == "seen":
                sequences.setdefault(event["iid"], []).append(event["version"])
        assert sequences == EXPECTED_SEEN, watcher.describe()  # no change missed, none spurious
        assert result["history"] == EXPECTED_HISTORY, watcher.describe()
    return delays


def test_a_publish_or_pin_move_in_one_process_is_seen_by_every_other_process(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    delays = anyio.run(_propagation, postgres_url, tmp_path, spawn, 0.1, False)
    assert list(delays) == [what for what, _, _ in CHANGES]


def test_notify_alone_carries_every_change_to_the_other_processes(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    # The watchers read the change log on their own once an hour: within the test, only the
    # NOTIFY at the end of each write can wake them.
    delays = anyio.run(_propagation, postgres_url, tmp_path, spawn, HOUR, False)
    assert list(delays) == [what for what, _, _ in CHANGES]


def test_with_every_notification_lost_the_periodic_read_still_carries_every_change(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    # The watchers LISTEN on a channel nobody notifies (injected in the worker): their periodic
    # read of the change log, every 0.5 s, is all that is left, and it is enough.
    delays = anyio.run(_propagation, postgres_url, tmp_path, spawn, 0.5, True)
    assert list(delays) == [what for what, _, _ in CHANGES]


# --- 3. a run resumed in another process keeps its binding -------------------------------------


async def _setup_probe(url: str) -> None:
    """``probe`` 1.0.0 (marker ``m1``) and 2.0.0 (``m2``), and ``inst`` pinned to 1.0.0."""
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        await rt.publish(probe_bundle("1.0.0", "m1"))
        await rt.publish(probe_bundle("2.0.0", "m2"))
        await rt.install("inst", PROBE, pin="1.0.0")


async def _move_and_overwrite(url: str) -> None:
    """``inst`` to 2.0.0, and the artifact of 1.0.0 overwritten (marker ``m1-forced``)."""
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        await rt.set_pin("inst", "2.0.0")
        await rt.set_immutable_versions(False)
        await rt.publish(probe_bundle("1.0.0", "m1-forced"), force=True)
        assert rt.versions(PROBE)[0].digest == sha256(probe_bundle("1.0.0", "m1-forced"))


def lease_of(url: str, run_id: str) -> tuple[Any, float]:
    """``(ended_at, lease_until)`` of a run as the store holds it."""
    rows = execute(url, "SELECT ended_at, lease_until FROM runs WHERE run_id = %s", (run_id,))
    assert len(rows) == 1, rows
    return rows[0][0], float(rows[0][1])


@pytest.mark.parametrize("first_process", ["ends_its_run", "killed"])
def test_a_run_opened_in_one_process_is_resumed_in_another_with_its_original_binding(
    postgres_url: str, tmp_path: Path, spawn: Spawn, first_process: str
) -> None:
    anyio.run(_setup_probe, postgres_url)
    stop = tmp_path / "stop-a"
    a = spawn(
        {
            "mode": "hold",
            "url": postgres_url,
            "iid": "inst",
            "run_ids": ["wf-1"],
            "stop": str(stop),
            # Killed, its lease must expire soon; alive, it must hold (the default 30 s lease).
            "lease_ttl": 1.0 if first_process == "killed" else 30.0,
        }
    )
    started = a.wait_event("started", run_id="wf-1")
    assert (started["version"], started["marker"], started["resumed"]) == ("1.0.0", "m1", False)
    assert started["digest"] == sha256(probe_bundle("1.0.0", "m1"))
    a.wait_event("holding")

    if first_process == "ends_its_run":
        # While A holds the run under a live lease, no other process may open it.
        held = spawn(
            {"mode": "resume", "url": postgres_url, "iid": "inst", "run_id": "wf-1"}
            | {"expect_held": True}
        ).result()
        assert held["held"] == "invalid_argument", held
        assert "live lease" in held["message"]
        anyio.run(_move_and_overwrite, postgres_url)
        stop.touch()  # A calls again (still on m1), ends its run and exits
        answers = a.result()["answers"]
        assert [(x["version"], x["marker"]) for x in answers] == [("1.0.0", "m1")] * 2
        ended, _ = lease_of(postgres_url, "wf-1")
        assert ended is not None
    else:
        a.kill()
        ended, lease = lease_of(postgres_url, "wf-1")
        assert ended is None  # nobody ended it: it is resumable once the lease expired
        wait_for("the killed process's lease expires", lambda: time.time() > lease + 0.1)
        anyio.run(_move_and_overwrite, postgres_url)

    b = spawn({"mode": "resume", "url": postgres_url, "iid": "inst", "run_id": "wf-1"})
    result = b.result()
    resumed = result["resumed"]
    assert resumed["resumed"] is True
    assert resumed["installation_id"] == "inst"
    # The original binding: 1.0.0 and the digest it started with, although the pin moved to
    # 2.0.0 and 1.0.0's row now names another artifact; the original bytes still run.
    assert (resumed["version"], resumed["digest"]) == ("1.0.0", started["digest"])
    assert resumed["answer"] == {"version": "1.0.0", "marker": "m1", "run_id": "wf-1"}
    fresh = result["fresh"]
    assert fresh["resumed"] is False
    assert (fresh["version"], fresh["answer"]["marker"]) == ("2.0.0", "m2")


# --- 4. drain across processes, with a process killed -------------------------------------------


async def _set_pin(url: str, pin: str) -> None:
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        await rt.set_pin("inst", pin)


def test_drain_counts_every_process_and_a_killed_process_until_its_leases_expire(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    anyio.run(_setup_probe, postgres_url)
    doomed, live = ["k1", "k2", "k3"], ["d1", "d2"]
    stop_live = tmp_path / "stop-live"
    # A holds three runs on 1.0.0 under 1 s leases, and will be killed; B, alive throughout,
    # holds two runs on 2.0.0 (under the default 30 s leases: a slow disk must not lapse them).
    a = spawn(
        {
            "mode": "hold",
            "url": postgres_url,
            "iid": "inst",
            "run_ids": doomed,
            "stop": str(tmp_path / "never"),
            "lease_ttl": 1.0,
        }
    )
    assert a.wait_event("started")["version"] == "1.0.0"
    a.wait_event("holding")
    anyio.run(_set_pin, postgres_url, "2.0.0")
    b = spawn(
        {
            "mode": "hold",
            "url": postgres_url,
            "iid": "inst",
            "run_ids": live,
            "stop": str(stop_live),
        }
    )
    assert b.wait_event("started")["version"] == "2.0.0"
    b.wait_event("holding")

    async def watch() -> Worker:
        async with packrun.open_runtime(postgres_url, refresh_interval=0.1) as rt:
            with anyio.fail_after(TIMEOUT):  # this process counts the runs of both others
                while (rt.in_flight(PROBE, "1.0.0"), rt.in_flight(PROBE, "2.0.0")) != (3, 2):
                    await anyio.sleep(0.02)
            assert rt.runs_in_flight(PROBE, "1.0.0") == doomed
            assert rt.runs_in_flight(PROBE, "2.0.0") == live
            assert rt.in_flight_for("inst") == 5
            assert rt.version_status(PROBE, "1.0.0") == "draining"
            assert rt.version_status(PROBE, "2.0.0") == "active"
            drain = spawn(
                {
                    "mode": "drain",
                    "url": postgres_url,
                    "pack": PROBE,
                    "version": "2.0.0",
                    "short_timeout": 0.3,
                    "timeout": TIMEOUT,
                }
            )

            a.kill()
            killed_at = time.time()
            leases = {r: lease_of(postgres_url, r)[1] for r in doomed}
            if min(leases.values()) > killed_at:
                assert rt.in_flight(PROBE, "1.0.0") == 3  # A is dead; its leases still hold

            # Nobody ends A's runs: wait_drained returns once their leases have expired.
            await rt.wait_drained(PROBE, "1.0.0", timeout=TIMEOUT)
            drained_at = time.time()
            assert drained_at >= max(leases.values()), (drained_at, leases)
            for run_id in doomed:
                ended, lease = lease_of(postgres_url, run_id)
                assert ended is None, (run_id, ended)
                assert lease <= drained_at, (run_id, lease, drained_at)
            assert rt.in_flight(PROBE, "1.0.0") == 0
            assert rt.runs_in_flight(PROBE, "1.0.0") == []
            assert rt.version_status(PROBE, "1.0.0") == "drained"
            print(f"A killed; its 3 runs drained {drained_at - killed_at:.2f} s later")

            # B's runs still count, here and in the drain process, which waits for them.
            assert rt.in_flight(PROBE, "2.0.0") == 2
            timed_out = await in_thread(partial(drain.wait_event, "timeout"))
            assert (timed_out["code"], timed_out["run_ids"]) == ("drain_timeout", live)
            await in_thread(partial(drain.wait_event, "waiting"))
            assert drain.proc.poll() is None, drain.describe()

            stop_live.touch()
            await rt.wait_drained(PROBE, "2.0.0", timeout=TIMEOUT)
            assert rt.in_flight(PROBE, "2.0.0") == 0
            assert rt.in_flight_for("inst") == 0
        return drain

    drain = anyio.run(watch)
    ending = b.wait_event("ending")
    b.result()
    result = drain.result()
    assert result["in_flight"] == 0
    assert result["runs_in_flight"] == []
    assert result["drained_at"] >= ending["t"]  # the drain waited for B's runs to end
    for run_id in live:
        ended, _ = lease_of(postgres_url, run_id)
        assert ended is not None


# --- 5. the listening connection, killed by the server ------------------------------------------


def test_a_listener_terminated_by_the_server_is_replaced_and_the_gap_is_read_from_the_log(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    stop = tmp_path / "stop-watching"
    url = with_app(postgres_url, "packrun_fleet_watcher")

    async def scenario() -> None:
        async with packrun.open_runtime(postgres_url, refresh_interval=0) as rt:
            await rt.publish(sample("1.0.0"))
            await rt.install("w", "acme", pin="latest", actor="ops")
            watcher = spawn(
                {
                    "mode": "watch",
                    "url": url,
                    "iids": ["w"],
                    "stop": str(stop),
                    "refresh_interval": HOUR,
                }
            )
            await in_thread(lambda: watcher.wait_event("seen", iid="w", version="1.0.0"))
            await in_thread(
                lambda: wait_for("the watcher LISTENs", lambda: len(listeners(postgres_url)) == 1)
            )
            (old,) = listeners(postgres_url)
            app = execute(
                postgres_url, "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (old,)
            )
            assert app == [("packrun_fleet_watcher",)]  # the watcher's, not this process's

            terminated = execute(postgres_url, "SELECT pg_terminate_backend(%s)", (old,))
            assert terminated == [(True,)]
            # Made while the watcher has no listener: no NOTIFY reaches it, and its periodic read
            # is an hour away. It reads the change log when its new listener is up.
            await rt.publish(sample("1.0.1"))
            returned = time.time()
            event = await in_thread(
                lambda: watcher.wait_event("seen", timeout=SEEN_WITHIN, iid="w", version="1.0.1")
            )
            print(
                f"after the listener was terminated, a publish was seen in "
                f"{event['t'] - returned:.3f} s"
            )

            # Then the new listener hears each change (the periodic read is still an hour away).
            for pin, version in [("1.0.0", "1.0.0"), ("latest", "1.0.1"), ("1.0.0", "1.0.0")]:
                await rt.set_pin("w", pin, actor="ops")
                returned = time.time()
                event = await in_thread(
                    partial(
                        watcher.wait_event, "seen", timeout=SEEN_WITHIN, iid="w", version=version
                    )
                )
                print(f"set_pin w {pin}: seen in {event['t'] - returned:.3f} s")
            new = listeners(postgres_url)
            assert len(new) == 1, new
            assert new != [old], (old, new)  # a new LISTEN backend
            stop.touch()
            await in_thread(watcher.result)

    anyio.run(scenario)


# --- 6. a restart of the server in the middle of work --------------------------------------------


def server_started(url: str) -> Any:
    return execute(url, "SELECT pg_postmaster_start_time()")[0][0]


def test_a_server_restart_mid_work_loses_no_committed_write_and_every_process_recovers(
    postgres_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    ctl = os.environ.get("PACKRUN_TEST_POSTGRES_CTL", "")
    if not ctl:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI must set PACKRUN_TEST_POSTGRES_CTL to a command that controls the server"
            )
        pytest.skip("set PACKRUN_TEST_POSTGRES_CTL to a command that controls the server (CI does)")
    anyio.run(_setup_probe, postgres_url)  # the schema exists before the workers start
    stop, tail = tmp_path / "stop-churning", 5
    workers = [
        spawn({"mode": "churn", "url": postgres_url, "worker": n, "stop": str(stop), "tail": tail})
        for n in range(3)
    ]
    for worker in workers:
        worker.wait_event("ready")
    for worker in workers:  # every worker is in the middle of its work
        for _ in range(3):
            worker.wait_event("round")

    before = server_started(postgres_url)
    restart_began = time.time()
    done = subprocess.run(
        [*shlex.split(ctl), "restart"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{ctl} restart: {done.stdout}\n{done.stderr}"
    restart_ended = time.time()
    after = server_started(postgres_url)
    assert after > before, (before, after)  # the server did restart
    print(f"{ctl} restart took {restart_ended - restart_began:.2f} s")

    for worker in workers:  # every worker goes on working after the restart
        wait_for_round = time.monotonic() + TIMEOUT
        while worker.wait_event("round", timeout=TIMEOUT)["started"] < restart_ended:
            assert time.monotonic() < wait_for_round, worker.describe()
        for _ in range(2):
            worker.wait_event("round")
    # And each listens for changes again (its listening connection died with the server).
    wait_for("every worker LISTENs again", lambda: len(listeners(postgres_url)) == 3)
    stop.touch()
    results = [worker.result(timeout=90) for worker in workers]

    expected_rows: dict[tuple[str, str], str] = {}
    expected_pins: dict[str, tuple[str, str]] = {}
    expected_runs: list[str] = []
    for n, result in enumerate(results):
        rounds = result["rounds"]
        ks = [r["k"] for r in rounds]
        assert ks == list(range(len(ks))), ks  # no round skipped
        assert any(r["t"] < restart_began for r in rounds), result  # worked before ...
        assert any(r["started"] > restart_ended for r in rounds), result  # ... and after
        # ... and was working while the server went down and came back.
        assert any(r["started"] < restart_ended and r["t"] > restart_began for r in rounds)
        # It recovered: its last rounds (after the stop) took one attempt per operation.
        assert [r["attempts"] for r in rounds[-tail:]] == [[1, 1, 1, 1]] * tail, result
        print(
            f"worker {n}: {len(rounds)} rounds, {result['failures']} failed attempts retried "
            f"({result['already']} had committed), e.g. {result['errors'][:2]}"
        )
        for r in rounds:
            assert r["digest"] == sha256(make_bundle(r["pack"], r["version"], f"churn{n}-{r['k']}"))
            expected_rows[(r["pack"], r["version"])] = r["digest"]
            expected_pins[r["iid"]] = (r["pack"], "latest")
            assert r["answer"] == {"version": "1.0.0", "marker": "m1", "run_id": r["run_id"]}
            expected_runs.append(r["run_id"])

    # Every write a worker reported as done is in the store, once; nothing else is.
    stored = execute(postgres_url, "SELECT pack_id, version, digest FROM catalog")
    churned = {(p, v): d for p, v, d in stored if p != PROBE}
    assert churned == expected_rows
    installations = execute(postgres_url, "SELECT id, pack_id, pin FROM installations")
    assert {i: (p, pin) for i, p, pin in installations if i != "inst"} == expected_pins
    # Every run a worker finished is recorded, ended (its end retried if the server was away when
    # it was first written), with the tool it called; no run is left open.
    runs = execute(
        postgres_url,
        "SELECT run_id, version, ended_at IS NOT NULL, calls FROM runs ORDER BY run_id",
    )
    assert runs == [(run_id, "1.0.0", True, '["whoami"]') for run_id in sorted(expected_runs)]

    async def fresh() -> None:
        async with packrun.open_runtime(postgres_url, refresh_interval=0) as rt:
            for (pack, version), digest in expected_rows.items():
                rows = [e for e in rt.versions(pack) if str(e.version) == version]
                assert [e.digest for e in rows] == [digest], (pack, version)
            for iid, (pack, pin) in expected_pins.items():
                inst = rt.installation(iid)
                assert (inst.pack_id, inst.pin) == (pack, pin)
                # pinned to latest: its pack's newest version
                newest = max(packrun.Version.parse(v) for p, v in expected_rows if p == pack)
                assert rt.resolve(iid).version == str(newest)
                assert [e.origin for e in (await rt.history(iid))][:2] == ["install", "user"]

    anyio.run(fresh)
