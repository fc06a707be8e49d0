"""A worker process for the multi-process SQLite tests (``test_sqlite_processes.py``).

Started as ``python _sqlite_mp_worker.py '<json spec>'``. Every line it writes on stdout is one
JSON object: progress lines carry ``"event"``, and the last line carries ``"outcome"`` (``"done"``,
or ``"crash"`` with the traceback when something unexpected was raised). Errors packrun raises on
purpose (``version_exists``, ``downgrade_not_allowed``) are results, reported with their ``code``.

Modes (``spec["mode"]``):

* ``publish``: build or read the bundles of ``spec["items"]``, report ``ready``, wait for the
  ``barrier`` file, publish them in order, refresh, and report every outcome and the rows seen.
* ``fault_publish``: publish one bundle with a fault injected in this process only: right after
  the SQL statement ``spec["after"]`` names has run inside the publish transaction, report
  ``paused`` and sleep, so that the parent can kill the process mid-transaction.
* ``publish_loop``: publish ``major.k.0`` for ``k = 0, 1, ...`` and report each success, until
  killed.
* ``watch``: report every change of what ``resolve(iid)`` returns, until the ``stop`` file appears.
* ``installs``: after the ``barrier``, install ``count`` installations and move their pins.

The module also exports :func:`make_bundle`, which the tests use to build distinct bundles.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import time
import traceback
from typing import Any

import anyio

import packrun
from packrun._bundle import bundle_bytes, digest_of

__all__ = ["FAULT_STATEMENTS", "make_bundle"]

FAULT_STATEMENTS: dict[str, str] = {
    "artifacts": "INSERT OR IGNORE INTO artifacts",
    "catalog": "INSERT INTO catalog",
    "changes": "INSERT INTO changes",
}
"""Where a ``fault_publish`` worker stops: after the statement that starts with this text."""


def make_bundle(pack: str, version: str, variant: str = "", blob: int = 0) -> bytes:
    """The bytes of a valid generation-2 bundle of ``pack`` ``version`` with one tool ``t``.

    ``variant`` goes into the code, so two variants of one version have different bytes (and
    digests); ``blob`` adds that many pseudo-random (incompressible) bytes as a data file.
    """
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
    files = {"__init__.py": code.encode()}
    if blob:
        files["blob.bin"] = os.urandom(blob)
    return bundle_bytes(manifest, files)


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line on stdout, at once."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    """Poll (every millisecond) until ``path`` exists: the start barrier."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the barrier {path} never appeared")
        time.sleep(0.001)


async def await_file(path: str, timeout: float = 30.0) -> None:
    """:func:`wait_for_file` without blocking the event loop (the refresh task keeps running)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the file {path} never appeared")
        await anyio.sleep(0.002)


def url_of(db: str) -> str:
    """The store URL of an absolute database path."""
    return f"sqlite:///{db}"


# --- modes ------------------------------------------------------------------------------------


async def run_publish(spec: dict[str, Any]) -> dict[str, Any]:
    sources: list[tuple[dict[str, Any], bytes | str]] = []
    for item in spec["items"]:
        if item.get("path"):
            sources.append((item, str(item["path"])))
        else:
            data = make_bundle(item["pack"], item["version"], item.get("variant", ""))
            sources.append((item, data))
    results: list[dict[str, Any]] = []
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0.1) as rt:
        emit({"event": "ready", "pid": os.getpid()})
        wait_for_file(spec["barrier"])
        for item, source in sources:
            result: dict[str, Any] = {"pack": item["pack"], "version": item["version"]}
            try:
                entry = await rt.publish(source, channel=item.get("channel", "vendor"))
            except packrun.PackrunError as exc:
                result.update(outcome="error", code=exc.code, message=str(exc))
            else:
                result.update(outcome="ok", digest=entry.digest, channel=entry.channel)
            results.append(result)
        await rt.refresh()
        seen = {
            pack: [[str(e.version), e.digest] for e in rt.versions(pack)]
            for pack in sorted({item["pack"] for item in spec["items"]})
        }
    return {"outcome": "done", "results": results, "seen": seen}


def _fault_connection_class(after: str) -> type[sqlite3.Connection]:
    prefix = FAULT_STATEMENTS[after]

    class FaultConnection(sqlite3.Connection):
        """Pauses the process right after the statement starting with ``prefix`` has run."""

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            cursor = super().execute(sql, parameters)
            if sql.lstrip().startswith(prefix):
                emit({"event": "paused", "after": after, "in_transaction": self.in_transaction})
                time.sleep(30)
            return cursor

    return FaultConnection


async def run_fault_publish(spec: dict[str, Any]) -> dict[str, Any]:
    data = make_bundle(spec["pack"], spec["version"], spec.get("variant", ""))
    connect = sqlite3.connect
    factory = _fault_connection_class(spec["after"])
    # The fault is injected here, in this process only: the store's connection is a subclass.
    sqlite3.connect = functools.partial(connect, factory=factory)  # type: ignore[assignment]
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0.1) as rt:
        emit({"event": "ready", "digest": digest_of(data)})
        await rt.publish(data)
    return {"outcome": "not_killed"}


async def run_publish_loop(spec: dict[str, Any]) -> dict[str, Any]:
    count = 0
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0.1) as rt:
        emit({"event": "ready"})
        for k in range(spec["count"]):
            version = f"{spec['major']}.{k}.0"
            data = make_bundle(spec["pack"], version, f"loop-{k}", blob=spec.get("blob", 0))
            entry = await rt.publish(data)
            count += 1
            emit({"event": "published", "version": version, "digest": entry.digest})
    return {"outcome": "done", "published": count}


async def run_watch(spec: dict[str, Any]) -> dict[str, Any]:
    iid = spec["iid"]
    seen: list[str | None] = []
    last: object = object()
    deadline = time.monotonic() + spec.get("deadline", 30.0)
    async with packrun.open_runtime(
        url_of(spec["db"]), refresh_interval=spec.get("refresh_interval", 0.1)
    ) as rt:
        while not os.path.exists(spec["stop"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the watcher was never told to stop")
            try:
                version: str | None = rt.resolve(iid).version
            except packrun.NotFound:
                version = None
            if version != last:
                last = version
                seen.append(version)
                emit({"event": "seen", "version": version, "t": time.time()})
            await anyio.sleep(0.002)
        history = [[e.origin, e.actor, e.to_pin] for e in (await rt.history(iid))]
    return {"outcome": "done", "seen": seen, "history": history}


async def run_installs(spec: dict[str, Any]) -> dict[str, Any]:
    worker = spec["worker"]
    installed: list[str] = []
    async with packrun.open_runtime(url_of(spec["db"]), refresh_interval=0.1) as rt:
        emit({"event": "ready"})
        await await_file(spec["barrier"])
        for i in range(spec["count"]):
            iid = f"w{worker}-{i:03d}"
            await rt.install(iid, spec["pack"], actor=f"installer-{worker}")
            await rt.set_pin(iid, spec["first_pin"], actor=f"ops-{worker}")
            final = spec["even_pin"] if i % 2 == 0 else spec["odd_pin"]
            await rt.set_pin(iid, final, actor=f"ops-{worker}")
            installed.append(iid)
    return {"outcome": "done", "installed": installed}


MODES = {
    "publish": run_publish,
    "fault_publish": run_fault_publish,
    "publish_loop": run_publish_loop,
    "watch": run_watch,
    "installs": run_installs,
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
