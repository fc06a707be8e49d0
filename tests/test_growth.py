"""Growth over time: retention and ``gc``, paged history, start-up that loads what resolution needs,
and refreshes that read only what changed (never the echo of the runtime's own writes).

Costs are asserted by counting what is read from the store (rows, change-log lines, events),
never by timing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import packrun
from _store_sql import execute, split, undo_growth
from packrun._cli import main
from packrun._runtime import _now
from packrun._stores import RunRecord, Store, _postgres, _sqlite, kept_events, open_store

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
KEEP_ALL = packrun.Retention(ended_runs=1e9, change_log=1e9, pin_events=1e9)


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def catalog(rt: packrun.Runtime) -> None:
    for version in ("1.0.0", "1.0.1", "1.1.0", "1.2.0"):
        await rt.publish(dist(version))


DIGEST = packrun.read_bundle(dist("1.0.0")).digest


def record(run_id: str, workflow_id: str | None = None) -> RunRecord:
    """The binding of a run of ``inst`` on acme 1.0.0."""
    return RunRecord(run_id, "inst", "acme", "1.0.0", DIGEST, 2, "vendor", workflow_id, _now())


async def start(store: Store, owner: str, *run_ids: str) -> None:
    now = time.time()
    await store.start_runs([record(r) for r in run_ids], owner, now, now + 600)


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[packrun.Runtime]:
    async with packrun.open_runtime(
        store_url, refresh_interval=0, retention=KEEP_ALL, in_process={"vendor", "custom"}
    ) as opened:
        await catalog(opened)
        await opened.install("inst", "acme", pin="1.0.0", actor="ops")
        yield opened


async def moves(rt: packrun.Runtime, *pins: str) -> None:
    for pin in pins:
        await rt.set_pin("inst", pin, actor=f"by-{pin}")


# --- history --------------------------------------------------------------------------------------


async def test_history__pages_back_from_the_newest_move_with_a_cursor(rt: packrun.Runtime) -> None:
    await moves(rt, "1.0.1", "1.1.0", "1.2.0", "1.0.0", "1.1.0")
    everything = await rt.history("inst")
    assert [e.to_pin for e in everything] == ["1.0.0", "1.0.1", "1.1.0", "1.2.0", "1.0.0", "1.1.0"]
    assert everything.before is None

    pages, before = [], None
    while True:
        page = await rt.history("inst", limit=4, before=before)
        pages.append([e.to_pin for e in page])
        if page.before is None:
            break
        before = page.before
    # Newest first, page by page; each page oldest first, as the whole history is.
    assert pages == [["1.1.0", "1.2.0", "1.0.0", "1.1.0"], ["1.0.0", "1.0.1"]]
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    with pytest.raises(packrun.InvalidArgument, match="limit"):
        await rt.history("inst", limit=0)
    with pytest.raises(packrun.InvalidArgument, match="before"):
        await rt.history("inst", before=-3)


async def test_start_up__loads_each_installations_last_event_and_hold_not_its_history(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url, refresh_interval=0, retention=KEEP_ALL) as rt:
        await catalog(rt)
        await rt.install("inst", "acme", pin="1.0.0", policy="auto_patch", actor="ops")
        for _ in range(3):
            await rt.set_pin("inst", "1.1.0", actor="ops")
            await rt.rollback("inst", to="1.0.1", actor="ops")
        await rt.set_pin("inst", "1.0.0", actor="alice")  # a move that keeps the hold
        state = await rt._store.load()
        # The last event and the rollback that set the hold: two, however long the history.
        kept = sorted(state.events, key=lambda e: e.seq)
        assert [(e.origin, e.actor, e.from_version) for e in kept] == [
            ("rollback", "ops", "1.1.0"),
            ("user", "alice", "1.0.1"),
        ]
        assert len(await rt.history("inst")) > 6
        explained = rt.explain("inst")
        if store_url != "memory:":  # a runtime that loads anew says the same
            async with packrun.open_runtime(store_url, refresh_interval=0) as fresh:
                again = fresh.explain("inst")
                assert again.last_event == explained.last_event
                assert again.holding == explained.holding
        assert "rolled back from 1.1.0 by ops" in (explained.holding or "")


# --- refreshes ------------------------------------------------------------------------------------


async def test_refresh__with_nothing_changed_reads_no_run_however_many_are_in_flight(
    rt: packrun.Runtime,
) -> None:
    store = rt._store
    await start(store, "elsewhere", *(f"r-{i}" for i in range(50)))
    await rt.refresh()
    assert rt.in_flight("acme", "1.0.0") == 50
    read = rt._remote_runs.rows_read
    for _ in range(3):
        await rt.refresh()
    assert rt._remote_runs.rows_read == read  # nothing changed: no run read
    await store.end_runs([(f"r-{i}", frozenset()) for i in range(10)], "elsewhere", _now())
    await rt.refresh()
    assert rt.in_flight("acme", "1.0.0") == 40
    assert rt._remote_runs.rows_read == read + 10  # exactly what changed
    await rt.refresh()
    assert rt._remote_runs.rows_read == read + 10


async def test_refresh__a_lease_that_runs_out_drops_its_run_without_a_read(
    rt: packrun.Runtime,
) -> None:
    now = time.time()
    await rt._store.start_runs([record("short")], "elsewhere", now, now + 0.5)
    await rt.refresh()
    assert rt.in_flight_for("inst") == 1
    read = rt._remote_runs.rows_read
    deadline = time.time() + 10
    while rt.in_flight_for("inst") and time.time() < deadline:
        await rt.refresh()
    assert rt.in_flight_for("inst") == 0
    assert rt._remote_runs.rows_read == read


async def test_refresh__reads_no_echo_of_its_own_writes(store_url: str) -> None:
    async with packrun.open_runtime(store_url, refresh_interval=0) as rt:
        await catalog(rt)
        for i in range(20):
            await rt.install(f"i-{i}", "acme", pin="1.0.0")
        batch = await rt._store.changes_since(0, rt.owner)
        assert batch.changes == []
        assert batch.head >= 24
        assert [c.key for c in (await rt._store.changes_since(0, "another")).changes][-1] == "i-19"
        reloaded: list[str] = []
        real = rt._reload_installation

        async def spy(installation_id: str) -> None:
            reloaded.append(installation_id)
            await real(installation_id)

        rt._reload_installation = spy  # type: ignore[method-assign]
        await rt.publish(dist("2.0.0"))  # its catch-up read used to reload every installation
        await rt.refresh()
        assert reloaded == []


async def test_refresh__another_runtimes_writes_still_arrive(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await catalog(a)
        await a.install("inst", "acme", pin="1.0.0")
        await b.refresh()
        await a.set_pin("inst", "1.1.0", actor="ops")
        await b.refresh()
        assert b.resolve("inst").version == "1.1.0"
        assert b.explain("inst").last_event == a.explain("inst").last_event


# --- retention ------------------------------------------------------------------------------------


async def test_a_runtime_behind_the_pruned_horizon__reloads_in_full_and_answers_right(
    shared_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await catalog(a)
        await a.install("inst", "acme", pin="1.0.0")
        await b.refresh()
        await a.set_pin("inst", "1.2.0", actor="ops")
        await a.install("late", "acme", pin="1.0.1")
        await a.retire("acme", "1.1.0")
        pruned = await a._store.gc(
            dataclasses.replace(KEEP_ALL, change_log=1.0), now=time.time() + 60
        )
        assert pruned.changes > 0
        with caplog.at_level(logging.INFO, logger="packrun"):
            await b.refresh()
        assert "fell behind the change log" in caplog.text
        assert b.resolve("inst") == a.resolve("inst")
        assert b.resolve("late").version == "1.0.1"
        assert [e.state for e in b.versions("acme")] == [e.state for e in a.versions("acme")]
        assert b.explain("inst").last_event == a.explain("inst").last_event
        await a.set_pin("inst", "1.0.0")
        await b.refresh()  # after the reload, incremental again
        assert b.resolve("inst").version == "1.0.0"


async def test_gc__keeps_what_pins_runs_in_flight_and_resumes_need(
    rt: packrun.Runtime, store_url: str
) -> None:
    store = rt._store
    await rt.set_policy("inst", "auto_patch")
    await moves(rt, "1.1.0")
    await rt.rollback("inst", to="1.0.1", actor="ops")  # the hold: kept with the last event
    await moves(rt, "1.0.0", "1.0.1")
    await start(store, rt.owner, "in-flight", "ended")
    await store.end_runs([("ended", frozenset())], rt.owner, _now())

    # Within retention: nothing goes, and an ended run resumes with its binding.
    assert await store.gc(KEEP_ALL) == packrun.GcReport()
    await rt.set_pin("inst", "1.2.0")
    async with rt.run("inst", run_id="ended") as resumed:
        assert resumed.resumed
        assert resumed.version == "1.0.0"

    # Everything older than its retention: events but the kept ones, the ended runs.
    await rt.rollback("inst", to="1.1.0", actor="ops")  # the hold: kept with the last move
    await rt.set_pin("inst", "1.0.0", actor="alice")
    held = rt.explain("inst")
    everything = (await rt.history("inst")).events
    await rt._tracker.flush_ends()
    await anyio.sleep(0.3)
    later = time.time()
    tight = packrun.Retention(ended_runs=0.2, change_log=0.2, pin_events=0.2)
    dry = await store.gc(tight, dry_run=True, now=later)
    done = await store.gc(tight, now=later)
    assert dataclasses.replace(dry, dry_run=False) == done
    assert done.ended_runs == 1
    assert done.pin_events > 0
    assert done.changes > 0
    assert await store.gc(tight, dry_run=True, now=later) == packrun.GcReport(dry_run=True)

    kept = (await rt.history("inst")).events
    assert list(kept) == kept_events(rt.installation("inst"), everything)
    assert held.holding is not None
    assert kept[-1] == everything[-1]
    assert len(kept) == 2  # the last move, and the manual move down that holds the policy
    assert rt.resolve("inst").version == "1.0.0"
    # The run in flight (its lease live) kept its row; it is not pruned.
    live = {r.record.run_id for r in await store.live_runs(time.time())}
    assert "in-flight" in live
    assert rt.explain("inst").holding == held.holding
    if store_url != "memory:":  # a runtime that loads the pruned store says the same
        async with packrun.open_runtime(store_url, refresh_interval=0) as fresh:
            assert fresh.explain("inst").holding == held.holding
            assert fresh.explain("inst").last_event == rt.explain("inst").last_event
    # The newest change-log line stays: a runtime's position is never ahead of the log.
    assert (await store.changes_since(0, None)).head >= 1
    # A run pruned after its retention is a new run when its id comes again.
    async with rt.run("inst", run_id="ended") as again:
        assert not again.resumed
        assert again.version == "1.0.0"


async def test_gc__keeps_the_tools_workflows_were_seen_to_use(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        now = time.time()
        await store.start_runs([record("w-1", "wf")], "me", now, now + 60)
        await store.end_runs([("w-1", frozenset({"list_contacts"}))], "me", _now())
        tools = (await store.workflow_tools("inst")).observed
        assert tools == {"wf": frozenset({"list_contacts"})}
        report = await store.gc(
            packrun.Retention(ended_runs=1.0), now=time.time() + 10, batch=1, pause=0
        )
        assert report.ended_runs == 1
        assert (await store.workflow_tools("inst")).observed == tools
        assert (await store.all_workflow_tools())["inst"].observed == tools
    finally:
        await store.close()


async def test_gc__deletes_in_batches_of_the_size_given(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        await start(store, "me", *(f"r-{i}" for i in range(25)))
        await store.end_runs([(f"r-{i}", frozenset()) for i in range(25)], "me", _now())
        statements: list[str] = []
        conn = store._conn  # type: ignore[attr-defined]
        conn.set_trace_callback(statements.append)
        report = await store.gc(
            dataclasses.replace(KEEP_ALL, ended_runs=1.0), now=time.time() + 10, batch=10
        )
        conn.set_trace_callback(None)
        assert report.ended_runs == 25
        # Three transactions of at most 10 rows each (10, 10, 5), never one long one.
        deletes = [s for s in statements if s.startswith("DELETE FROM runs")]
        assert len(deletes) == 3
        assert statements.count("BEGIN IMMEDIATE") >= 3
    finally:
        await store.close()


def test_the_retention_policy__refuses_what_is_not_a_duration() -> None:
    with pytest.raises(packrun.InvalidArgument, match="ended_runs"):
        packrun.Retention(ended_runs=0)
    with pytest.raises(packrun.InvalidArgument, match="batch"):
        packrun.Retention(batch=0)
    with pytest.raises(packrun.InvalidArgument, match="retention"):
        packrun.open_runtime("memory:", retention={"ended_runs": 1})  # type: ignore[arg-type]


async def test_the_background_pass__prunes_on_its_interval(store_url: str) -> None:
    fast = packrun.Retention(ended_runs=1e-3, change_log=1e9, pin_events=1e9, interval=0.05)
    async with packrun.open_runtime(store_url, refresh_interval=0, retention=fast) as rt:
        await start(rt._store, rt.owner, "r-1")
        await rt._store.end_runs([("r-1", frozenset())], rt.owner, _now())

        async def left() -> int:  # counted as of an hour from now: 1 while the row exists
            return (await rt._store.gc(fast, dry_run=True, now=time.time() + 3600)).ended_runs

        assert await left() == 1
        deadline = time.time() + 20
        while await left() and time.time() < deadline:
            await anyio.sleep(0.05)
        assert await left() == 0  # pruned by the runtime itself, nobody called gc


# --- the CLI --------------------------------------------------------------------------------------


def cli(*argv: str) -> Any:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--json"], stdout=out, stderr=err)
    assert (code, err.getvalue()) == (0, ""), out.getvalue()
    return json.loads(out.getvalue())


def test_cli_gc__dry_run_counts_what_the_pass_then_prunes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def build() -> None:
        async with packrun.open_runtime(url, refresh_interval=0) as rt:
            await catalog(rt)
            await rt.install("inst", "acme", pin="1.0.0")
            await moves(rt, "1.0.1", "1.1.0")
            await start(rt._store, rt.owner, "r-1")
            await rt._store.end_runs([("r-1", frozenset())], rt.owner, _now())

    anyio.run(build)
    # Retention of 0.000001 days: everything but what is kept for ever is older than that.
    tiny = ("--keep-runs", "0.000001", "--keep-changes", "0.000001", "--keep-events", "0.000001")
    time.sleep(0.2)
    dry = cli("gc", "--dry-run", "--store", url, *tiny)
    assert (dry["dry_run"], dry["ended_runs"], dry["pin_events"]) == (True, 1, 2)
    done = cli("gc", "--store", url, *tiny)
    assert {**done, "dry_run": True} == dry
    assert cli("gc", "--store", url, *tiny) == {
        "dry_run": False,
        "ended_runs": 0,
        "pin_events": 0,
        "changes": 0,
        "log_events": 0,
    }
    history = cli("history", "inst", "--store", url)
    assert [e["to_pin"] for e in history] == ["1.1.0"]  # the last move is kept


def test_cli_history__pages_with_limit_and_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def build() -> None:
        async with packrun.open_runtime(url, refresh_interval=0) as rt:
            await catalog(rt)
            await rt.install("inst", "acme", pin="1.0.0")
            await moves(rt, "1.0.1", "1.1.0", "1.2.0")

    anyio.run(build)
    newest = cli("history", "inst", "--limit", "2", "--store", url)
    assert [e["to_pin"] for e in newest] == ["1.1.0", "1.2.0"]
    older = cli("history", "inst", "--before", str(newest[0]["seq"]), "--store", url)
    assert [e["to_pin"] for e in older] == ["1.0.0", "1.0.1"]
    out = io.StringIO()
    main(["history", "inst", "--limit", "2", "--store", url], stdout=out, stderr=io.StringIO())
    assert f"--before {newest[0]['seq']}" in out.getvalue()


# --- migration ------------------------------------------------------------------------------------


async def test_a_store_of_the_previous_schema__migrates_with_its_history_and_usage(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url, refresh_interval=0) as rt:
        await catalog(rt)
        await rt.install("inst", "acme", pin="1.0.0", policy="auto_patch", actor="ops")
        await rt.set_pin("inst", "1.1.0", actor="ops")
        await rt.rollback("inst", to="1.0.1", actor="ops")
        await rt.set_pin("inst", "1.0.0", actor="alice")
        now = time.time()
        await rt._store.start_runs([record("w-1", "wf")], rt.owner, now, now + 60)
        await rt._store.end_runs([("w-1", frozenset({"list_contacts"}))], rt.owner, _now())
        history = (await rt.history("inst")).events
        explained = rt.explain("inst")
    undo_growth(shared_url)
    if shared_url.startswith("sqlite:///"):
        before = _sqlite.MIGRATIONS.index(_sqlite.MIGRATION_GROWTH)
        execute(shared_url, f"PRAGMA user_version = {before}")
    else:
        execute(
            shared_url,
            "UPDATE packrun_meta SET value = %s WHERE key = 'schema_version'",
            (str(_postgres.MIGRATIONS.index(_postgres.MIGRATION_GROWTH)),),
        )
    async with packrun.open_runtime(shared_url, refresh_interval=0) as rt:
        assert (await rt.history("inst")).events == history
        again = rt.explain("inst")
        assert again.last_event == explained.last_event
        assert again.holding == explained.holding
        usage = await rt._store.workflow_tools("inst")
        assert usage.observed == {"wf": frozenset({"list_contacts"})}
        # The migrated store keeps working: runs are stamped, pruning finds what it may.
        await start(rt._store, "elsewhere", "r-2")
        await rt.refresh()
        assert rt.in_flight_for("inst") == 1
        assert (await rt.gc(dry_run=True)).ended_runs == 0


async def test_postgres__a_run_committed_after_a_later_one_is_still_read(postgres_url: str) -> None:
    """Transaction ids commit out of order: a run written by a transaction that began first but
    committed after another's (and after a refresh read that one) is read at the next refresh."""
    import psycopg
    from psycopg import sql

    async with packrun.open_runtime(postgres_url, refresh_interval=0) as rt:
        await catalog(rt)
        await rt.install("inst", "acme", pin="1.0.0")
        await rt.refresh()
        base, schema = split(postgres_url)
        slow = await psycopg.AsyncConnection.connect(base)
        try:
            await slow.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await slow.execute(
                "INSERT INTO runs (run_id, installation_id, pack_id, version, digest, contract, "
                "channel, workflow_id, started_at, owner, lease_until) VALUES ('slow', 'inst', "
                "'acme', '1.0.0', %s, 2, 'vendor', NULL, now(), 'elsewhere', "
                "extract(epoch FROM now()) + 600)",
                (DIGEST,),
            )  # left uncommitted for now
            await start(rt._store, "elsewhere", "quick")
            await rt.refresh()
            assert rt.in_flight_for("inst") == 1  # "quick" only: "slow" is not committed
            await slow.commit()
        finally:
            await slow.close()
        await rt.refresh()
        assert rt.in_flight_for("inst") == 2
        assert {r.record.run_id for r in rt._remote} == {"slow", "quick"}


