"""Real processes sharing one real SQLite store file (DESIGN.md sections 4, 5 and 10).

Each test starts worker processes (``_sqlite_mp_worker.py``, run with ``sys.executable``) on a
store file under ``tmp_path`` and checks what the design promises when several processes write
to it at once: two processes publishing one version race to exactly one winner; a crash
mid-publish leaves the whole row and artifact or nothing; another process sees a change within
about its refresh interval; many writers leave a consistent store. Nothing is mocked: the only
fault injection happens inside a worker process, on its own SQLite connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import anyio.to_thread
import pytest
from _sqlite_mp_worker import make_bundle
from _worker_process import Event, WorkerProcess, spawning

import packrun

WORKER = Path(__file__).resolve().with_name("_sqlite_mp_worker.py")
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT = 30.0
"""The bound on every wait for a worker: generous, it only turns a hang into a failure."""


def sample(version: str) -> Path:
    """The sample artifact of ``acme`` ``version``."""
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


# --- reading the store file directly ----------------------------------------------------------


@contextlib.contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain SQLite connection of this process to the store file (reads only)."""
    conn = sqlite3.connect(db, timeout=30.0)
    try:
        yield conn
    finally:
        conn.close()


def catalog(db: Path, pack: str | None = None) -> list[tuple[str, str, str, str]]:
    """``(pack_id, version, digest, channel)`` of every catalog row, in insertion (rowid) order."""
    with raw(db) as conn:
        rows = conn.execute(
            "SELECT pack_id, version, digest, channel FROM catalog "
            "WHERE ? IS NULL OR pack_id = ? ORDER BY rowid",
            (pack, pack),
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def artifact_digests(db: Path) -> set[str]:
    with raw(db) as conn:
        return {str(d) for (d,) in conn.execute("SELECT digest FROM artifacts")}


def change_count(db: Path) -> int:
    with raw(db) as conn:
        return int(conn.execute("SELECT count(*) FROM changes").fetchone()[0])


def check_store(db: Path) -> list[tuple[str, str, str, str]]:
    """The invariants of a store file, whatever happened to its writers; returns the catalog.

    The file passes ``PRAGMA integrity_check`` and ``foreign_key_check``; no two rows share a
    ``(pack, version)``; every row has its artifact and the artifact's bytes hash to the row's
    digest; every artifact is referenced by a row.
    """
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = conn.execute(
            "SELECT pack_id, version, digest, channel FROM catalog ORDER BY rowid"
        ).fetchall()
        keys = [(pack, version) for pack, version, _, _ in rows]
        assert len(keys) == len(set(keys)), f"duplicate catalog rows: {sorted(keys)}"
        artifacts = {
            str(digest): bytes(data)
            for digest, data in conn.execute("SELECT digest, data FROM artifacts")
        }
    for pack, version, digest, _ in rows:
        assert digest in artifacts, f"{pack} {version}: no artifact {digest}"
        assert sha256(artifacts[digest]) == digest, f"{pack} {version}: artifact bytes differ"
    referenced = {digest for _, _, digest, _ in rows}
    assert set(artifacts) <= referenced, f"orphan artifacts: {set(artifacts) - referenced}"
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


async def check_runtime(db: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """A fresh runtime loads exactly ``rows``, and serves every artifact with its digest."""
    async with packrun.open_runtime(url(db), refresh_interval=0) as rt:
        for pack in sorted({r[0] for r in rows}):
            entries = rt.versions(pack)
            expected = sorted(
                ((packrun.Version.parse(v), d) for p, v, d, _ in rows if p == pack),
            )
            assert [(e.version, e.digest) for e in entries] == expected
            for entry in entries:
                assert entry.digest is not None
                assert sha256(await rt.artifact(entry.digest)) == entry.digest


# --- 1. the same version, published by six processes at once: exactly one winner ----------------


def test_six_processes_publishing_one_version_race_to_exactly_one_winner(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "state.db"  # not created here: the six workers open a fresh file together
    winners: dict[str, str] = {}
    for round_, version in enumerate(["1.0.0", "1.1.0", "2.0.0"]):
        barrier = tmp_path / f"go-{round_}"
        variants = [f"round{round_}-process{n}" for n in range(6)]
        digests = {sha256(make_bundle("acme", version, v)) for v in variants}
        assert len(digests) == 6  # six different artifacts of one version
        workers = [
            spawn(
                {
                    "mode": "publish",
                    "db": str(db),
                    "barrier": str(barrier),
                    "items": [{"pack": "acme", "version": version, "variant": variant}],
                }
            )
            for variant in variants
        ]
        for worker in workers:
            worker.wait_event("ready")
        barrier.touch()
        results = [worker.result() for worker in workers]
        outcomes = [r["results"][0] for r in results]

        won = [(o, w) for o, w in zip(outcomes, workers, strict=True) if o["outcome"] == "ok"]
        lost = [o for o in outcomes if o["outcome"] != "ok"]
        assert len(won) == 1, outcomes
        assert [o.get("code") for o in lost] == ["version_exists"] * 5, outcomes
        winner, winner_worker = won[0]
        winner_variant = winner_worker.spec["items"][0]["variant"]
        assert winner["digest"] == sha256(make_bundle("acme", version, winner_variant))
        winners[version] = winner["digest"]
        print(f"acme {version}: won by {winner_variant}; 5 clean version_exists")

        # Every process, after a refresh, sees the winner's row and nothing else of that version.
        for result in results:
            seen = [d for v, d in result["seen"]["acme"] if v == version]
            assert seen == [winner["digest"]], result

    # The store holds one row per version, the winners' digests, and no loser's artifact.
    rows = check_store(db)
    assert [(v, d) for _, v, d, _ in rows] == list(winners.items())
    assert artifact_digests(db) == set(winners.values())
    anyio.run(check_runtime, db, rows)


# --- 2. different versions and packs, published by six processes at once ------------------------


def test_concurrent_distinct_publishes_leave_a_consistent_catalog(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "state.db"
    barrier = tmp_path / "go"

    def built(pack: str, *versions: str) -> list[dict[str, Any]]:
        return [{"pack": pack, "version": v, "variant": f"{pack}-{v}"} for v in versions]

    def samples(*versions: str, channel: str = "vendor") -> list[dict[str, Any]]:
        return [
            {"pack": "acme", "version": v, "path": str(sample(v)), "channel": channel}
            for v in versions
        ]

    plans: list[list[dict[str, Any]]] = [
        samples("1.0.0", "1.0.1", "1.1.0"),  # acme 1.x, racing the next worker
        samples("1.1.1", channel="custom") + samples("1.2.0"),  # acme 1.x
        samples("2.0.0") + built("acme", "2.1.0", "3.0.0"),  # acme 2.x and 3.x: alone
        built("acme", "0.1.0", "0.2.0", "0.2.1"),  # acme 0.1.x and 0.2.x: alone
        built("beta", "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"),  # beta 1.x: alone
        built("gamma", "1.0.0", "1.1.0") + built("beta", "2.0.0", "2.0.1"),  # alone on each
    ]
    # The publish rules apply per stream: the vendor rows of a pack, or a project's custom rows.
    channel_of = {(i["pack"], i["version"]): i.get("channel", "vendor") for p in plans for i in p}
    racing = {("acme", "vendor", 1)}  # the only (pack, stream, line) two workers publish to
    workers = [
        spawn({"mode": "publish", "db": str(db), "barrier": str(barrier), "items": items})
        for items in plans
    ]
    for worker in workers:
        worker.wait_event("ready")
    barrier.touch()
    results = [worker.result() for worker in workers]
    outcomes = [o for r in results for o in r["results"]]
    assert len(outcomes) == sum(len(p) for p in plans) == 20

    def line(version: str) -> int:
        v = packrun.Version.parse(version)
        return v.major if v.major else -1 - v.minor

    rows = check_store(db)
    stored = {(p, v): d for p, v, d, _ in rows}
    ok = {(o["pack"], o["version"]): o["digest"] for o in outcomes if o["outcome"] == "ok"}
    for o in outcomes:
        key = (o["pack"], o["version"])
        if (o["pack"], channel_of[key], line(o["version"])) not in racing:
            assert o["outcome"] == "ok", o
        if o["outcome"] == "ok":
            continue
        # A refusal is only ever the per-line rule, because a higher version of the line landed.
        assert o["code"] == "downgrade_not_allowed", o
        assert key not in stored, o
        higher = [
            v
            for p, v in ok
            if p == o["pack"]
            and channel_of[(p, v)] == channel_of[key]
            and line(v) == line(o["version"])
            and packrun.Version.parse(v) > packrun.Version.parse(o["version"])
        ]
        assert higher, f"{key} was refused, yet nothing above it in its line was published"
    # The catalog is exactly the successes, with the digests the publishers were given.
    assert stored == ok
    assert ("acme", "1.2.0") in ok  # the top of the raced line is never refused
    # Committed in an order the per-line rule allows: within a line, each row is above the rows
    # committed before it (rowid order is commit order: rows are only ever appended).
    for pack, channel in {(p, c) for p, _, _, c in rows}:
        committed = [packrun.Version.parse(v) for p, v, _, c in rows if (p, c) == (pack, channel)]
        for n in {line(str(v)) for v in committed}:
            in_line = [v for v in committed if line(str(v)) == n]
            assert in_line == sorted(in_line), f"{pack} {channel} line {n} committed as {in_line}"
    # One change-log line per successful publish, written in the same transaction.
    with raw(db) as conn:
        changes = conn.execute("SELECT key FROM changes WHERE kind = 'pack'").fetchall()
    assert sorted(k for (k,) in changes) == sorted(p for p, _ in ok)
    # Channels are kept as published; a fresh runtime loads the same catalog.
    assert {(p, v): c for p, v, _, c in rows}[("acme", "1.1.1")] == "custom"
    anyio.run(check_runtime, db, rows)
    refused = [o for o in outcomes if o["outcome"] != "ok"]
    print(f"{len(ok)} publishes landed, {len(refused)} refused by the per-line rule: {refused}")


# --- 3. a process killed mid-publish ------------------------------------------------------------


async def _publish(db: Path, data: bytes | Path) -> packrun.CatalogEntry:
    async with packrun.open_runtime(url(db), refresh_interval=0) as rt:
        return await rt.publish(data)


@pytest.mark.parametrize("after", ["artifacts", "catalog", "changes"])
def test_a_process_killed_mid_publish_leaves_nothing_behind(
    tmp_path: Path, spawn: Spawn, after: str
) -> None:
    db = tmp_path / "state.db"
    anyio.run(_publish, db, sample("1.0.0"))
    before_rows = check_store(db)
    before_changes = change_count(db)
    doomed = make_bundle("acme", "1.0.1", "doomed")

    worker = spawn(
        {
            "mode": "fault_publish",
            "db": str(db),
            "pack": "acme",
            "version": "1.0.1",
            "variant": "doomed",
            "after": after,
        }
    )
    ready = worker.wait_event("ready")
    assert ready["digest"] == sha256(doomed)
    paused = worker.wait_event("paused", after=after)
    assert paused["in_transaction"] is True
    # While the writer sits inside its transaction, another connection sees none of it.
    assert catalog(db) == before_rows
    assert sha256(doomed) not in artifact_digests(db)
    assert worker.proc.poll() is None
    worker.kill()
    assert worker.proc.returncode == -signal.SIGKILL

    # Rolled back: no row, no artifact, no change-log line, and an intact file.
    rows = check_store(db)
    assert rows == before_rows
    assert not [r for r in rows if r[1] == "1.0.1"]
    assert sha256(doomed) not in artifact_digests(db)
    assert change_count(db) == before_changes

    # The same version (the very same bytes) publishes cleanly afterwards.
    entry = anyio.run(_publish, db, doomed)
    assert (str(entry.version), entry.digest) == ("1.0.1", sha256(doomed))
    rows = check_store(db)
    assert [(v, d) for _, v, d, _ in rows] == [
        ("1.0.0", before_rows[0][2]),
        ("1.0.1", sha256(doomed)),
    ]
    anyio.run(check_runtime, db, rows)


def test_killing_a_publishing_process_at_random_moments_keeps_the_store_consistent(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "state.db"
    rng = random.Random(20240611)
    total = 0
    for iteration in range(6):
        major = iteration + 1  # a new release line per iteration: every publish is allowed
        worker = spawn(
            {
                "mode": "publish_loop",
                "db": str(db),
                "pack": "loop",
                "major": major,
                "count": 100_000,
                "blob": 256 * 1024,
            }
        )
        worker.wait_event("ready")
        delay = rng.uniform(0.05, 0.5)
        time.sleep(delay)
        assert worker.proc.poll() is None, worker.describe()  # killed while still publishing
        worker.kill()
        reported: list[str] = []
        for event in worker.drain():
            assert event.get("event") == "published", worker.describe()
            reported.append(event["version"])

        rows = check_store(db)
        in_line = [v for p, v, _, _ in rows if p == "loop" and v.startswith(f"{major}.")]
        # Every publish the worker saw succeed is there, at most one more (committed, not yet
        # reported), and nothing in between is missing.
        assert in_line[: len(reported)] == reported
        assert len(reported) <= len(in_line) <= len(reported) + 1
        assert in_line == [f"{major}.{k}.0" for k in range(len(in_line))]
        total += len(in_line)
        print(
            f"kill {iteration}: after {delay:.3f} s, {len(reported)} publishes reported, "
            f"{len(in_line)} rows"
        )

    assert total > 0  # the workers did publish before they were killed
    rows = check_store(db)
    assert len(rows) == total
    anyio.run(check_runtime, db, rows)
    # And the store takes a publish after all those kills.
    entry = anyio.run(_publish, db, make_bundle("loop", "99.0.0", "after-the-kills"))
    assert str(entry.version) == "99.0.0"
    check_store(db)


# --- 4. another process sees a change within the documented bound -------------------------------


async def _watch_scenario(db: Path, tmp_path: Path, spawn: Spawn) -> list[Event]:
    stop = tmp_path / "stop-watching"
    async with packrun.open_runtime(url(db), refresh_interval=0.1) as rt:
        await rt.publish(sample("1.0.0"))
        await rt.install("w", "acme", pin="latest", actor="ops")
        watcher = spawn(
            {"mode": "watch", "db": str(db), "iid": "w", "stop": str(stop), "refresh_interval": 0.1}
        )

        async def seen(version: str, what: str, started: float) -> None:
            await anyio.to_thread.run_sync(
                partial(watcher.wait_event, "seen", timeout=10.0, version=version)
            )
            print(f"watcher saw {what} after {time.monotonic() - started:.3f} s")

        await seen("1.0.0", "the installation", time.monotonic())
        t = time.monotonic()
        await rt.publish(sample("1.0.1"))
        await seen("1.0.1", "a new version for its latest pin", t)
        t = time.monotonic()
        await rt.set_pin("w", "1.0.0", actor="ops")
        await seen("1.0.0", "a pin moved to an exact version", t)
        t = time.monotonic()
        await rt.set_pin("w", "latest", actor="ops")
        await seen("1.0.1", "a pin moved back to latest", t)
        t = time.monotonic()
        await rt.publish(sample("1.1.1"), channel="custom")
        await seen("1.1.1", "a custom version (latest prefers custom)", t)
        stop.touch()
        result = await anyio.to_thread.run_sync(watcher.result)
    return [result]


def test_another_process_sees_publishes_and_pin_moves_within_the_refresh_bound(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "state.db"
    (result,) = anyio.run(_watch_scenario, db, tmp_path, spawn)
    assert result["seen"] == ["1.0.0", "1.0.1", "1.0.0", "1.0.1", "1.1.1"]
    assert result["history"] == [
        ["install", "ops", "latest"],
        ["user", "ops", "1.0.0"],
        ["user", "ops", "latest"],
    ]


# --- 5. four processes installing and moving pins at once ---------------------------------------

PER_WORKER = 50


async def _installs_scenario(db: Path, tmp_path: Path, spawn: Spawn) -> None:
    barrier = tmp_path / "go"
    async with packrun.open_runtime(url(db), refresh_interval=0.1) as early:
        for version in ["1.0.0", "1.0.1", "1.1.0"]:
            await early.publish(sample(version))
        workers = [
            spawn(
                {
                    "mode": "installs",
                    "db": str(db),
                    "barrier": str(barrier),
                    "worker": n,
                    "count": PER_WORKER,
                    "pack": "acme",
                    "first_pin": "1.0.0",
                    "even_pin": "latest",
                    "odd_pin": "1.0.1",
                }
            )
            for n in range(4)
        ]
        for worker in workers:
            await anyio.to_thread.run_sync(worker.wait_event, "ready")
        barrier.touch()
        results = [await anyio.to_thread.run_sync(worker.result) for worker in workers]
        ids = sorted(i for r in results for i in r["installed"])
        assert len(ids) == len(set(ids)) == 4 * PER_WORKER

        # The store: every installation, with its install event and its two pin moves, in order.
        with raw(db) as conn:
            stored = dict(conn.execute("SELECT id, pin FROM installations").fetchall())
            events: dict[str, list[tuple[str, str, str | None, str, str | None]]] = {}
            for iid, origin, actor, from_pin, to_pin, to_version in conn.execute(
                "SELECT installation_id, origin, actor, from_pin, to_pin, to_version "
                "FROM pin_events ORDER BY seq"
            ):
                events.setdefault(iid, []).append((origin, actor, from_pin, to_pin, to_version))
        assert sorted(stored) == ids
        assert sorted(events) == ids
        for iid in ids:
            n, i = int(iid[1]), int(iid.split("-")[1])
            final_pin, final_version = ("latest", "1.1.0") if i % 2 == 0 else ("1.0.1", "1.0.1")
            assert stored[iid] == final_pin
            assert events[iid] == [
                ("install", f"installer-{n}", None, "1.1.0", "1.1.0"),
                ("user", f"ops-{n}", "1.1.0", "1.0.0", "1.0.0"),
                ("user", f"ops-{n}", "1.0.0", final_pin, final_version),
            ], iid

        # A fresh runtime resolves every one of them, with the history recorded.
        async with packrun.open_runtime(url(db), refresh_interval=0) as fresh:
            assert sorted(i.id for i in fresh.installations()) == ids
            answers = {iid: fresh.resolve(iid).version for iid in ids}
            for iid in ids:
                expected = "1.1.0" if int(iid.split("-")[1]) % 2 == 0 else "1.0.1"
                assert answers[iid] == expected, iid
                assert [e.origin for e in (await fresh.history(iid))] == ["install", "user", "user"]

        # The runtime that was open all along caught up through the change log, identically.
        await early.refresh()
        assert sorted(i.id for i in early.installations()) == ids
        assert {iid: early.resolve(iid).version for iid in ids} == answers
        assert [len(await early.history(iid)) for iid in ids] == [3] * len(ids)
    check_store(db)


def test_four_processes_installing_and_moving_pins_leave_a_consistent_store(
    tmp_path: Path, spawn: Spawn
) -> None:
    anyio.run(_installs_scenario, tmp_path / "state.db", tmp_path, spawn)
