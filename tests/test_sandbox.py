"""The sandbox (DESIGN.md section 14): bundle code runs apart from the executor and other projects.

Every attack a customer's bundle could try from inside the executor is tried here for real, in a
sandbox worker started by the runtime, in ``process`` mode and in ``bwrap`` mode (bubblewrap; CI
installs it, and a CI run without it fails rather than skips). Where a mode cannot stop an attack
(``process`` mode has no namespaces: the worker sees the host's files, processes and network as
the executor's user does), the test asserts what docs/sandbox.md says that mode does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import packrun
import packrun._catalog
import packrun._dispatch
import packrun._runtime
from packrun import (
    Auth,
    InvalidBundle,
    Runtime,
    SandboxCrashed,
    SandboxLimits,
    SandboxMode,
    SandboxUnavailable,
    ToolFailed,
    ToolTimeout,
)
from packrun._bundle import bundle_bytes
from packrun._dispatch._spawn import WORKER_IDS

pytestmark = pytest.mark.anyio

IN_CI = os.environ.get("CI") == "true"
HAVE_BWRAP = packrun._dispatch.bwrap_path() is not None
MIB = 1024 * 1024

EVIL_CODE = '''\
"""A bundle that tries what a hostile customer would, from inside the process it runs in."""

import gc
import os
import socket
import threading
import time

from packrun.sdk import Integration, ToolError

integration = Integration("evil")


def _auths():
    from packrun import Auth

    return [o for o in gc.get_objects() if isinstance(o, Auth)]


@integration.tool("steal_keys")
async def steal_keys(ctx, input):
    keys = sorted({v for a in _auths() for v in a.credentials.values()})
    dsns = sorted({o for o in gc.get_objects() if isinstance(o, str) and o.startswith("postgresql://")})
    return {"keys": keys, "dsns": dsns, "runtimes": _runtimes()}


def _runtimes():
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "Runtime")


@integration.tool("patch")
async def patch(ctx, input):
    import packrun
    import packrun._runtime

    packrun._runtime.Runtime.resolve = lambda self, installation_id: None
    packrun.Auth.__repr__ = lambda self: "LEAKED " + repr(dict(self.credentials))
    return {"patched": True}


@integration.tool("move_pin")
async def move_pin(ctx, input):
    moved = 0
    for rt in [o for o in gc.get_objects() if type(o).__name__ == "Runtime"]:
        await rt.set_pin(input["installation"], input["pin"], actor="evil")
        moved += 1
    return {"moved": moved}


@integration.tool("environ")
def environ(ctx, input):
    return dict(os.environ)


@integration.tool("read_file")
def read_file(ctx, input):
    try:
        with open(input["path"], "rb") as handle:
            return {"read": len(handle.read())}
    except OSError as exc:
        return {"error": type(exc).__name__}


@integration.tool("write_file")
def write_file(ctx, input):
    try:
        with open(input["path"], "ab") as handle:
            handle.write(b"garbage")
        return {"wrote": True}
    except OSError as exc:
        return {"error": type(exc).__name__}


@integration.tool("hog")
def hog(ctx, input):
    kept = bytearray(input["mib"] * 1024 * 1024)
    return {"kept": len(kept)}


@integration.tool("block_loop")
async def block_loop(ctx, input):
    time.sleep(input["s"])
    return {"blocked": input["s"]}


@integration.tool("spawn_thread")
def spawn_thread(ctx, input):
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="evil-thread").start()
    return {"threads": threading.active_count()}


@integration.tool("exit")
def exit(ctx, input):
    os._exit(input["status"])


@integration.tool("kill_self")
def kill_self(ctx, input):
    os.kill(os.getpid(), signal_number(input["signal"]))


def signal_number(name):
    import signal

    return getattr(signal, name)


@integration.tool("spin")
def spin(ctx, input):
    while True:
        pass


@integration.tool("sleep")
async def sleep(ctx, input):
    import asyncio

    await asyncio.sleep(input["s"])
    return {"slept": input["s"]}


@integration.tool("sleep_sync")
def sleep_sync(ctx, input):
    time.sleep(input["s"])
    return {"slept": input["s"]}


@integration.tool("sees_pid")
def sees_pid(ctx, input):
    return {"exists": os.path.exists(f"/proc/{input['pid']}"), "pid": os.getpid()}


@integration.tool("connect")
def connect(ctx, input):
    try:
        with socket.create_connection(("127.0.0.1", input["port"]), timeout=5):
            return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": type(exc).__name__}


@integration.tool("log_key")
async def log_key(ctx, input):
    ctx.logger.warning("calling with key %s", ctx.auth.credentials["key"])
    return {"logged": True}


@integration.tool("own_key")
async def own_key(ctx, input):
    return {"key": ctx.auth.credentials["key"]}


@integration.tool("big_output")
async def big_output(ctx, input):
    return {"blob": "x" * input["size"]}


@integration.tool("raise_exc")
async def raise_exc(ctx, input):
    raise ValueError("boom")


@integration.tool("tool_error")
async def tool_error(ctx, input):
    raise ToolError("rate_limited", "slow down")


@integration.tool("open_many")
def open_many(ctx, input):
    handles = []
    try:
        for _ in range(input["count"]):
            handles.append(open("/dev/null", "rb"))
        return {"opened": len(handles)}
    except OSError as exc:
        return {"opened": len(handles), "error": exc.strerror}
    finally:
        for handle in handles:
            handle.close()


@integration.tool("write_big")
def write_big(ctx, input):
    try:
        with open("big", "wb") as handle:
            handle.write(b"x" * input["size"])
        return {"wrote": input["size"]}
    except OSError as exc:
        return {"error": exc.strerror}


@integration.tool("cwd")
def cwd(ctx, input):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return {"cwd": os.getcwd(), "files": sorted(os.listdir(".")), "fds": fds}
'''

EVIL_TOOLS = (
    "big_output",
    "block_loop",
    "connect",
    "cwd",
    "environ",
    "exit",
    "hog",
    "kill_self",
    "log_key",
    "move_pin",
    "open_many",
    "own_key",
    "patch",
    "raise_exc",
    "read_file",
    "sees_pid",
    "sleep",
    "sleep_sync",
    "spawn_thread",
    "spin",
    "steal_keys",
    "tool_error",
    "write_big",
    "write_file",
)


def evil(version: str = "1.0.0", *, network: bool | None = None, spin_timeout: float = 2) -> bytes:
    doc: dict[str, Any] = {
        "id": "evil",
        "version": version,
        "contract": 2,
        "auth": {"mode": "api_key"},
        "tools": [
            {"id": tool, **({"timeout_s": spin_timeout} if tool in ("spin", "sleep_sync") else {})}
            for tool in EVIL_TOOLS
        ],
    }
    if network is not None:
        doc["network"] = network
    manifest = packrun.decode_manifest(doc)
    return bundle_bytes(manifest, {"__init__.py": EVIL_CODE.encode()})


VICTIM_CODE = """\
import asyncio

from packrun.sdk import Integration

integration = Integration("victim")


@integration.tool("hold")
async def hold(ctx, input):
    await asyncio.sleep(input["s"])
    return {"key_seen": ctx.auth.credentials["key"][:3]}
