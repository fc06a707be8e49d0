"""The host side of dispatch: a pool of sandbox workers per ``(project, digest)`` and the code check.

A run's call takes an idle worker of its bundle (or starts one, up to the limits), sends the call
with the run's credentials, relays the tool's log records to ``packrun.tools.<pack>`` (redacted by
the run's logger) and waits for the answer under the tool's deadline. A worker that misses the
deadline, dies, or does not stop within the grace period after a cancellation is killed and
replaced; only its own call fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from packrun._adapters import STEPS, Dispatcher
from packrun._auth import Auth
from packrun._bundle import Bundle
from packrun._contract import CURRENT_GENERATION, check_generation
from packrun._dispatch._protocol import (
    HEADER,
    Call,
    Cancel,
    Context,
    Done,
    Failed,
    FromWorker,
    Load,
    Loaded,
    LoadFailed,
    Log,
    frame,
)
from packrun._dispatch._spawn import Process, SandboxLimits, effective_mode, spawn
from packrun._dispatch._spin import Spin
from packrun._redact import Redactor
from packrun.errors import (
    InvalidArgument,
    InvalidBundle,
    NotFound,
    SandboxCrashed,
    SandboxUnavailable,
    ToolFailed,
    ToolTimeout,
)
from packrun.sdk import ToolContext, ToolError

__all__ = ["WorkerPool", "check_code", "sandbox_dispatcher"]

logger = logging.getLogger("packrun")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(FromWorker)
_FRAME_SLACK = 64 * 1024  # what a frame may hold besides the output
_TEXT_CHARS = 4096
"""Characters of a worker's text (a log record, an error message or code) the host keeps."""
_CONTROLS = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
    if c not in (0x09, 0x0A)
}
_LOG_RECORDS = 1000
"""Log records of one call relayed to the host's logger; later ones are dropped (one warning says
so), so a worker cannot flood the host's logs."""


def _text(text: str, auth: Auth | None = None, limit: int = _TEXT_CHARS) -> str:
    """A worker's ``text`` fit for the host's logs and errors: ``auth``'s credentials redacted
    (before it is cut, so no part of one is left), at most ``limit`` characters (saying how many
    were cut) and every control character but newline and tab escaped (``\\x1b``), so a record
    cannot forge other lines or drive a terminal."""
    if auth is not None:
        text = Redactor(auth).text(text)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = text.translate(_CONTROLS)
    return f"{text}… ({cut} characters cut)" if cut > 0 else text


class _Died(Exception):
    """The worker closed its channel or sent something that is not the protocol."""


_PAUSE_AT = 1024
"""Frames read ahead of the call that takes them; past this many the host stops reading the
worker's channel until the call has taken them, so a worker cannot fill the host's memory."""
_BUFFER = 64 * 1024
_SPIN = 20e-6
"""Seconds a call reads its answer straight from the socket before it waits on the event loop."""
SPIN = Spin()


