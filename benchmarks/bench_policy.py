"""Policies and diffs: diff time against manifest size, policy application against installations.

Goals (DESIGN sections 9 and 12): ``diff`` is linear in the size of the manifests, so the time per
tool (and per field) stays flat (at most 1.25x) from 10 to 1,000 tools; the policy step of a publish
costs the same per installation it moves from 100 to 1,000 such installations (linear), and a
publish costs the same whether 1 or 10,000 installations of *another* pack exist (flat). A last row
measures the policy step against installations of the same pack whose pins are dynamic (``latest``):
policies never move those, and section 5 says a publish must not grow with them.

The policy step is what ``publish`` does once its row is stored: list the pack's installations and
apply their policies (``_apply_policies``). When it moves installations it is timed by wrapping
``_apply_policies``; when nothing is left to move it is called directly, many times. Whole
publishes are timed as the median of many, as in ``bench_resolver``: a publish hands its checks to
a worker thread whose wake-up time varies.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import anyio
from _harness import Row, best_of, main

import packrun
from packrun._bundle import bundle_bytes
from packrun._diff import diff
from packrun._manifest import Manifest

FIELDS = 10
ROUNDS = 7
PUBLISHES = 40

CODE = (
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('__PACK__')\n\n"
    b"@integration.tool('t')\n"
    b"def t(ctx, input):\n"
    b"    return {}\n"
)


# --- diff against manifest size -------------------------------------------------------------------


def _field(tool: int, i: int) -> dict[str, Any]:
    field: dict[str, Any] = {
        "name": f"f{i}",
        "type": "integer" if i % 2 else "string",
        "required": i % 3 == 0,
        "description": f"field {i} of tool {tool}",
    }
    if i % 5 == 4:
        field["type"] = "string"
        field["enum"] = ["a", "b", "c"]
    return field


def manifest_dict(tools: int, fields: int) -> dict[str, Any]:
    """A manifest of ``tools`` tools, each with ``fields`` fields: half inputs, half the fields of
    one nested output object."""
    half = fields // 2
    return {
        "id": "big",
        "version": "1.0.0",
        "contract": 2,
        "auth": {"mode": "api_key", "credential_fields": [{"name": "key", "required": True}]},
        "tools": [
            {
                "id": f"tool_{t}",
                "summary": f"tool {t}",
                "input": [_field(t, i) for i in range(half)],
                "output": [
                    {
                        "name": "record",
                        "type": "object",
                        "required": True,
                        "fields": [_field(t, i) for i in range(half, fields)],
                    }
                ],
            }
            for t in range(tools)
        ],
    }


def changed_pair(tools: int, fields: int) -> tuple[Manifest, Manifest]:
    """Two manifests of the same size that differ in three fields of three tools."""
    old = manifest_dict(tools, fields)
    new = manifest_dict(tools, fields)
    new["version"] = "1.1.0"
    new["tools"][0]["input"][0]["description"] = "a better description"
    new["tools"][tools // 2]["input"].append({"name": "extra", "type": "string"})
    new["tools"][-1]["output"][0]["fields"][0]["type"] = "boolean"
    return packrun.decode_manifest(old), packrun.decode_manifest(new)


def diff_rows() -> list[Row]:
    per_tool: dict[int, float] = {}
    for tools in (10, 100, 1000):
        old, new = changed_pair(tools, FIELDS)
        report = diff(old, new)
        assert len(report.findings) == 3, report.findings
        per_tool[tools] = best_of(partial(diff, old, new), repeat=5) / tools
    per_field: dict[int, float] = {}
    for fields in (10, 100):
        old, new = changed_pair(100, fields)
        per_field[fields] = best_of(partial(diff, old, new), repeat=5) / (100 * fields)
    return [
        Row(
            "diff per tool, 100 tools x 10 fields",
            "per tool, 10 tools x 10 fields",
            per_tool[100],
            per_tool[10],
            "<= 1.25",
        ),
        Row(
            "diff per tool, 1,000 tools x 10 fields",
            "per tool, 10 tools x 10 fields",
            per_tool[1000],
            per_tool[10],
            "<= 1.25",
        ),
        Row(
            "diff per field, 100 tools x 100 fields",
            "per field, 100 tools x 10 fields",
            per_field[100],
            per_field[10],
            "<= 1.25",
        ),
    ]


# --- policy application against installations ------------------------------------------------------


def bundle(pack: str, version: str) -> bytes:
    manifest = packrun.decode_manifest(
        {"id": pack, "version": version, "contract": 2, "tools": [{"id": "t"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": CODE.replace(b"__PACK__", pack.encode())})


class PolicyTimer:
    """Wraps a runtime's policy step and records how long each call took."""

    def __init__(self, rt: packrun.Runtime) -> None:
        self.seconds: list[float] = []
        real: Callable[[Sequence[packrun.Installation]], Awaitable[None]] = rt._apply_policies

        async def timed(installations: Sequence[packrun.Installation]) -> None:
            started = time.perf_counter()
            await real(installations)
            self.seconds.append(time.perf_counter() - started)

        setattr(rt, "_apply_policies", timed)  # noqa: B010 (mypy forbids assigning a method)