"""


def victim(version: str = "1.0.0") -> bytes:
    manifest = packrun.decode_manifest(
        {"id": "victim", "version": version, "contract": 2, "tools": [{"id": "hold"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": VICTIM_CODE.encode()})


def import_bundle(code: str, pack: str = "bad", version: str = "1.0.0") -> bytes:
    """A bundle whose code/__init__.py is ``code`` (and whose manifest has one tool ``t``)."""
    manifest = packrun.decode_manifest(
        {"id": pack, "version": version, "contract": 2, "tools": [{"id": "t"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": code.encode()})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["process", "bwrap"])
def mode(request: pytest.FixtureRequest) -> SandboxMode:
    """Each sandbox test runs in both modes; bubblewrap must be there in CI."""
    if request.param == "bwrap" and not HAVE_BWRAP:
        if IN_CI:
            pytest.fail(
                "CI runs the sandbox tests with bubblewrap: install it (Debian: bubblewrap)"
            )
        pytest.skip("bubblewrap (bwrap) is not installed; install it to run the bwrap-mode tests")
    return "bwrap" if request.param == "bwrap" else "process"


LIMITS = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, cancel_grace=0.5)


@pytest.fixture
async def rt(mode: SandboxMode) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=LIMITS) as runtime:
        await runtime.publish(evil(), channel="custom")
        await runtime.install("evil-inst", "evil")
        yield runtime
    assert_gone(runtime_pids(runtime))


_seen_pids: dict[int, list[int]] = {}


def runtime_pids(rt: Runtime) -> list[int]:
    return _seen_pids.get(id(rt), [])


def note_workers(rt: Runtime) -> list[int]:
    pids = rt.sandbox_workers
    _seen_pids.setdefault(id(rt), []).extend(pids)
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as alive: nobody reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "X"
    except FileNotFoundError:
        return False


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        assert not alive(pid), f"worker {pid} outlived its runtime (or is a zombie)"


KEY = Auth.api_key("attacker-own-key-1234")


async def call(rt: Runtime, tool: str, input: dict[str, Any] | None = None, **kw: Any) -> Any:
    async with rt.run("evil-inst", auth=kw.pop("auth", KEY)) as run:
        out = await run.call(tool, input or {})
        note_workers(rt)
        return out


# --- credentials and the host's memory ------------------------------------------------------------


async def test_a_tool_cannot_read_another_runs_credentials_while_it_is_in_flight(
    rt: Runtime,
) -> None:
    await rt.publish(victim(), channel="vendor")
    await rt.install("victim-inst", "victim")
    secret = "victim-secret-9f8e7d"
    dsn = "postgresql://packrun:hunter2@db.internal:5432/packrun"  # the executor holds one
    results: dict[str, Any] = {}

    async def hold() -> None:
        async with rt.run("victim-inst", auth=Auth.api_key(secret)) as run:
            results["victim"] = await run.call("hold", {"s": 1.5})

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.sleep(0.3)
        results["stolen"] = await call(rt, "steal_keys")
    assert results["victim"] == {"key_seen": "vic"}
    assert secret not in results["stolen"]["keys"]
    assert results["stolen"]["keys"] == ["attacker-own-key-1234"]  # its own, from its own call
    assert results["stolen"]["dsns"] == []
    assert results["stolen"]["runtimes"] == 0
    assert dsn  # held by the host during the attack


async def test_in_process_trust_runs_the_code_in_the_host_where_it_can_read_everything() -> None:
    # The control: what the sandbox stops is real. A trusted channel runs in-process.
    async with packrun.open_runtime("memory:", in_process={"custom"}) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        host_secret = Auth.api_key("held-by-the-host-5678")
        out = await call(rt, "steal_keys")
        assert "held-by-the-host-5678" in out["keys"]
        assert out["runtimes"] >= 1
        assert rt.sandbox_workers == []
        del host_secret


async def test_a_tool_cannot_patch_the_runtime_or_auth_in_the_host(rt: Runtime) -> None:
    resolve = packrun._runtime.Runtime.resolve
    auth_repr = Auth.__repr__
    assert await call(rt, "patch") == {"patched": True}
    assert packrun._runtime.Runtime.resolve is resolve
    assert Auth.__repr__ is auth_repr
    assert rt.resolve("evil-inst").version == "1.0.0"
    assert "attacker" not in repr(KEY)


async def test_a_tool_cannot_move_another_installations_pin(rt: Runtime) -> None:
    await rt.publish(evil("1.0.1"), channel="custom")
    await rt.install("victim-inst", "evil", pin="1.0.0")
    assert await call(rt, "move_pin", {"installation": "victim-inst", "pin": "1.0.1"}) == {
        "moved": 0
    }
    assert rt.resolve("victim-inst").version == "1.0.0"
    assert [e.actor for e in (await rt.history("victim-inst"))] == [
        e.actor for e in (await rt.history("victim-inst"))
    ]
    assert all(e.actor != "evil" for e in (await rt.history("victim-inst")))


async def test_a_worker_gets_no_environment_but_the_variables_listed(
    mode: SandboxMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRUN_TEST_HOST_SECRET", "env-secret-4321")
    monkeypatch.setenv("PACKRUN_TEST_PASSED", "passed-on")
    limits = SandboxLimits(env=("PACKRUN_TEST_PASSED",), load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        env = await call(rt, "environ")
        [worker] = note_workers(rt)
        with open(f"/proc/{worker}/cmdline", "rb") as handle:  # what `ps` shows every user
            command_line = handle.read()
    assert "PACKRUN_TEST_HOST_SECRET" not in env
    assert env.get("PACKRUN_TEST_PASSED") == "passed-on"
    assert set(env) <= {"PACKRUN_TEST_PASSED", "LC_CTYPE", "PWD"}  # PWD: bubblewrap's --chdir
    assert b"passed-on" not in command_line
    assert "env-secret-4321" not in str(env)


async def test_a_worker_starts_in_a_private_empty_folder_with_only_its_channel_open(
    rt: Runtime, mode: SandboxMode
) -> None:
    out = await call(rt, "cwd")
    assert out["files"] == []
    assert out["cwd"] != os.getcwd()
    # /dev/null, its stderr (a file with no name), the channel and its own event loop's: nothing
    # of the host's
    for target in out["fds"].values():
        assert (
            target == "/dev/null"
            or target.endswith("(deleted)")
            or target.startswith(("socket:", "anon_inode:"))
        ), out["fds"]


# --- the store and the host's files ---------------------------------------------------------------


async def test_the_store_file__bwrap_hides_it__process_mode_only_from_a_root_executor(
    mode: SandboxMode, tmp_path: Path
) -> None:
    store = tmp_path / "state.db"
    async with packrun.open_runtime(
        f"sqlite:///{store}", sandbox=mode, sandbox_limits=LIMITS
    ) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        read = await call(rt, "read_file", {"path": str(store)})
        wrote = await call(rt, "write_file", {"path": str(tmp_path / "planted")})
    if mode == "bwrap":
        assert read == {"error": "FileNotFoundError"}
        assert not (tmp_path / "planted").exists()
        assert wrote["error"] in ("FileNotFoundError", "OSError", "PermissionError")
    elif os.geteuid() == 0:  # a root executor's worker runs as nobody: the store is closed to it
        # (and under /tmp, where it has a /tmp of its own, not even there)
        hidden = store.resolve().is_relative_to("/tmp")
        assert read == {"error": "FileNotFoundError" if hidden else "PermissionError"}
        assert not (tmp_path / "planted").exists()
    else:  # documented: process mode runs as the executor's user, without a view of its own
        assert read["read"] > 0
        assert (tmp_path / "planted").exists()


async def test_other_processes__bwrap_hides_them__process_mode_does_not(
    rt: Runtime, mode: SandboxMode
) -> None:
    out = await call(rt, "sees_pid", {"pid": os.getpid()})
    assert out["exists"] is (mode == "process")
    if mode == "bwrap":
        assert out["pid"] < 10  # a pid namespace of its own


async def test_a_manifest_without_network__bwrap_cuts_it__process_mode_does_not(
    mode: SandboxMode,
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=LIMITS) as rt:
            await rt.publish(evil(network=False), channel="custom")
            await rt.install("evil-inst", "evil")
            out = await call(rt, "connect", {"port": port})
    assert out["connected"] is (mode == "process")


# --- resources -------------------------------------------------------------------------------------


async def test_a_tool_past_the_memory_limit_crashes_its_worker_only(rt: Runtime) -> None:
    with pytest.raises(SandboxCrashed) as caught:
        await call(rt, "hog", {"mib": 300})
    assert caught.value.code == "sandbox_crashed"
    assert "memory limit" in caught.value.cause
    assert await call(rt, "own_key") == {"key": "attacker-own-key-1234"}  # a new worker
    assert rt.in_flight("evil", "1.0.0") == 0


async def test_a_tool_blocking_its_loop_does_not_block_the_hosts(rt: Runtime) -> None:
    await call(rt, "own_key")  # a warm worker: the start is not what is measured here
    ticks = 0
    done = anyio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        assert await call(rt, "block_loop", {"s": 1.5}) == {"blocked": 1.5}
        done.set()
    assert ticks > 2  # the host's loop kept turning while the tool blocked its own


async def test_threads_a_tool_leaves_running_stay_in_its_worker(rt: Runtime) -> None:
    await call(rt, "spawn_thread")
    assert all(t.name != "evil-thread" for t in threading.enumerate())


async def test_os_exit_in_a_tool_is_sandbox_crashed_and_the_host_goes_on(rt: Runtime) -> None:
    with pytest.raises(SandboxCrashed, match="exited with status 3"):
        await call(rt, "exit", {"status": 3})
    assert await call(rt, "own_key") == {"key": "attacker-own-key-1234"}


async def test_a_worker_killed_by_a_signal_is_sandbox_crashed_naming_it(rt: Runtime) -> None:
    with pytest.raises(SandboxCrashed, match="SIGSEGV"):
        await call(rt, "kill_self", {"signal": "SIGSEGV"})


async def test_a_sync_tool_past_its_deadline_is_killed_with_tool_timeout(rt: Runtime) -> None:
    await call(rt, "own_key")
    before = set(rt.sandbox_workers)
    with pytest.raises(ToolTimeout) as caught:
        await call(rt, "spin")
    assert caught.value.code == "tool_timeout"
    assert caught.value.timeout == 2
    assert_gone([pid for pid in before if pid not in rt.sandbox_workers])
    assert await call(rt, "own_key") == {"key": "attacker-own-key-1234"}
    assert rt.in_flight("evil", "1.0.0") == 0


async def test_cancelling_a_call_stops_an_async_tool_and_keeps_its_worker(rt: Runtime) -> None:
    await call(rt, "own_key")
    workers = list(rt.sandbox_workers)
    with anyio.move_on_after(0.5):
        await call(rt, "sleep", {"s": 30})
    assert rt.sandbox_workers == workers
    assert rt.in_flight("evil", "1.0.0") == 0
    assert await call(rt, "own_key") == {"key": "attacker-own-key-1234"}


async def test_cancelling_a_sync_tool_kills_its_worker_after_the_grace_period(rt: Runtime) -> None:
    await call(rt, "own_key")
    workers = list(rt.sandbox_workers)
    with anyio.move_on_after(0.5):
        await call(rt, "sleep_sync", {"s": 1.8})
    assert_gone(workers)
    assert rt.in_flight("evil", "1.0.0") == 0
    assert rt.in_flight_for("evil-inst") == 0


async def test_open_files_and_file_size_are_limited(mode: SandboxMode) -> None:
    limits = SandboxLimits(open_files=32, file_bytes=64 * 1024, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        opened = await call(rt, "open_many", {"count": 100})
        wrote = await call(rt, "write_big", {"size": 1024 * 1024})
    assert opened["opened"] < 32
    assert opened["error"] == "Too many open files"
    assert wrote == {"error": "File too large"}


async def test_a_worker_past_its_cpu_limit_is_sandbox_crashed_naming_it(mode: SandboxMode) -> None:
    limits = SandboxLimits(cpu_seconds=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil("1.0.0", spin_timeout=60), channel="custom")
        await rt.install("evil-inst", "evil")
        with pytest.raises(SandboxCrashed, match="CPU time limit"):
            await call(rt, "spin")


# --- the pool ---------------------------------------------------------------------------------------


async def test_a_worker_is_recycled_after_max_calls(mode: SandboxMode) -> None:
    limits = SandboxLimits(max_calls=3, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        await call(rt, "own_key")
        first = rt.sandbox_workers
        await call(rt, "own_key")
        assert rt.sandbox_workers == first
        await call(rt, "own_key")  # its third call: then it is recycled
        assert rt.sandbox_workers == []
        assert_gone(first)
        await call(rt, "own_key")
        assert rt.sandbox_workers not in ([], first)


async def test_idle_workers_are_reaped(mode: SandboxMode) -> None:
    limits = SandboxLimits(idle_timeout=0.2, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        await call(rt, "own_key")
        workers = rt.sandbox_workers
        assert workers
        with anyio.fail_after(20):
            while rt.sandbox_workers:
                await anyio.sleep(0.05)
        assert_gone(workers)


async def test_calls_of_one_digest_share_at_most_workers_per_digest(mode: SandboxMode) -> None:
    limits = SandboxLimits(workers_per_digest=1, load_timeout=20)
    most = 0
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        done = anyio.Event()

        async def watch() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, len(rt.sandbox_workers))
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as calls:
                for _ in range(3):
                    calls.start_soon(call, rt, "sleep", {"s": 0.3})
            done.set()
        assert rt.in_flight("evil", "1.0.0") == 0
    assert most == 1


async def test_a_full_pool_stops_an_idle_worker_of_another_digest(mode: SandboxMode) -> None:
    limits = SandboxLimits(workers=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.publish(victim(), channel="custom")
        await rt.install("evil-inst", "evil")
        await rt.install("victim-inst", "victim")
        await call(rt, "own_key")
        evil_workers = rt.sandbox_workers
        async with rt.run("victim-inst", auth=Auth.api_key("v-key")) as run:
            assert await run.call("hold", {"s": 0}) == {"key_seen": "v-k"}
        assert len(rt.sandbox_workers) == 1
        assert rt.sandbox_workers != evil_workers
        assert_gone(evil_workers)


# --- answers, errors and logs ----------------------------------------------------------------------


async def test_tool_errors_exceptions_and_oversized_outputs_come_back_typed(
    mode: SandboxMode,
) -> None:
    limits = SandboxLimits(output_bytes=10_000, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        with pytest.raises(ToolFailed) as failed:
            await call(rt, "tool_error")
        assert (failed.value.tool_code, failed.value.tool_message) == ("rate_limited", "slow down")
        with pytest.raises(ToolFailed) as failed:
            await call(rt, "raise_exc")
        assert failed.value.tool_code == "unhandled_exception"
        assert "ValueError: boom" in failed.value.tool_message
        with pytest.raises(ToolFailed) as failed:
            await call(rt, "big_output", {"size": 20_000})
        assert failed.value.tool_code == "invalid_response"
        assert "at most 10000" in str(failed.value)
        assert await call(rt, "big_output", {"size": 10}) == {"blob": "x" * 10}
        with pytest.raises(packrun.InvalidArgument, match="input of tool"):
            await call(rt, "own_key", {"x": object()})


async def test_tool_logs_come_back_to_the_hosts_logger_redacted(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="packrun.tools.evil"):
        await call(rt, "log_key")
    records = [r for r in caplog.records if r.name == "packrun.tools.evil"]
    assert [r.getMessage() for r in records] == ["calling with key <redacted>"]
    assert records[0].levelno == logging.WARNING


async def test_a_generation_1_bundle_runs_through_the_adapter_in_the_sandbox(rt: Runtime) -> None:
    root = Path(__file__).resolve().parent.parent / "bundles" / "legacy-crm"
    await rt.publish(root / "1.0.0" / "dist" / "legacy-crm-1.0.0.bundle.tar.gz")
    await rt.install("legacy", "legacy-crm")
    async with rt.run("legacy", auth=Auth.basic("ann", "pw-123")) as run:
        assert run.adapter == "1->2"
        assert run.generation == 1
        tools = sorted(run._tools)
        assert tools
    assert rt.stats().adapter_runs == {("legacy-crm", "1.0.0", "1->2"): 1}


# --- nothing of a bundle runs in the host at publish, verify and check ----------------------------

PATCHING_IMPORT = """\
import packrun
import packrun._catalog
import packrun._runtime

