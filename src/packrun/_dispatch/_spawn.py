"""Starting and stopping sandbox worker processes (host side).

A worker is a fresh interpreter started by exec (``sys.executable -I -m packrun._dispatch.worker``),
never a fork of the host, whose memory holds other runs' credentials. It gets an empty environment
but for the variables the operator lists, a private empty working folder, no file descriptors but
its end of a socketpair (and its stderr, a file with no name), its own process group (session),
resource limits it applies in its first lines, and death with the host. In ``process`` mode the
process started stays the supervisor of the one that serves the bundle (see
:mod:`packrun._dispatch.worker`), and under a root executor the bundle's process runs as a user
id of its own, claimed from :attr:`SandboxLimits.worker_ids` for as long as its supervisor lives.
With bubblewrap it runs as nobody (65534) in a user namespace of its own with no capability, and
gets its own pid, ipc, uts, cgroup (and, for a manifest with ``"network": false``, network)
namespaces and a read-only view of the Python runtime only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Final, Literal, TypeAlias

from packrun._dispatch.worker import BOOT, kill_below
from packrun.errors import InvalidArgument, SandboxUnavailable

__all__ = [
    "SANDBOX_MODES",
    "Process",
    "SandboxLimits",
    "SandboxMode",
    "bwrap_path",
    "effective_mode",
    "spawn",
]

SandboxMode: TypeAlias = Literal["process", "bwrap", "auto"]
SANDBOX_MODES: Final = ("auto", "bwrap", "process")
_MIB = 1024 * 1024
_NOBODY: Final = 65534
_SUPERVISOR_GRACE: Final = 5.0
"""Seconds a killed worker's supervisor has to reap what was below it and exit."""
_FIRST_ID: Final = 65_536  # above every system and login id, and nobody (65534)
_LAST_ID: Final = 2**32 - 2  # (uid_t) -1 means "no change" to the kernel
WORKER_IDS: Final = (1_879_048_192, 65_536)
"""The default user and group ids of ``process`` workers under a root executor: first, how many.
1879048192 (0x70000000) up: a range systemd documents as unused (above the ranges it gives
containers, below the ids that are negative as signed numbers)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """The limits every sandbox worker runs under, and the pool's sizes. Defaults suit API tools.

    >>> SandboxLimits(memory_bytes=256 * 1024 * 1024, call_timeout=10).call_timeout
    10
    """

    memory_bytes: int = 1024 * _MIB
    """Address space of a worker (``RLIMIT_AS``); reaching it fails the call ``sandbox_crashed``."""
    cpu_seconds: int = 600
    """CPU time a worker may use over its life (``RLIMIT_CPU``); it is recycled well before."""
    open_files: int = 256
    """Open file descriptors of a worker (``RLIMIT_NOFILE``)."""
    file_bytes: int = 16 * _MIB
    """Largest file a worker may write (``RLIMIT_FSIZE``)."""
    processes: int = 0
    """Processes a worker may start. 0 (the default): none, a tool can start threads but no
    process (a seccomp filter: ``fork`` fails with ``EPERM``). Above 0: the processes and threads
    of the worker's user (``RLIMIT_NPROC``), which the kernel does not enforce for a user that is
    root outside the worker's namespaces (``bwrap`` started by root); see docs/sandbox.md."""
    tmp_bytes: int = 64 * _MIB
    """Size of each of a worker's in-memory folders: ``bwrap``, ``/tmp`` and its working folder;
    ``process`` under a root executor, ``/tmp``, ``/var/tmp`` and ``/dev/shm``."""
    call_timeout: float = 30.0
    """Deadline of a call when the tool's manifest sets no ``timeout_s``."""
    load_timeout: float = 30.0
    """Deadline for a worker to start and import a bundle (at publish, verify and first call)."""
    cancel_grace: float = 1.0
    """Seconds a cancelled call has to stop before its worker is killed."""
    workers_per_digest: int = 4
    """Workers serving one digest of one project at once (more calls wait for one)."""
    workers: int = 64
    """Workers alive in one runtime at once (idle ones of other digests are stopped to make room)."""
    idle_timeout: float = 60.0
    """Seconds an idle worker lives before it is reaped."""
    max_calls: int = 10_000
    """Calls a worker serves before it is recycled."""
    output_bytes: int = 16 * _MIB
    """Largest encoded output a tool may return (``invalid_response`` past it)."""
    env: tuple[str, ...] = field(default=())
    """Names of the host's environment variables passed to workers (none by default)."""
    worker_ids: tuple[int, int] = WORKER_IDS
    """``(first, count)``: the user and group ids ``process`` workers of a root executor run
    as, one of its own for each live worker (ids no user or other program of the machine may
    use; the first at least 65536, above every system user and group). Unused by an executor
    that is not root and by ``bwrap``."""

    def __post_init__(self) -> None:
        for name in (
            "memory_bytes",
            "cpu_seconds",
            "open_files",
            "file_bytes",
            "tmp_bytes",
            "output_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"sandbox limit {name}", value, ["an integer of 1 or more"])
        value = self.processes
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(
                "sandbox limit processes", value, ["an integer of 0 (none) or more"]
            )
        for name in ("workers_per_digest", "workers", "max_calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"sandbox limit {name}", value, ["an integer of 1 or more"])
        for name in ("call_timeout", "load_timeout", "cancel_grace", "idle_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgument(
                    f"sandbox limit {name}", value, ["a number of seconds above 0"]
                )
        names: object = self.env
        if not isinstance(names, tuple | list) or not all(isinstance(n, str) for n in names):
            raise InvalidArgument(
                "sandbox limit env", self.env, ["a tuple of environment variable names"]
            )
        object.__setattr__(self, "env", tuple(self.env))
        ids: object = self.worker_ids
        if (
            not isinstance(ids, tuple | list)
            or len(ids) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            or not _FIRST_ID <= ids[0] <= ids[0] + ids[1] - 1 <= _LAST_ID
        ):
            raise InvalidArgument(
                "sandbox limit worker_ids",
                self.worker_ids,
                [
                    f"(first, count): a first id of {_FIRST_ID} or more (no system user or "
                    f"group, nor nobody) and a count of 1 or more, the last id at most {_LAST_ID}"
                ],
            )
        object.__setattr__(self, "worker_ids", tuple(ids))


def bwrap_path() -> str | None:
    """Where bubblewrap is installed, if it is."""
    return shutil.which("bwrap")


def effective_mode(mode: str) -> Literal["process", "bwrap"]:
    """``auto`` is ``bwrap`` when bubblewrap is installed, else ``process``."""
    if mode not in SANDBOX_MODES:
        raise InvalidArgument("sandbox", mode, list(SANDBOX_MODES))
    if mode == "auto":
        return "bwrap" if bwrap_path() is not None else "process"
    return "bwrap" if mode == "bwrap" else "process"


def _packrun_root() -> str:
    """The folder the host imports packrun from (the worker imports the same)."""
    import packrun

    return str(Path(packrun.__file__).resolve().parent.parent)


def _runtime_paths() -> list[str]:
    """What a worker must see to run Python and import packrun: the interpreter's prefixes, the
    folder packrun is imported from, and the system's libraries."""
    import packrun

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(str(Path(packrun.__file__).resolve().parent))
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    paths.add(str(Path(os.path.abspath(sys.executable)).parent.parent))
    for system in ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/alternatives"):
        paths.add(system)
    return sorted(p for p in paths if os.path.exists(p))


def _bwrap_args(bwrap: str, network: bool, tmp_bytes: int) -> list[str]:
    args = [
        bwrap,
        "--unshare-user",  # uid 0 of the host is nobody (65534) in there, with no capability
        "--uid",
        str(_NOBODY),
        "--gid",
        str(_NOBODY),
        "--cap-drop",
        "ALL",
        "--new-session",  # no TIOCSTI on a terminal it might share
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--hostname",
        "sandbox",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",  # a tmpfs takes the host's memory: bounded
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/packrun-worker",  # its working folder: private, empty, whatever is bound under /tmp
        "--chdir",
        "/packrun-worker",
    ]  # its environment is bubblewrap's own: only the variables listed (never on its command line)
    if not network:
        args.append("--unshare-net")
    for path in _runtime_paths():
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args


@dataclass(slots=True)
class Process:
    """A started worker: its process, the host's end of the channel, its private folder (``process``
    mode; ``bwrap`` gives it one in memory) and its stderr (a file with no name)."""

    popen: subprocess.Popen[bytes]
    sock: socket.socket
    workdir: str | None
    mode: str
    stderr: IO[bytes] | None = None
    said: str | None = None
    """The end of its stderr, kept once the file is closed."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self, *, close: bool = True) -> None:
        """Kill the worker, its process group and every process below it (what the bundle
        started, in a session of its own too) and, unless ``close`` is false (an event loop's
        transport owns it), close the host's end. In ``process`` mode the supervisor is spared:
        once all below it are killed it reaps them and exits by itself (no zombie is left for
        the system's init to reap)."""
        if self.popen.returncode is None:  # not reaped yet: its pid is still its own
            if self.mode == "process":
                # The supervisor is stopped while the processes below it are found and killed:
                # it cannot reap one meanwhile, so no pid found is freed and reused before the
                # kill reaches it. Then it goes on, reaps them all and exits.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.popen.pid, signal.SIGSTOP)
                kill_below(self.popen.pid, itself=False)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.popen.pid, signal.SIGCONT)
            else:
                kill_below(self.popen.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
        if close:
            with contextlib.suppress(OSError):
                self.sock.close()

    def wait_exit(self, timeout: float) -> None:
        """Give a worker that closed its channel a moment to exit by itself (its status tells why)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def reap(self) -> int:
        """Wait for the killed worker (no zombie is left), remove its folder and close its stderr;
        its status."""
        try:
            status = self.popen.wait(_SUPERVISOR_GRACE)
        except subprocess.TimeoutExpired:  # a supervisor that does not end: killed with the rest
            kill_below(self.popen.pid)
            status = self.popen.wait()
        if self.said is None:
            self.said = self.stderr_tail()  # the cause is read after the file is closed
        if self.stderr is not None:
            self.stderr.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return status

    def stderr_tail(self, size: int = 2000) -> str:
        if self.said is not None:
            return self.said[-size:]
        if self.stderr is None or self.stderr.closed:
            return ""
        try:  # pread: the worker writes through the same file offset
            fd = self.stderr.fileno()
            end = os.fstat(fd).st_size
            return os.pread(fd, size, max(0, end - size)).decode("utf-8", "replace")
        except OSError:
            return ""

    def cause(self, limits: SandboxLimits) -> str:
        """Why the worker ended, from its exit status (and what it wrote on stderr)."""
        status = self.popen.returncode
        tail = self.stderr_tail()
        if status is None:
            return "it closed its channel"
        if self.mode == "bwrap" and status > 128:  # bubblewrap reports a signal as 128 + number
            status = -(status - 128)
        if status == 70 or "MemoryError" in tail:
            return f"memory limit reached ({limits.memory_bytes // _MIB} MiB)"
        if status < 0:
            sig = -status
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            if sig == signal.SIGXCPU:
                return f"CPU time limit reached ({limits.cpu_seconds} s, {name})"
            return f"killed by signal {name}"
        return f"exited with status {status}"


_undumpable = False


def _make_host_undumpable() -> None:
    """Once a host starts workers, a process of its user (a worker in ``process`` mode) cannot
    read its memory or environment through ``/proc/<pid>/mem`` and ``environ``
    (``PR_SET_DUMPABLE`` 0: the executor's process also writes no core dump). Linux only."""
    global _undumpable
    if _undumpable:
        return
    _undumpable = True
    with contextlib.suppress(OSError, AttributeError):  # not Linux
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


_WORKDIR_PREFIX: Final = "packrun-worker-"


def _sweep_workdirs(ids: tuple[int, int]) -> None:
    """Remove the folders of workers whose host was killed before it could (the folder's name
    carries its host's process id; a host that is gone leaves it to the next one)."""
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    first, count = ids
    owners = {os.geteuid()}  # its own, or (below) its worker's when it ran as root
    for name in names:
        if not name.startswith(_WORKDIR_PREFIX):
            continue
        owner = name[len(_WORKDIR_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        path = os.path.join(root, name)
        try:
            os.kill(int(owner), 0)
            continue  # its host is alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(OSError):
            uid = os.lstat(path).st_uid
            if uid in owners or first <= uid < first + count:
                shutil.rmtree(path, ignore_errors=True)


_swept: set[str] = set()
"""The temporary folders swept in this process."""


def _root() -> bool:
    """Whether this process runs as root (its ``process`` workers then get user ids of their own)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ids_folder() -> str:
    """The folder of the lock files that claim worker ids: root's alone (``/run`` when root owns
    it and nobody else may write there, else the temporary folder)."""
    run = "/run"
    with contextlib.suppress(OSError):
        info = os.lstat(run)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
            return os.path.join(run, "packrun-worker-ids")
    return os.path.join(tempfile.gettempdir(), "packrun-worker-ids")


_FAIL_ISOLATION = False
"""Tests only: a root executor's ``process`` worker fails to get its namespaces, as it would
without the privilege (it must then exit without running bundle code)."""


def claim_id(ids: tuple[int, int]) -> tuple[int, int]:
    """A user id of ``ids`` that no live worker of any executor of this machine holds, and the
    descriptor whose lock holds it (``flock`` on a file named after the id, released when the
    last process holding the descriptor, the worker's supervisor, ends). The lowest free id."""
    folder = _ids_folder()
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
            raise SandboxUnavailable(
                "process", f"{folder} is not a folder of root's alone (mode 0700): remove it"
            )
        first, count = ids
        for uid in range(first, first + count):
            claimed = _claim(os.path.join(folder, str(uid)))
            if claimed is not None:
                return uid, claimed
    except OSError as exc:
        raise SandboxUnavailable(
            "process", f"cannot claim a worker id in {folder}: {exc.strerror or exc}"
        ) from None
    raise SandboxUnavailable(
        "process", f"all {count} worker ids from {first} are held by live workers (worker_ids)"
    )


def _claim(path: str) -> int | None:
    """A descriptor (3 or above: the worker gets it as is) holding the lock of ``path``, or
    None when a live worker holds it. A lock file removed while held (by a cleaner of the
    temporary folder) would let two workers claim one id: the lock is taken again on the file
    now at ``path``."""
    for _ in range(8):
        opened = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fd = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 3)
        finally:
            os.close(opened)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                    os.utime(fd)  # a cleaner of old files spares it for as long as its worker
                    return fd
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was removed or replaced since it was opened: again
    raise OSError(f"{path} keeps being removed or replaced")


def spawn(mode: str, limits: SandboxLimits, *, network: bool = True) -> Process:
    """Start a worker. Raises :class:`~packrun.errors.SandboxUnavailable` when it cannot start."""
    _make_host_undumpable()
    actual = effective_mode(mode)
    bwrap = bwrap_path() if actual == "bwrap" else None
    if actual == "bwrap" and bwrap is None:
        raise SandboxUnavailable(
            mode, "bubblewrap (bwrap) is not installed; install it, or use sandbox='process'"
        )
    if tempfile.gettempdir() not in _swept:
        _swept.add(tempfile.gettempdir())
        _sweep_workdirs(limits.worker_ids)
    env = {name: os.environ[name] for name in limits.env if name in os.environ}
    worker_limits: dict[str, object] = {
        key: value
        for key, value in asdict(limits).items()
        if key
        in (
            "memory_bytes",
            "cpu_seconds",
            "open_files",
            "file_bytes",
            "output_bytes",
            "processes",
            "tmp_bytes",
        )
    }
    user = lock = None
    if actual == "process":
        worker_limits["supervise"] = True
        if _root():
            user, lock = claim_id(limits.worker_ids)
            try:
                paths = [*_runtime_paths(), _packrun_root()]
                worker_limits.update(user=user, lock=lock, paths=paths, fail=_FAIL_ISOLATION)
            except BaseException:
                os.close(lock)
                raise
    try:
        return _start(mode, actual, bwrap, limits, worker_limits, env, network, user, lock)
    finally:
        if lock is not None:
            os.close(lock)  # the supervisor holds it now (or nobody: the id is free again)


def _start(
    mode: str,
    actual: str,
    bwrap: str | None,
    limits: SandboxLimits,
    worker_limits: dict[str, object],
    env: dict[str, str],
    network: bool,
    user: int | None,
    lock: int | None,
) -> Process:
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    workdir = None  # bubblewrap gives the worker a folder in memory: nothing to leave behind
    if actual == "process":
        workdir = tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-")
        if user is not None:
            os.chown(workdir, user, user)
    command = [
        os.path.abspath(sys.executable),  # a path with no "..": bubblewrap binds it as given
        "-I",
        "-c",
        BOOT,
        _packrun_root(),
        str(child.fileno()),
        json.dumps(worker_limits),
        "0" if actual == "bwrap" else str(os.getpid()),
    ]
    if bwrap is not None:
        command = [*_bwrap_args(bwrap, network, limits.tmp_bytes), "--", *command]
    # No name: nothing to remove if the host is killed. Closed by Process.reap.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=workdir or "/",
            close_fds=True,
            pass_fds=(child.fileno(),) if lock is None else (child.fileno(), lock),
            start_new_session=True,
        )
    except OSError as exc:
        host.close()
        stderr.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise SandboxUnavailable(mode, f"{command[0]}: {exc.strerror or exc}") from None
    finally:
        child.close()
    return Process(popen, host, workdir, actual, stderr)
