"""What a sandbox worker leaves behind and whom it can reach (DESIGN.md section 14).

Written as an attacker would: a tool that double-forks into a session of its own and then ends its
worker (``os._exit``, a signal), a tool that tries to kill or trace the process above it, a tool in
one project's worker that goes after another project's worker (signals, ``/proc/<pid>/environ``,
its files), and an executor that is not root, run for real under ``setpriv``. Leftover processes
are looked for in ``/proc``, with bounded polling.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import packrun
import packrun._dispatch._spawn
from packrun import Auth, Runtime, SandboxCrashed, SandboxLimits, SandboxMode, SandboxUnavailable
from packrun._bundle import bundle_bytes
from packrun._dispatch._spawn import WORKER_IDS, _ids_folder
from test_sandbox import IN_CI, MIB, alive, mode, processes_with

__all__ = ["mode"]  # the fixture: every test here that takes it runs in both modes

pytestmark = pytest.mark.anyio

CODE = r'''
import ctypes
import os
import signal
import sys
import time

from packrun.sdk import Integration

integration = Integration("contain")

if "PACKRUN_TEST_IMPORTED" in os.environ:  # who imported this bundle, where the host can see it
    try:
        with open(os.environ["PACKRUN_TEST_IMPORTED"], "a") as handle:
            handle.write(f"{os.getuid()}\n")
    except OSError:
        pass


def running(marker):
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read().split(b"\0"):
                    return True
        except OSError:
            pass
    return False


def attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return type(exc).__name__


def read(path):
    with open(path, "rb", 0) as handle:
        handle.read(1)


@integration.tool("whoami")
def whoami(ctx, input):
    with open("secret", "w") as handle:  # in its private working folder
        handle.write("mine alone")
    return {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
            "id": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups()}


@integration.tool("outlive")
def outlive(ctx, input):
    """An orphan in a session of its own, running once this returns; then the worker ends."""
    out = {}
    if input.get("supervisor"):  # first, the process above the worker
        ppid = os.getppid()
        out["kill"] = attempt(lambda: os.kill(ppid, signal.SIGKILL))
        out["stop"] = attempt(lambda: os.kill(ppid, signal.SIGSTOP))
        out["mem"] = attempt(lambda: read(f"/proc/{ppid}/mem"))
        libc = ctypes.CDLL(None, use_errno=True)
        out["ptrace"] = os.strerror(ctypes.get_errno()) if libc.ptrace(16, ppid, 0, 0) else "attached"
    if input.get("then") == "sleep":  # its end comes from elsewhere
        time.sleep(30)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            code = "import time; time.sleep(60)"
            os.execv(sys.executable, [sys.executable, "-c", code, input["marker"]])
        os._exit(0)
    os.waitpid(pid, 0)
    for _ in range(1000):  # until the orphan runs what it execs (bounded)
        if running(input["marker"]):
            break
        time.sleep(0.01)
    out["orphan"] = running(input["marker"])
    how = input.get("then")
    if how == "exit":
        os._exit(5)
    if how == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    return out


@integration.tool("attack")
def attack(ctx, input):
    """What a worker can do to another project's worker: ``input`` names its pids and folder."""
    pid, sup, cwd = input["pid"], input["supervisor"], input["cwd"]
    out = {  # reading first: the kills, where they work, end it
        "environ": attempt(lambda: read(f"/proc/{pid}/environ")),
        "mem": attempt(lambda: read(f"/proc/{pid}/mem")),
        "list folder": attempt(lambda: os.listdir(cwd)),
        "read file": attempt(lambda: read(os.path.join(cwd, "secret"))),
        "signal 0": attempt(lambda: os.kill(pid, 0)),
    }
    if input.get("kill", True):
        out["kill supervisor"] = attempt(lambda: os.kill(sup, signal.SIGKILL))
        out["kill"] = attempt(lambda: os.kill(pid, signal.SIGKILL))
    return out


IPC_KEY = 0x7061636B
LEFT = ("/tmp/left-behind", "/var/tmp/left-behind", "/dev/shm/left-behind")