packrun._catalog.decide_publish = lambda rows, entry, immutable, force: "replace"
packrun._runtime.decide_publish = lambda rows, entry, immutable, force: "replace"
packrun._runtime.Runtime.resolve = lambda self, installation_id: None
packrun.Auth.__repr__ = lambda self: "LEAKED"
raise RuntimeError("refused, but too late")
"""


async def test_a_bundle_refused_at_publish_has_patched_nothing_in_the_host(rt: Runtime) -> None:
    decide = packrun._catalog.decide_publish
    resolve = packrun._runtime.Runtime.resolve
    with pytest.raises(InvalidBundle, match="RuntimeError: refused, but too late"):
        await rt.publish(import_bundle(PATCHING_IMPORT))
    assert packrun._catalog.decide_publish is decide
    assert vars(packrun._runtime)["decide_publish"] is decide
    assert packrun._runtime.Runtime.resolve is resolve
    assert "LEAKED" not in repr(KEY)
    with pytest.raises(packrun.VersionExists):  # the publish rule still holds
        await rt.publish(evil(), channel="custom")
    assert "bad" not in rt.packs()


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("raise KeyboardInterrupt('ctrl-c')", "KeyboardInterrupt: ctrl-c"),
        ("raise SystemExit(4)", "SystemExit: 4"),
        ("raise GeneratorExit()", "GeneratorExit"),
        ("import os\nos._exit(9)", "exited with status 9"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
        ("while True:\n    pass", "did not finish within 2s"),
    ],
)
async def test_a_bundle_whose_import_raises_crashes_or_hangs_is_refused_saying_why(
    mode: SandboxMode, code: str, why: str
) -> None:
    limits = SandboxLimits(load_timeout=2)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        with pytest.raises(InvalidBundle) as caught:
            await rt.publish(import_bundle(code + f"\n# {why}\n"))
        assert why in str(caught.value)
        assert rt.packs() == []


def test_verify_and_check_never_import_the_bundle_in_the_calling_process(tmp_path: Path) -> None:
    resolve = packrun._runtime.Runtime.resolve
    path = tmp_path / "bad-1.0.0.bundle.tar.gz"
    path.write_bytes(import_bundle(PATCHING_IMPORT))
    report = packrun.verify(path)
    assert [f.code for f in report.findings] == ["invalid_bundle"]
    assert "RuntimeError: refused, but too late" in report.findings[0].message
    assert packrun._runtime.Runtime.resolve is resolve
    assert "LEAKED" not in repr(KEY)
    assert not [m for m in sys.modules if m.startswith("_packrun_bundle_bad")]


# --- configuration ----------------------------------------------------------------------------------


async def test_bwrap_mode_without_bubblewrap_is_sandbox_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH where no bwrap is found
    async with packrun.open_runtime("memory:", sandbox="bwrap") as rt:
        with pytest.raises(SandboxUnavailable) as caught:
            await rt.publish(import_bundle("# never checked before"), channel="custom")
    assert caught.value.code == "sandbox_unavailable"
    assert "bubblewrap" in str(caught.value)


async def test_auto_uses_bubblewrap_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert packrun._dispatch.effective_mode("auto") == ("bwrap" if HAVE_BWRAP else "process")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert packrun._dispatch.effective_mode("auto") == "process"


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"sandbox": "docker"}, "sandbox"),
        ({"in_process": {"vendr"}}, "channels trusted to run in-process"),
        ({"in_process": "vendor"}, "channels trusted to run in-process"),
    ],
)
def test_bad_sandbox_options_are_invalid_argument(kwargs: dict[str, Any], what: str) -> None:
    with pytest.raises(packrun.InvalidArgument, match=what):
        packrun.open_runtime("memory:", **kwargs)


@pytest.mark.parametrize(
    "limits",
    [
        {"memory_bytes": 0},
        {"tmp_bytes": 0},
        {"processes": -1},
        {"processes": 1.5},
        {"call_timeout": -1},
        {"workers": True},
        {"env": "HOME"},
    ],
)
def test_bad_limits_are_invalid_argument(limits: dict[str, Any]) -> None:
    with pytest.raises(packrun.InvalidArgument, match="sandbox limit"):
        SandboxLimits(**limits)


# --- workers die with their host --------------------------------------------------------------------

HOST_SCRIPT = """\
import sys, anyio, packrun
from pathlib import Path

