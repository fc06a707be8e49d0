"""Fleet rules with real processes on a real SQLite file and a real PostgreSQL schema.

* A rollback holds: an executor process that only keeps its runtime open on the store (its refresh
  loop applying update policies to what others changed) does not undo it.
* ``published_at`` follows commit order: processes publishing at once get times in the order their
  rows committed (read from the store's change log), because the time is taken inside the write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import pytest
from _worker_process import WorkerProcess, spawning

import packrun
from _store_sql import execute

WORKER = Path(__file__).resolve().with_name("_fleet_worker.py")
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


class Worker(WorkerProcess):
    script = WORKER
    timeout = 60.0


Spawn: TypeAlias = Callable[[dict[str, Any]], Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    with spawning(Worker, tmp_path) as start:
        yield start


def sample(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def _prepare(url: str) -> None:
    async with packrun.open_runtime(url) as rt:
        for version in ("1.0.0", "1.0.1", "1.1.0"):
            await rt.publish(sample(version))
        await rt.install("crm", "acme", pin="1.0.0", policy="auto_minor")
        assert rt.resolve("crm").version == "1.1.0"


async def _rollback(url: str) -> None:
    async with packrun.open_runtime(url) as rt:
        await rt.rollback("crm", "1.0.0", actor="ops")


async def _state(url: str) -> tuple[str, list[tuple[str, str | None]]]:
    async with packrun.open_runtime(url) as rt:
        return rt.resolve("crm").version, [
            (e.origin, e.to_version) for e in (await rt.history("crm"))
        ]


def test_an_idle_executor_process__does_not_undo_a_rollback(
    shared_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    anyio.run(_prepare, shared_url)
    stop = tmp_path / "stop"
    idle = [
        spawn({"mode": "idle", "url": shared_url, "iid": "crm", "stop": str(stop)})
        for _ in range(2)
    ]
    for worker in idle:
        worker.wait_event("ready")
        worker.wait_event("seen", version="1.1.0")
    anyio.run(_rollback, shared_url)
    for worker in idle:
        worker.wait_event("seen", version="1.0.0")  # its refresh read the rollback ...
    stop.touch()
    for worker in idle:
        worker.result()  # ... and closing waited for that refresh's policy step
    version, history = anyio.run(_state, shared_url)
    assert version == "1.0.0"
    assert history == [("install", "1.0.0"), ("policy", "1.1.0"), ("rollback", "1.0.0")]
    for worker in idle:
        assert all(e.get("version") != "1.1.0" for e in worker.history[2:]), worker.describe()


def test_published_at__follows_commit_order_under_concurrent_publishes(
    shared_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    barrier = tmp_path / "go"
    count = 8
    workers = [
        spawn(
            {
                "mode": "publish",
                "url": shared_url,
                "pack": f"p{n}",
                "count": count,
                "barrier": str(barrier),
            }
        )
        for n in range(4)
    ]
    for worker in workers:
        worker.wait_event("ready")
    barrier.touch()
    for worker in workers:
        worker.result()
    # Commit order: the change log, one line per publish, written in the publish's transaction.
    # Each worker publishes its own pack's versions in ascending order, one after the other.
    log = [
        key
        for (key,) in execute(
            shared_url, "SELECT key FROM changes WHERE kind = 'pack' ORDER BY seq"
        )
    ]
    assert len(log) == 4 * count
    times = {
        (pack, version): at if isinstance(at, datetime) else datetime.fromisoformat(at)
        for pack, version, at in execute(
            shared_url, "SELECT pack_id, version, published_at FROM catalog"
        )
    }
    published: dict[str, int] = {}
    in_commit_order = []
    for pack in log:
        k = published.get(pack, 0)
        published[pack] = k + 1
        in_commit_order.append(times[(pack, f"1.{k}.0")])
    assert in_commit_order == sorted(in_commit_order)
