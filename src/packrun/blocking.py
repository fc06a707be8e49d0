"""The runtime for code that is not async: thread-based, Celery or Airflow executors.

:func:`open_runtime` opens the same :class:`~packrun.Runtime` on an event loop of its own (an anyio
blocking portal: asyncio in a background thread) and returns a :class:`BlockingRuntime` whose
methods have the same names and arguments, called without ``await``. Any number of threads may
use one at once: each call is handed to the event loop thread and the calling thread waits for
its result. :meth:`BlockingRuntime.resolve`, the hot path, reads memory in the calling thread.

>>> from packrun import blocking
>>> with blocking.open_runtime("memory:") as rt:
...     rt.installations()
[]
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio.from_thread

from packrun._auth import Auth
from packrun._checks import CheckMode
from packrun._contract import DEFAULT_GENERATIONS
from packrun._dispatch import SandboxLimits, SandboxMode
from packrun._events import Event
from packrun._resolver import Resolution
from packrun._retention import Retention
from packrun._runs import Run, RunScope
from packrun._runtime import Runtime
from packrun._runtime import open_runtime as _open_async
from packrun._stores import Settings
from packrun.errors import InvalidArgument

__all__ = ["BlockingRun", "BlockingRunScope", "BlockingRuntime", "open_runtime"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _awaited(
    method: Callable[Concatenate[Runtime, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[BlockingRuntime, _P], _T]:
    """An async ``method`` of :class:`Runtime`, awaited in the event loop thread; the caller
    waits for its result."""

    @functools.wraps(method)
    def call(self: BlockingRuntime, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        runtime, portal = self._open()
        result: _T = portal.call(functools.partial(method, runtime, *args, **kwargs))
        return result

    return call


def _in_loop(
    method: Callable[Concatenate[Runtime, _P], _T],
) -> Callable[Concatenate[BlockingRuntime, _P], _T]:
    """A sync ``method`` of :class:`Runtime`, called in the event loop thread (where the state it
    reads changes) while the caller waits."""

    @functools.wraps(method)
    def call(self: BlockingRuntime, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        runtime, portal = self._open()
        return portal.call(functools.partial(method, runtime, *args, **kwargs))

    return call


class BlockingRun:
    """A run seen from a thread: :meth:`call` waits for the tool's output.

    ``run_id``, ``installation_id``, ``pack_id``, ``version``, ``digest``, ``contract``,
    ``channel``, ``generation``, ``adapter``, ``workflow_id``, ``started_at``, ``resumed`` and
    ``chosen`` are
    the run's binding, as on :class:`packrun.Run`.
    """

    __slots__ = ("_portal", "_run")

    def __init__(self, run: Run, portal: anyio.from_thread.BlockingPortal) -> None:
        self._run = run
        self._portal = portal

    def call(self, tool: str, input: Mapping[str, Any] | None = None) -> Any:
        """Call ``tool`` of the bound bundle with ``input`` and wait for its output (as
        :meth:`packrun.Run.call`)."""
        return self._portal.call(self._run.call, tool, input)

    @property
    def calls(self) -> frozenset[str]:
        """The tool ids this run has called."""
        return self._run.calls

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run.run_id

    @property
    def installation_id(self) -> str:
        """The installation it runs."""
        return self._run.installation_id

    @property
    def pack_id(self) -> str:
        """Its pack."""
        return self._run.pack_id

    @property
    def version(self) -> str:
        """The version it is bound to (its text)."""
        return self._run.version

    @property
    def digest(self) -> str | None:
        """The artifact it is bound to."""
        return self._run.digest

    @property
    def contract(self) -> int | None:
        """The bundle's contract generation."""
        return self._run.contract

    @property
    def channel(self) -> str:
        """The channel of the row it is bound to."""
        return self._run.channel

    @property
    def generation(self) -> int:
        """The contract generation it runs as."""
        return self._run.generation

    @property
    def adapter(self) -> str | None:
        """The adapter chain that serves it, or ``None``."""
        return self._run.adapter

    @property
    def workflow_id(self) -> str | None:
        """Its workflow, if any."""
        return self._run.workflow_id

    @property
    def resumed(self) -> bool:
        """True when its id was seen before and its binding came back."""
        return self._run.resumed

    @property
    def chosen(self) -> bool:
        """True when it was started on a version chosen with ``version=``."""
        return self._run.chosen

    @property
    def started_at(self) -> datetime:
        """When it started (its first start, for a resumed run)."""
        return self._run.started_at

    def __repr__(self) -> str:
        return repr(self._run)