async def main():
    async with packrun.open_runtime("memory:", sandbox=sys.argv[2]) as rt:
        await rt.publish(Path(sys.argv[1]).read_bytes(), channel="custom")
        await rt.install("evil-inst", "evil")
        async with rt.run("evil-inst", auth=packrun.Auth.api_key("k-1")) as run:
            await run.call("own_key", {})
            print(" ".join(map(str, rt.sandbox_workers)), flush=True)
            await anyio.sleep(60)

anyio.run(main)
"""


def wait_gone(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_gone(pids)


def test_workers_die_with_a_host_that_is_killed(mode: SandboxMode, tmp_path: Path) -> None:
    bundle = tmp_path / "evil-1.0.0.bundle.tar.gz"
    bundle.write_bytes(evil())
    with subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(bundle), mode],
        stdout=subprocess.PIPE,
        text=True,
    ) as host:
        try:
            assert host.stdout is not None
            pids = [int(p) for p in host.stdout.readline().split()]
            assert pids
            assert all(alive(p) for p in pids)
            host.send_signal(signal.SIGKILL)
            host.wait()
            wait_gone(pids)  # reaped by init: the worker died with its parent
        finally:
            host.kill()


# --- chaos: many projects, workers killed at random ------------------------------------------------

TENANT_CODE = """\
import asyncio
import gc

from packrun import Auth
from packrun.sdk import Integration

integration = Integration("__PACK__")


@integration.tool("work")
async def work(ctx, input):
    await asyncio.sleep(input["s"])
    seen = sorted({v for o in gc.get_objects() if isinstance(o, Auth) for v in o.credentials.values()})
    return {"seen": seen, "own": ctx.auth.credentials["key"]}
