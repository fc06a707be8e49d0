"""A worker process for the PostgreSQL fleet tests (``test_postgres_fleet.py``).

Started as ``python _pg_worker.py '<json spec>'``; ``spec["url"]`` is the store's
``postgresql://…?schema=…`` URL. Every line it writes on stdout is one JSON object: progress lines
carry ``"event"``, and the last line carries ``"outcome"`` (``"done"``, or ``"crash"`` with the
traceback when something unexpected was raised). Errors packrun raises on purpose
(``version_exists``, ``invalid_argument``, ``store_error``) are results, reported with their
``code``. Every wait is bounded: a worker that is never told to go on raises ``TimeoutError``.

Modes (``spec["mode"]``):

* ``publish``: for each round ``i`` of ``spec["items"]``, build the bundle, report ``ready``, wait
  for the file ``<barrier>-<i>``, publish it and report ``published`` with the outcome; at the
  end, refresh and report every row seen.
* ``fault_publish``: publish one bundle with a fault injected in this process only: once the
  publish transaction has written everything (artifact, catalog row, change-log line), report
  ``paused`` and sleep inside the transaction, so that the parent can kill the process there.
* ``watch``: report every change of what ``resolve(iid)`` returns for each of ``spec["iids"]``
  (``seen`` with the time it was seen), until the ``stop`` file appears.
* ``hold``: start the runs ``run_ids`` of ``iid`` and keep them open (``started``, then
  ``holding``); when the ``stop`` file appears, call each run again, end them all (``ending``,
  ``ended``), then wait for the ``close`` file (when given) before closing the runtime. The same
  mode as the SQLite run tests' (``_runs_worker.run_hold``), on ``spec["url"]``.
* ``resume``: open the run ``run_id`` of ``iid`` again and report its binding and a call's
  answer (or, with ``expect_held``, the refusal), and the binding of a fresh run.
* ``drain``: ``wait_drained(pack, version)`` first with ``short_timeout`` (reporting the
  ``drain_timeout`` and its run ids), then, after reporting ``waiting``, with ``timeout``.
* ``churn``: publish, install, move a pin and run the probe installation (one call) in a loop,
  each operation retried on ``store_error`` (counted), until the ``stop`` file appears; then
  ``tail`` more rounds; report every operation.

The module also exports :func:`make_bundle` and :func:`probe_bundle`, which the tests use to
build distinct bundles.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _runs_worker import binding, emit, run_hold

import packrun
from packrun._bundle import bundle_bytes
from packrun._stores._postgres import PostgresStore

__all__ = ["PROBE", "PROBE_INSTALLATION", "make_bundle", "probe_bundle"]

PROBE = "probe"
PROBE_INSTALLATION = "inst"
"""The installation of ``probe`` the fleet tests set up (``churn`` runs it)."""

PROBE_CODE = """\
from packrun.sdk import Integration

integration = Integration("probe")
MARKER = "__MARKER__"


@integration.tool("whoami")
async def whoami(ctx, input):
    return {"version": ctx.version, "marker": MARKER, "run_id": ctx.run_id}
"""


def make_bundle(pack: str, version: str, variant: str = "") -> bytes:
    """The bytes of a valid generation-2 bundle of ``pack`` ``version`` with one tool ``t``;
    ``variant`` goes into the code, so two variants of one version have different digests."""
    manifest = packrun.decode_manifest(
        {"id": pack, "version": version, "contract": 2, "tools": [{"id": "t"}]}
    )
    code = (
        "from packrun.sdk import Integration\n"
        f"integration = Integration({pack!r})\n"
        f"VARIANT = {variant!r}\n"
        "\n"
        '@integration.tool("t")\n'
        "def t(ctx, input):\n"
        '    return {"variant": VARIANT}\n'
    )
    return bundle_bytes(manifest, {"__init__.py": code.encode()})


def probe_bundle(version: str, marker: str) -> bytes:
    """A generation-2 bundle of ``probe`` ``version`` whose ``whoami`` answers ``marker``."""
    manifest = packrun.decode_manifest(
        {"id": PROBE, "version": version, "contract": 2, "tools": [{"id": "whoami"}]}
    )
    return bundle_bytes(
        manifest, {"__init__.py": PROBE_CODE.replace("__MARKER__", marker).encode()}
    )


def wait_for_file(path: str, timeout: float = 120.0) -> None:
    """Poll (every millisecond, blocking) until ``path`` exists: a start barrier."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the barrier {path} never appeared")
        time.sleep(0.001)


