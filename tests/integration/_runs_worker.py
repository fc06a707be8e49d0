"""A worker process for the multi-process run tests (``test_runs_processes.py``).

Started as ``python _runs_worker.py '<json spec>'``. Every line it writes on stdout is one JSON
object: progress lines carry ``"event"``, and the last line carries ``"outcome"`` (``"done"``, or
``"crash"`` with the traceback when something unexpected was raised).

Modes (``spec["mode"]``):

* ``hold``: open a runtime (``lease_ttl``, ``refresh_interval`` from the spec), start the runs
  ``run_ids`` of installation ``iid`` and keep them open; report each binding (``started``), then
  ``holding``; when the ``stop`` file appears, call each run again, end them all and report
  ``ended``; then wait for the ``close`` file (when given) before closing the runtime.
* ``resume``: open the run ``run_id`` of ``iid`` again and report its binding and a call's answer,
  and the binding of a fresh run of the same installation.
* ``burst``: start ``count`` runs of ``iid`` at once (concurrent tasks, run ids
  ``<prefix>-<n>``); as each start returns, read its row from the store file through a connection
  of its own and report any not there (``missing``); report ``holding`` with this runtime's count
  of runs in flight once all are open, and end them all when the ``stop`` file appears.
* ``drain``: ``wait_drained(pack, version)`` twice: first with ``short_timeout`` (reporting the
  ``drain_timeout`` and its run ids), then, after reporting ``waiting``, with ``timeout``.

The module also exports :func:`probe_bundle`, which the tests use to build bundles whose one tool
``whoami`` answers the run's version and a marker compiled into the code (a visible digest).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
import traceback
from typing import Any

import anyio

import packrun
from packrun._bundle import bundle_bytes

__all__ = ["PACK", "probe_bundle"]

PACK = "probe"

CODE = """\
from packrun.sdk import Integration

integration = Integration("probe")
MARKER = "__MARKER__"


@integration.tool("whoami")
async def whoami(ctx, input):
    return {"version": ctx.version, "marker": MARKER, "run_id": ctx.run_id}
"""


def probe_bundle(version: str, marker: str) -> bytes:
    """A generation-2 bundle of ``probe`` ``version`` whose ``whoami`` answers ``marker``."""
    manifest = packrun.decode_manifest(
        {"id": PACK, "version": version, "contract": 2, "tools": [{"id": "whoami"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": CODE.replace("__MARKER__", marker).encode()})


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line on stdout, at once."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def await_file(path: str, timeout: float = 120.0, poll: float = 0.01) -> None:
    """Poll for ``path`` without blocking the event loop (the lease and refresh tasks run on)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the file {path} never appeared")
        await anyio.sleep(poll)


def url_of(db: str) -> str:
    return f"sqlite:///{db}"


def binding(run: packrun.Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "installation_id": run.installation_id,
        "version": run.version,
        "digest": run.digest,
        "resumed": run.resumed,
    }


# --- modes ------------------------------------------------------------------------------------


async def run_hold(spec: dict[str, Any]) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []
    async with packrun.open_runtime(
        spec.get("url") or url_of(spec["db"]),  # the PostgreSQL fleet tests give a URL
        lease_ttl=spec.get("lease_ttl", 30.0),
        refresh_interval=spec.get("refresh_interval", 0.1),
    ) as rt:
        async with contextlib.AsyncExitStack() as stack:
            runs: list[packrun.Run] = []
            for run_id in spec["run_ids"]:
                run = await stack.enter_async_context(
                    rt.run(spec["iid"], run_id=run_id, auth=packrun.Auth.api_key("k"))
                )
                runs.append(run)
                answer = await run.call("whoami")
                answers.append(answer)
                emit({"event": "started", "marker": answer["marker"], **binding(run)})
            emit({"event": "holding", "pid": os.getpid(), "owner": rt.owner, "t": time.time()})
            await await_file(spec["stop"])
            for run in runs:
                answers.append(await run.call("whoami"))
            emit({"event": "ending", "t": time.time()})
        emit({"event": "ended", "t": time.time()})
        if spec.get("close"):
            await await_file(spec["close"])
    return {"outcome": "done", "answers": answers}


async def run_resume(spec: dict[str, Any]) -> dict[str, Any]:
    async with packrun.open_runtime(url_of(spec["db"])) as rt:
        async with rt.run(spec["iid"], run_id=spec["run_id"]) as run:
            resumed = {**binding(run), "answer": await run.call("whoami")}
        async with rt.run(spec["iid"]) as run:
            fresh = {**binding(run), "answer": await run.call("whoami")}
    return {"outcome": "done", "resumed": resumed, "fresh": fresh}


async def run_drain(spec: dict[str, Any]) -> dict[str, Any]:
    pack, version = spec["pack"], spec["version"]
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0.1) as rt:
        try:
            await rt.wait_drained(pack, version, timeout=spec["short_timeout"])
        except packrun.DrainTimeout as exc:
            emit({"event": "timeout", "code": exc.code, "run_ids": list(exc.run_ids)})
        else:
            emit({"event": "drained_early", "in_flight": rt.in_flight(pack, version)})
        emit({"event": "waiting", "t": time.time()})
        await rt.wait_drained(pack, version, timeout=spec["timeout"])
        drained_at = time.time()
        emit({"event": "drained", "t": drained_at})
        return {
            "outcome": "done",
            "drained_at": drained_at,
            "in_flight": rt.in_flight(pack, version),
            "runs_in_flight": rt.runs_in_flight(pack, version),
        }


async def run_burst(spec: dict[str, Any]) -> dict[str, Any]:
    count, prefix = spec["count"], spec["prefix"]
    missing: list[str] = []
    opened = 0
    all_open = anyio.Event()
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0) as rt:

        async def one(n: int) -> None:
            nonlocal opened
            async with rt.run(spec["iid"], run_id=f"{prefix}-{n}") as run:
                # Durable when run() returns: another connection (as another process) sees it.
                reader = sqlite3.connect(spec["db"], timeout=30.0)
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
                await all_open.wait()
                await await_file(spec["stop"])

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
            await all_open.wait()
            emit({"event": "holding", "in_flight": rt.in_flight(PACK, "1.0.0")})
        in_flight_after = rt.in_flight(PACK, "1.0.0")
    return {"outcome": "done", "missing": missing, "in_flight_after": in_flight_after}


MODES = {"hold": run_hold, "resume": run_resume, "drain": run_drain, "burst": run_burst}


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