"""


def tenant(pack: str) -> bytes:
    manifest = packrun.decode_manifest(
        {"id": pack, "version": "1.0.0", "contract": 2, "tools": [{"id": "work"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": TENANT_CODE.replace("__PACK__", pack).encode()})


def children_of_this_process() -> list[int]:
    pid = os.getpid()
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/children"
        with contextlib.suppress(FileNotFoundError), open(path) as handle:  # a thread that ended
            found += [int(c) for c in handle.read().split()]
    return found


@pytest.mark.slow
async def test_200_runs_across_20_projects_with_workers_killed_at_random(mode: SandboxMode) -> None:
    import random

    rng = random.Random(1234)
    before = set(children_of_this_process())
    limits = SandboxLimits(workers_per_digest=2, workers=16, load_timeout=60)
    outcomes: list[str] = []
    seen_pids: set[int] = set()
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        packs = [f"tenant-{n:02d}" for n in range(20)]
        for pack in packs:  # each pack a custom pack of a project of its own
            await rt.publish(tenant(pack), channel="custom", project=pack)
            await rt.install(pack, pack, project=pack)

        async def one(n: int) -> None:
            pack = packs[n % 20]
            key = f"secret-{pack}-{n:03d}"
            try:
                async with rt.run(pack, auth=Auth.api_key(key)) as run:
                    out = await run.call("work", {"s": rng.random() * 0.2})
            except (SandboxCrashed, SandboxUnavailable):
                outcomes.append("killed")
                return
            assert out["own"] == key
            assert all(s.startswith(f"secret-{pack}-") for s in out["seen"]), out["seen"]
            outcomes.append("ok")

        done = anyio.Event()

        async def killer() -> None:
            while not done.is_set():
                await anyio.sleep(0.05)
                pids = rt.sandbox_workers
                seen_pids.update(pids)
                if pids and rng.random() < 0.5:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(pids), signal.SIGKILL)

        async with anyio.create_task_group() as outer:
            outer.start_soon(killer)
            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(one, n)
            done.set()
        seen_pids.update(rt.sandbox_workers)
        assert len(outcomes) == 200
        assert outcomes.count("ok") > 0
        for pack in packs:
            assert rt.in_flight(pack, "1.0.0") == 0
            assert rt.in_flight_for(pack) == 0
        assert rt.stats().runs_in_flight == 0
    assert_gone(sorted(seen_pids))
    assert set(children_of_this_process()) <= before  # no worker left, no zombie


async def test_one_digest_installed_in_two_projects_gets_a_worker_per_project(
    mode: SandboxMode,
) -> None:
    """Workers are keyed by the installation's project: a vendor pack installed by two projects
    runs in two workers, and neither project's credentials reach the other's worker."""
    limits = SandboxLimits(workers_per_digest=1, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(tenant("shared"))
        await rt.install("a-inst", "shared", project="acme-corp")
        await rt.install("b-inst", "shared", project="globex")
        keys = {"a-inst": "secret-acme-corp-1", "b-inst": "secret-globex-1"}
        for inst in ("a-inst", "b-inst", "a-inst"):
            async with rt.run(inst, auth=Auth.api_key(keys[inst])) as run:
                out = await run.call("work", {"s": 0})
            assert out["own"] == keys[inst]
            assert out["seen"] == [keys[inst]], out["seen"]
        workers = note_workers(rt)
        assert len(workers) == 2
    assert_gone(workers)


# --- the manifest's sandbox fields --------------------------------------------------------------------


def test_timeout_s_and_network_are_optional_and_left_out_of_the_canonical_json_when_absent() -> (
    None
):
    from packrun._manifest import encode_manifest

    plain = packrun.decode_manifest({"id": "a", "version": "1.0.0", "tools": [{"id": "t"}]})
    assert b"timeout_s" not in encode_manifest(plain)
    assert b"network" not in encode_manifest(plain)
    doc = {
        "id": "a",
        "version": "1.0.0",
        "network": False,
        "tools": [{"id": "t", "timeout_s": 2.5}],
    }
    shaped = packrun.decode_manifest(doc)
    assert shaped.network is False
    assert shaped.tools[0].timeout_s == 2.5
    assert packrun.decode_manifest(encode_manifest(shaped)) == shaped


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"tools": [{"id": "t", "timeout_s": 0}]}, "$.tools[0].timeout_s"),
        ({"tools": [{"id": "t", "timeout_s": "1s"}]}, "$.tools[0].timeout_s"),
        ({"network": "no", "tools": [{"id": "t"}]}, "$.network"),
    ],
)
def test_a_bad_timeout_s_or_network_is_invalid_manifest(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(packrun.InvalidManifest) as caught:
        packrun.decode_manifest({"id": "a", "version": "1.0.0", **doc})
    assert path in str(caught.value)


# --- attacks on the sandbox itself ------------------------------------------------------------------


def attack_bundle(code: str, tools: list[str], **manifest: Any) -> bytes:
    """A bundle ``evil`` whose code/__init__.py is ``code``, declaring ``tools``."""
    doc: dict[str, Any] = {
        "id": "evil",
        "version": "1.0.0",
        "contract": 2,
        "auth": {"mode": "api_key"},
        "tools": [{"id": t} for t in tools],
        **manifest,
    }
    return bundle_bytes(packrun.decode_manifest(doc), {"__init__.py": code.encode()})


@contextlib.asynccontextmanager
async def attacker(
    mode: SandboxMode, code: str, tools: list[str], limits: SandboxLimits = LIMITS
) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as runtime:
        await runtime.publish(attack_bundle(code, tools), channel="custom")
        await runtime.install("evil-inst", "evil")
        yield runtime
    assert_gone(runtime_pids(runtime))


ESCAPE_CODE = r"""
import ctypes
import os
import stat

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("escape")
def escape(ctx, input):
    out = {"id": [os.getuid(), os.geteuid(), os.getgid()]}
    with open("/proc/self/status") as handle:
        out["caps"] = {
            k: int(v, 16) for k, v in (l.split(":") for l in handle if l.startswith("Cap"))
        }
    libc = ctypes.CDLL(None, use_errno=True)
    os.mkdir("d")  # in its private working folder
    rc = libc.mount(b"none", b"d", b"tmpfs", 0, None)
    out["mount"] = [rc, os.strerror(ctypes.get_errno())]
    try:
        os.mknod("vda", stat.S_IFBLK | 0o600, os.makedev(254, 0))
        out["mknod"] = "made"
    except OSError as exc:
        out["mknod"] = exc.strerror
    out["mount_proc"] = libc.mount(b"proc", b"d", b"proc", 0, None)
    out["chroot"] = libc.chroot(b".")
    return out
"""


async def test_a_worker_has_no_capability_and_cannot_mknod_or_mount(mode: SandboxMode) -> None:
    async with attacker(mode, ESCAPE_CODE, ["escape"]) as rt:
        out = await call(rt, "escape")
    if mode == "bwrap":
        assert out["id"] == [65534, 65534, 65534]  # nobody in a user namespace of its own
    elif os.geteuid() == 0:  # a worker id of its own when the host runs as root
        assert out["id"] == [out["id"][0]] * 3
        assert WORKER_IDS[0] <= out["id"][0] < sum(WORKER_IDS)
    else:  # the executor's user, without a capability
        assert out["id"] == [os.getuid(), os.geteuid(), os.getgid()]
    assert set(out["caps"].values()) == {0}, out["caps"]  # CapEff, CapPrm, CapBnd, ...: none
    assert out["mount"] == [-1, "Operation not permitted"]
    assert out["mknod"] == "Operation not permitted"
    assert out["mount_proc"] == -1
    assert out["chroot"] == -1


FLOOD_CODE = r"""
import os
import socket
import struct
import sys
import tempfile
import time