async def test_refresh__concurrent_writers_runs_all_arrive_incrementally(shared_url: str) -> None:
    """Two runtimes start and end runs at once while a third refreshes all along: what it holds
    at the end is exactly the runs in flight, read without a full read after its first."""
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as reader,
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0) as b,
    ):
        await catalog(a)
        await a.install("inst", "acme", pin="1.0.0")
        await reader.refresh()
        done = anyio.Event()

        async def write(rt: packrun.Runtime, name: str) -> None:
            for n in range(30):
                await start(rt._store, name, f"{name}-{n}")
                if n % 3 == 0:
                    await rt._store.end_runs([(f"{name}-{n}", frozenset())], name, _now())

        async def read() -> None:
            while not done.is_set():
                await reader.refresh()
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writers:
                writers.start_soon(write, a, "wa")
                writers.start_soon(write, b, "wb")
            done.set()
        await reader.refresh()
        expected = {f"{w}-{n}" for w in ("wa", "wb") for n in range(30) if n % 3}
        assert {r.record.run_id for r in reader._remote} == expected
        assert reader._remote_runs.rows_read < 3 * len(expected) + 30


async def test_refresh__reads_no_run_of_its_own(rt: packrun.Runtime) -> None:
    """Its own starts, ends and lease renewals are not read back: it counts its runs itself."""
    async with rt.run("inst", run_id="mine"):
        await rt._tracker.flush_ends()
        await rt.refresh()
        await rt._store.renew_leases(rt.owner, ["mine"], time.time() + 600)
        await rt.refresh()
        assert rt.in_flight_for("inst") == 1
    await rt._tracker.flush_ends()
    await rt.refresh()
    assert rt._remote_runs.rows_read == 0
    assert rt.in_flight_for("inst") == 0
