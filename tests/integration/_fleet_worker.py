"""A worker process for the fleet-rule tests (``test_fleet_rules.py``), on SQLite or PostgreSQL.

Started as ``python _fleet_worker.py '<json spec>'``; ``spec["url"]`` is the store's URL. Every line
it writes on stdout is one JSON object: progress lines carry ``"event"``, and the last line carries
``"outcome"`` (``"done"``, or ``"crash"`` with the traceback). Every wait is bounded.

Modes (``spec["mode"]``):

* ``idle``: an executor that only keeps its runtime open (its refresh loop running): report
  ``seen`` whenever what ``resolve(iid)`` returns changes, until the ``stop`` file appears.
* ``publish``: build ``spec["count"]`` versions ``1.<k>.0`` of the pack ``spec["pack"]``, report
  ``ready``, wait for the ``barrier`` file, then publish them in order.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import anyio
from _sqlite_mp_worker import make_bundle

import packrun


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def await_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the file {path} never appeared")
        await anyio.sleep(0.002)


async def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    iid = spec["iid"]
    last: object = object()
    deadline = time.monotonic() + 60.0
    async with packrun.open_runtime(spec["url"], refresh_interval=0.05) as rt:
        emit({"event": "ready"})
        while not os.path.exists(spec["stop"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the idle worker was never told to stop")
            try:
                version: str | None = rt.resolve(iid).version
            except packrun.NotFound:
                version = None
            if version != last:
                last = version
                emit({"event": "seen", "version": version})
            await anyio.sleep(0.005)
    return {"outcome": "done"}


async def run_publish(spec: dict[str, Any]) -> dict[str, Any]:
    bundles = [make_bundle(spec["pack"], f"1.{k}.0") for k in range(spec["count"])]
    async with packrun.open_runtime(spec["url"], refresh_interval=0.05) as rt:
        emit({"event": "ready"})
        await await_file(spec["barrier"])
        for data in bundles:
            await rt.publish(data)
    return {"outcome": "done"}


MODES = {"idle": run_idle, "publish": run_publish}


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[1])
        result = anyio.run(MODES[spec["mode"]], spec)
    except BaseException:
        emit({"outcome": "crash", "traceback": traceback.format_exc()})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