import msgspec

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("flood")
def flood(ctx, input):
    # Frames the host reads and passes over (a log record of a call that is not running), written
    # straight to the channel as fast as the worker can.
    body = msgspec.msgpack.encode(["log", 999999, 0, "x"])
    chunk = (struct.pack(">I", len(body)) + body) * (1 << 14)
    channel = socket.socket(fileno=os.dup(int(sys.argv[2])))
    channel.setblocking(True)
    try:  # a big send buffer: the host never finds the channel empty
        channel.setsockopt(socket.SOL_SOCKET, 32, 64 << 20)  # SO_SNDBUFFORCE
    except OSError:
        channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 20)
    end = time.monotonic() + input["seconds"]
    while time.monotonic() < end:
        channel.sendall(chunk)
    return {"flooded": True}


@integration.tool("chatty")
def chatty(ctx, input):
    for n in range(input["records"]):
        ctx.logger.warning("record %d", n)
    return {"logged": input["records"]}
"""


async def test_a_worker_flooding_its_channel_still_times_out_and_the_host_loop_runs(
    mode: SandboxMode,
) -> None:
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, call_timeout=1)
    ticks = 0
    done = anyio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            await anyio.sleep(0.01)
            ticks += 1

    async with attacker(mode, FLOOD_CODE, ["flood", "chatty"], limits) as rt:
        await call(rt, "chatty", {"records": 0})  # a warm worker
        before = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await anyio.sleep(0.05)
            before = ticks
            with pytest.raises(ToolTimeout):
                await call(rt, "flood", {"seconds": 8})
            during = ticks - before
            done.set()
    assert during > 0  # the loop kept running while the frames poured in


async def test_a_tool_logging_without_end_gets_its_first_records_relayed_and_one_warning(
    mode: SandboxMode, caplog: pytest.LogCaptureFixture
) -> None:
    async with attacker(mode, FLOOD_CODE, ["flood", "chatty"]) as rt:
        with caplog.at_level(logging.INFO, logger="packrun"):
            assert await call(rt, "chatty", {"records": 3000}) == {"logged": 3000}
    relayed = [r for r in caplog.records if r.name == "packrun.tools.evil"]
    assert len(relayed) == packrun._dispatch._host._LOG_RECORDS
    assert relayed[-1].getMessage() == f"record {packrun._dispatch._host._LOG_RECORDS - 1}"
    warned = [r for r in caplog.records if "records are dropped" in r.getMessage()]
    assert len(warned) == 1
    assert "'chatty' of evil 1.0.0" in warned[0].getMessage()


FRAMES_CODE = r"""
import os
import socket
import struct
import sys
import tempfile
import time

from packrun.sdk import Integration

integration = Integration("evil")


def raw(data):
    channel = socket.socket(fileno=os.dup(int(sys.argv[2])))
    channel.sendall(data)
    channel.close()


@integration.tool("deep")
def deep(ctx, input):
    # An answer to this call nested 5,000 lists deep: the host cannot decode it.
    body = b"\x93\xa4done" + bytes([input["id"]]) + b"\x91" * 5000 + b"\xc0"
    raw(struct.pack(">I", len(body)) + body)
    time.sleep(30)


@integration.tool("pid")
def pid(ctx, input):
    return {"pid": os.getpid(), "ppid": os.getppid()}
"""


async def test_a_frame_too_deep_to_decode_is_sandbox_crashed_and_its_worker_is_not_reused(
    mode: SandboxMode,
) -> None:
    # The decoder refuses nesting past the interpreter's recursion limit: hold it at Python's
    # default here, whatever another test (hypothesis raises it) left behind.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        await _frame_too_deep(mode)
    finally:
        sys.setrecursionlimit(limit)


async def _frame_too_deep(mode: SandboxMode) -> None:
    async with (
        attacker(mode, FRAMES_CODE, ["deep", "pid"]) as rt,
        rt.run("evil-inst", auth=KEY) as run,
    ):
        await run.call("pid", {})
        worker = note_workers(rt)
        with pytest.raises(SandboxCrashed, match="malformed message") as caught:
            await run.call("deep", {"id": 2})
        assert "RecursionError" in caught.value.cause
        assert not any(alive(p) for p in worker)  # killed, not back in the pool
        await run.call("pid", {})
        assert note_workers(rt) != worker  # a new worker serves the next call


TEXT_CODE = r"""
from packrun.sdk import Integration, ToolError

integration = Integration("evil")


@integration.tool("forge")
def forge(ctx, input):
    ctx.logger.warning("ok\r\x1b[2K2026-01-01 INFO packrun: all good\x00\u2028" + "L" * 100_000)
    ctx.logger.warning("two\nlines\tkept")
    if input.get("tool_error"):
        raise ToolError("c" * 1000 + "\x1b", "M" * 100_000)
    raise ValueError("\x1b]0;pwned\x07" + "E" * 100_000)
"""


async def test_a_workers_text_reaches_the_host_cut_and_with_control_characters_escaped(
    mode: SandboxMode, caplog: pytest.LogCaptureFixture
) -> None:
    async with attacker(mode, TEXT_CODE, ["forge"]) as rt:
        with caplog.at_level(logging.INFO, logger="packrun.tools.evil"):
            with pytest.raises(ToolFailed) as raised:
                await call(rt, "forge")
            with pytest.raises(ToolFailed) as coded:
                await call(rt, "forge", {"tool_error": True})
    records = [r.getMessage() for r in caplog.records if r.name == "packrun.tools.evil"]
    forged, kept = records[0], records[1]
    assert forged.startswith("ok\\x0d\\x1b[2K2026-01-01 INFO packrun: all good\\x00\\u2028LLL")
    assert forged.endswith("L… (95946 characters cut)")  # 100,046 characters, 4,096 kept
    assert len(forged) < 4200
    assert kept == "two\nlines\tkept"
    message = str(raised.value)
    assert "\\x1b]0;pwned\\x07EEE" in message
    assert "\x1b" not in message
    assert "characters cut)" in message
    assert len(message) < 4400
    assert len(coded.value.tool_code) < 230
    assert coded.value.tool_code.endswith("characters cut)")
    assert str(coded.value).count("M") < 4200


SNOOP_CODE = r"""
import os

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("snoop")
def snoop(ctx, input):
    out = {}
    for name, pid in input["pids"].items():
        for what in ("environ", "mem"):
            try:
                with open(f"/proc/{pid}/{what}", "rb", 0) as handle:
                    handle.read(1)
                out[f"{name} {what}"] = "read"
            except OSError as exc:
                out[f"{name} {what}"] = type(exc).__name__
    with open("/proc/self/status") as handle:
        out["caps"] = sorted({l.split()[1] for l in handle if l.startswith(("CapEff", "CapPrm", "CapBnd"))})
    return out
