"""The dispatch protocol between the host and a sandbox worker: length-prefixed msgpack frames.

Each frame is a 4-byte big-endian length and a msgpack message. The host sends :class:`Load` once
(the bundle's bytes; the worker imports them in memory, nothing is written to a disk), then one
:class:`Call` at a time (with the run's :class:`Context` when it is not the previous call's), and
:class:`Cancel` to stop the call in progress. The worker answers a load with :class:`Loaded` or
:class:`LoadFailed`, and a call with :class:`Done` or :class:`Failed`, sending :class:`Log` records
in between. Credentials travel in a call's context, never in the load.
"""

from __future__ import annotations

import struct
from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "HEADER",
    "Call",
    "Cancel",
    "Context",
    "Done",
    "Failed",
    "FromHost",
    "FromWorker",
    "Load",
    "LoadFailed",
    "Loaded",
    "Log",
    "frame",
]

HEADER: Final = struct.Struct(">I")


class Load(msgspec.Struct, tag="load", array_like=True):
    """Import this bundle (and check its code against its manifest)."""

    bundle: bytes
    generations: list[int]
    log_level: int = 0


class Context(msgspec.Struct, array_like=True):
    """The run a call belongs to: the tool's ``ToolContext`` and the run's credentials."""

    run_id: str
    installation_id: str
    pack_id: str
    version: str
    mode: str
    credentials: dict[str, str]
    scopes: list[str]
    header: str


class Call(msgspec.Struct, tag="call", array_like=True):
    """Call one tool of the loaded bundle. ``context`` is left out when it is the one of the
    previous call to this worker (the same run calling again); its credentials belong to that
    run only."""

    id: int
    tool: str
    input: Any
    context: Context | None = None


class Cancel(msgspec.Struct, tag="cancel", array_like=True):
    """Stop the call ``id`` (an async tool is cancelled; a sync tool cannot be)."""

    id: int


class Loaded(msgspec.Struct, tag="loaded", array_like=True):
    """The bundle is imported and its tools match its manifest."""

    generation: int
    adapter: str | None
    tools: list[str]


class LoadFailed(msgspec.Struct, tag="load_failed", array_like=True):
    """Importing or checking the bundle failed; ``message`` says why."""

    message: str


class Done(msgspec.Struct, tag="done", array_like=True):
    """The call ``id`` returned ``output``."""

    id: int
    output: Any


class Failed(msgspec.Struct, tag="failed", array_like=True):
    """The call ``id`` failed. ``kind``: ``tool_error`` (a ToolError), ``exception`` (any other
    exception), ``invalid_response`` (an output that cannot be sent or is too large), ``memory``
    (the memory limit was reached: the worker exits), ``cancelled``, ``not_found``."""

    id: int
    kind: str
    code: str
    message: str


class Log(msgspec.Struct, tag="log", array_like=True):
    """A log record of the call ``id``, formatted (the host redacts it)."""

    id: int
    level: int
    message: str


FromHost: TypeAlias = Load | Call | Cancel
FromWorker: TypeAlias = Loaded | LoadFailed | Done | Failed | Log


def frame(encoder: msgspec.msgpack.Encoder, message: object) -> bytes:
    """``message`` encoded and prefixed with its length."""
    body = encoder.encode(message)
    return HEADER.pack(len(body)) + body
