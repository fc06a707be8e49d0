"""Retention of the fleet's event log: old events are pruned by ``gc`` in batches, cursors stay
valid (a reader resuming inside the pruned range gets the events still kept, once each), and
sequence numbers are never given again."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import packrun
from packrun._cli import main

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
KEEP = packrun.Retention(ended_runs=1e9, change_log=1e9, pin_events=1e9)


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def cursors(rt: packrun.Runtime, since: int = 0) -> list[int]:
    return [e.cursor async for e in rt.events(since=since)]


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[packrun.Runtime]:
    async with packrun.open_runtime(
        store_url,
        refresh_interval=0,
        retention=KEEP,
        in_process={"vendor", "custom"},
    ) as opened:
        yield opened


async def test_gc__prunes_old_events_keeps_recent_ones_and_cursors_resume(
    rt: packrun.Runtime,
) -> None:
    for version in ("1.0.0", "1.0.1", "1.1.0"):
        await rt.publish(dist(version))
    await rt.install("inst", "acme", pin="1.0.0", actor="ops")
    old = await cursors(rt)
    assert len(old) >= 4
    await anyio.sleep(0.3)
    split = time.time()
    await anyio.sleep(0.3)
    await rt.set_pin("inst", "1.0.1", actor="ops")
    await rt.set_pin("inst", "1.1.0", actor="ops")
    everything = await cursors(rt)
    recent = everything[len(old) :]
    assert len(recent) == 2

    # Events older than the retention go; the newer ones stay. Within it, nothing goes.
    store = rt._store
    policy = dataclasses.replace(KEEP, event_log=1.0)
    assert (await store.gc(policy, now=split - 10)).log_events == 0
    dry = await store.gc(policy, dry_run=True, now=split + 1.0, batch=2)
    assert dry.log_events == len(old)
    done = await store.gc(policy, now=split + 1.0, batch=2, pause=0)
    assert dataclasses.replace(dry, dry_run=False) == done
    assert await store.gc(policy, dry_run=True, now=split + 1.0) == packrun.GcReport(dry_run=True)
    assert await cursors(rt) == recent

    # A reader whose cursor falls in the pruned range gets the events still kept, exactly once.
    assert await cursors(rt, since=old[1]) == recent
    assert await cursors(rt, since=old[-1]) == recent
    assert await cursors(rt, since=recent[0]) == recent[1:]

    # Pruning every event gives no cursor again: the next event comes after all the old ones.
    assert (await store.gc(policy, now=time.time() + 10)).log_events == 2
    assert await cursors(rt, since=old[1]) == []
    await rt.set_pin("inst", "1.0.0", actor="ops")
    [latest] = await cursors(rt, since=old[1])
    assert latest > recent[-1]


async def test_gc__a_pruned_dedupe_key_may_be_recorded_again(rt: packrun.Runtime) -> None:
    store = rt._store
    blocked = ("update_blocked", "acme", "default", "{}", "blocked:inst:1.1.0:minor")
    await store.append_events([blocked])
    await store.append_events([blocked])
    [first] = await cursors(rt)
    policy = dataclasses.replace(KEEP, event_log=1.0)
    assert (await store.gc(policy, now=time.time() + 10)).log_events == 1
    await store.append_events([blocked])
    await store.append_events([blocked])
    [again] = await cursors(rt)
    assert again > first


def _gc(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["gc", *argv], stdout=out, stderr=err)
    assert err.getvalue() == ""
    return code, out.getvalue()


def test_cli_gc__keep_log_prunes_the_event_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def build() -> None:
        async with packrun.open_runtime(url, refresh_interval=0) as rt:
            await rt.publish(dist("1.0.0"))
            await rt.install("inst", "acme", pin="1.0.0")

    async def kept() -> list[int]:
        async with packrun.open_runtime(url, refresh_interval=0) as rt:
            return await cursors(rt)

    anyio.run(build)
    before = anyio.run(kept)
    assert before
    # By default the log is kept a year: nothing goes.
    code, out = _gc("--dry-run", "--store", url, "--json")
    assert (code, json.loads(out)["log_events"]) == (0, 0)
    time.sleep(0.2)
    code, out = _gc("--dry-run", "--keep-log", "0.000001", "--store", url, "--json")
    dry = json.loads(out)
    assert (code, dry["dry_run"], dry["log_events"]) == (0, True, len(before))
    code, out = _gc("--keep-log", "0.000001", "--store", url)
    assert code == 0
    assert f"{len(before)} event-log event(s)" in out
    assert anyio.run(kept) == []
    code, out = _gc("--keep-log", "0.000001", "--store", url, "--json")
    assert json.loads(out)["log_events"] == 0