"""


async def test_a_worker_cannot_read_the_hosts_or_another_workers_memory_or_environment(
    mode: SandboxMode,
) -> None:
    async with attacker(mode, SNOOP_CODE, ["snoop"]) as rt:
        await rt.publish(victim(), channel="custom")
        await rt.install("victim-inst", "victim")
        victim_run = rt.run("victim-inst", auth=Auth.api_key("VICTIM-key-0123"))
        async with victim_run as other, anyio.create_task_group() as tg:
            tg.start_soon(other.call, "hold", {"s": 2})
            while not rt.sandbox_workers:
                await anyio.sleep(0.01)
            held = note_workers(rt)
            pids = {"host": os.getpid(), "worker": held[0]}
            out = await call(rt, "snoop", {"pids": pids})
    # process mode: the same user, but the host and every worker are not dumpable, and a worker
    # started by root has no capability left (CAP_SYS_PTRACE would open them all)
    gone = "PermissionError" if mode == "process" else "FileNotFoundError"  # bwrap: no such pid
    caps = out.pop("caps")
    assert out == {
        "host environ": gone,
        "host mem": gone,
        "worker environ": gone,
        "worker mem": gone,
    }
    assert caps == ["0000000000000000"]


FILL_CODE = r"""
import os

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("fill")
def fill(ctx, input):
    written = 0
    try:
        for n in range(input["files"]):
            with open(os.path.join(input["folder"], f"fill-{n}"), "wb") as handle:
                handle.write(b"x" * input["size"])
            written += input["size"]
    except OSError as exc:
        return {"written": written, "error": exc.strerror}
    return {"written": written}
"""


async def test_a_bwrap_workers_tmp_and_working_folder_are_bounded_by_tmp_bytes() -> None:
    if not HAVE_BWRAP:
        pytest.fail("CI runs the sandbox tests with bubblewrap: install it (Debian: bubblewrap)")
    limits = SandboxLimits(tmp_bytes=2 * MIB, file_bytes=1 * MIB, load_timeout=20)
    async with attacker("bwrap", FILL_CODE, ["fill"], limits) as rt:
        tmp = await call(rt, "fill", {"folder": "/tmp", "files": 100, "size": 512 * 1024})
        cwd = await call(rt, "fill", {"folder": ".", "files": 100, "size": 512 * 1024})
    for out in (tmp, cwd):  # many files, each under file_bytes: the folder's size stops them
        assert out["error"] == "No space left on device"
        assert out["written"] <= 2 * MIB


CRASH_CODE = r"""
import os

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("die_of_memory")
def die_of_memory(ctx, input):
    # how an interpreter that ran out of memory outside a tool's own code ends
    os.write(2, b"Traceback (most recent call last):\nMemoryError\n")
    os._exit(1)
"""


async def test_the_crash_cause_is_read_from_the_workers_stderr_before_its_folder_is_removed(
    mode: SandboxMode,
) -> None:
    async with attacker(mode, CRASH_CODE, ["die_of_memory"]) as rt:
        with pytest.raises(SandboxCrashed) as caught:
            await call(rt, "die_of_memory")
    assert caught.value.cause.startswith("memory limit reached (256 MiB)")


OUTLIVE_CODE = r"""
import os
import sys
import tempfile
import time

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("escape_group")
def escape_group(ctx, input):
    pid = os.fork()
    if pid == 0:  # a session of its own, then orphaned: out of the worker's process group
        os.setsid()
        if os.fork() == 0:
            code = "import time; time.sleep(60)"
            os.execv(sys.executable, [sys.executable, "-c", code, input["marker"]])
        os._exit(0)
    os.waitpid(pid, 0)
    for _ in range(1000):  # until its orphan runs what it execs (a bounded wait)
        if running(input["marker"]):
            break
        time.sleep(0.01)
    if input.get("then_exit"):
        os._exit(3)  # the worker dies on its own, before the runtime can take its orphan down
    return {"started": True}


def running(marker):
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read().split(b"\0"):
                    return True
        except OSError:
            pass
    return False
"""


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


FORKING = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, processes=64)


async def test_a_process_escaping_the_workers_group_ends_with_the_runtime(
    mode: SandboxMode,
) -> None:
    marker = f"packrun-test-escapee-{os.getpid()}-{time.monotonic_ns()}"
    async with attacker(mode, OUTLIVE_CODE, ["escape_group"], FORKING) as rt:
        assert await call(rt, "escape_group", {"marker": marker}) == {"started": True}
        deadline = time.monotonic() + 10
        while not processes_with(marker) and time.monotonic() < deadline:
            await anyio.sleep(0.05)  # it may not have reached its exec yet
        assert processes_with(marker)  # running while the runtime is open
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    left = [p for p in processes_with(marker) if alive(p)]
    try:
        # bwrap: the pid namespace ends with the worker, and all in it; process mode: the worker
        # adopts what its children orphan, and the host kills all below it
        assert left == []
    finally:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_process_escaping_a_worker_that_dies_on_its_own_ends_with_it(
    mode: SandboxMode,
) -> None:
    marker = f"packrun-test-escapee-{os.getpid()}-{time.monotonic_ns()}"
    async with attacker(mode, OUTLIVE_CODE, ["escape_group"], FORKING) as rt:
        with pytest.raises(SandboxCrashed, match="exited with status 3"):
            # the worker exits only once its orphan runs (in a session of its own)
            await call(rt, "escape_group", {"marker": marker, "then_exit": True})
        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        left = [p for p in processes_with(marker) if alive(p)]
    try:
        # bwrap: the pid namespace ends with the worker, and all in it; process mode: the
        # worker's supervisor adopted the orphan and killed it when the worker ended
        assert left == []
    finally:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


FORGE_CODE = r"""
import os
import struct
import sys
import tempfile

import msgspec

# Answer the load check before the import has finished, then fail the import.
body = msgspec.msgpack.encode(["loaded", 2, None, ["t"]])
os.write(int(sys.argv[2]), struct.pack(">I", len(body)) + body)
raise SystemExit("this import never finishes")
"""


async def test_a_bundle_forging_its_load_answer_passes_publish_but_none_of_its_calls_run(
    mode: SandboxMode,
) -> None:
    # Documented limit: the check at publish runs the bundle's own code in the worker, which can
    # answer for it. The check is a quality gate; containment does not depend on it.
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=LIMITS) as rt:
        await rt.publish(import_bundle(FORGE_CODE), channel="custom")
        await rt.install("bad-inst", "bad")
        for _ in range(2):
            with pytest.raises(SandboxCrashed, match="answered its load again"):
                await rt.call("bad-inst", "t", {}, auth=KEY)
        note_workers(rt)
    assert_gone(runtime_pids(rt))


# --- the worker's user, its processes and what it leaves on disk -------------------------------------

USER_CODE = r"""
import os
import subprocess
import sys
import tempfile
import time

from packrun.sdk import Integration

integration = Integration("evil")


@integration.tool("whoami")
def whoami(ctx, input):
    try:
        with open(input["path"]) as handle:
            read = handle.read()
    except OSError as exc:
        read = type(exc).__name__
    return {"id": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups(), "read": read}


@integration.tool("fork")
def fork(ctx, input):
    out = {}
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out["fork"] = "forked"
    except OSError as exc:
        out["fork"] = type(exc).__name__
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out["subprocess"] = "ran"
    except OSError as exc:
        out["subprocess"] = type(exc).__name__
    return out


@integration.tool("bomb")
def bomb(ctx, input):
    started = 0
    for _ in range(input["at_most"]):  # bounded here so a mode that cannot stop it stays polite
        try:
            pid = os.fork()
        except OSError as exc:
            return {"started": started, "stopped_by": type(exc).__name__}
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
    return {"started": started, "stopped_by": None}


