"""Loading bundle code cannot hurt the host (DESIGN.md sections 6 and 7).

Whatever a bundle's code raises while it is imported is ``invalid_bundle``; whatever a tool raises
reaches the executor as an ``Exception`` (``tool_error`` for what is not one), while a real
cancellation of the caller stays a cancellation. A refused bundle leaves nothing in the import
system; loaded ones are bounded, least recently used evicted first, never one a run in flight uses.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import packrun
from packrun import InvalidBundle, Runtime, ToolFailed
from packrun._bundle import (
    MAX_LOADED_BUNDLES,
    _finder,
    bundle_bytes,
    load_bundle,
    loaded_bundles,
)

pytestmark = pytest.mark.anyio

RAISES = {
    "KeyboardInterrupt": "raise KeyboardInterrupt('stop')",
    "SystemExit": "raise SystemExit(3)",
    "CancelledError": "import asyncio\nraise asyncio.CancelledError()",
    "GeneratorExit": "raise GeneratorExit()",
    "Custom": "class Custom(BaseException):\n    pass\nraise Custom('mine')",
    "ValueError": "raise ValueError('plain')",
}

TOOL_CODE = """\
import asyncio

from packrun.sdk import Integration

integration = Integration("hostile")


class Custom(BaseException):
    pass


@integration.tool("base_async")
async def base_async(ctx, input):
    raise {kind}


@integration.tool("base_sync")
def base_sync(ctx, input):
    raise {kind}


@integration.tool("slow")
async def slow(ctx, input):
    input["started"].set()
    await asyncio.sleep(3600)
    return {{}}


@integration.tool("late_import")
def late_import(ctx, input):
    from ._late import answer  # imported when the tool runs, not when the bundle loads

    return answer()