class BlockingRunScope:
    """``with rt.run(...) as run``: starts the run on entry and ends it on exit, however the body
    leaves."""

    __slots__ = ("_cm", "_runtime", "_scope")

    def __init__(self, runtime: BlockingRuntime, scope: Callable[[], RunScope]) -> None:
        self._runtime = runtime
        self._scope = scope
        self._cm: contextlib.AbstractContextManager[Run] | None = None

    def __enter__(self) -> BlockingRun:
        _, portal = self._runtime._open()
        cm = portal.wrap_async_context_manager(self._scope())
        run = cm.__enter__()
        self._cm = cm
        with self._runtime._lock:
            self._runtime._scopes.add(self)
        return BlockingRun(run, portal)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._runtime._lock:
            cm, self._cm = self._cm, None
            self._runtime._scopes.discard(self)
        if cm is not None:
            cm.__exit__(exc_type, exc, tb)


class BlockingRuntime:
    """A :class:`~packrun.Runtime` for synchronous code: the same methods, called without
    ``await``, safe to share between threads.

    Make one with :func:`open_runtime`; close it with :meth:`close` or by leaving a ``with``
    block. Closing ends the runs still open and stops the runtime's event loop thread.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._lock = threading.Lock()
        self._scopes: set[BlockingRunScope] = set()  # runs entered and not yet left

    def _start(self) -> None:
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
            stack.enter_context(portal.wrap_async_context_manager(self._runtime))
            self._portal = portal
            self._stack = stack.pop_all()  # opened: kept until close()

    def _open(self) -> tuple[Runtime, anyio.from_thread.BlockingPortal]:
        portal = self._portal
        if portal is None:
            raise InvalidArgument("runtime", self.url, ["an open runtime (this one is closed)"])
        return self._runtime, portal

    def close(self) -> None:
        """End the runs still open, close the store and stop the event loop thread. Calling it
        again does nothing."""
        with self._lock:
            if self._portal is None:
                return
            self._portal = None
            left_open = list(self._scopes)
        for scope in left_open:  # their tasks would hold the event loop open
            scope.__exit__(None, None, None)
        self._stack.close()

    def __enter__(self) -> BlockingRuntime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._portal is None

    @property
    def url(self) -> str:
        """The store's URL (the password masked)."""
        return self._runtime.url

    @property
    def settings(self) -> Settings:
        """The store-wide settings as last seen."""
        return self._runtime.settings

    @property
    def runtime(self) -> Runtime:
        """The async runtime underneath, for code that runs on its event loop."""
        return self._runtime

    def resolve(self, installation_id: str) -> Resolution:
        """Which artifact runs for ``installation_id`` now (as :meth:`packrun.Runtime.resolve`):
        read from memory in the calling thread, no I/O, no wait."""
        self._open()
        return self._runtime.resolve(installation_id)

    def run(
        self,
        installation_id: str,
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        auth: Auth | None = None,
        version: str | None = None,
    ) -> BlockingRunScope:
        """A run of ``installation_id``: ``with rt.run(...) as run: run.call(...)``. The run keeps
        the version it started with until the block ends (as :meth:`packrun.Runtime.run`, and
        ``version`` as it has it)."""
        return BlockingRunScope(
            self,
            functools.partial(
                self._runtime.run,
                installation_id,
                run_id=run_id,
                workflow_id=workflow_id,
                auth=auth,
                version=version,
            ),
        )

    # Everything else is the async runtime's method, run on its event loop.
    publish = _awaited(Runtime.publish)
    retire = _awaited(Runtime.retire)
    install = _awaited(Runtime.install)
    set_pin = _awaited(Runtime.set_pin)
    set_policy = _awaited(Runtime.set_policy)
    update = _awaited(Runtime.update)
    rollback = _awaited(Runtime.rollback)
    bulk_update = _awaited(Runtime.bulk_update)
    bulk_rollback = _awaited(Runtime.bulk_rollback)
    set_alias = _awaited(Runtime.set_alias)
    aliases = _in_loop(Runtime.aliases)
    set_project_soak = _awaited(Runtime.set_project_soak)
    project_soak = _in_loop(Runtime.project_soak)
    soak_of = _in_loop(Runtime.soak_of)
    pack_updates = _in_loop(Runtime.pack_updates)
    review_update = _in_loop(Runtime.review_update)
    declare_workflow = _awaited(Runtime.declare_workflow)
    set_immutable_versions = _awaited(Runtime.set_immutable_versions)
    set_strict_versions = _awaited(Runtime.set_strict_versions)
    artifact = _awaited(Runtime.artifact)
    refresh = _awaited(Runtime.refresh)
    call = _awaited(Runtime.call)
    wait_drained = _awaited(Runtime.wait_drained)
    explain = _in_loop(Runtime.explain)
    packs = _in_loop(Runtime.packs)
    versions = _in_loop(Runtime.versions)
    process_flows = _in_loop(Runtime.process_flows)
    pinned_to = _in_loop(Runtime.pinned_to)
    installations = _in_loop(Runtime.installations)
    installation = _in_loop(Runtime.installation)
    history = _awaited(Runtime.history)
    gc = _awaited(Runtime.gc)
    in_flight = _in_loop(Runtime.in_flight)
    in_flight_for = _in_loop(Runtime.in_flight_for)
    runs_in_flight = _in_loop(Runtime.runs_in_flight)
    version_status = _in_loop(Runtime.version_status)
    health = _in_loop(Runtime.health)
    stats = _in_loop(Runtime.stats)
    add_source = _awaited(Runtime.add_source)
    remove_source = _awaited(Runtime.remove_source)
    sync = _awaited(Runtime.sync)
    sources = _in_loop(Runtime.sources)
    source = _in_loop(Runtime.source)
    project_settings = _in_loop(Runtime.project_settings)
    projects = _in_loop(Runtime.projects)
    start_rollout = _awaited(Runtime.start_rollout)
    rollout_status = _awaited(Runtime.rollout_status)
    promote_rollout = _awaited(Runtime.promote_rollout)
    abort_rollout = _awaited(Runtime.abort_rollout)

    def events(self, since: int = 0, *, follow: bool = False) -> Iterator[Event]:
        """The fleet's events after the cursor ``since``, as :meth:`packrun.Runtime.events`
        yields them (each read waits in the calling thread)."""
        runtime, portal = self._open()
        events = portal.call(functools.partial(runtime.events, since, follow=follow))

        async def next_event() -> Event | None:
            try:
                return await anext(events)
            except StopAsyncIteration:
                return None

        def iterate() -> Iterator[Event]:
            while (event := portal.call(next_event)) is not None:
                yield event

        return iterate()

    def __repr__(self) -> str:
        return f"<BlockingRuntime {self.url} {'closed' if self.closed else 'open'}>"


