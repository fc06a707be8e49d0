"""Waiting awake for a few microseconds, on both ends of a worker's channel, while it pays.

A process asleep in the kernel on an idle (virtual) machine takes tens of microseconds to wake;
one that keeps polling its socket sees the answer as soon as it arrives. Polling only pays while
the cores have room: when something else wants a core, a process that blocks is woken ahead of
the busy ones (on the core of the process that woke it), while a polling one waits for its turn
like them, and keeps the other end off the one core it could have. So each wait polls until its
end and yields the core between polls, and polling is turned off for ``OFF_SECONDS`` when

- a poll finds that its process was not running for a while (taken off its core), or
- the machine is crowded: at two looks in a row, at least ``SAMPLE_SECONDS`` apart, more
  processes were ready to run than it has cores (``/proc/loadavg``'s fourth field). A process
  whose own core is free is never taken off it, so only this tells it that the other end of its
  channel waits for a busy core. The looker counts itself, and the other end while that one
  polls: two ends polling on an idle machine of two cores are not crowded.

(Turning polling off after waits that came back empty-handed was tried: the two ends then turned
each other off, and a call on a moderately busy machine took twice as long.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["Spin", "ready_to_run"]

PREEMPTED = 200e-6
"""A gap between two polls this long means the process was taken off its core."""
OFF_SECONDS = 0.1
"""How long polling stays off after that, or after the machine was found crowded."""
SAMPLE_SECONDS = 0.002
"""The least time between two looks at how crowded the machine is."""

_CORES = os.cpu_count() or 1


def ready_to_run() -> int:
    """How many processes (threads) of the machine are running or ready to run now, the looker
    included; 0 when it cannot be read (no ``/proc``). A few microseconds: ``/proc/loadavg`` is
    opened, read and closed again (no descriptor is kept open in a worker)."""
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        fields = os.read(fd, 128).split()
        return int(fields[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return 0
    finally:
        os.close(fd)


class Spin:
    """Whether polling is off (until ``off_until``, a ``clock()`` value), and the time of the last
    poll of the wait under way. ``clock``, ``yield_core``, ``ready`` and ``cores`` are
    ``time.perf_counter``, ``os.sched_yield``, :func:`ready_to_run` and the machine's cores but
    in tests."""

    __slots__ = (
        "_clock",
        "_cores",
        "_crowded",
        "_last",
        "_ready",
        "_sampled",
        "_yield",
        "off_until",
    )

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        yield_core: Callable[[], None] = os.sched_yield,
        ready: Callable[[], int] = ready_to_run,
        cores: int = _CORES,
    ) -> None:
        self.off_until = 0.0
        self._last = 0.0
        self._sampled = 0.0
        self._crowded = False
        self._clock = clock
        self._yield = yield_core
        self._ready = ready
        self._cores = cores

    def start(self, seconds: float) -> float:
        """The end of a wait of ``seconds`` starting now; 0.0 when polling is off."""
        now = self._clock()
        if now < self.off_until:
            return 0.0
        if now - self._sampled >= SAMPLE_SECONDS:
            self._sampled = now
            crowded = self._ready() > self._cores
            if crowded and self._crowded:
                self._crowded = False
                self.off_until = now + OFF_SECONDS
                return 0.0
            self._crowded = crowded
        self._last = now
        return now + seconds

    def waiting(self, until: float) -> bool:
        """After a poll that found nothing: whether to poll again (``until`` not passed, and the
        process not taken off its core since the last poll). Yields the core first."""
        now = self._clock()
        if now - self._last > PREEMPTED:
            self.off_until = now + OFF_SECONDS
            return False
        if now >= until:
            return False
        self._last = now
        self._yield()
        return True
