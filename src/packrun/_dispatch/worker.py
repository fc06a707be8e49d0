"""A sandbox worker: ``python -I -c BOOT PATH FD LIMITS PARENT`` (see :data:`BOOT`).

Started by exec of a fresh interpreter (never a fork of the host), it drops its privileges (no
capability, not dumpable), applies its resource limits and arranges to die with its host first,
then serves one bundle over the channel ``FD``: one :class:`~packrun._dispatch._protocol.Load`,
then calls one at a time until the host closes the channel. Nothing here trusts the bundle; what
the bundle does is contained by the process itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys


def _limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(which, (value, value))


def _apply_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, limits["memory_bytes"])
    _limit(resource.RLIMIT_NOFILE, limits["open_files"])
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    soft_cpu = limits["cpu_seconds"]
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    # SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
    hard = soft_cpu + 1 if hard_cpu == resource.RLIM_INFINITY else min(hard_cpu, soft_cpu + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft_cpu, hard), hard))


_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522


def _drop_privileges() -> None:
    """Keep other processes (and a worker of another project, which runs as the same user) out of
    this one's memory, and leave a worker started as root no capability it could use or regain:
    not dumpable, no new privileges at exec, an empty bounding set and no capability. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl, capset = libc.prctl, libc.capset
    except (OSError, AttributeError):  # not Linux
        return
    prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.geteuid() != 0:
        return
    for cap in range(64):  # past the last one the kernel knows, it answers EINVAL
        prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: none
    if capset(header, data) != 0:
        os.write(2, b"packrun worker: cannot drop its capabilities\n")
        os._exit(1)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the host kills its process groups on close
        pass
    if parent and os.getppid() != parent:  # the host died before the line above
        os._exit(1)


BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from packrun._dispatch.worker import main; main()"
)
"""What the worker's interpreter runs: it imports packrun from ``PATH``, the folder the host imported
it from, so host and worker always run the same packrun."""


def main() -> None:
    """Contain this process, then serve the host (``sys.argv``: PATH FD LIMITS PARENT)."""
    _drop_privileges()
    _die_with_parent(int(sys.argv[4]))
    limits = json.loads(sys.argv[3])
    _apply_limits(limits)
    from packrun._dispatch._serve import serve

    serve(int(sys.argv[2]), limits["output_bytes"])
