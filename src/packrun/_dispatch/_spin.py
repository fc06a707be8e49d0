"""Waiting awake for a few microseconds, on both ends of a worker's channel, while it pays.

A process asleep in the kernel on an idle (virtual) machine takes tens of microseconds to wake;
one that keeps polling its socket sees the answer as soon as it arrives. Polling only pays while
the cores have room: when something else wants the core, a process that blocks is woken ahead of
the busy ones, while a polling one waits for its turn like them. So each wait polls until its end
and yields the core between polls; polling turns off for ``OFF_SECONDS`` when a poll finds it
was not running for a while (taken off the core), or when ``MISSES`` waits in a row ended without
what they waited for (on a busy machine the other end is slow to answer, and an idle one sends
nothing soon).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["Spin"]

PREEMPTED = 200e-6
"""A gap between two polls this long means the process was taken off its core."""
MISSES = 8
"""Waits in a row that ended empty-handed before polling turns off."""
OFF_SECONDS = 1.0
"""How long polling stays off after either."""


class Spin:
    """Whether polling is off (until ``off_until``, a ``clock()`` value), and the time of the last
    poll of the wait under way. ``clock`` and ``yield_core`` are ``time.perf_counter`` and
    ``os.sched_yield`` but in tests."""

    __slots__ = ("_clock", "_last", "_misses", "_yield", "off_until")

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        yield_core: Callable[[], None] = os.sched_yield,
    ) -> None:
        self.off_until = 0.0
        self._last = 0.0
        self._misses = 0
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
            self._misses += 1
            if self._misses >= MISSES:
                self._misses = 0
                self.off_until = now + OFF_SECONDS
            return False
        self._last = now
        self._yield()
        return True

    def hit(self) -> None:
        """What the wait was for came while polling."""
        self._misses = 0
