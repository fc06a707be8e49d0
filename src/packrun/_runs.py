"""Runs: bound at their start to one ``(version, digest)``, kept on it until they end.

A :class:`Run` holds its binding, its tool dispatcher and its context; every :meth:`Run.call` goes
straight to the bound bundle's tool, whatever happens to pins meanwhile. Its bookkeeping (the
durable binding, in-flight counts, leases) belongs to the runtime's run tracker; a
:class:`RunScope` starts and ends a run through its :class:`RunOwner` (the runtime).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.to_thread

from packrun._adapters import Dispatcher, ToolEntry
from packrun._auth import Auth
from packrun._bundle import LoadedBundle, release_bundle
from packrun._checks import LATENCY_SAMPLE, CallChecks
from packrun._redact import RedactingLogger, Redactor
from packrun._stores import RunRecord
from packrun.errors import InvalidArgument, NotFound, ToolFailed
from packrun.sdk import ToolContext, ToolError

__all__ = ["Run", "RunOwner", "RunScope", "RuntimeStats"]


class Run:
    """One workflow run, bound to the artifact it started with.

    ``version``, ``digest``, ``contract`` and ``channel`` are the binding; ``adapter`` names the
    adapter chain that serves a previous-generation bundle (``None`` for the current generation);
    ``resumed`` is true when the run id was seen before and its original binding came back;
    ``chosen`` is true when the run was started on a version chosen with ``version=`` rather than
    its installation's resolution.
    """

    __slots__ = (
        "_auth",
        "_bundle",
        "_calls",
        "_checks",
        "_ctx",
        "_ended",
        "_logger",
        "_release",
        "_threads",
        "_tools",
        "adapter",
        "channel",
        "chosen",
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
        auth: Auth,
        logger: logging.Logger,
        resumed: bool,
        version_key: str,
        threads: anyio.CapacityLimiter | None = None,
        checks: CallChecks | None = None,
        chosen: bool = False,
        release: Callable[[LoadedBundle], None] = release_bundle,
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
        self.chosen = chosen
        self.version_key = version_key
        self._calls: set[str] | None = None
        self._tools: Mapping[str, ToolEntry] = dispatcher.tools
        self._bundle = dispatcher.loaded  # held (never evicted) until the run ends
        self._release = release
        self._auth = auth
        self._logger = logger  # the pack's tool logger (redacting, once the context is made)
        self._ctx: ToolContext | None = None  # made by the first call: a run may make none
        self._threads = threads
        self._checks = checks
        self._ended = False

    @property
    def calls(self) -> frozenset[str]:
        """The tool ids this run has called."""
        return frozenset(self._calls or ())

    async def call(self, tool: str, input: Mapping[str, Any] | None = None) -> Any:
        """Call ``tool`` of the bound bundle with ``input``; return its output.

        A tool's :class:`~packrun.sdk.ToolError` becomes :class:`packrun.ToolFailed` (``tool_error``,
        ``.tool_code`` its own code); an unknown tool is ``not_found``. A sync tool runs in a worker
        thread so the event loop never waits on it. The input is checked against the tool's
        declared input before the tool runs (``invalid_input``) and its output against the
        declared output after (``invalid_output``), as the runtime's check modes say.
        """
        if self._ended:
            raise InvalidArgument("run", self.run_id, ["a run in flight (this one has ended)"])
        try:
            entry = self._tools.get(tool)
        except TypeError:  # an unhashable tool: checked only on a miss, a hit costs nothing more
            entry = None
        if input is not None and type(input) is not dict and not isinstance(input, Mapping):
            raise InvalidArgument("input", input, ["None or a mapping such as {'limit': 10}"])
        if entry is None:
            if not isinstance(tool, str):
                raise InvalidArgument("tool", tool, ["a tool id (a string)"])
            raise NotFound(
                f"tool of {self.pack_id} {self.version} named", tool, sorted(self._tools)
            )
        fn, is_async = entry
        if self._calls is None:
            self._calls = {tool}
        else:
            self._calls.add(tool)
        value = {} if input is None else input
        # Host-side contract checks, around whichever dispatch runs the tool.
        checks = self._checks
        if checks is None:
            return await self._dispatch(tool, fn, is_async, value)
        counters = checks.counters
        if checks.count:
            counters.calls += 1
        if tool in checks.inputs:
            checks.check_input(tool, value)
        if is_async and counters.calls & LATENCY_SAMPLE != 1:
            # The common case, here rather than in _dispatch: one coroutine frame fewer a call.
            failure = None
            try:
                output = await fn(self._ctx or self._context(), value)
            except BaseException as exc:
                failure = self._failure(tool, exc)
                if failure is None:
                    if checks.count:  # health: how the call failed
                        checks.failed(exc, None)
                    raise
            if failure is not None:
                if checks.count:
                    checks.failed(failure, None)
                raise failure  # outside the handler: the original is not its context
        elif not checks.count:
            output = await self._dispatch(tool, fn, is_async, value)
        elif counters.calls & LATENCY_SAMPLE != 1:  # health: how the call failed, if so
            try:
                output = await self._dispatch(tool, fn, is_async, value)
            except BaseException as exc:
                checks.failed(exc, None)
                raise
        else:  # and on one call in LATENCY_SAMPLE + 1 (the first among them), its latency
            started = perf_counter()
            try:
                output = await self._dispatch(tool, fn, is_async, value)
            except BaseException as exc:
                checks.failed(exc, perf_counter() - started)
                raise
            checks.ended(perf_counter() - started)
        if tool in checks.outputs:
            checks.after(tool, output)
        return output

    async def _dispatch(self, tool: str, fn: Any, is_async: bool, value: Mapping[str, Any]) -> Any:
        """Run the tool and return its output; its failures as :meth:`_failure` says."""
        ctx = self._ctx or self._context()
        try:
            if is_async:
                return await fn(ctx, value)
            ok, output = await anyio.to_thread.run_sync(
                _guarded, fn, ctx, value, limiter=self._threads
            )
            if ok:
                return output
            raise output
        except BaseException as exc:
            failure = self._failure(tool, exc)
            if failure is None:
                raise
        raise failure  # outside the handler: the original, unredacted, is not its context

    def _failure(self, tool: str, exc: BaseException) -> BaseException | None:
        """What the caller gets for a tool's exception: ``None`` to let it through as it is (now
        redacted), else the error to raise instead.

        A tool's :class:`~packrun.sdk.ToolError` becomes ``ToolFailed``. Any other exception
        reaches the caller with the run's credentials removed from it and everything chained to
        it; one that still shows a credential (a ``__str__`` of its own) is withheld, as
        ``ToolFailed`` with ``tool_code`` ``crashed``. A ``BaseException`` that is not an
        ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, a forged
        cancellation) never reaches the executor raw: it is ``ToolFailed`` (``crashed``) too. A
        real cancellation of the caller propagates as it is.
        """
        if isinstance(exc, anyio.get_cancelled_exc_class()) and _really_cancelled():
            return None
        redactor = Redactor(self._auth)
        clean = redactor.exception(exc)
        failure: ToolFailed
        if isinstance(exc, ToolError):
            failure = ToolFailed(tool, redactor.text(exc.code), redactor.text(exc.message))
        elif not clean:
            failure = ToolFailed(
                tool,
                "crashed",
                f"the tool raised {type(exc).__name__}, withheld: it shows a credential",
            )
        elif isinstance(exc, Exception):
            return None
        else:
            failure = ToolFailed(
                tool, "crashed", f"the tool raised {type(exc).__name__}: {redactor.text(str(exc))}"
            )
        failure.__cause__ = exc if clean else None
        failure.__suppress_context__ = True
        return failure

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._bundle is not None:  # None: the code runs in sandbox workers
                self._release(self._bundle)
            ctx = self._ctx
            if ctx is not None and isinstance(ctx.logger, RedactingLogger):
                ctx.logger.close()

    def _context(self) -> ToolContext:
        """The context the run's tools get (made once, on the first call)."""
        auth = self._auth
        logger = self._logger
        self._ctx = ctx = ToolContext(
            self.run_id,
            self.installation_id,
            self.pack_id,
            self.version,
            auth,
            logger if auth.mode == "none" else RedactingLogger(logger, auth),
        )
        return ctx

    def __repr__(self) -> str:
        via = f", adapter {self.adapter}" if self.adapter else ""
        via += ", chosen" if self.chosen else ""
        return (
            f"Run({self.run_id!r}, installation {self.installation_id!r}, "
            f"{self.pack_id} {self.version}, {self.digest}{via})"
        )