def open_runtime(
    url: str | None = None,
    *,
    create: bool = True,
    generations: Collection[int] = DEFAULT_GENERATIONS,
    refresh_interval: float = 0.1,
    lease_ttl: float = 30.0,
    tool_threads: int = 40,
    background_sync: bool = True,
    check_input: CheckMode = "enforce",
    check_output: CheckMode = "warn",
    check_auth: CheckMode = "enforce",
    in_process: Collection[str] = frozenset(),
    sandbox: SandboxMode = "auto",
    sandbox_limits: SandboxLimits | None = None,
    fleet_interval: float = 1.0,
    count_health: bool = True,
    clock: Callable[[], datetime] | None = None,
    retention: Retention | None = None,
) -> BlockingRuntime:
    """Open a runtime on the store at ``url`` for synchronous code; it is open when this returns.

    The arguments are those of :func:`packrun.open_runtime`. Use it in a ``with`` block, or keep
    it for the life of a worker process and call :meth:`BlockingRuntime.close` at shutdown. It
    runs on asyncio in a thread of its own, so every store works, PostgreSQL included. A worker
    that only reads a store opens it with ``create=False``: a missing store is then a
    ``store_error`` rather than a new, empty one.
    """
    rt = BlockingRuntime(
        _open_async(
            url,
            create=create,
            generations=generations,
            refresh_interval=refresh_interval,
            lease_ttl=lease_ttl,
            tool_threads=tool_threads,
            background_sync=background_sync,
            check_input=check_input,
            check_output=check_output,
            check_auth=check_auth,
            in_process=in_process,
            sandbox=sandbox,
            sandbox_limits=sandbox_limits,
            fleet_interval=fleet_interval,
            count_health=count_health,
            clock=clock,
            retention=retention,
        )
    )
    rt._start()
    return rt