# --- modes ------------------------------------------------------------------------------------


async def run_publish(spec: dict[str, Any]) -> dict[str, Any]:
    items = spec["items"]
    async with packrun.open_runtime(spec["url"], refresh_interval=0.1) as rt:
        for number, item in enumerate(items):
            data = make_bundle(item["pack"], item["version"], item["variant"])
            emit({"event": "ready", "round": number, "pid": os.getpid()})
            wait_for_file(f"{spec['barrier']}-{number}")
            result: dict[str, Any] = {
                "event": "published",
                "round": number,
                "pack": item["pack"],
                "version": item["version"],
            }
            try:
                entry = await rt.publish(data)
            except packrun.PackrunError as exc:
                result.update(result="error", code=exc.code, message=str(exc))
            else:
                result.update(result="ok", digest=entry.digest)
            emit(result)
        await rt.refresh()
        seen = {
            pack: [[str(e.version), e.digest] for e in rt.versions(pack)]
            for pack in sorted({item["pack"] for item in items})
        }
    return {"outcome": "done", "seen": seen}


async def run_fault_publish(spec: dict[str, Any]) -> dict[str, Any]:
    data = make_bundle(spec["pack"], spec["version"], spec.get("variant", ""))
    log = PostgresStore._log

    async def paused_log(self: PostgresStore, conn: Any, kind: str, key: str) -> None:
        # The fault, injected in this process only: the change-log line is the publish
        # transaction's last write (the artifact and the catalog row are written, uncommitted);
        # report it and stay in the transaction until the parent kills the process.
        await log(self, conn, kind, key)
        emit({"event": "paused", "pid": os.getpid()})
        await anyio.sleep(60)

    PostgresStore._log = paused_log  # type: ignore[method-assign]
    async with packrun.open_runtime(spec["url"], refresh_interval=0) as rt:
        await rt.publish(data)
    return {"outcome": "not_killed"}