def _guarded(fn: Callable[..., Any], ctx: ToolContext, input: Any) -> tuple[bool, Any]:
    """Run a sync tool in its thread; what it raises comes back as a value. (Delivered by the
    event loop instead, a ``GeneratorExit`` would be thrown into the caller's coroutine and break
    its next ``await``; a ``KeyboardInterrupt`` would stop the loop.)"""
    try:
        return True, fn(ctx, input)
    except BaseException as exc:
        return False, exc


def _really_cancelled() -> bool:
    """Whether the caller's task is being cancelled (a tool can raise a cancellation exception of
    its own; that one is the tool's failure, not the caller's cancellation)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not asyncio: the backend's cancellation cannot be raised by hand
        return True
    return task is None or task.cancelling() > 0


class RunOwner(Protocol):
    """What starts and ends runs for a :class:`RunScope` (the runtime)."""

    async def _start_run(
        self,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
        version: str | None,
    ) -> Run: ...

    def _open_run(
        self,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
        version: str | None,
    ) -> Run | Coroutine[Any, Any, Run]: ...

    def _end_run(self, run: Run) -> None: ...


class RunScope:
    """``async with rt.run(...) as run``: starts the run on entry and ends it on exit, however the
    body leaves (normally, by an exception, or cancelled)."""

    __slots__ = (
        "_auth",
        "_installation_id",
        "_run",
        "_run_id",
        "_runtime",
        "_version",
        "_workflow_id",
    )

    def __init__(
        self,
        runtime: RunOwner,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
        version: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._version = version
        self._installation_id = installation_id
        self._run_id = run_id
        self._workflow_id = workflow_id
        self._auth = auth
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        # The run itself when its start needed no await (one coroutine frame fewer), else the
        # coroutine that finishes it.
        opened = self._runtime._open_run(
            self._installation_id, self._run_id, self._workflow_id, self._auth, self._version
        )
        run = self._run = opened if isinstance(opened, Run) else await opened
        return run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run, self._run = self._run, None
        if run is not None:
            self._runtime._end_run(run)  # no await: a cancelled run releases its slot all the same


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of a runtime's run counters."""

    runs_started: int
    runs_in_flight: int
    """Runs in flight in this runtime (other processes' are counted by ``in_flight``)."""
    adapter_runs: Mapping[tuple[str, str, str], int]
    """Runs served through an adapter, by ``(pack, version, adapter)``: what still needs the
    previous generation, so operators know when it can be dropped."""
    seconds_since_refresh: float = 0.0
    """Seconds since this runtime last read the store's change log successfully (or opened): how
    stale its view of other processes' writes may be. Alert when it grows well past
    ``refresh_interval``. A runtime opened with ``refresh_interval=0`` refreshes only when
    :meth:`Runtime.refresh` is called, so this grows in between."""
    refresh_failures: int = 0
    """Refreshes that failed in a row (0 once one succeeds again)."""
    catch_up_reads: int = 0
    """Reads of the store's change log this runtime's refresh loop made (on a notification or
    every ``refresh_interval``); a storm of notifications costs a bounded number of them."""
    notifications: int = 0
    """Change notifications the store received (PostgreSQL's ``NOTIFY``; 0 on the other stores).
    They are hints: any number received together wakes one catch-up read."""
