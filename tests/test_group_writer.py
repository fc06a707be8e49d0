"""Run starts on SQLite go through a writer thread of the store's own, in groups (group commit).

The writer takes every start queued since its previous transaction and writes them in one; a
start returns only once its group has committed, so a run's binding is durable when ``run()``
returns. These tests drive the writer directly (deterministic grouping, errors) and a real SQLite
store with many concurrent runs; tests/integration/test_runs_processes.py starts bursts of runs
from several processes on one file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

import packrun
from packrun._stores._writer import GroupWriter
from packrun.errors import StoreError

pytestmark = pytest.mark.anyio

TRUSTED = frozenset({"vendor", "custom"})
TIMEOUT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_items_queued_while_a_group_is_written__share_the_next_group() -> None:
    entered, release = threading.Event(), threading.Event()
    groups: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        groups.append(list(items))
        if len(groups) == 1:
            entered.set()
            release.wait(TIMEOUT)
        return [item * 10 for item in items]

    writer: GroupWriter[int, int] = GroupWriter(write, "test-writer")
    results: dict[int, int] = {}

    async def submit(item: int) -> None:
        results[item] = await writer.submit(item)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, 0)
            await anyio.to_thread.run_sync(entered.wait, TIMEOUT)  # the first group is writing
            for item in range(1, 10):
                tg.start_soon(submit, item)
            await anyio.wait_all_tasks_blocked()
            release.set()
    finally:
        release.set()
        await anyio.to_thread.run_sync(writer.stop)
    assert groups == [[0], list(range(1, 10))]
    assert results == {item: item * 10 for item in range(10)}
    assert (writer.groups, writer.items) == (2, 10)


async def test_an_error_of_a_write__reaches_every_waiter_of_its_group_and_no_other() -> None:
    calls = 0

    def write(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if "bad" in items:
            raise StoreError("the store failed")
        return items

    writer: GroupWriter[str, str] = GroupWriter(write, "test-writer")
    try:
        with pytest.raises(StoreError, match="the store failed"):
            await writer.submit("bad")
        assert await writer.submit("good") == "good"  # the writer goes on
    finally:
        await anyio.to_thread.run_sync(writer.stop)
    assert calls == 2


async def test_a_stopped_writer__starts_again_on_the_next_item() -> None:
    writer: GroupWriter[int, int] = GroupWriter(lambda items: items, "test-writer")
    assert await writer.submit(1) == 1
    await anyio.to_thread.run_sync(writer.stop)
    assert await writer.submit(2) == 2
    await anyio.to_thread.run_sync(writer.stop)
    assert (writer.groups, writer.items) == (2, 2)


def blocked_writer() -> tuple[GroupWriter[int, int], threading.Event, threading.Event]:
    """A writer whose writes wait for ``release`` (``entered`` is set when one starts)."""
    entered, release = threading.Event(), threading.Event()

    def write(items: list[int]) -> list[int]:
        entered.set()
        release.wait(TIMEOUT)
        return [item * 10 for item in items]

    return GroupWriter(write, "test-writer"), entered, release


async def test_a_caller_cancelled_during_its_write__learns_the_result_then_is_cancelled() -> None:
    writer, entered, release = blocked_writer()
    seen: list[object] = []
    try:
        with anyio.move_on_after(TIMEOUT) as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_then_release() -> None:
                    await anyio.to_thread.run_sync(entered.wait, TIMEOUT)
                    scope.cancel()  # while the item is being written
                    await anyio.sleep(0.05)  # the cancellation is delivered meanwhile
                    release.set()

                tg.start_soon(cancel_then_release)
                seen.append(await writer.submit(4))  # written: the caller learns of it
                seen.append("before the next await")
                await anyio.sleep(0)  # the cancellation reaches the caller here
                seen.append("never")
        assert scope.cancelled_caught
    finally:
        release.set()
        await anyio.to_thread.run_sync(writer.stop)
    assert seen == [40, "before the next await"]


async def test_a_native_asyncio_timeout_during_a_write__still_times_out_after_it() -> None:
    writer, entered, release = blocked_writer()
    seen: list[object] = []
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, release.set)  # from the loop: released after the timeout fired
    try:

        async def timed() -> None:
            async with asyncio.timeout(0.05):
                seen.append(await writer.submit(7))
                await asyncio.sleep(0)
                seen.append("never")

        with pytest.raises(TimeoutError):
            await timed()
        assert entered.is_set()
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # nothing left pending
        await asyncio.sleep(0)  # and no cancellation is delivered later
    finally:
        release.set()
        await anyio.to_thread.run_sync(writer.stop)
    assert seen == [70]


async def test_many_concurrent_runs_on_sqlite__each_durable_when_run_returns__counts_exact(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    count = 200
    missing: list[str] = []
    opened = 0
    all_open, may_end = anyio.Event(), anyio.Event()
    async with packrun.open_runtime(f"sqlite:///{db}", in_process=TRUSTED) as rt:
        await rt.publish(
            Path(__file__).parent.parent / "bundles/acme/1.0.0/dist/acme-1.0.0.bundle.tar.gz"
        )
        await rt.install("acme-prod", "acme")

        async def one(n: int) -> None:
            nonlocal opened
            async with rt.run("acme-prod", run_id=f"r-{n}") as run:
                reader = sqlite3.connect(db, timeout=TIMEOUT)
                try:
                    row = reader.execute(
                        "SELECT owner FROM runs WHERE run_id = ? AND ended_at IS NULL",
                        (run.run_id,),
                    ).fetchone()
                finally:
                    reader.close()
                if row is None or row[0] != rt.owner:
                    missing.append(run.run_id)
                opened += 1
                if opened == count:
                    all_open.set()
                await may_end.wait()

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for n in range(count):
                    tg.start_soon(one, n)
                await all_open.wait()
                assert rt.in_flight("acme", "1.0.0") == count
                assert rt.in_flight_for("acme-prod") == count
                may_end.set()
        assert missing == []
        assert rt.in_flight("acme", "1.0.0") == 0
        assert rt.in_flight_for("acme-prod") == 0
        stats = rt.stats()
        assert (stats.runs_started, stats.runs_in_flight) == (count, 0)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT count(*), count(ended_at) FROM runs").fetchone()
    finally:
        conn.close()
    assert rows == (count, count)