async def run_watch(spec: dict[str, Any]) -> dict[str, Any]:
    iids: list[str] = spec["iids"]
    last: dict[str, str | None] = {}
    deadline = time.monotonic() + spec.get("deadline", 120.0)
    runtime = packrun.open_runtime(spec["url"], refresh_interval=spec.get("refresh_interval", 0.1))
    if spec.get("deaf"):
        # Fault injected here only: this watcher LISTENs on a channel nobody notifies, so every
        # notification is lost to it and only its periodic read of the change log remains.
        runtime._store._channel = "packrun_changes_nobody"  # type: ignore[attr-defined]
    async with runtime as rt:
        emit({"event": "opened", "pid": os.getpid()})
        while not os.path.exists(spec["stop"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the watcher was never told to stop")
            for iid in iids:
                try:
                    version: str | None = rt.resolve(iid).version
                except packrun.NotFound:
                    version = None
                if iid not in last or version != last[iid]:
                    last[iid] = version
                    emit({"event": "seen", "iid": iid, "version": version, "t": time.time()})
            await anyio.sleep(0.001)
        history = {
            iid: [[e.origin, e.actor, e.to_pin] for e in (await rt.history(iid))] for iid in iids
        }
    return {"outcome": "done", "history": history}


async def run_resume(spec: dict[str, Any]) -> dict[str, Any]:
    async with packrun.open_runtime(spec["url"]) as rt:
        if spec.get("expect_held"):
            try:
                async with rt.run(spec["iid"], run_id=spec["run_id"]) as run:
                    return {"outcome": "done", "held": None, "binding": binding(run)}
            except packrun.InvalidArgument as exc:
                return {"outcome": "done", "held": exc.code, "message": str(exc)}
        async with rt.run(spec["iid"], run_id=spec["run_id"]) as run:
            resumed = {**binding(run), "answer": await run.call("whoami")}
        async with rt.run(spec["iid"]) as run:
            fresh = {**binding(run), "answer": await run.call("whoami")}
    return {"outcome": "done", "resumed": resumed, "fresh": fresh}


async def run_drain(spec: dict[str, Any]) -> dict[str, Any]:
    pack, version = spec["pack"], spec["version"]
    async with packrun.open_runtime(spec["url"], refresh_interval=0.1) as rt:
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


class _Churn:
    """The ``churn`` mode's bookkeeping: every operation, its attempts and its failures."""

    def __init__(self, rt: packrun.Runtime, worker: int) -> None:
        self.rt = rt
        self.worker = worker
        self.failures = 0
        self.already = 0  # an attempt failed, yet its write had committed
        self.errors: list[str] = []

    async def attempt(
        self, what: str, op: Callable[[], Awaitable[Any]], done: Callable[[], Awaitable[bool]]
    ) -> int:
        """Run ``op`` until it succeeds; returns the number of attempts.

        A ``store_error`` counts as a failure and is retried. After a failure, an attempt refused
        because the write exists (``version_exists``, ``installation_exists``) is a success when
        ``done()`` confirms the earlier attempt committed.
        """
        deadline = time.monotonic() + 60.0
        attempts = 0
        while True:
            attempts += 1
            try:
                await op()
                return attempts
            except packrun.StoreError as exc:
                self.failures += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{what}: {exc}"[:300])
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.1)
            except (packrun.VersionExists, packrun.InstallationExists):
                if attempts > 1 and await done():
                    self.already += 1
                    return attempts
                raise

    async def round(self, k: int) -> dict[str, Any]:
        rt, n = self.rt, self.worker
        pack, version, iid = f"churn{n}", f"1.{k}.0", f"c{n}-{k:03d}"
        data = make_bundle(pack, version, f"churn{n}-{k}")
        digest: dict[str, str | None] = {}

        async def publish() -> None:
            digest["d"] = (await rt.publish(data)).digest

        async def published() -> bool:
            await rt.refresh()
            rows = [e for e in rt.versions(pack) if str(e.version) == version]
            digest["d"] = rows[0].digest if rows else None
            return bool(rows)

        async def install() -> None:
            await rt.install(iid, pack, pin=version, actor=f"churn-{n}")

        async def installed() -> bool:
            await rt.refresh()
            return any(i.id == iid for i in rt.installations())

        async def move() -> None:
            await rt.set_pin(iid, "latest", actor=f"churn-{n}")

        async def never() -> bool:
            return False

        answer: dict[str, Any] = {}

        async def run() -> None:  # a run of the probe, its end written behind
            async with rt.run(PROBE_INSTALLATION, run_id=run_id, workflow_id="churn") as r:
                answer["a"] = await r.call("whoami")

        run_id = f"churn{n}-{k:03d}"
        started = time.time()
        attempts = [
            await self.attempt(f"publish {pack} {version}", publish, published),
            await self.attempt(f"install {iid}", install, installed),
            await self.attempt(f"set_pin {iid}", move, never),
            await self.attempt(f"run {run_id}", run, never),
        ]
        return {
            "event": "round",
            "k": k,
            "pack": pack,
            "version": version,
            "digest": digest["d"],
            "iid": iid,
            "attempts": attempts,
            "run_id": run_id,
            "answer": answer["a"],
            "started": started,
            "t": time.time(),
        }


async def run_churn(spec: dict[str, Any]) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    async with packrun.open_runtime(spec["url"], refresh_interval=0.1) as rt:
        churn = _Churn(rt, spec["worker"])
        emit({"event": "ready", "pid": os.getpid()})
        deadline = time.monotonic() + spec.get("deadline", 120.0)
        k = 0
        while not os.path.exists(spec["stop"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the churn worker was never told to stop")
            rounds.append(await churn.round(k))
            emit(rounds[-1])
            k += 1
            await anyio.sleep(spec.get("pause", 0.02))
        for _ in range(spec["tail"]):
            rounds.append(await churn.round(k))
            emit(rounds[-1])
            k += 1
    return {
        "outcome": "done",
        "rounds": rounds,
        "failures": churn.failures,
        "already": churn.already,
        "errors": churn.errors,
    }


MODES: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "publish": run_publish,
    "fault_publish": run_fault_publish,
    "watch": run_watch,
    "hold": run_hold,
    "resume": run_resume,
    "drain": run_drain,
    "churn": run_churn,
}


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
