"""Waiting awake for a few microseconds, on both ends of a worker's channel, while it pays.

A process asleep in the kernel on an idle (virtual) machine takes tens of microseconds to wake;
one that keeps polling its socket sees the answer as soon as it arrives. Polling only pays while
the cores have room: when something else wants the core, a process that blocks is woken ahead of
the busy ones, while a polling one waits for its turn like them. So each wait polls until its end
and yields the core between polls, and a poll that finds it was not running for a while (taken
off the core) turns polling off for ``OFF_SECONDS``. (Turning it off after waits that came back
empty-handed was tried: the two ends then turned each other off, and a call on a moderately busy
machine took twice as long.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["Spin"]

PREEMPTED = 200e-6
"""A gap between two polls this long means the process was taken off its core."""
OFF_SECONDS = 0.1
"""How long polling stays off after that."""


class Spin:
    """Whether polling is off (until ``off_until``, a ``clock()`` value), and the time of the last
    poll of the wait under way. ``clock`` and ``yield_core`` are ``time.perf_counter`` and
    ``os.sched_yield`` but in tests."""

    __slots__ = ("_clock", "_last", "_yield", "off_until")

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        yield_core: Callable[[], None] = os.sched_yield,
    ) -> None:
        self.off_until = 0.0
        self._last = 0.0
        self._clock = clock
        self._yield = yield_core

    def start(self, seconds: float) -> float:
        """The end of a wait of ``seconds`` starting now; 0.0 when polling is off."""
        now = self._clock()
        if now < self.off_until:
            return 0.0
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
