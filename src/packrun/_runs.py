"""Runs: bound at their start to one ``(version, digest)``, kept on it until they end.

A :class:`Run` holds its binding, its tool dispatcher and its context; every :meth:`Run.call` goes
straight to the bound bundle's tool, whatever happens to pins meanwhile. Its bookkeeping (the
durable binding, in-flight counts, leases) belongs to the runtime, which starts and ends runs
through :class:`RunScope`.
"""

from __future__ import annotations

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
from packrun.errors import NotFound, ToolFailed
from packrun.sdk import ToolContext, ToolError

if TYPE_CHECKING:
    from packrun._runtime import Runtime

__all__ = ["Run", "RunScope", "RuntimeStats"]


def _scrub(message: str, auth: Auth) -> str:
    """``message`` with every credential value of ``auth`` replaced: a tool may echo one."""
    for value in auth.credentials.values():
        if value and len(value) >= 4:
            message = message.replace(value, "<redacted>")
    return message


class Run:
    """One workflow run, bound to the artifact it started with.

    ``version``, ``digest``, ``contract`` and ``channel`` are the binding; ``adapter`` names the
    adapter chain that serves a previous-generation bundle (``None`` for the current generation);
    ``resumed`` is true when the run id was seen before and its original binding came back.
    """

    __slots__ = (
        "_calls",
        "_ctx",
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
            return await anyio.to_thread.run_sync(fn, self._ctx, {} if input is None else input)
        except ToolError as exc:
            raise ToolFailed(tool, exc.code, _scrub(exc.message, self._ctx.auth)) from None

    def __repr__(self) -> str:
        via = f", adapter {self.adapter}" if self.adapter else ""
        return (
            f"Run({self.run_id!r}, installation {self.installation_id!r}, "
            f"{self.pack_id} {self.version}, {self.digest}{via})"
        )


class RunScope:
    """``async with rt.run(...) as run``: starts the run on entry and ends it on exit, however the
    body leaves (normally, by an exception, or cancelled)."""

    __slots__ = ("_auth", "_installation_id", "_run", "_run_id", "_runtime", "_workflow_id")

    def __init__(
        self,
        runtime: Runtime,
        installation_id: str,
        run_id: str | None,
        workflow_id: str | None,
        auth: Auth,
    ) -> None:
        self._runtime = runtime
        self._installation_id = installation_id
        self._run_id = run_id
        self._workflow_id = workflow_id
        self._auth = auth
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._run = await self._runtime._start_run(
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
