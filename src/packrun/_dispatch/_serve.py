"""The worker side of dispatch: load one bundle, serve its tools one call at a time.

Runs only inside a sandbox worker process (see :mod:`packrun._dispatch.worker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Coroutine
from typing import Any

import msgspec

from packrun._adapters import Dispatcher, dispatcher_for
from packrun._auth import Auth
from packrun._bundle import load_bundle
from packrun._dispatch._protocol import (
    HEADER,
    Call,
    Cancel,
    Done,
    Failed,
    FromHost,
    Load,
    Loaded,
    LoadFailed,
    Log,
    frame,
)
from packrun.errors import PackrunError
from packrun.sdk import ToolContext, ToolError

__all__ = ["serve"]

_MEMORY_EXIT = 70  # the worker exits with this after reporting that it reached its memory limit


class _Channel:
    """Frames over the socket to the host. Sends are locked: a tool's threads may log too."""

    def __init__(self, fd: int, max_output: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(FromHost)
        self.lock = threading.Lock()
        self.max_output = max_output

    def _exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                os._exit(0)  # the host closed the channel: nothing left to serve
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> FromHost:
        (size,) = HEADER.unpack(self._exactly(HEADER.size))
        return self.decoder.decode(self._exactly(size))

    def send(self, message: object) -> None:
        data = frame(self.encoder, message)
        with self.lock:
            self.sock.sendall(data)

    def send_output(self, call_id: int, output: Any) -> None:
        try:
            data = frame(self.encoder, Done(call_id, output))
        except (TypeError, ValueError, OverflowError) as exc:
            self.send(Failed(call_id, "invalid_response", "invalid_response", f"the output {exc}"))
            return
        if len(data) - HEADER.size > self.max_output:
            self.send(
                Failed(
                    call_id,
                    "invalid_response",
                    "invalid_response",
                    f"the output is {len(data) - HEADER.size} bytes encoded; at most "
                    f"{self.max_output} are accepted",
                )
            )
            return
        with self.lock:
            self.sock.sendall(data)


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
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.dispatcher: Dispatcher | None = None
        self.call_id: int | None = None
        self.relay = _Relay(self)
        self.logger = self._bundle_logger("packrun.tools", logging.WARNING)
        self.loop = asyncio.new_event_loop()
        self.current: tuple[int, asyncio.Task[Any]] | None = None
        self.reading = False
        self.last_auth: tuple[tuple[object, ...], Auth] | None = None

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
        d = self.dispatcher
        self.channel.send(Loaded(d.generation, d.adapter, sorted(d.tools)))

    def _bundle_logger(self, name: str, level: int) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.setLevel(level)
        if self.relay not in logger.handlers:
            logger.addHandler(self.relay)
        return logger

    def run_async(self, call_id: int, coro: Coroutine[Any, Any, Any]) -> Any:
        task = self.loop.create_task(coro)
        self.current = (call_id, task)
        if not self.reading:  # registered once: registering per call costs more than the call
            self.loop.add_reader(self.channel.sock.fileno(), self.readable)
            self.reading = True
        try:
            return self.loop.run_until_complete(task)
        finally:
            self.current = None

    def readable(self) -> None:
        """A frame arrived while an async tool runs: a cancellation of that call, or nothing."""
        message = self.channel.receive()
        if isinstance(message, Cancel) and self.current and message.id == self.current[0]:
            self.current[1].cancel()

    def call(self, message: Call) -> None:
        assert self.dispatcher is not None
        entry = self.dispatcher.tools.get(message.tool)
        if entry is None:
            self.channel.send(Failed(message.id, "not_found", "not_found", message.tool))
            return
        fn, is_async = entry
        shape = (message.mode, message.credentials, message.scopes, message.header)
        if self.last_auth is not None and self.last_auth[0] == shape:
            auth = self.last_auth[1]  # the same run calling again: the same credentials
        else:
            auth = Auth(
                message.mode,  # type: ignore[arg-type]
                message.credentials,
                tuple(message.scopes),
                message.header,
            )
            self.last_auth = (shape, auth)
        ctx = ToolContext(
            message.run_id,
            message.installation_id,
            message.pack_id,
            message.version,
            auth,
            self.logger,
        )
        self.call_id = message.id
        try:
            if is_async:
                output = self.run_async(message.id, fn(ctx, message.input))
            else:
                output = fn(ctx, message.input)
        except ToolError as exc:
            self.channel.send(Failed(message.id, "tool_error", str(exc.code), str(exc.message)))
            return
        except MemoryError:
            self.channel.send(Failed(message.id, "memory", "memory", "MemoryError"))
            os._exit(_MEMORY_EXIT)
        except asyncio.CancelledError:
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
    channel = _Channel(fd, max_output)
    worker = _Worker(channel)
    while True:
        message = channel.receive()
        if isinstance(message, Load):
            worker.load(message)
        elif isinstance(message, Call):
            if worker.dispatcher is None:
                channel.send(Failed(message.id, "not_found", "not_found", "no bundle loaded"))
            else:
                worker.call(message)