class _Link(asyncio.BufferedProtocol):
    """A worker's channel on asyncio: the event loop reads it into this link's buffer whenever it
    has something, frames are decoded as they arrive and the call waiting for one is woken. Writes
    go straight to the socket (what it cannot take now is sent as it drains). One call waits at a
    time; its deadline is one timer of the loop per link, moved only when a call needs it sooner.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.frames: collections.deque[FromWorker] = collections.deque()
        self.limit = _FRAME_SLACK
        self.error: str | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.expired = False
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._in = bytearray(_BUFFER)
        self._view = memoryview(self._in)
        self._start = 0  # the unread bytes are _in[_start:_end]
        self._end = 0
        self._need = HEADER.size  # bytes the frame being read needs in all
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._in) - self._end < max(self._need - (self._end - self._start), 4096):
            self._make_room()
        return self._view[self._end :]

    def _make_room(self) -> None:
        """Move the unread bytes to the front, in a larger buffer when a frame needs one (and a
        buffer of the usual size again once a large frame is read)."""
        unread = bytes(self._view[self._start : self._end])
        size = max(self._need, _BUFFER)
        if size > len(self._in) or (len(self._in) > _BUFFER and size == _BUFFER):
            self._in = bytearray(size + 4096)
            self._view = memoryview(self._in)
        self._in[: len(unread)] = unread
        self._start, self._end = 0, len(unread)

    def buffer_updated(self, nbytes: int) -> None:
        self._end = end = self._end + nbytes
        start = self._start
        view = self._view
        frames = self.frames
        while end - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._in, start)
            if size > self.limit:
                self._fail(f"it sent a message of {size} bytes, over the limit of {self.limit}")
                return
            need = HEADER.size + size
            if end - start < need:
                self._need = need
                break
            try:
                frames.append(_decode(view[start + HEADER.size : start + need]))
            except _Died as exc:
                self._fail(str(exc))
                return
            start += need
            self._need = HEADER.size
        if start == end:
            start = self._end = 0
        self._start = start
        if len(frames) >= _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if frames:
            self._wake()

    def eof_received(self) -> bool:
        self._fail("its channel closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("its channel closed")

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def arm(self, timeout: float) -> None:
        """Start a call's deadline: :meth:`receive` raises ``TimeoutError`` once it passed."""
        self.expired = False
        self._deadline = deadline = self.loop.time() + timeout
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check)
            self._timer_at = deadline

    def disarm(self) -> None:
        """The call ended (its timer, if it fires, finds no deadline and stops)."""
        self._deadline = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() >= deadline:
            self.expired = True
            self._wake()
        else:  # a later call's deadline
            self._timer = self.loop.call_at(deadline, self._check)
            self._timer_at = deadline

    def write(self, data: bytes) -> None:
        if self.error is not None or self.transport is None:
            raise _Died(self.error or "its channel closed")
        self.transport.write(data)

    async def receive(self) -> FromWorker:
        """The next frame; ``TimeoutError`` once the deadline passed."""
        frames = self.frames
        if self.expired:  # checked first: a worker sending without end must not outrun it
            raise TimeoutError
        if not frames and self.sock is not None and not getattr(self.loop, "_ready", True):
            self._spin()
        while not frames:
            if self.expired:
                raise TimeoutError
            if self.error is not None:
                raise _Died(self.error)
            self.waiter = waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        if self._paused and len(frames) < _PAUSE_AT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return frames.popleft()

    def _spin(self) -> None:
        """Read the answer straight from the socket if it comes within a few microseconds, while
        the event loop has nothing else ready to run: a worker answers a short call faster than
        the loop can go to sleep and be woken again. While the cores are contended (see
        :class:`Spin`) it reads once only: the worker then often ran on this core while the call
        was written, and its answer is there already."""
        sock = self.sock
        assert sock is not None
        end = SPIN.start(_SPIN)
        while not self.frames and self.error is None:
            try:
                count = sock.recv_into(self.get_buffer(-1))
            except BlockingIOError:
                if not end or not SPIN.waiting(end):
                    return
                continue
            except OSError:
                return  # the transport sees it too
            if not count:
                return
            self.buffer_updated(count)

    def close(self) -> None:
        self.disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()


