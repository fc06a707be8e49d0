"""Runs: bound at their start to one ``(version, digest)``, kept on it until they end.

A :class:`Run` holds its binding, its tool dispatcher and its context; every :meth:`Run.call` goes
straight to the bound bundle's tool, whatever happens to pins meanwhile. Its bookkeeping (the
durable binding, in-flight counts, leases) belongs to the runtime's
:class:`~packrun._tracker.RunTracker`, which starts and ends runs through :class:`RunScope`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from packrun._adapters import Dispatcher, ToolEntry
from packrun._auth import Auth
from packrun._stores import RunRecord
from packrun.errors import InvalidArgument, NotFound, ToolFailed
from packrun.sdk import ToolContext, ToolError

if TYPE_CHECKING:
    from packrun._tracker import RunTracker

__all__ = ["Run", "RunScope", "RuntimeStats"]


def _secrets(auth: Auth) -> list[str]:
    """Every form a credential of ``auth`` may be echoed in: its values and its header values."""
    values = [v for v in auth.credentials.values() if v]
    for header in auth.headers().values():
        values.append(header)
        values.extend(part for part in header.split(" ", 1)[1:] if part)  # "Basic <b64>"
    return sorted(set(values), key=len, reverse=True)


def scrub(message: str, auth: Auth) -> str:
    """``message`` with every credential of ``auth`` replaced by ``<redacted>``: a tool may echo
    one into an error or a log line. Whole tokens only, so ``user`` leaves ``username`` alone."""
    if auth.mode == "none":
        return message
    for value in _secrets(auth):
        if len(value) >= 3 and value in message:
            message = re.sub(
                rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", "<redacted>", message
            )
    return message


def _scrub_exception(exc: BaseException, auth: Auth) -> None:
    """Redact credentials from the string arguments (the message) of an exception in place."""
    if auth.mode != "none" and exc.args:
        exc.args = tuple(scrub(a, auth) if isinstance(a, str) else a for a in exc.args)


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A tool's logger: every line is formatted, and the run's credentials removed, before it is
    handed to the ``packrun.tools.<pack>`` logger."""

    def __init__(self, logger: logging.Logger, auth: Auth) -> None:
        super().__init__(logger, {})
        self._auth = auth

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.logger.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, scrub(text, self._auth), **kwargs)


class Run:
    """One workflow run, bound to the artifact it started with.

    ``version``, ``digest``, ``contract`` and ``channel`` are the binding; ``adapter`` names the
    adapter chain that serves a previous-generation bundle (``None`` for the current generation);
    ``resumed`` is true when the run id was seen before and its original binding came back.
    """

    __slots__ = (
        "_calls",
        "_ctx",
        "_ended",
        "_threads",
        "_tools",
        "adapter",
        "channel",
        "contract",
        "digest",
        "generation",
        "installation_id",
        "pack_id",
        "resumed",
        "run_id",
        "started_at",
        "version",
        "version_key",
        "workflow_id",
    )

    def __init__(
        self,
        record: RunRecord,
        dispatcher: Dispatcher,
        ctx: ToolContext,
        resumed: bool,
        version_key: str,
        threads: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.run_id = record.run_id
        self.installation_id = record.installation_id
        self.pack_id = record.pack_id
        self.version = record.version
        self.digest = record.digest
        self.contract = record.contract
        self.channel = record.channel
        self.workflow_id = record.workflow_id
        self.started_at: datetime = record.started_at
        self.generation = dispatcher.generation
        self.adapter = dispatcher.adapter
        self.resumed = resumed
        self.version_key = version_key
        self._calls: set[str] | None = None
        self._tools: Mapping[str, ToolEntry] = dispatcher.tools
        self._ctx = ctx
        self._threads = threads
        self._ended = False

    @property
    def calls(self) -> frozenset[str]:
        """The tool ids this run has called."""
        return frozenset(self._calls or ())

    async def call(self, tool: str, input: Mapping[str, Any] | None = None) -> Any:
        """Call ``tool`` of the bound bundle with ``input``; return its output.

        A tool's :class:`~packrun.sdk.ToolError` becomes :class:`packrun.ToolFailed` (``tool_error``,
        ``.tool_code`` its own code); an unknown tool is ``not_found``. A sync tool runs in a worker
        thread so the event loop never waits on it.
        """
        if self._ended:
            raise InvalidArgument("run", self.run_id, ["a run in flight (this one has ended)"])
        entry = self._tools.get(tool)
        if entry is None:
            raise NotFound(
                f"tool of {self.pack_id} {self.version} named", tool, sorted(self._tools)
            )
        fn, is_async = entry
        if self._calls is None:
            self._calls = {tool}
        else:
            self._calls.add(tool)
        try:
            if is_async:
                return await fn(self._ctx, {} if input is None else input)
            return await anyio.to_thread.run_sync(
                fn, self._ctx, {} if input is None else input, limiter=self._threads
            )
        except ToolError as exc:
            auth = self._ctx.auth
            raise ToolFailed(tool, scrub(exc.code, auth), scrub(exc.message, auth)) from None
        except Exception as exc:  # the tool's own exception, unchanged but for credentials
            _scrub_exception(exc, self._ctx.auth)
            raise

    def __repr__(self) -> str:
        via = f", adapter {self.adapter}" if self.adapter else ""
        return (
            f"Run({self.run_id!r}, installation {self.installation_id!r}, "
            f"{self.pack_id} {self.version}, {self.digest}{via})"
        )


class RunScope:
    """``async with rt.run(...) as run``: starts the run on entry and ends it on exit, however the
    body leaves (normally, by an exception, or cancelled)."""

    __slots__ = ("_auth", "_installation_id", "_run", "_run_id", "_tracker", "_workflow_id")

    def __init__(
        self,
        tracker: RunTracker,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
    ) -> None:
        self._tracker = tracker
        self._installation_id = installation_id
        self._run_id = run_id
        self._workflow_id = workflow_id
        self._auth = auth
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._run = await self._tracker.start(
            self._installation_id, self._run_id, self._workflow_id, self._auth
        )
        return self._run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run, self._run = self._run, None
        if run is not None:
            self._tracker.end(run)  # no await: a cancelled run releases its slot all the same


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of a runtime's run counters."""

    runs_started: int
    runs_in_flight: int
    """Runs in flight in this runtime (other processes' are counted by ``in_flight``)."""
    adapter_runs: Mapping[tuple[str, str, str], int]
    """Runs served through an adapter, by ``(pack, version, adapter)``: what still needs the
    previous generation, so operators know when it can be dropped."""
