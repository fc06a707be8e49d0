"""The worker side of dispatch: load one bundle, serve its tools one call at a time.

Runs only inside a sandbox worker process (see :mod:`packrun._dispatch.worker`).
"""

from __future__ import annotations

import asyncio
import asyncio.events as asyncio_events
import logging
import os
import socket
import threading
from typing import Any

import msgspec

from packrun._adapters import Dispatcher, dispatcher_for
from packrun._auth import Auth
from packrun._bundle import load_bundle
from packrun._dispatch._protocol import (
    HEADER,
    Call,
    Cancel,
    Context,
    Done,
    Failed,
    FromHost,
    Load,
    Loaded,
    LoadFailed,
    Log,
)
from packrun._dispatch._spin import Spin
from packrun.errors import PackrunError
from packrun.sdk import ToolContext, ToolError

__all__ = ["serve"]

_MEMORY_EXIT = 70  # the worker exits with this after reporting that it reached its memory limit
_BUFFER = 64 * 1024  # the channel's buffers; a larger frame gets a larger one for its time
_SPIN = 20e-6  # seconds a worker waits for the next call awake before it blocks
_SPIN_STATE = Spin()


class _Channel:
    """Frames over the socket to the host, read into one reusable buffer and written from another.
    Sends are locked: a tool's threads may log too."""

    def __init__(self, fd: int, max_output: int) -> None:
        os.set_inheritable(fd, False)  # a program a tool runs does not hold the channel open
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(FromHost)
        self.lock = threading.Lock()
        self.max_output = max_output
        self._in = bytearray(_BUFFER)
        self._view = memoryview(self._in)
        self._start = 0  # the unread bytes are _in[_start:_end]
        self._end = 0
        self._need = HEADER.size  # bytes the frame being read needs in all
        self._out = bytearray(_BUFFER)

    def receive(self) -> FromHost:
        """The next message from the host (blocking); exits when the host closed the channel.

        It first reads without blocking for up to ``_SPIN`` seconds (yielding the core to anything
        else ready to run meanwhile): a host that calls again at once finds the worker awake,
        rather than asleep in the kernel and slow to wake. While the cores are contended (see
        :class:`Spin`) it goes straight to a blocking read, which returns at once with what has
        arrived."""
        message = self._frame()
        if message is not None:
            return message
        spin_until = _SPIN_STATE.start(_SPIN)
        while spin_until:
            try:
                self._fill(socket.MSG_DONTWAIT)
            except BlockingIOError:
                if not _SPIN_STATE.waiting(spin_until):
                    break  # polled long enough: block
                continue
            message = self._frame()
            if message is not None:
                return message
        while True:  # polling off: straight to a blocking read (it returns at once with data)
            self._fill(0)
            message = self._frame()
            if message is not None:
                return message

    def poll(self) -> FromHost | None:
        """The next message if one has arrived, without waiting for one."""
        message = self._frame()
        if message is None:
            try:
                self._fill(socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            message = self._frame()
        return message

    @property
    def pending(self) -> bool:
        """Whether bytes of another frame are read already."""
        return self._end > self._start

    def _frame(self) -> FromHost | None:
        start, end = self._start, self._end
        if end - start < HEADER.size:
            self._need = HEADER.size
            return None
        (size,) = HEADER.unpack_from(self._in, start)
        need = HEADER.size + size
        if end - start < need:
            self._need = need
            return None
        body = self._view[start + HEADER.size : start + need]
        self._start = start = start + need
        if start == end:
            self._start = self._end = 0
        self._need = HEADER.size
        return self.decoder.decode(body)  # copies what it keeps: the buffer is reused

    def _fill(self, flags: int) -> None:
        if self._start + self._need > len(self._in):
            self._make_room(self._need)
        count = self.sock.recv_into(self._view[self._end :], 0, flags)
        if not count:
            os._exit(0)  # the host closed the channel: nothing left to serve
        self._end += count

    def _make_room(self, need: int) -> None:
        """Move the unread bytes to the front, in a larger buffer when a frame needs one."""
        unread = bytes(self._view[self._start : self._end])
        if need > len(self._in) or len(self._in) > _BUFFER:  # grow, or give a large one back
            self._in = bytearray(max(need, _BUFFER))
            self._view = memoryview(self._in)
        self._in[: len(unread)] = unread
        self._start, self._end = 0, len(unread)

    def send(self, message: object) -> None:
        with self.lock:
            out = self._out
            self.encoder.encode_into(message, out, HEADER.size)
            HEADER.pack_into(out, 0, len(out) - HEADER.size)
            self.sock.sendall(out)
            if len(out) > _BUFFER:
                self._out = bytearray(_BUFFER)

    def send_output(self, call_id: int, output: Any) -> None:
        with self.lock:
            out = self._out
            try:
                self.encoder.encode_into(Done(call_id, output), out, HEADER.size)
            except (TypeError, ValueError, OverflowError) as exc:
                failure: Failed | None = Failed(
                    call_id, "invalid_response", "invalid_response", f"the output {exc}"
                )
            else:
                size = len(out) - HEADER.size
                failure = None
                if size > self.max_output:
                    failure = Failed(
                        call_id,
                        "invalid_response",
                        "invalid_response",
                        f"the output is {size} bytes encoded; at most {self.max_output} are "
                        "accepted",
                    )
                else:
                    HEADER.pack_into(out, 0, size)
                    self.sock.sendall(out)
            if len(out) > _BUFFER:
                self._out = bytearray(_BUFFER)
        if failure is not None:
            self.send(failure)


class _Relay(logging.Handler):
    """Sends the records of the bundle's loggers (``ctx.logger`` and any logger under
    ``packrun.tools.<pack>``) to the host during a call, formatted, to be redacted there."""

    def __init__(self, worker: _Worker) -> None:
        super().__init__()
        self._worker = worker
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        call_id = self._worker.call_id
        if call_id is None:
            return
        try:
            text = record.getMessage()
        except Exception as exc:  # a bad format string or arguments: the message as given
            try:
                shown = repr(record.args)
            except Exception:
                shown = "(arguments without a repr)"
            text = f"{record.msg!s} {shown} (unformattable arguments: {exc})"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        self._worker.channel.send(Log(call_id, record.levelno, text))


class _Worker:
    """Serves the host from one task of its own event loop that lives as long as the worker: an
    async tool is awaited right there (no task a call), so a tool that returns without waiting on
    anything costs no turn of the loop; the loop runs only while a tool waits. Between calls the
    worker blocks on its channel."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.dispatcher: Dispatcher | None = None
        self.call_id: int | None = None
        self.relay = _Relay(self)
        self.logger = self._bundle_logger("packrun.tools", logging.WARNING)
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.ctx: ToolContext | None = None

    def load(self, message: Load) -> None:
        try:
            loaded = load_bundle(
                message.bundle, generations=frozenset(message.generations), stage="run"
            )
            self.dispatcher = dispatcher_for(loaded, frozenset(message.generations))
        except PackrunError as exc:
            self.channel.send(LoadFailed(exc.detail))
            return
        except BaseException as exc:
            self.channel.send(LoadFailed(f"importing code/ failed: {type(exc).__name__}: {exc}"))
            return
        self.logger = self._bundle_logger(
            f"packrun.tools.{loaded.bundle.id}", message.log_level or logging.WARNING
        )
        self.ctx = None
        d = self.dispatcher
        self.channel.send(Loaded(d.generation, d.adapter, sorted(d.tools)))

    def _bundle_logger(self, name: str, level: int) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.setLevel(level)
        if self.relay not in logger.handlers:
            logger.addHandler(self.relay)
        return logger

    def serve(self) -> None:
        """Serve until the host closes the channel (the process then exits)."""
        self.loop.add_reader(self.channel.sock.fileno(), self.readable)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self.task = asyncio.current_task()
        receive = self.channel.receive
        while True:
            message = receive()
            if type(message) is Call:
                if self.dispatcher is None:
                    self.channel.send(
                        Failed(message.id, "not_found", "not_found", "no bundle loaded")
                    )
                else:
                    if self.channel.pending:  # a cancellation read along with the call
                        self.loop.call_soon(self.readable)
                    await self.call(message)
            elif type(message) is Load:
                self.load(message)
            # a Cancel of a call that has ended already: nothing to stop

    def readable(self) -> None:
        """A frame may have arrived while an async tool waits: a cancellation of that call, or
        nothing (the loop may report the channel readable after the frame was read)."""
        message = self.channel.poll()
        if type(message) is Cancel and message.id == self.call_id and self.task is not None:
            self.task.cancel()

    def context(self, context: Context) -> ToolContext:
        """The tool's context for the run ``context`` describes (kept for that run's next calls)."""
        auth = Auth(
            context.mode,  # type: ignore[arg-type]
            context.credentials,
            tuple(context.scopes),
            context.header,
        )
        self.ctx = ToolContext(
            context.run_id,
            context.installation_id,
            context.pack_id,
            context.version,
            auth,
            self.logger,
        )
        return self.ctx

    async def call(self, message: Call) -> None:
        assert self.dispatcher is not None
        entry = self.dispatcher.tools.get(message.tool)
        if entry is None:
            self.channel.send(Failed(message.id, "not_found", "not_found", message.tool))
            return
        fn, is_async = entry
        ctx = self.ctx if message.context is None else self.context(message.context)
        if ctx is None:
            self.channel.send(Failed(message.id, "not_found", "not_found", "no context"))
            return
        self.call_id = message.id
        try:
            if is_async:
                output = await fn(ctx, message.input)
            else:  # as if no loop ran: the tool may start one of its own (asyncio.run)
                asyncio_events._set_running_loop(None)
                try:
                    output = fn(ctx, message.input)
                finally:
                    asyncio_events._set_running_loop(self.loop)
        except ToolError as exc:
            self.channel.send(Failed(message.id, "tool_error", str(exc.code), str(exc.message)))
            return
        except MemoryError:
            self.channel.send(Failed(message.id, "memory", "memory", "MemoryError"))
            os._exit(_MEMORY_EXIT)
        except asyncio.CancelledError:
            task = self.task
            if task is not None:
                while task.cancelling():  # the worker's task serves the next call as before
                    task.uncancel()
            self.channel.send(Failed(message.id, "cancelled", "cancelled", "cancelled"))
            return
        except Exception as exc:
            self.channel.send(
                Failed(message.id, "exception", type(exc).__name__, f"{type(exc).__name__}: {exc}")
            )
            return
        finally:
            self.call_id = None
        self.channel.send_output(message.id, output)


def serve(fd: int, max_output: int) -> None:
    """Serve the host on the channel ``fd`` until it closes it."""
    _Worker(_Channel(fd, max_output)).serve()
