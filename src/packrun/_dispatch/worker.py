"""A sandbox worker: ``python -I -m packrun._dispatch.worker FD LIMITS PARENT``.

Started by exec of a fresh interpreter (never a fork of the host), it applies its resource limits
and arranges to die with its host first, then serves one bundle over the channel ``FD``: one
:class:`~packrun._dispatch._protocol.Load`, then calls one at a time until the host closes the
channel. Nothing here trusts the bundle; what the bundle does is contained by the process itself.
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


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the host kills its process groups on close
        pass
    if parent and os.getppid() != parent:  # the host died before the line above
        os._exit(1)


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[3]))
    _limits = json.loads(sys.argv[2])
    _apply_limits(_limits)
    from packrun._dispatch._serve import serve

    serve(int(sys.argv[1]), _limits["output_bytes"])
