"""A writer thread of its own for one kind of write, done in groups (group commit).

The event loop hands each write to the thread without a hop of its own (a list append and a
condition notify); the thread takes everything queued, writes it in one transaction, wakes the
waiters of that group with one callback posted to their event loop, and starts on the next group
at once, without waiting for the loop. When idle it sleeps on the condition: a lone write is
taken the moment it arrives, never held back for a batching window.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["GroupWriter"]

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

_Post = Callable[[Callable[[], object]], object]


def _trio_poster() -> _Post:
    """How a thread schedules a callback in the running trio loop, without waiting for it (trio
    is the one backend besides asyncio that the stores run on).

    trio is not a dependency and is not imported: this runs only inside a trio event loop, so the
    module is loaded already and is taken from ``sys.modules``. anyio's own thread calls wait for
    the callback, which would hold the writer thread until the loop ran it."""
    trio: Any = sys.modules["trio"]
    post: _Post = trio.lowlevel.current_trio_token().run_sync_soon
    return post


class _Waiter:
    __slots__ = ("done", "error", "finished", "future", "item", "post", "result")

    def __init__(self, item: Any, post: _Post) -> None:
        self.item = item
        self.post = post
        self.finished = False
        self.future: asyncio.Future[None] | None = None  # on asyncio
        self.done: anyio.Event | None = None  # on trio
        self.result: Any = None
        self.error: BaseException | None = None


def _wake(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.finished = True
        if waiter.future is not None:
            if not waiter.future.done():
                waiter.future.set_result(None)
        elif waiter.done is not None:
            waiter.done.set()


async def _outlast(waiter: _Waiter, loop: asyncio.AbstractEventLoop, message: Any) -> None:
    """The caller was cancelled while its item was queued or being written: wait for the write
    all the same (the item is written whatever happens to the caller, who must learn of it),
    then ask for the cancellation again, with its message, so that it reaches the caller at its
    next ``await`` (as it would after a shielded wait: anyio tells its cancel scopes' own
    cancellations apart by their message)."""
    while not waiter.finished:
        waiter.future = loop.create_future()
        try:
            await waiter.future
        except asyncio.CancelledError as again:
            message = again.args[0] if again.args else message
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # one request taken back, one made: the task's count stays as it was
        task.cancel(message)


class GroupWriter(Generic[_Item, _Result]):
    """Runs ``write(items) -> results`` (one result per item, in order) in a thread of its own,
    over every item queued since the previous group.

    ``groups`` counts the groups written, ``items`` the items: ``items / groups`` is the mean
    group size.
    """

    def __init__(self, write: Callable[[list[_Item]], list[_Result]], name: str) -> None:
        self._write = write
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Waiter] = []
        self._thread: threading.Thread | None = None
        self._generation = 0  # a thread of an older generation ends once the queue is empty
        self.groups = 0
        self.items = 0

    async def submit(self, item: _Item) -> _Result:
        """Queue ``item`` and wait until its group is written; raise what the write raised.

        The wait is shielded: once queued, the item is written whatever happens to the caller,
        who must learn of it (a run start that committed exists in the store); a cancellation
        of the caller reaches it after the write, at its next ``await``. On asyncio the wait is
        one future of the loop's, which the writer's callback resolves."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            waiter = _Waiter(item, loop.call_soon_threadsafe)
            future = waiter.future = loop.create_future()
            self._enqueue(waiter)
            try:
                await future
            except asyncio.CancelledError as cancelled:
                await _outlast(waiter, loop, cancelled.args[0] if cancelled.args else None)
        else:
            waiter = _Waiter(item, _trio_poster())
            done = waiter.done = anyio.Event()
            self._enqueue(waiter)
            with anyio.CancelScope(shield=True):
                await done.wait()
        if waiter.error is not None:
            raise waiter.error
        result: _Result = waiter.result
        return result

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._generation,), name=self._name, daemon=True
                )
                self._thread.start()
            self._queue.append(waiter)
            self._cond.notify()

    def stop(self) -> None:
        """Write what is queued, then end the thread (blocking: call it from a worker thread)."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._generation += 1
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def _run(self, generation: int) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._generation != generation:
                        return
                    self._cond.wait()
                group, self._queue = self._queue, []
            try:
                results = self._write([w.item for w in group])
            except BaseException as exc:
                for w in group:
                    w.error = exc
            else:
                for w, result in zip(group, results, strict=True):
                    w.result = result
            self.groups += 1
            self.items += len(group)
            by_loop: dict[_Post, list[_Waiter]] = {}
            for w in group:
                by_loop.setdefault(w.post, []).append(w)
            for post, waiters in by_loop.items():
                # RuntimeError: that event loop has closed, and nobody waits any more.
                with suppress(RuntimeError):
                    post(partial(_wake, waiters))