"""

TOOL_RAISES = {
    "KeyboardInterrupt": "KeyboardInterrupt('stop')",
    "SystemExit": "SystemExit(3)",
    "CancelledError": "asyncio.CancelledError()",
    "GeneratorExit": "GeneratorExit()",
    "Custom": "Custom('mine')",
}

TOOLS = ("base_async", "base_sync", "late_import", "slow")


def manifest(
    pack: str, version: str = "1.0.0", tools: tuple[str, ...] = ("ask",)
) -> packrun.Manifest:
    return packrun.decode_manifest(
        {"id": pack, "version": version, "contract": 2, "tools": [{"id": t} for t in tools]}
    )


def importing(statement: str, marker: str | None = None) -> bytes:
    """A bundle whose code runs ``statement`` when it is imported."""
    code = f"# {marker or uuid.uuid4().hex}\n{statement}\n"
    return bundle_bytes(manifest("hostile"), {"__init__.py": code.encode()})


def plain(marker: str, pack: str = "plain") -> bytes:
    code = (
        f"# {marker}\nfrom packrun.sdk import Integration\n\nintegration = Integration({pack!r})\n\n"
        "@integration.tool('ask')\ndef ask(ctx, input):\n    return 'ok'\n"
    )
    return bundle_bytes(manifest(pack), {"__init__.py": code.encode()})


def hostile(kind: str = "KeyboardInterrupt") -> bytes:
    files = {
        "__init__.py": TOOL_CODE.format(kind=TOOL_RAISES[kind]).encode(),
        "_late.py": b"def answer():\n    return 'late'\n",
    }
    return bundle_bytes(manifest("hostile", tools=TOOLS), files)


def bundle_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith("_packrun_bundle_")}


def traces() -> tuple[int, int, set[str], int]:
    """What loading leaves in the process: finder entries, packages, modules, meta_path finders."""
    return (
        len(_finder.slots),
        len(_finder.packages),
        bundle_modules(),
        sum(f is _finder for f in sys.meta_path),
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:", in_process={"vendor", "custom"}) as runtime:
        yield runtime


# --- import ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(RAISES))
def test_whatever_the_code_raises_on_import_is_invalid_bundle_and_leaves_nothing(kind: str) -> None:
    before = traces()
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(importing(RAISES[kind]))
    assert refused.value.code == "invalid_bundle"
    assert f"importing code/ failed: {kind}" in refused.value.reason
    assert traces() == before


@pytest.mark.parametrize("kind", sorted(RAISES))
def test_a_publish_of_a_bundle_raising_on_import_fails_and_the_event_loop_lives_on(
    kind: str,
) -> None:
    async def main() -> str:
        async with packrun.open_runtime("memory:", in_process={"vendor", "custom"}) as rt:
            try:
                await rt.publish(importing(RAISES[kind]))
            except InvalidBundle as error:
                refused = str(error)
            await anyio.sleep(0)  # the loop still schedules
            await rt.publish(plain(uuid.uuid4().hex))
            return refused

    assert f"importing code/ failed: {kind}" in anyio.run(main)


def test_thirty_refused_bundles_leave_nothing_behind() -> None:
    before = traces()
    padding = "x" * 64 * 1024
    for n in range(30):
        with pytest.raises(InvalidBundle):
            load_bundle(importing(f"PAD = {padding!r}\nraise RuntimeError('no {n}')"))
        with pytest.raises(InvalidBundle, match="disagree on tools"):  # refused after importing
            load_bundle(
                bundle_bytes(
                    manifest("hostile", tools=("ask", "other")),
                    {"__init__.py": _one_tool(n)},
                )
            )
    assert traces() == before


def _one_tool(n: int) -> bytes:
    return (
        f"# {n}\nfrom packrun.sdk import Integration\nintegration = Integration('hostile')\n"
        "@integration.tool('ask')\ndef ask(ctx, input):\n    return 'ok'\n"
    ).encode()


# --- eviction ---------------------------------------------------------------------------------


def test_loaded_bundles_are_bounded_least_recently_used_first() -> None:
    first = load_bundle(plain(f"first-{uuid.uuid4().hex}"))
    name = first.module.__name__
    assert name in sys.modules
    for n in range(MAX_LOADED_BUNDLES + 5):
        load_bundle(plain(f"fill-{n}-{uuid.uuid4().hex}"))
    assert loaded_bundles() <= MAX_LOADED_BUNDLES
    assert len(_finder.packages) <= MAX_LOADED_BUNDLES
    assert len({m.split(".")[0] for m in bundle_modules()}) <= MAX_LOADED_BUNDLES
    assert name not in sys.modules  # the least recently used went first
    again = load_bundle(first.bundle.data)  # and loads again when asked for
    assert again.module is not first.module
    assert again.tools["ask"](None, {}) == "ok"  # type: ignore[arg-type]


async def test_a_bundle_a_run_in_flight_uses_is_never_evicted(rt: Runtime) -> None:
    await rt.publish(hostile())
    await rt.install("h", "hostile")
    async with rt.run("h") as run:
        for n in range(MAX_LOADED_BUNDLES + 5):
            load_bundle(plain(f"held-{n}-{uuid.uuid4().hex}"))
        # Its package is still importable: a tool importing a module late still finds it.
        assert await run.call("late_import") == "late"
        assert run._bundle is not None
        name = run._bundle.module.__name__
        assert name in sys.modules
        digest = run.digest
        assert digest is not None
    with anyio.fail_after(5):  # the runs' hold is given back once their ends are written
        while _finder.slots[digest].holds:
            await anyio.sleep(0.001)
    for n in range(MAX_LOADED_BUNDLES + 5):  # ended: now it may go
        load_bundle(plain(f"after-{n}-{uuid.uuid4().hex}"))
    assert name not in sys.modules
    assert loaded_bundles() <= MAX_LOADED_BUNDLES
    assert await rt.call("h", "late_import") == "late"  # a new run loads it again


# --- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["base_async", "base_sync"])
@pytest.mark.parametrize("kind", sorted(TOOL_RAISES))
async def test_a_base_exception_from_a_tool_is_tool_failed(
    rt: Runtime, kind: str, tool: str
) -> None:
    await rt.publish(hostile(kind))
    await rt.install("h", "hostile")
    with pytest.raises(ToolFailed) as failed:
        await rt.call("h", tool)
    assert failed.value.code == "tool_error"
    assert failed.value.tool_code == "crashed"
    assert kind in str(failed.value)
    assert rt.stats().runs_in_flight == 0
    assert await rt.call("h", "late_import") == "late"  # the runtime carries on


async def test_a_cancel_scope_around_a_call_still_cancels_it(rt: Runtime) -> None:
    await rt.publish(hostile())
    await rt.install("h", "hostile")
    started = anyio.Event()
    scope = anyio.CancelScope()
    outcome: list[str] = []

    async def call() -> None:
        with scope:
            await rt.call("h", "slow", {"started": started})
            outcome.append("returned")
        outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await started.wait()
        scope.cancel()
    assert outcome == ["cancelled"]  # not ToolFailed: that would have failed the task group
    assert rt.stats().runs_in_flight == 0


async def test_a_task_cancelled_during_a_call_gets_its_cancellation(rt: Runtime) -> None:
    await rt.publish(hostile())
    await rt.install("h", "hostile")
    started = anyio.Event()
    task = asyncio.ensure_future(rt.call("h", "slow", {"started": started}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rt.stats().runs_in_flight == 0


async def test_loading_from_many_threads_while_runs_hold_bundles_stays_bounded(
    tmp_path: Path,
) -> None:
    async with packrun.open_runtime(
        f"sqlite:///{tmp_path / 'state.db'}", in_process={"vendor", "custom"}
    ) as rt:
        await rt.publish(hostile())
        await rt.install("h", "hostile")
        answers: list[object] = []

        def load_many(worker: int) -> None:
            for n in range(MAX_LOADED_BUNDLES // 2):
                loaded = load_bundle(plain(f"thread-{worker}-{n}-{uuid.uuid4().hex}"))
                answers.append(loaded.tools["ask"](None, {}))  # type: ignore[arg-type]

        async with rt.run("h") as run:
            async with anyio.create_task_group() as tg:
                for worker in range(4):
                    tg.start_soon(anyio.to_thread.run_sync, load_many, worker)
                for _ in range(20):  # calls of the held bundle meanwhile, from the event loop
                    assert await run.call("late_import") == "late"
                    await anyio.sleep(0)
            assert run._bundle is not None
            assert run._bundle.module.__name__ in sys.modules  # still there: the run holds it
            assert await run.call("late_import") == "late"
        assert answers == ["ok"] * (4 * (MAX_LOADED_BUNDLES // 2))
    assert loaded_bundles() <= MAX_LOADED_BUNDLES
    assert len({m.split(".")[0] for m in bundle_modules()}) <= MAX_LOADED_BUNDLES