async def open_memory() -> packrun.Runtime:
    rt = packrun.open_runtime("memory:", refresh_interval=0)
    await rt.__aenter__()
    return rt


def moving(count: int) -> float:
    """The best policy step of ``ROUNDS`` publishes that each move ``count`` ``auto_patch``
    installations from the previous patch to the new one."""
    result: list[float] = []

    async def measure() -> None:
        rt = await open_memory()
        try:
            await rt.publish(bundle("acme", "1.0.0"))
            for i in range(count):
                await rt.install(f"inst-{i}", "acme", policy="auto_patch")
            payloads = [bundle("acme", f"1.0.{n}") for n in range(1, ROUNDS + 1)]
            timer = PolicyTimer(rt)
            gc.collect()
            gc.disable()  # as timeit does: a collection's cost grows with the heap, not the step
            try:
                for n, data in enumerate(payloads, start=1):
                    await rt.publish(data)
                    assert rt.resolve(f"inst-{count - 1}").version == f"1.0.{n}"
            finally:
                gc.enable()
            result.append(min(timer.seconds))
        finally:
            await rt.__aexit__(None, None, None)

    anyio.run(measure)
    return result[0]


async def policy_step(rt: packrun.Runtime, pack_id: str, calls: int = 200) -> float:
    """Seconds per call of a publish's policy step for ``pack_id`` (listing the pack's
    installations, then applying the policies) when nothing is left to move: the best of
    ``ROUNDS`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            await rt._apply_policies(rt._resolver.auto_installations_of(pack_id))
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def bystanders(count: int, pin: str | None, pack: str) -> tuple[float, float]:
    """``(median publish, policy step)`` of acme publishes that each move one ``auto_patch``
    installation, with ``count`` other ``auto_patch`` installations of ``pack`` pinned ``pin``
    (an exact version when ``None``)."""
    result: list[tuple[float, float]] = []

    async def measure() -> None:
        rt = await open_memory()
        try:
            await rt.publish(bundle("acme", "1.0.0"))
            if pack != "acme":
                await rt.publish(bundle(pack, "1.0.0"))
            for i in range(count):
                await rt.install(f"by-{i}", pack, pin=pin, policy="auto_patch")
            await rt.install("mover", "acme", policy="auto_patch")
            payloads = [bundle("acme", f"1.0.{n}") for n in range(1, PUBLISHES + 1)]
            for data in payloads:  # import each bundle once, outside the timing
                packrun.load_bundle(data)
            publishes = []
            for data in payloads:
                started = time.perf_counter()
                await rt.publish(data)
                publishes.append(time.perf_counter() - started)
            assert rt.resolve("mover").version == f"1.0.{PUBLISHES}"
            result.append((statistics.median(publishes), await policy_step(rt, "acme")))
        finally:
            await rt.__aexit__(None, None, None)

    anyio.run(measure)
    return result[0]


def policy_rows() -> list[Row]:
    moved = {100: float("inf"), 1000: float("inf")}
    for _ in range(3):  # alternated, the best of each: the machine's load varies over a run
        for count in moved:
            moved[count] = min(moved[count], moving(count))
    other_1 = bystanders(1, None, "other")
    other_many = bystanders(10_000, None, "other")
    latest_1 = bystanders(1, "latest", "acme")
    latest_many = bystanders(10_000, "latest", "acme")
    return [
        Row(
            "policy step per moved installation, 1,000 auto_patch",
            "the same with 100",
            moved[1000] / 1000,
            moved[100] / 100,
            "<= 1.25",
        ),
        Row(
            "publish (median) with 10,000 installations of another pack",
            "publish (median) with 1",
            other_many[0],
            other_1[0],
            "<= 1.25",
        ),
        Row(
            "policy step (nothing to move), 10,000 installations of another pack",
            "the same with 1",
            other_many[1],
            other_1[1],
            "<= 1.25",
        ),
        Row(
            "publish (median) with 10,000 installations of the pack pinned latest",
            "publish (median) with 1",
            latest_many[0],
            latest_1[0],
            "<= 1.25",
        ),
        Row(
            "policy step (nothing to move), 10,000 of the pack pinned latest",
            "the same with 1",
            latest_many[1],
            latest_1[1],
            "<= 1.25",
        ),
    ]


def rows() -> list[Row]:
    return diff_rows() + policy_rows()


if __name__ == "__main__":
    main(rows)