class _Worker:
    """One worker process serving one bundle, one call at a time.

    On asyncio the channel is a :class:`_Link` (a protocol the event loop feeds). On any other
    backend (trio) it is read and written directly through anyio (a non-blocking socket, waited
    on only when it has nothing to give).
    """

    def __init__(self, process: Process, key: tuple[str, str]) -> None:
        self.process = process
        self.key = key
        self.calls = 0
        self.idle_since = time.monotonic()
        self.dead = False
        self.killed = False  # by the host (deadline, cancellation, close)
        self.link: _Link | None = None
        self.ctx: ToolContext | None = None
        """The context of the last call sent (the worker keeps it)."""
        self._sock = process.sock
        self._buffer = bytearray()
        self._next_id = 0

    async def open(self) -> None:
        self._sock.setblocking(False)
        loop = asyncio._get_running_loop()  # None on trio
        if loop is not None:
            link = _Link(loop)
            await loop.connect_accepted_socket(lambda: link, self._sock)
            link.sock = self._sock
            self.link = link

    async def send(self, message: object) -> None:
        await self.send_bytes(frame(_ENCODER, message))

    async def send_bytes(self, data: bytes) -> None:
        if self.link is not None:
            self.link.write(data)
            return
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[self._sock.send(view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _Died("its channel closed") from exc

    async def _fill(self, size: int) -> None:
        buffer = self._buffer
        while len(buffer) < size:
            try:
                chunk = self._sock.recv(max(65536, size - len(buffer)))
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            if not chunk:
                raise _Died("its channel closed")
            buffer += chunk

    async def receive(self, limit: int) -> FromWorker:
        if self.link is not None:
            self.link.limit = limit
            return await self.link.receive()
        try:
            await self._fill(HEADER.size)
            (size,) = HEADER.unpack_from(self._buffer)
            if size > limit:
                raise _Died(f"it sent a message of {size} bytes, over the limit of {limit}")
            await self._fill(HEADER.size + size)
            body = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _Died("its channel closed") from exc
        return _decode(body)

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def wake(self) -> None:
        """Wake a call waiting on the channel (the runtime is closing)."""
        if self.link is not None:
            self.link._fail("the runtime is closing")
            return
        with contextlib.suppress(OSError, RuntimeError):
            anyio.notify_closing(self._sock)

    def kill(self) -> None:
        self.dead = True
        self.killed = True
        if self.link is not None:
            self.process.kill(close=False)
            self.link.close()  # the transport owns the socket: it closes it
        else:
            self.process.kill()

    async def finish(self, limits: SandboxLimits) -> str:
        """Kill the worker, wait for it (no zombie) and say why it ended."""
        self.dead = True
        with anyio.CancelScope(shield=True):
            if not self.killed:  # it died by itself: its own status says how
                await anyio.to_thread.run_sync(self.process.wait_exit, 1.0)
            self.kill()
            await anyio.to_thread.run_sync(self.process.reap)
        return self.process.cause(limits)


@dataclass(frozen=True, slots=True)
class _Source:
    """What starting a worker for a bundle needs."""

    data: bytes
    pack: str
    version: str
    network: bool


class _Wait:
    """A call waiting for a worker or for room: a future of the event loop on asyncio (cheaper
    to make than an anyio event, which looks up the running backend), else an anyio event."""

    __slots__ = ("event", "future", "woken")

    def __init__(self) -> None:
        self.woken = False
        self.future: asyncio.Future[None] | None = None
        self.event: anyio.Event | None = None
        try:
            self.future = asyncio.get_running_loop().create_future()
        except RuntimeError:  # not asyncio (trio)
            self.event = anyio.Event()

    def set(self) -> None:
        self.woken = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(None)
        elif self.event is not None:
            self.event.set()

    async def wait(self) -> None:
        if self.future is not None:
            await self.future
        elif self.event is not None:
            await self.event.wait()


class WorkerPool:
    """The sandbox workers of one runtime, keyed by ``(project, digest)``."""

    def __init__(
        self, mode: str, limits: SandboxLimits, generations: Collection[int] = (CURRENT_GENERATION,)
    ) -> None:
        self.mode = mode
        self.limits = limits
        self.generations = sorted(generations)
        self._idle: dict[tuple[str, str], list[_Worker]] = {}
        self._alive: dict[tuple[str, str], int] = {}
        self._all: set[_Worker] = set()
        # Calls waiting: for a worker of their key (its workers_per_digest all busy), or (None)
        # for room under the total. Each worker or slot that comes free wakes one of them.
        self._waiters: dict[tuple[str, str] | None, collections.deque[_Wait]] = {}
        self._waiting = 0
        self._closed = False
        self.started = 0
        """Workers started so far."""
        self.wakeups = 0
        """Waiting calls woken so far (one for each worker or slot that came free)."""

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers alive now (a worker being stopped counts until it is
        reaped)."""
        return sorted(w.process.pid for w in self._all)

    def _signal(self, key: tuple[str, str], room: bool = False) -> None:
        """A worker or a slot of ``key`` came free (and, with ``room``, room under the total):
        wake the first call waiting for one of ``key``, and one waiting for room when ``room``
        or when none waits for ``key``. A woken call looks again and waits again if it finds
        nothing (someone else took it)."""
        if not self._waiting:
            return
        queue = self._waiters.get(key)
        woke = False
        if queue:
            woke = self._wake(queue)
        if room or not woke:
            queue = self._waiters.get(None)
            if queue:
                self._wake(queue)

    def _wake(self, queue: collections.deque[_Wait]) -> bool:
        queue.popleft().set()
        self.wakeups += 1
        return True

    def _wake_all(self) -> None:
        for queue in self._waiters.values():
            while queue:
                self._wake(queue)

    async def _start(self, key: tuple[str, str], source: _Source) -> _Worker:
        tool_logger = logging.getLogger(f"packrun.tools.{source.pack}")
        # Started from the event loop's thread, never a pool thread: the worker's death signal
        # follows the thread that started it, and pool threads come and go.
        try:
            process = spawn(self.mode, self.limits, network=source.network)
        except BaseException:
            self._free_slot(key)
            raise
        worker = _Worker(process, key)
        self._all.add(worker)
        self.started += 1
        try:
            await worker.open()
            with anyio.fail_after(self.limits.load_timeout):
                await worker.send(
                    Load(source.data, self.generations, tool_logger.getEffectiveLevel())
                )
                reply = await worker.receive(_FRAME_SLACK)
        except TimeoutError:
            await self._discard(worker)
            raise SandboxUnavailable(
                self.mode,
                f"a worker for {source.pack} {source.version} did not load it within "
                f"{self.limits.load_timeout:g}s",
            ) from None
        except _Died as exc:
            await anyio.to_thread.run_sync(worker.process.wait_exit, 1.0)
            said = _text(worker.process.stderr_tail(400).strip())
            cause = await self._discard(worker)
            raise SandboxUnavailable(
                self.mode,
                f"a worker for {source.pack} {source.version} died while loading it ({cause}); "
                f"{exc}" + (f": {said}" if said else ""),
            ) from None
        except BaseException:
            await self._discard(worker)
            raise
        if isinstance(reply, LoadFailed):
            await self._discard(worker)
            raise InvalidBundle(f"{source.pack} {source.version}", _text(reply.message))
        if not isinstance(reply, Loaded):
            await self._discard(worker)
            raise SandboxUnavailable(self.mode, f"a worker answered a load with {reply!r}")
        return worker

    def _free_slot(self, key: tuple[str, str]) -> None:
        self._alive[key] = self._alive.get(key, 1) - 1
        if self._alive[key] <= 0:
            del self._alive[key]
        self._signal(key)

    async def _discard(self, worker: _Worker) -> str:
        """Stop a worker and free its slot (every worker started is discarded exactly once)."""
        if worker in self._idle.get(worker.key, []):
            self._idle[worker.key].remove(worker)
        self._free_slot(worker.key)
        cause = await worker.finish(self.limits)
        self._all.discard(worker)  # once reaped: until then it counts, and sandbox_workers shows it
        self._signal(worker.key, room=True)
        return cause

    async def _acquire(self, key: tuple[str, str], source: _Source) -> _Worker:
        while True:
            if self._closed:
                raise SandboxUnavailable(self.mode, "the runtime is closed")
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
            waits_for: tuple[str, str] | None = key  # a worker of its own key
            if self._alive.get(key, 0) < self.limits.workers_per_digest:
                if len(self._all) >= self.limits.workers:
                    victim = self._oldest_idle()
                    if victim is not None:
                        await self._discard(victim)
                        continue
                    waits_for = None  # room under the total
                else:
                    self._alive[key] = self._alive.get(key, 0) + 1  # the slot, held at once
                    return await self._start(key, source)
            wait = _Wait()
            queue = self._waiters.setdefault(waits_for, collections.deque())
            queue.append(wait)
            self._waiting += 1
            try:
                await wait.wait()
            except BaseException:
                if wait.woken:  # woken, but leaving: what woke it goes to the next one
                    if queue:
                        self._wake(queue)
                else:
                    queue.remove(wait)
                raise
            finally:
                self._waiting -= 1

    def _oldest_idle(self) -> _Worker | None:
        candidates = [w for idle in self._idle.values() for w in idle]
        return min(candidates, key=lambda w: w.idle_since) if candidates else None

    async def _release(self, worker: _Worker) -> None:
        if worker.dead or self._closed or worker.calls >= self.limits.max_calls:
            with anyio.CancelScope(shield=True):
                await self._discard(worker)
            return
        worker.idle_since = time.monotonic()
        self._idle.setdefault(worker.key, []).append(worker)
        self._signal(worker.key)

    async def call(
        self,
        key: tuple[str, str],
        source: _Source,
        tool: str,
        ctx: ToolContext,
        input: Mapping[str, Any],
        timeout: float,
    ) -> Any:
        """Run ``tool`` in a worker of ``key``; see the module docstring for what can fail."""
        idle = self._idle.get(key)
        worker = idle.pop() if idle and not self._closed else await self._acquire(key, source)
        try:
            worker.calls += 1
            call_id = worker.next_id()
            auth = ctx.auth
            if worker.ctx is ctx:  # the same run again: the worker has its context
                message = Call(call_id, tool, input if type(input) is dict else dict(input))
            else:
                context = Context(
                    ctx.run_id,
                    ctx.installation_id,
                    ctx.pack_id,
                    ctx.version,
                    auth.mode,
                    dict(auth.credentials),
                    list(auth.scopes),
                    auth.header,
                )
                message = Call(
                    call_id, tool, input if type(input) is dict else dict(input), context
                )
            try:
                data = frame(_ENCODER, message)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidArgument(
                    f"input of tool {tool!r}",
                    type(input).__name__,
                    [
                        f"values msgpack can carry to the sandbox (strings, numbers, lists, dicts): {exc}"
                    ],
                ) from None
            # From here the worker has the context (or is killed): the run's next calls leave it out.
            # Held: an object of a run that ended is never taken for a new one.
            worker.ctx = ctx
            limit = self.limits.output_bytes + _FRAME_SLACK
            link = worker.link
            try:
                if (
                    link is not None
                ):  # asyncio: the deadline is a timer of the loop, no cancel scope
                    link.limit = limit
                    link.arm(timeout)
                    try:
                        link.write(data)
                        reply = await link.receive()
                        if type(reply) is not Done or reply.id != call_id:
                            reply = await self._until_answer(
                                worker, reply, call_id, limit, ctx, tool, source
                            )
                    finally:
                        link.disarm()
                else:
                    with anyio.fail_after(timeout):
                        await worker.send_bytes(data)
                        reply = await self._until_answer(
                            worker, await worker.receive(limit), call_id, limit, ctx, tool, source
                        )
            except TimeoutError:
                worker.kill()
                raise ToolTimeout(source.pack, source.version, tool, timeout) from None
            except _Died as exc:
                cause = await self._finish(worker)
                raise SandboxCrashed(
                    source.pack, source.version, tool, f"{cause} ({exc})"
                ) from None
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._cancel(worker, call_id)
                raise
            if isinstance(reply, Done):
                return reply.output
            return await self._failure(worker, source, tool, reply, auth)
        finally:
            if worker.dead or self._closed or worker.calls >= self.limits.max_calls:
                await self._release(worker)
            else:  # back to the idle ones, at no await
                worker.idle_since = time.monotonic()
                self._idle.setdefault(key, []).append(worker)
                if self._waiting:
                    self._signal(key)

    async def _until_answer(
        self,
        worker: _Worker,
        reply: FromWorker,
        call_id: int,
        limit: int,
        ctx: ToolContext,
        tool: str,
        source: _Source,
    ) -> Done | Failed:
        """Relay the call's log records until its answer (``reply`` is the first frame)."""
        logs = 0
        while True:
            if isinstance(reply, Done | Failed) and reply.id == call_id:
                return reply
            if isinstance(reply, Loaded | LoadFailed):  # a load answered twice: forged
                raise _Died("it answered its load again, during a call")
            # Anything else (a log record, a stray frame): let the loop run between them, or a
            # worker writing frames as fast as it can would starve it, deadline included.
            await anyio.lowlevel.checkpoint()
            if isinstance(reply, Log) and reply.id == call_id:
                logs += 1
                if logs <= _LOG_RECORDS:
                    ctx.logger.log(reply.level, _text(reply.message, ctx.auth))
                elif logs == _LOG_RECORDS + 1:
                    logger.warning(
                        "tool %r of %s %s logged more than %d records in one call; "
                        "the rest of this call's records are dropped",
                        tool,
                        source.pack,
                        source.version,
                        _LOG_RECORDS,
                    )
            reply = await worker.receive(limit)

    async def _finish(self, worker: _Worker) -> str:
        return await worker.finish(self.limits)  # _release then discards it from the pool

    async def _cancel(self, worker: _Worker, call_id: int) -> None:
        """Ask the worker to stop the call; kill it if it does not within the grace period."""
        try:
            with anyio.fail_after(self.limits.cancel_grace):
                await worker.send(Cancel(call_id))
                while True:
                    reply = await worker.receive(self.limits.output_bytes + _FRAME_SLACK)
                    if isinstance(reply, Done | Failed) and reply.id == call_id:
                        return
                    await anyio.lowlevel.checkpoint()
        except (TimeoutError, _Died):
            worker.kill()

    async def _failure(
        self, worker: _Worker, source: _Source, tool: str, reply: Failed, auth: Auth
    ) -> Any:
        code, message = _text(reply.code, auth, 200), _text(reply.message, auth)
        reply = Failed(reply.id, reply.kind, code, message)
        if reply.kind == "tool_error":
            raise ToolError(reply.code, reply.message)
        if reply.kind == "exception":
            raise ToolError("unhandled_exception", reply.message)
        if reply.kind == "invalid_response":
            raise ToolFailed(tool, "invalid_response", reply.message)
        if reply.kind == "not_found":
            raise NotFound(f"tool of {source.pack} {source.version} named", tool, [])
        if reply.kind == "memory":
            await self._finish(worker)
            limit = self.limits.memory_bytes // (1024 * 1024)
            raise SandboxCrashed(
                source.pack, source.version, tool, f"memory limit reached ({limit} MiB)"
            )
        raise ToolFailed(tool, reply.code, reply.message)  # "cancelled" by a cancel that came late

    async def reap_idle(self) -> None:
        """Stop the workers idle for longer than the idle timeout."""
        now = time.monotonic()
        for idle in list(self._idle.values()):
            for worker in list(idle):
                if now - worker.idle_since >= self.limits.idle_timeout:
                    await self._discard(worker)

    async def close(self) -> None:
        """Kill every worker (busy ones too) and wait for them."""
        self._closed = True
        workers = list(self._all)
        for worker in workers:
            worker.wake()  # a call waiting on it ends
            worker.kill()
        with anyio.CancelScope(shield=True):
            for worker in workers:
                await worker.finish(self.limits)
        self._all.clear()
        self._idle.clear()
        self._alive.clear()
        self._wake_all()


def _adapter_name(bundle: Bundle, generations: Collection[int]) -> str | None:
    """The adapter chain a bundle is called through (``"1->2"``), computed from its manifest."""
    generation = bundle.contract
    check_generation(bundle.id, bundle.version, generation, generations, stage="run")
    if generation == CURRENT_GENERATION:
        return None
    chain = list(range(generation, CURRENT_GENERATION))
    if generation > CURRENT_GENERATION or any(g not in STEPS for g in chain):
        check_generation(bundle.id, bundle.version, generation, (CURRENT_GENERATION,), stage="run")
    return "->".join(str(g) for g in [*chain, CURRENT_GENERATION])


def sandbox_dispatcher(
    pool: WorkerPool, bundle: Bundle, project: str, generations: Collection[int]
) -> Dispatcher:
    """A dispatcher whose tools run in ``pool``'s workers for ``(project, bundle.digest)``.

    Built from the manifest alone: nothing of the bundle is imported in the host.
    """
    adapter = _adapter_name(bundle, generations)
    key = (project, bundle.digest)
    source = _Source(bundle.data, bundle.id, bundle.version, bundle.manifest.network is not False)

    def entry(tool: str, timeout: float) -> tuple[Any, bool]:
        return functools.partial(pool.call, key, source, tool, timeout=timeout), True

    tools = {
        t.id: entry(t.id, pool.limits.call_timeout if t.timeout_s is msgspec.UNSET else t.timeout_s)
        for t in bundle.manifest.tools
    }
    return Dispatcher(
        None, tools, bundle.contract, adapter, bundle.manifest.tool_ids(), bundle.manifest
    )


# --- the code check at publish, verify and check ---------------------------------------------------

_checked: set[tuple[str, tuple[int, ...]]] = set()
"""Digests (with the generations admitted) whose code passed the check in this process: the same
bytes always give the same answer, so a bundle published again is not imported again."""


def check_code(
    bundle: Bundle,
    generations: Collection[int],
    *,
    mode: str = "auto",
    limits: SandboxLimits | None = None,
) -> None:
    """Import ``bundle`` in a sandbox worker under a deadline and check its tools against its
    manifest; refuse it (``invalid_bundle``, saying why) when the import raises, hangs or crashes.

    Nothing of the bundle runs in this process, and the worker is gone when this returns.
    """
    limits = limits or SandboxLimits()
    memo = (bundle.digest, tuple(sorted(generations)))
    if memo in _checked:
        return
    effective_mode(mode)
    process = spawn(mode, limits, network=bundle.manifest.network is not False)
    try:
        sock = process.sock
        deadline = time.monotonic() + limits.load_timeout
        sock.settimeout(limits.load_timeout)
        try:
            sock.sendall(frame(_ENCODER, Load(bundle.data, sorted(generations))))
            reply = _receive_blocking(sock, deadline)
        except TimeoutError:
            raise InvalidBundle(
                bundle.source,
                f"importing code/ did not finish within {limits.load_timeout:g}s "
                "(the check's deadline); an import must not block or loop",
            ) from None
        except _Died:
            process.wait_exit(1.0)
            process.kill()
            process.reap()
            raise InvalidBundle(
                bundle.source,
                f"importing code/ crashed its sandbox worker: {process.cause(limits)}",
            ) from None
    finally:
        process.kill()
        process.reap()
    if isinstance(reply, LoadFailed):
        raise InvalidBundle(bundle.source, _text(reply.message))
    if not isinstance(reply, Loaded):
        raise InvalidBundle(bundle.source, "its sandbox worker answered the check with nonsense")
    _checked.add(memo)


def _receive_blocking(sock: socket.socket, deadline: float) -> FromWorker:
    def exactly(size: int) -> bytes:
        chunks = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(min(size, 1 << 16))
            except TimeoutError:
                raise
            except OSError as exc:
                raise _Died("its channel closed") from exc
            if not chunk:
                raise _Died("its channel closed")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    (size,) = HEADER.unpack(exactly(HEADER.size))
    if size > _FRAME_SLACK:
        raise _Died("oversized answer")
    return _decode(exactly(size))


def _decode(body: bytes | memoryview) -> FromWorker:
    """A frame's message; anything that is not one (malformed, nested too deep to decode, of the
    wrong shape) is a protocol violation: the worker is treated as dead."""
    try:
        return _DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError, ValueError, TypeError, MemoryError) as exc:
        raise _Died(f"it sent a malformed message ({type(exc).__name__})") from None
