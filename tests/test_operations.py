"""Operations (DESIGN.md section 19): what a runtime logs, how it rate-limits its warnings, and how
it says that it cannot refresh from its store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

import packrun
from _store_sql import execute

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def dist(pack: str, version: str) -> Path:
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


def fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {name: getattr(record, name, None) for name in names}


def info_records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "packrun" and r.levelno == logging.INFO and getattr(r, "event", None) == event
    ]


async def test_publish__logs_an_info_record_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="packrun")
    async with packrun.open_runtime("memory:") as rt:
        entry = await rt.publish(dist("acme", "1.0.0"))
    [record] = info_records(caplog, "publish")
    assert fields(record, "pack", "version", "channel", "digest") == {
        "pack": "acme",
        "version": "1.0.0",
        "channel": "vendor",
        "digest": entry.digest,
    }
    assert record.getMessage() == f"packrun published acme 1.0.0 (vendor, {entry.digest})"


async def test_pin_moves__install_update_policy_and_rollback__each_log_who_moved_what(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="packrun")
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("acme-prod", "acme", actor="ops")
        await rt.publish(dist("acme", "1.0.1"))
        await rt.set_policy("acme-prod", "auto_patch", actor="ops")  # the policy moves it
        await rt.rollback("acme-prod", to="1.0.0", actor="oncall")
    names = ("installation", "pack", "version", "from_version", "actor", "origin")
    moves = [fields(r, *names) for r in info_records(caplog, "pin_move")]
    assert moves == [
        {
            "installation": "acme-prod",
            "pack": "acme",
            "version": "1.0.0",
            "from_version": None,
            "actor": "ops",
            "origin": "install",
        },
        {
            "installation": "acme-prod",
            "pack": "acme",
            "version": "1.0.1",
            "from_version": "1.0.0",
            "actor": "policy:auto_patch",
            "origin": "policy",
        },
        {
            "installation": "acme-prod",
            "pack": "acme",
            "version": "1.0.0",
            "from_version": "1.0.1",
            "actor": "oncall",
            "origin": "rollback",
        },
    ]
    [policy] = info_records(caplog, "policy_set")
    assert fields(policy, "installation", "pack", "policy", "actor", "origin") == {
        "installation": "acme-prod",
        "pack": "acme",
        "policy": "auto_patch",
        "actor": "ops",
        "origin": "user",
    }


async def test_a_rollback_that_holds_the_policy__says_so_in_its_pin_move_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="packrun")
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("acme-prod", "acme", policy="auto_patch")
        await rt.publish(dist("acme", "1.0.1"))  # the policy moves it: no hold
        await rt.rollback("acme-prod", to="1.0.0", actor="oncall")
        await rt.set_policy("acme-prod", "auto_patch")  # ends the hold; the policy moves it again
    moves = info_records(caplog, "pin_move")
    assert [fields(r, "origin", "hold") for r in moves] == [
        {"origin": "install", "hold": None},
        {"origin": "policy", "hold": None},
        {"origin": "rollback", "hold": "1.0.1"},
        {"origin": "policy", "hold": None},
    ]
    assert (
        moves[2]
        .getMessage()
        .endswith("by oncall (rollback); its auto_patch policy holds below 1.0.1")
    )
    assert moves[1].getMessage().endswith("(policy)")


async def test_pin_move__that_does_not_happen__logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("acme-prod", "acme")
        caplog.set_level(logging.INFO, logger="packrun")
        await rt.set_pin("acme-prod", "latest", expect_pin="9.9.9")  # moved meanwhile: no move
    assert info_records(caplog, "pin_move") == []


async def test_a_store_that_goes_away__each_kind_of_warning_is_said_and_stats_show_staleness(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    shared_url = sqlite_url
    caplog.set_level(logging.INFO, logger="packrun")
    async with packrun.open_runtime(shared_url, refresh_interval=0.02) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("acme-prod", "acme")
        assert rt.stats().refresh_failures == 0
        async with rt.run("acme-prod", run_id="r-1", auth=packrun.Auth.api_key("k")) as run:
            await run.call("list_contacts", {"limit": 1})
            execute(shared_url, "ALTER TABLE changes RENAME TO changes_away")  # refreshes fail
            execute(shared_url, "ALTER TABLE runs RENAME TO runs_away")  # and so do run ends
        with anyio.fail_after(20):
            while rt.stats().refresh_failures < 3:
                await anyio.sleep(0.01)
            while "could not record the end of 1 run(s)" not in caplog.text:
                await anyio.sleep(0.01)
        stale = rt.stats()
        assert stale.seconds_since_refresh > 0
        with anyio.fail_after(20):
            while rt.stats().refresh_failures < stale.refresh_failures + 2:
                await anyio.sleep(0.01)
        assert rt.stats().seconds_since_refresh > stale.seconds_since_refresh  # and growing
        warned = [r for r in caplog.records if r.name == "packrun" and r.levelno == logging.WARNING]
        kinds = [str(getattr(r, "packrun_warning", None)) for r in warned]
        # one of each kind, however many times each failed: the run-end warning hides no refresh
        assert sorted(kinds) == ["refresh", "run ends"]
        [refresh] = [r for r in warned if getattr(r, "packrun_warning", None) == "refresh"]
        assert "could not refresh from" in refresh.getMessage()
        assert "stale" in refresh.getMessage()
        assert rt.resolve("acme-prod").version == "1.0.0"  # answers from memory meanwhile
        execute(shared_url, "ALTER TABLE changes_away RENAME TO changes")
        execute(shared_url, "ALTER TABLE runs_away RENAME TO runs")
        with anyio.fail_after(20):
            while rt.stats().refresh_failures:
                await anyio.sleep(0.01)
        assert "refreshed from" in caplog.text
        assert " again after " in caplog.text


# --- backends -----------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_trio__memory_and_sqlite_stores__publish_install_and_run(
    anyio_backend: str, store: str, tmp_path: Path
) -> None:
    url = "memory:" if store == "memory" else f"sqlite:///{tmp_path / 'state.db'}"
    async with packrun.open_runtime(url) as rt:
        await rt.publish(dist("acme", "1.0.0"))
        await rt.install("acme-prod", "acme")
        async with rt.run("acme-prod", auth=packrun.Auth.api_key("k")) as run:
            out = await run.call("list_contacts", {"limit": 1})
    assert len(out["contacts"]) == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio__postgresql_store__refused_with_store_error_naming_asyncio(
    anyio_backend: str, postgres_url: str
) -> None:
    with pytest.raises(packrun.StoreError) as caught:
        async with packrun.open_runtime(postgres_url):
            pass
    assert caught.value.code == "store_error"
    assert "runs on asyncio only" in str(caught.value)
    assert "memory: or sqlite:/// store" in str(caught.value)