@integration.tool("leave")
def leave(ctx, input):
    """Leave files and System V IPC objects behind for the next worker of this user id."""
    for path in LEFT:
        with open(path, "w") as handle:
            handle.write("secret of " + input["project"])
    libc = ctypes.CDLL(None, use_errno=True)
    return {"id": os.getuid(), "shm": libc.shmget(IPC_KEY, 4096, 0o1600),  # IPC_CREAT
            "msg": libc.msgget(IPC_KEY, 0o1600)}


@integration.tool("look")
def look(ctx, input):
    """What of a former worker's leftovers this worker sees."""
    libc = ctypes.CDLL(None, use_errno=True)
    return {"id": os.getuid(), "files": [p for p in LEFT if os.path.exists(p)],
            "shm": libc.shmget(IPC_KEY, 0, 0), "msg": libc.msgget(IPC_KEY, 0)}
'''
TOOLS = ["whoami", "outlive", "attack", "leave", "look"]
FORKING = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, processes=64)
LIMITS = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20)


def contain_bundle() -> bytes:
    manifest = packrun.decode_manifest(
        {
            "id": "contain",
            "version": "1.0.0",
            "contract": 2,
            "auth": {"mode": "api_key"},
            "tools": [{"id": t} for t in TOOLS],
        }
    )
    return bundle_bytes(manifest, {"__init__.py": CODE.encode()})


@contextlib.asynccontextmanager
async def runtime(
    mode: SandboxMode, limits: SandboxLimits = LIMITS, projects: tuple[str, ...] = ("acme",)
) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        for project in projects:
            await rt.publish(contain_bundle(), channel="custom", project=project)
            await rt.install(f"{project}-inst", "contain", project=project)
        yield rt


async def call(rt: Runtime, tool: str, input: dict[str, Any], project: str = "acme") -> Any:
    key = Auth.api_key(f"key-of-{project}-0123")
    async with rt.run(f"{project}-inst", auth=key) as run:
        return await run.call(tool, input)


def marker() -> str:
    return f"packrun-test-orphan-{os.getpid()}-{time.monotonic_ns()}"


def wait_none_with(mark: str, timeout: float = 10) -> list[int]:
    """The processes still running with ``mark`` on their command line once they are gone or
    ``timeout`` has passed (a bounded poll); killed before the answer is returned."""
    deadline = time.monotonic() + timeout
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in processes_with(mark) if alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def uids_running() -> set[int]:
    """The real user ids of every process of the machine."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, KeyError):
                found.add(int(status(int(entry))["Uid"].split()[0]))
    return found


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, KeyError):
                if int(status(int(entry))["Uid"].split()[0]) == uid and alive(int(entry)):
                    found.append(int(entry))
    return found


@pytest.fixture
def root() -> None:
    """The claims of a root executor; CI runs as root, and fails rather than skips without it."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs the sandbox tests as root")
        pytest.skip("run as root to test a root executor (tests/test_sandbox_containment.py)")


# --- orphans end with their worker, however it ends ---------------------------------------------


@pytest.mark.parametrize(
    ("then", "cause"), [("exit", "exited with status 5"), ("signal", "killed by signal SIGKILL")]
)
async def test_an_orphan_in_a_session_of_its_own_ends_with_a_worker_that_dies_on_its_own(
    mode: SandboxMode, then: str, cause: str
) -> None:
    mark = marker()
    async with runtime(mode, FORKING) as rt:
        with pytest.raises(SandboxCrashed, match=cause):  # the cause is still the worker's own
            await call(rt, "outlive", {"marker": mark, "then": then})
        # the orphan ran, outside the worker's session; it is gone although the runtime is open
        assert wait_none_with(mark) == []
        assert await call(rt, "whoami", {})  # a fresh worker serves the next call


async def test_an_orphan_runs_while_its_worker_lives_then_ends_with_the_runtime(
    mode: SandboxMode,
) -> None:
    mark = marker()
    async with runtime(mode, FORKING) as rt:
        assert (await call(rt, "outlive", {"marker": mark}))["orphan"] is True
        assert processes_with(mark)
    assert wait_none_with(mark) == []


async def test_under_a_root_executor_a_worker_cannot_kill_stop_or_trace_its_supervisor(
    root: None,
) -> None:
    mark = marker()
    async with runtime("process", FORKING) as rt:
        me = await call(rt, "whoami", {})
        (supervisor,) = rt.sandbox_workers
        assert me["ppid"] == supervisor
        held = status(supervisor)  # uid 0 with CAP_KILL alone, not dumpable, no new privileges
        assert held["Uid"].split() == ["0"] * 4
        assert int(held["CapEff"], 16) == int(held["CapPrm"], 16) == 1 << 5
        assert int(held["CapBnd"], 16) == 1 << 5
        assert held["NoNewPrivs"] == "1"
        out = await call(rt, "outlive", {"marker": mark, "supervisor": True})
        assert out == {
            "kill": "PermissionError",
            "stop": "PermissionError",
            "mem": "PermissionError",
            "ptrace": "Operation not permitted",
            "orphan": True,
        }
        assert rt.sandbox_workers == [supervisor]  # still there, serving
        with pytest.raises(SandboxCrashed, match="exited with status 5"):
            await call(rt, "outlive", {"marker": mark, "supervisor": True, "then": "exit"})
        assert wait_none_with(mark) == []  # both orphans: the supervisor outlived its worker


ORPHAN_HOST = """\
import sys, anyio, packrun
from pathlib import Path

async def main():
    limits = packrun.SandboxLimits(processes=8, load_timeout=20)
    async with packrun.open_runtime("memory:", sandbox=sys.argv[2], sandbox_limits=limits) as rt:
        await rt.publish(Path(sys.argv[1]).read_bytes(), channel="custom")
        await rt.install("inst", "contain")
        async with rt.run("inst", auth=packrun.Auth.api_key("k-1")) as run:
            print((await run.call("outlive", {"marker": sys.argv[3]}))["orphan"], flush=True)
            await anyio.sleep(60)

anyio.run(main)
"""


def test_an_orphan_ends_when_its_host_is_killed(mode: SandboxMode, tmp_path: Path) -> None:
    bundle = tmp_path / "contain.bundle.tar.gz"
    bundle.write_bytes(contain_bundle())
    mark = marker()
    command = [sys.executable, "-c", ORPHAN_HOST, str(bundle), mode, mark]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as host:
        try:
            assert host.stdout is not None
            assert host.stdout.readline().strip() == "True"
            assert processes_with(mark)
            host.send_signal(signal.SIGKILL)
            host.wait()
            assert wait_none_with(mark) == []
        finally:
            host.kill()


# --- each worker of a root executor is a user of its own ----------------------------------------


def bundle_process(worker: int) -> int:
    """The process below the one the runtime started that runs the bundle (the interpreter
    deepest below it: the supervisor's child, or the one bubblewrap runs)."""
    found, frontier = [], [worker]
    while frontier:
        below = []
        for parent in frontier:
            for tid in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{parent}/task/{tid}/children") as f:
                    below += [int(c) for c in f.read().split()]
        found += below
        frontier = below
    return [
        p for p in found if b"packrun._dispatch.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
    ][-1]


async def test_a_worker_cannot_signal_trace_or_read_another_projects_worker(
    mode: SandboxMode,
) -> None:
    async with runtime(mode, projects=("acme", "globex")) as rt:
        victim = await call(rt, "whoami", {}, project="globex")
        (supervisor,) = rt.sandbox_workers
        target = {"pid": bundle_process(supervisor), "supervisor": supervisor, "cwd": victim["cwd"]}
        if mode == "process":
            assert target["pid"] == victim["pid"]
        out = await call(rt, "attack", target, project="acme")
        attacker = await call(rt, "whoami", {}, project="acme")
        assert await call(rt, "whoami", {}, project="globex") == victim  # untouched
        assert len(rt.sandbox_workers) == 2
    if mode == "bwrap":  # its own pid namespace, and a working folder of its own at that path
        assert out == {
            "environ": "FileNotFoundError",
            "mem": "FileNotFoundError",
            "list folder": "done",  # its own, empty: whoami had not run in it yet
            "read file": "FileNotFoundError",
            "signal 0": "ProcessLookupError",
            "kill supervisor": "ProcessLookupError",
            "kill": "ProcessLookupError",
        }
        assert attacker["cwd"] == victim["cwd"] == "/packrun-worker"
    elif os.geteuid() == 0:  # a user of its own: another worker's processes and files are closed
        assert attacker["id"][0] != victim["id"][0]
        # its own /tmp does not even hold another worker's folder
        folder = {"list folder": "FileNotFoundError", "read file": "FileNotFoundError"}
        assert out == {**dict.fromkeys(out, "PermissionError"), **folder}
        assert len(out) == 7
    else:  # documented: workers of an executor that is not root share its user
        assert attacker["id"] == victim["id"]


async def test_live_workers_of_a_root_executor_each_have_a_user_and_folder_of_their_own(
    root: None,
) -> None:
    projects = ("p1", "p2", "p3", "p4")
    async with runtime("process", projects=projects) as rt:
        seen = [await call(rt, "whoami", {}, project=p) for p in projects]
        ids = [me["id"][0] for me in seen]
        for me in seen:
            assert me["id"] == [me["id"][0]] * 4  # user and group, real and effective
            assert me["groups"] == []
            folder = os.stat(me["cwd"])
            assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o777) == (*me["id"][:2], 0o700)
            sup = status(me["ppid"])["Uid"].split()[0]
            assert sup == "0"  # its supervisor is root's, the worker is not
    first, count = WORKER_IDS
    assert len(set(ids)) == len(ids)
    assert all(first <= uid < first + count for uid in ids)
    deadline = time.monotonic() + 10
    while set(ids) & uids_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(ids) & uids_running()  # no process of theirs is left


async def test_a_worker_id_is_held_until_its_worker_ends_also_across_executors(
    root: None, tmp_path: Path
) -> None:
    only = (WORKER_IDS[0] + 60_000 + os.getpid() % 5_000, 1)  # one id, of this test alone
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, worker_ids=only)
    bundle = tmp_path / "contain.bundle.tar.gz"
    bundle.write_bytes(contain_bundle())
    script = ORPHAN_HOST.replace("processes=8", f"processes=8, worker_ids={only!r}")
    command = [sys.executable, "-c", script, str(bundle), "process", marker()]
    async with runtime("process", limits) as rt:  # published (checked in a worker) first
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as host:
            try:  # another executor's live worker holds the id
                assert host.stdout is not None
                assert host.stdout.readline().strip() == "True"
                assert processes_of(only[0])
                with pytest.raises(SandboxUnavailable, match="held by live workers"):
                    await call(rt, "whoami", {})
                host.send_signal(signal.SIGKILL)  # its workers end with it, and release the id
                host.wait()
            finally:
                host.kill()
    wait_id_free(only[0])  # the killed host's worker's supervisor ended its tree and itself
    async with runtime("process", limits) as rt:
        assert (await call(rt, "whoami", {}))["id"][0] == only[0]
    assert processes_of(only[0]) == []


def wait_id_free(uid: int) -> None:
    """Until no supervisor holds the lock of worker id ``uid`` (a bounded poll)."""
    lock = os.open(os.path.join(_ids_folder(), str(uid)), os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            break
    finally:
        os.close(lock)


async def test_a_worker_sees_nothing_a_former_worker_of_its_user_id_left_behind(root: None) -> None:
    only = (WORKER_IDS[0] + 50_000 + os.getpid() % 5_000, 1)  # both workers get this id
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, worker_ids=only)
    async with runtime("process", limits, projects=("acme",)) as rt:
        left = await call(rt, "leave", {"project": "acme"}, project="acme")
    assert left["id"] == only[0]
    assert left["shm"] >= 0  # created, in the worker's own IPC namespace
    assert left["msg"] >= 0
    wait_id_free(only[0])
    async with runtime("process", limits, projects=("globex",)) as rt:
        seen = await call(rt, "look", {}, project="globex")
    assert seen == {"id": only[0], "files": [], "shm": -1, "msg": -1}
    # nor are they anywhere on the machine: they were in memory of the ended worker's own
    assert not any(os.path.exists(p) for p in ("/tmp/left-behind", "/dev/shm/left-behind"))
    assert not os.path.exists("/var/tmp/left-behind")


async def test_a_root_executors_worker_without_namespaces_does_not_start(
    root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imported = tmp_path / "imported"
    monkeypatch.setenv("PACKRUN_TEST_IMPORTED", str(imported))
    limits = SandboxLimits(memory_bytes=256 * MIB, load_timeout=20, env=("PACKRUN_TEST_IMPORTED",))
    async with runtime("process", limits) as rt:
        for worker in list(rt.sandbox_workers):  # the one that checked the bundle at publish
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        imported.unlink(missing_ok=True)
        monkeypatch.setattr(packrun._dispatch._spawn, "_FAIL_ISOLATION", True)
        with pytest.raises(SandboxUnavailable, match="sandbox='bwrap'") as caught:
            await call(rt, "whoami", {})
        assert caught.value.code == "sandbox_unavailable"
        assert "namespace" in str(caught.value)
    # the bundle's code never ran: neither as uid 0 (which would have written here) nor at all
    assert not imported.exists()


async def test_a_planted_folder_of_worker_id_locks_is_refused(
    root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a user that is not root created the lock folder first (where /run is not root's, it lies in
    # the temporary folder, which anyone may write): its locks would be that user's to hold
    planted = tmp_path / "packrun-worker-ids"
    planted.mkdir()
    os.chown(planted, WORKER_IDS[0], WORKER_IDS[0])
    async with runtime("process") as rt:
        monkeypatch.setattr(packrun._dispatch._spawn, "_ids_folder", lambda: str(planted))
        with pytest.raises(SandboxUnavailable, match="not a folder of root's alone"):
            await call(rt, "whoami", {})
        assert rt.sandbox_workers == []
    assert list(planted.iterdir()) == []


CLAIM = """\
import os, sys
os.close(0)  # the lowest free descriptor: the worker would get it in place of its stdin
from packrun._dispatch._spawn import claim_id
print(claim_id((int(sys.argv[1]), 1))[1])
"""


def test_a_claimed_worker_id_is_held_by_a_descriptor_above_the_standard_ones(root: None) -> None:
    uid = WORKER_IDS[0] + 40_000 + os.getpid() % 5_000
    done = subprocess.run([sys.executable, "-c", CLAIM, str(uid)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 3


def test_a_failed_claim_of_a_worker_id_leaks_no_descriptor(
    root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, how: int) -> None:
        raise OSError(37, "No locks available")  # ENOLCK

    monkeypatch.setattr(fcntl, "flock", refuse)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(SandboxUnavailable, match="No locks available"):
        packrun._dispatch._spawn.claim_id((WORKER_IDS[0] + 45_000, 1))
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    "ids",
    [
        *[(0, 10), (42, 1), (1_000, 10), (65_535, 5), (70_000, 0), (2**32 - 10, 20)],
        *[(65_000, 1_000), [5], (1.5, 2), (True, 2), "1,2"],
    ],
)
def test_bad_worker_ids_are_invalid_argument(ids: Any) -> None:
    with pytest.raises(packrun.InvalidArgument, match="worker_ids"):
        SandboxLimits(worker_ids=ids)


# --- an executor that is not root -----------------------------------------------------------------

EXECUTOR_UID = 2_100_000_000 + os.getpid() % 1_000  # no user of this machine; not a worker id

NON_ROOT_HOST = """\
import json, os, sys, anyio, packrun
from pathlib import Path

async def main():
    mode, bundle, mark = sys.argv[1:4]
    # RLIMIT_NPROC counts every process and thread of the executor's user: room for them all
    limits = packrun.SandboxLimits(processes=256, load_timeout=20)
    out = {"host": [os.getuid(), os.geteuid()]}
    async with packrun.open_runtime("memory:", sandbox=mode, sandbox_limits=limits) as rt:
        for project in ("acme", "globex"):
            await rt.publish(Path(bundle).read_bytes(), channel="custom", project=project)
            await rt.install(project, "contain", project=project)

        async def call(project, tool, input):
            async with rt.run(project, auth=packrun.Auth.api_key("k-of-" + project)) as run:
                return await run.call(tool, input)

        out["acme"] = await call("acme", "whoami", {})
        out["globex"] = await call("globex", "whoami", {})
        out["folder"] = os.stat(out["globex"]["cwd"]).st_uid
        target = {"pid": out["globex"]["pid"], "supervisor": 0, "cwd": out["globex"]["cwd"]}
        out["attack"] = await call("acme", "attack", {**target, "kill": False})
        try:  # documented: a worker can kill its supervisor, of the same user
            await call("acme", "outlive", {"marker": mark, "supervisor": True, "then": "sleep"})
        except packrun.SandboxCrashed as exc:
            out["supervisor"] = exc.cause
        try:
            await call("acme", "outlive", {"marker": mark, "then": "exit"})
        except packrun.SandboxCrashed as exc:
            out["crash"] = exc.cause
    print(json.dumps(out), flush=True)

anyio.run(main)
"""


@pytest.fixture
def non_root_home() -> Iterator[Path]:
    """A folder of the non-root executor's own (under /tmp: pytest's own is closed to others)."""
    home = Path(tempfile.mkdtemp(prefix="packrun-non-root-"))
    os.chown(home, EXECUTOR_UID, EXECUTOR_UID)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def open_to_others(path: str) -> bool:
    """Whether a user that is not root can run ``path`` (every folder above it can be passed)."""
    real = Path(os.path.realpath(path))
    return all(os.stat(p).st_mode & 0o001 for p in (real, *real.parents))


@pytest.fixture
def non_root_python(non_root_home: Path) -> str:
    """An interpreter a user that is not root can run, with packrun and its dependencies: a
    virtual environment of this Python version (the tests' own may lie below ``/root``) whose
    packages are this one's, and whose interpreter workers run too."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        getattr(sys, "_base_executable", sys.executable),
        f"/usr/bin/{version}",
        f"/usr/local/bin/{version}",
    ]
    usable = [c for c in candidates if os.path.exists(c) and open_to_others(c)]
    if not usable:
        if IN_CI:
            pytest.fail(f"no {version} that a user other than root can run")
        pytest.skip(f"no {version} that a user other than root can run")
    venv = non_root_home / "venv"
    subprocess.run([usable[0], "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    # Copies of packrun and what it imports at run time: the tests' own environment may lie in
    # a folder other users cannot enter (a temporary folder of mode 0700, /root).
    for name in RUNTIME_IMPORTS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # not needed on this Python (typing_extensions)
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(
                source, site / source.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(spec.origin, site / Path(spec.origin).name)
    for file in importlib.metadata.distribution("packrun").files or ():  # its version, from them
        if file.parts[0].endswith(".dist-info"):
            target = site.joinpath(*file.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(str(file.locate())), target)
    return str(venv / "bin" / "python")


RUNTIME_IMPORTS = ("packrun", "anyio", "idna", "sniffio", "typing_extensions", "msgspec", "semver")
"""The modules packrun imports at run time (its dependencies' own included)."""


def test_an_executor_that_is_not_root_runs_its_process_workers_as_its_own_user(
    root: None, non_root_home: Path, non_root_python: str
) -> None:
    mode = "process"  # what differs for an executor that is not root (bwrap's user is nobody)
    bundle = non_root_home / "contain.bundle.tar.gz"
    bundle.write_bytes(contain_bundle())
    mark = marker()
    command = [
        "setpriv",
        f"--reuid={EXECUTOR_UID}",
        f"--regid={EXECUTOR_UID}",
        "--clear-groups",
        non_root_python,
        "-c",
        NON_ROOT_HOST,
        mode,
        str(bundle),
        mark,
    ]
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(non_root_home), "HOME": str(non_root_home)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        deadline = time.monotonic() + 10
        while processes_of(EXECUTOR_UID) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of(EXECUTOR_UID) == []  # nothing of that user is left: no orphan
    finally:
        for pid in processes_of(EXECUTOR_UID):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert out["host"] == [EXECUTOR_UID] * 2
    # the worker's orphan ended with it (its supervisor, of the same user, killed it), and the
    # cause is still the worker's own exit
    assert out["crash"].startswith("exited with status 5")
    assert wait_none_with(mark) == []
    # documented: it cannot change user, so its workers run as its own user, every one the same,
    # in folders of that user; one worker can signal and read another's files
    assert out["acme"]["id"] == out["globex"]["id"] == [EXECUTOR_UID] * 4
    assert out["folder"] == EXECUTOR_UID
    assert out["attack"] == {
        "environ": "PermissionError",  # not dumpable: memory and environment stay closed
        "mem": "PermissionError",
        "list folder": "done",
        "read file": "done",
        "signal 0": "done",
    }
    # documented: its supervisor, of the same user, can be killed, and its worker with it
    assert out["supervisor"].startswith("killed by signal SIGKILL")
