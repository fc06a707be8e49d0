"""Rollouts and health across processes: a rollout outlives the process that started it (killed
with SIGKILL), keeps every installation's place in the ramp, and health adds up across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import packrun
from _fleet_packs import shop
from packrun._rollouts import ramped

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_rollout_worker.py")
FLEET = [f"inst-{n:02d}" for n in range(10)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def worker(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        raise AssertionError(f"the worker printed nothing: {proc.stderr.read()}")
    loaded: dict[str, object] = json.loads(line)
    return loaded


@pytest.mark.slow
async def test_a_rollout__continues_after_its_starting_process_is_killed__sticky(
    tmp_path: Path, shared_url: str
) -> None:
    async with packrun.open_runtime(shared_url, in_process={"vendor"}, fleet_interval=60) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        for iid in FLEET:
            await rt.install(iid, "shop", "latest")
        await rt.publish(shop(tmp_path, "1.1.0"))
    proc = worker(shared_url, "start", "1.0")
    try:
        started = await anyio.to_thread.run_sync(first_line, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()  # waits, and closes its pipes
    async with packrun.open_runtime(shared_url, in_process={"vendor"}, fleet_interval=0.05) as rt:
        status = await rt.rollout_status("shop")
        assert (status.id, status.state) == (started["started"], "running")
        with anyio.fail_after(60):
            while status.state != "completed":
                await anyio.sleep(0.05)
                status = await rt.rollout_status("shop")
        assert {rt.resolve(i).version for i in FLEET} == {"1.1.0"}
        first = set(ramped(FLEET, 10))
        for iid in FLEET:
            moves = [e.to_version for e in (await rt.history(iid)) if e.origin == "rollout"]
            # Never back and forth: held back once (unless ramped at the first step), then on.
            assert moves == ([] if iid in first else ["1.0.0", "1.1.0"]), iid
        steps = [e.data["step"] for e in [e async for e in rt.events()] if e.kind == "rollout_step"]
        assert steps == [50, 100]


async def test_health__adds_up_across_processes(tmp_path: Path, shared_url: str) -> None:
    async with packrun.open_runtime(shared_url, in_process={"vendor"}, fleet_interval=0.05) as rt:
        await rt.publish(shop(tmp_path, "1.0.0"))
        await rt.install("good", "shop", "1.0.0")
        proc = worker(shared_url, "calls", "5", "good")
        for _ in range(3):
            await rt.call("good", "ping")
        assert await anyio.to_thread.run_sync(first_line, proc) == {"done": 5}
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        with anyio.fail_after(20):
            while rt.health("shop", "1.0.0").calls != 8:
                await anyio.sleep(0.05)
        assert rt.health("shop", "1.0.0", per_project=True).calls == 8
