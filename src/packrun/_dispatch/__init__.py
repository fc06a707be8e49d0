"""Dispatch: running bundle code in sandbox workers, apart from the executor and each other.

The host side (:mod:`._host`) keeps a pool of workers per ``(project, digest)`` and checks a
bundle's code in a worker at publish; the worker side (:mod:`._serve`, started as
:mod:`packrun._dispatch.worker`) imports one bundle and serves its tools; the two speak the
protocol of :mod:`._protocol`. How workers are started and contained is in :mod:`._spawn`.
"""

from __future__ import annotations

from packrun._dispatch._host import WorkerPool, check_code, sandbox_dispatcher
from packrun._dispatch._spawn import (
    SANDBOX_MODES,
    SandboxLimits,
    SandboxMode,
    bwrap_path,
    effective_mode,
)

__all__ = [
    "SANDBOX_MODES",
    "SandboxLimits",
    "SandboxMode",
    "WorkerPool",
    "bwrap_path",
    "check_code",
    "effective_mode",
    "sandbox_dispatcher",
]
