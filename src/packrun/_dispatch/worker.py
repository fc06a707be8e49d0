"""A sandbox worker: ``python -I -c BOOT PATH FD LIMITS PARENT`` (see :data:`BOOT`).

Started by exec of a fresh interpreter (never a fork of the host), it drops its privileges (no
capability, not dumpable), applies its resource limits and arranges to die with its host first,
then serves one bundle over the channel ``FD``: one :class:`~packrun._dispatch._protocol.Load`,
then calls one at a time until the host closes the channel. Nothing here trusts the bundle; what
the bundle does is contained by the process itself.

In ``process`` mode the process the host starts stays a supervisor that never runs bundle code:
it forks the process that serves the bundle (which talks to the host directly over the channel),
adopts whatever that process orphans, and when it ends, however it ends, kills every process left
below it and exits with its status. Under a root executor the supervisor keeps uid 0 with no
capability but ``CAP_KILL`` while the bundle's process runs as a user of its own, which can
neither signal nor trace it, in mount and IPC namespaces of its own (fresh ``/tmp``,
``/var/tmp`` and ``/dev/shm``); without them it does not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import signal
import stat
import sys
from pathlib import Path
from typing import Any, Final


def _limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(which, (value, value))


def _apply_limits(limits: dict[str, Any]) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, limits["memory_bytes"])
    _limit(resource.RLIMIT_NOFILE, limits["open_files"])
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    if limits["processes"] > 0:  # 0: no process at all, see _forbid_processes
        _limit(resource.RLIMIT_NPROC, limits["processes"])
    soft_cpu = limits["cpu_seconds"]
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    # SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
    hard = soft_cpu + 1 if hard_cpu == resource.RLIM_INFINITY else min(hard_cpu, soft_cpu + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft_cpu, hard), hard))


_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_CAPBSET_DROP = 24
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522
_CAP_KILL = 5
_CLONE_NEWNS = 0x00020000
_CLONE_THREAD = 0x00010000
_CLONE_NEWIPC = 0x08000000
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_MNT_DETACH = 2


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _blocked(paths: list[str]) -> list[str]:
    """The folders above ``paths`` that other users cannot pass through (mode without ``o+x``),
    the shallowest first."""
    found = set()
    for path in paths:
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and not os.stat(parent).st_mode & stat.S_IXOTH:
                found.add(str(parent))
                break
    return sorted(found, key=lambda p: (p.count("/"), p))


def _cover(libc: Any, folder: str, needed: set[str], options: bytes) -> None:
    """Mount a fresh tmpfs (``options``) on ``folder`` holding only its entries ``needed``,
    each bound from the original folder (reached through a descriptor opened before)."""
    fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
            raise OSError(ctypes.get_errno(), f"tmpfs on {folder}")
        for name in needed:
            source, target = f"/proc/self/fd/{fd}/{name}", os.path.join(folder, name)
            if os.path.isdir(source):
                os.mkdir(target)
            else:
                open(target, "wb").close()
            flags = _MS_BIND | _MS_REC
            if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind {folder}/{name}")
    finally:
        os.close(fd)


def _within(paths: list[str], folder: str) -> set[str]:
    """The entries of ``folder`` that ``paths`` lie in."""
    return {
        os.path.relpath(p, folder).split(os.sep, 1)[0]
        for p in paths
        if p.startswith(folder + os.sep)
    }


def _isolate(paths: list[str], tmp_bytes: int, fail: bool = False) -> None:
    """In mount and IPC namespaces of the worker's own: let an unprivileged user reach ``paths``
    (the Python runtime, packrun and the worker's folder) when a folder above them is closed to
    others (``/root``, 0700), by covering such a folder with an empty one that holds only the
    paths, bound from the original (nothing else in it is visible); and give the worker a fresh
    ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (``tmp_bytes`` each) and no System V IPC object of
    another, so nothing a former worker of the same user id left there is visible. Needs root,
    before the worker drops it. ``fail`` (tests only) makes it fail as without the privilege."""
    libc = _libc()
    if fail or libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC) != 0:
        raise OSError(ctypes.get_errno() or errno.EPERM, "unshare(CLONE_NEWNS | CLONE_NEWIPC)")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "make / private")
    for _ in range(16):  # a closed folder below a closed folder is opened in the next round
        blocked = _blocked(paths)
        if not blocked:
            break
        _cover(libc, blocked[0], _within(paths, blocked[0]), b"mode=0755,size=64k")
    else:
        raise OSError("too many closed folders above the Python runtime")
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(folder)
            if stat.S_ISDIR(info.st_mode):
                options = f"mode=1777,size={tmp_bytes}".encode()
                _cover(libc, folder, _within(paths, os.path.realpath(folder)), options)


def _drop_privileges(user: int | None) -> None:
    """Keep other processes (and a worker of another project, which runs as the same user) out of
    this one's memory, and leave a worker started as root no capability it could use or regain:
    not dumpable, no new privileges at exec, an empty bounding set and no capability; with
    ``user``, the worker becomes that user (and group, with no supplementary group) for good.
    Linux only."""
    try:
        libc = _libc()
        prctl, capset = libc.prctl, libc.capset
    except (OSError, AttributeError):  # not Linux
        return
    prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.geteuid() != 0:
        return
    for cap in range(64):  # past the last one the kernel knows, it answers EINVAL
        prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    if user is not None:
        os.setgroups([])
        os.setresgid(user, user, user)
        os.setresuid(user, user, user)  # every capability goes with uid 0
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # a change of user resets it
        return
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: none
    if capset(header, data) != 0:
        os.write(2, b"packrun worker: cannot drop its capabilities\n")
        os._exit(1)


_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS = {  # (clone, clone3, fork or None, vfork or None)
    "x86_64": (56, 435, 57, 58),
    "aarch64": (220, 435, None, None),
}


def _forbid_processes() -> None:
    """A seccomp filter: the worker may start threads but no process (``fork``, ``vfork``,
    ``clone`` without ``CLONE_THREAD`` fail with ``EPERM``; ``clone3``, whose flags a filter
    cannot read, answers ``ENOSYS`` and the C library falls back to ``clone``)."""
    machine = os.uname().machine
    if machine not in _SYSCALLS:
        raise OSError(f"no process filter for {machine}")
    clone, clone3, fork, vfork = _SYSCALLS[machine]
    allow, deny, absent = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JSET, BPF_RET
    program = [
        (ld, 0, 0, 4),  # the architecture
        (jeq, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, allow),  # another ABI: not this filter's to judge
        (ld, 0, 0, 0),  # the system call
    ]
    for number in (fork, vfork):
        if number is not None:
            program += [(jeq, 0, 1, number), (ret, 0, 0, deny)]
    program += [
        (jeq, 0, 1, clone3),
        (ret, 0, 0, absent),
        (jeq, 0, 3, clone),  # anything else: allowed
        (ld, 0, 0, 16),  # clone's flags (the low half of its first argument)
        (jset, 1, 0, _CLONE_THREAD),  # a thread: allowed
        (ret, 0, 0, deny),
        (ret, 0, 0, allow),
    ]
    filters = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    prog = _SockFprog(len(program), filters)
    if _libc().prctl(_PR_SET_SECCOMP, 2, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp")


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (of each of its threads), from ``/proc``; none once it is gone."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(c) for c in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_below(pid: int, *, itself: bool = True) -> None:
    """Kill every process below ``pid`` (and ``pid`` itself unless ``itself`` is false), wherever
    they moved to: stopped first, round after round until no new one appears (a stopped process
    cannot start another, and a subreaper adopts what its children leave behind), then killed."""
    if itself:
        _signal(pid, signal.SIGSTOP)
    seen = {pid}
    frontier = [pid]
    for _ in range(100_000):  # bounded by the processes a worker may start long before
        found = [c for p in frontier for c in _children(p) if c not in seen]
        if not found:
            # what the stopped ones' orphans became may hang below any of them: one last look
            found = [c for p in list(seen) for c in _children(p) if c not in seen]
            if not found:
                break
        for child in found:
            _signal(child, signal.SIGSTOP)
        seen.update(found)
        frontier = found
    if not itself:
        seen.discard(pid)
    for member in seen:
        _signal(member, signal.SIGKILL)


_WATCHED = {signal.SIGCHLD, signal.SIGTERM}


def _keep_only_kill(libc: Any) -> None:
    """Leave a supervisor started as root only ``CAP_KILL`` (to end its tree), for good."""
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    for cap in range(64):
        if cap != _CAP_KILL:
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(1 << _CAP_KILL, 1 << _CAP_KILL, 0, 0, 0, 0)
    if libc.capset(header, data) != 0:
        os.write(2, b"packrun worker: its supervisor cannot drop its capabilities\n")
        kill_below(os.getpid(), itself=False)
        os._exit(1)


def _supervise(host: int, channel: int, lock: int | None) -> int:
    """Fork the process that serves the bundle and return in it (the supervisor's pid); in this
    process, stay its supervisor until it ends, then kill every process left below and exit with
    its status. The supervisor dies with the host too, but ends its tree first (its death
    signal, ``SIGTERM``, is waited for, like its children's ends)."""
    libc = _libc()
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if host and os.getppid() != host:  # the host died before the line above
        os._exit(1)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _limit(resource.RLIMIT_CORE, 0)
    try:
        served = os.fork()
    except OSError as exc:
        os.write(2, f"packrun worker: cannot start: {exc}\n".encode())
        os._exit(1)
    if served == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
        if lock is not None:
            os.close(lock)  # the supervisor holds the worker's user id for as long as it lives
        return os.getppid()
    os.close(channel)  # the host and the bundle's process talk directly
    if os.geteuid() == 0:
        _keep_only_kill(libc)  # fewer capabilities: the death signal stays
    status: int | None = None
    while status is None:
        if signal.sigwaitinfo(_WATCHED).si_signo == signal.SIGTERM:
            break  # the host is gone (or the bundle's process, of the same user, asked)
        with contextlib.suppress(ChildProcessError):
            while True:  # reap every process that ended, orphans adopted included
                pid, ended = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                if pid == served:
                    status = ended
    kill_below(os.getpid(), itself=False)
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, ended = os.waitpid(-1, 0)
            if pid == served:
                status = ended
    _end_as(status)
    return 0  # not reached


def _end_as(status: int | None) -> None:
    """Exit as the bundle's process did: with its exit status, or killed by its signal."""
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is not to end a process
    os._exit(os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else 1)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the host kills its process groups on close
        pass
    if parent and os.getppid() != parent:  # the host died before the line above
        os._exit(1)


UNISOLATED: Final = (
    "packrun worker: a root executor's process worker needs a mount and IPC namespace of its "
    "own (to reach the Python runtime as its own user and to get private /tmp, /var/tmp and "
    "/dev/shm) and could not get one; allow them (CAP_SYS_ADMIN, e.g. outside a restricted "
    "container) or use sandbox='bwrap'"
)
"""What a root executor's ``process`` worker says on stderr before it exits without running
bundle code when it cannot get namespaces of its own."""
_UNISOLATED_STATUS: Final = 78  # EX_CONFIG

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from packrun._dispatch.worker import main; main()"
)
"""What the worker's interpreter runs: it imports packrun from ``PATH``, the folder the host imported
it from, so host and worker always run the same packrun."""


def main() -> None:
    """Contain this process, then serve the host (``sys.argv``: PATH FD LIMITS PARENT)."""
    limits = json.loads(sys.argv[3])
    parent = int(sys.argv[4])
    supervised = limits.get("supervise", False) and sys.platform == "linux"
    if supervised:  # from here on, the process that serves the bundle
        parent = _supervise(parent, int(sys.argv[2]), limits.get("lock"))
    user = limits.get("user")
    if user is not None:  # started by root in process mode
        try:
            here = os.getcwd()
            _isolate([*limits["paths"], here], limits["tmp_bytes"], limits.get("fail", False))
            os.chdir(here)  # the same folder, bound into the fresh /tmp
        except (OSError, AttributeError) as exc:  # no namespaces: it would stay uid 0
            os.write(2, f"{UNISOLATED}: {exc}\n".encode())
            os._exit(_UNISOLATED_STATUS)
    _drop_privileges(user)
    _die_with_parent(parent)  # after a change of user, which clears the death signal
    if not supervised:  # no supervisor (bwrap, or not Linux): its orphans stay below it
        with contextlib.suppress(OSError, AttributeError):
            _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _apply_limits(limits)
    if limits["processes"] == 0 and sys.platform == "linux":  # seccomp is Linux's
        try:
            _forbid_processes()
        except OSError as exc:
            os.write(2, f"packrun worker: cannot forbid processes: {exc}\n".encode())
            os._exit(1)
    from packrun._dispatch._serve import serve

    serve(int(sys.argv[2]), limits["output_bytes"])