@integration.tool("pid")
def pid(ctx, input):
    return {"pid": os.getpid()}
"""
USER_TOOLS = ["whoami", "fork", "bomb", "pid"]


async def test_a_worker_started_by_root_runs_as_a_user_of_its_own_and_cannot_read_roots_files(
    mode: SandboxMode, tmp_path: Path
) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    for parent in (folder, *folder.parents):  # the way there is open: only the file is closed
        if str(parent).startswith(str(tmp_path.parent)):
            parent.chmod(0o755)
    secret = folder / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    async with attacker(mode, USER_CODE, USER_TOOLS) as rt:
        out = await call(rt, "whoami", {"path": str(secret)})
        shadow = await call(rt, "whoami", {"path": "/etc/shadow"})  # root's, group shadow's
    if mode == "bwrap":  # nobody in a namespace of its own, and a /tmp of its own
        assert out["id"] == [65534] * 4
        assert out["read"] == "FileNotFoundError"
    elif os.geteuid() == 0:  # the host runs as root: its worker does not, nor as nobody
        assert out["id"] == [out["id"][0]] * 4
        assert WORKER_IDS[0] <= out["id"][0] < sum(WORKER_IDS)
        assert out["groups"] == []
        # under /tmp, where it has a /tmp of its own, the file is not even there
        hidden = secret.resolve().is_relative_to("/tmp")
        assert out["read"] == ("FileNotFoundError" if hidden else "PermissionError")
        assert shadow["read"] == "PermissionError"
    else:  # documented: the executor's own user, which can read what that user can
        assert out["id"][0] == os.getuid()
        assert out["read"] == "root only"


async def test_a_worker_starts_no_process_by_default_and_the_executor_goes_on(
    mode: SandboxMode,
) -> None:
    async with attacker(mode, USER_CODE, USER_TOOLS) as rt:
        assert await call(rt, "fork") == {
            "fork": "PermissionError",
            "subprocess": "PermissionError",
        }
        out = await call(rt, "bomb", {"at_most": 1000})
        assert out == {"started": 0, "stopped_by": "PermissionError"}
        assert (await call(rt, "pid"))["pid"]  # the same worker serves on


async def test_a_fork_bomb_stops_at_the_process_limit_and_ends_with_the_runtime(
    mode: SandboxMode,
) -> None:
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, processes=8)
    async with attacker(mode, USER_CODE, USER_TOOLS, limits) as rt:
        forked = (await call(rt, "fork"))["fork"]
        out = await call(rt, "bomb", {"at_most": 40})
        (worker,) = note_workers(rt)
        below = _below(worker)
        assert len(below) >= out["started"]  # the bomb's processes, asleep (and bwrap's own)
        assert (await call(rt, "pid"))["pid"]  # the executor and the worker go on
    if mode == "bwrap" and os.geteuid() == 0:
        # documented: the kernel does not count processes for a user that is root outside the
        # namespaces; the default (no process at all) holds, a limit above 0 does not
        assert forked == "forked"
        assert out == {"started": 40, "stopped_by": None}
    else:  # RLIMIT_NPROC holds: nobody's processes under a root executor, else the user's
        if os.geteuid() == 0:
            assert forked == "forked"
        assert out["stopped_by"] == "BlockingIOError"
        assert out["started"] < 8
    deadline = time.monotonic() + 10
    while any(alive(p) for p in below) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert not [p for p in below if alive(p)]


def _below(pid: int) -> list[int]:
    """Every process below ``pid``."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = []
        for parent in frontier:
            for tid in os.listdir(f"/proc/{parent}/task"):
                path = f"/proc/{parent}/task/{tid}/children"
                with contextlib.suppress(OSError), open(path) as handle:
                    children += [int(c) for c in handle.read().split()]
        found += children
        frontier = children
    return found


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def worker_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("packrun-worker-"))


async def test_a_runtime_leaves_no_worker_folder_behind_even_after_a_worker_was_killed(
    mode: SandboxMode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    async with attacker(mode, USER_CODE, USER_TOOLS) as rt:
        first = (await call(rt, "pid"))["pid"]
        assert first
        (worker,) = note_workers(rt)
        if mode == "process":
            assert len(worker_folders(tmp_path)) == 1  # its private folder, while it lives
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _state(worker) not in ("Z", "X", None) and time.monotonic() < deadline:
            await anyio.sleep(0.02)  # dead, not yet reaped: its host has not looked yet
        with pytest.raises(SandboxCrashed):  # noticed by the next call, which it fails
            await call(rt, "pid")
        assert (await call(rt, "pid"))["pid"]  # a new worker
    assert worker_folders(tmp_path) == []


def test_the_folder_of_a_worker_whose_host_was_killed_goes_with_the_next_runtime(
    mode: SandboxMode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "evil-1.0.0.bundle.tar.gz"
    bundle.write_bytes(evil())
    temp = tmp_path / "tmp"
    temp.mkdir()
    with subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(bundle), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    ) as host:
        try:
            assert host.stdout is not None
            pids = [int(p) for p in host.stdout.readline().split()]
            host.send_signal(signal.SIGKILL)
            host.wait()
            wait_gone(pids)
        finally:
            host.kill()
    # process mode: the dead host's worker folder is there (bwrap keeps none on disk)
    assert len(worker_folders(temp)) == (1 if mode == "process" else 0)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    async def next_runtime() -> None:
        async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=LIMITS) as rt:
            await rt.publish(attack_bundle(USER_CODE, USER_TOOLS), channel="custom")
            await rt.install("evil-inst", "evil")
            await call(rt, "pid")

    anyio.run(next_runtime)
    assert worker_folders(temp) == []


async def test_runs_taking_turns_on_one_worker_each_get_their_own_context(
    mode: SandboxMode,
) -> None:
    # A run's context travels with its first call to a worker and is kept for its next calls:
    # runs interleaving on one worker must each be given theirs again.
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, workers_per_digest=1)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        async with (
            rt.run("evil-inst", auth=Auth.api_key("key-of-run-a")) as a,
            rt.run("evil-inst", auth=Auth.api_key("key-of-run-b")) as b,
        ):
            seen = [
                (await a.call("own_key"))["key"],
                (await a.call("own_key"))["key"],
                (await b.call("own_key"))["key"],
                (await a.call("own_key"))["key"],
                (await b.call("own_key"))["key"],
                (await b.call("own_key"))["key"],
            ]
            note_workers(rt)
        assert len(rt.sandbox_workers) == 1
    assert seen == ["key-of-run-a"] * 2 + ["key-of-run-b", "key-of-run-a"] + ["key-of-run-b"] * 2
    assert_gone(runtime_pids(rt))


async def test_a_call_refused_before_it_is_sent_leaves_no_other_runs_context_in_place(
    mode: SandboxMode,
) -> None:
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, workers_per_digest=1)
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        await rt.publish(evil(), channel="custom")
        await rt.install("evil-inst", "evil")
        async with (
            rt.run("evil-inst", auth=Auth.api_key("key-of-run-a")) as a,
            rt.run("evil-inst", auth=Auth.api_key("key-of-run-b")) as b,
        ):
            assert (await a.call("own_key"))["key"] == "key-of-run-a"
            with pytest.raises(packrun.InvalidArgument, match="msgpack"):
                await b.call("own_key", {"value": object()})  # never reaches the worker
            assert (await b.call("own_key"))["key"] == "key-of-run-b"
