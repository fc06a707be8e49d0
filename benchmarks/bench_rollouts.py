"""Rollouts and health: ``resolve()`` during a rollout, and what health counting adds to a call.

Goals (DESIGN section 12): ``resolve()`` during a rollout still at most 2x a plain function doing
one dict lookup (a rollout moves pins; resolution is unchanged); health counting (calls, errors,
the latency histogram) adds at most 20% to ``run.call()`` on an in-process no-op tool, against a
runtime opened with ``count_health=False`` in the same run.
"""

from __future__ import annotations

import anyio
from _harness import Row, best_of, main
from bench_runs import GEN2_CODE, INPUT, abest_of, bundle

import packrun
from packrun._bundle import bundle_bytes

INSTALLATIONS = 1_000


def acme(version: str) -> bytes:
    manifest = packrun.decode_manifest(
        {"id": "acme", "version": version, "contract": 2, "tools": [{"id": "noop"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": GEN2_CODE.replace(b"noop2", b"acme")})


async def resolve_during_rollout() -> tuple[float, float]:
    """Seconds per ``resolve()`` of an installation on the new version and of one held back,
    during a rollout at 10%."""
    async with packrun.open_runtime("memory:", refresh_interval=0, fleet_interval=3600) as rt:
        await rt.publish(acme("1.0.0"))
        for i in range(INSTALLATIONS):
            await rt.install(f"inst-{i}", "acme", "latest")
        await rt.publish(acme("1.1.0"))
        await rt.start_rollout("acme", "1.1.0", steps=(10, 100), step_interval=3600)
        on = next(
            f"inst-{i}" for i in range(INSTALLATIONS) if rt.resolve(f"inst-{i}").version == "1.1.0"
        )
        off = next(
            f"inst-{i}" for i in range(INSTALLATIONS) if rt.resolve(f"inst-{i}").version == "1.0.0"
        )
        resolve = rt.resolve
        return best_of(lambda: resolve(on)), best_of(lambda: resolve(off))


async def call_with_and_without_counting() -> tuple[float, float]:
    """Seconds per ``run.call()`` of an in-process no-op tool, counted and not, interleaved."""
    timings: dict[bool, list[float]] = {True: [], False: []}
    async with (
        packrun.open_runtime(
            "memory:", refresh_interval=0, in_process={"vendor"}, fleet_interval=3600
        ) as counted,
        packrun.open_runtime(
            "memory:",
            refresh_interval=0,
            in_process={"vendor"},
            fleet_interval=3600,
            count_health=False,
        ) as uncounted,
    ):
        for rt in (counted, uncounted):
            await rt.publish(bundle("noop2", 2, GEN2_CODE))
            await rt.install("gen2", "noop2")
        async with counted.run("gen2") as a, uncounted.run("gen2") as b:
            for _ in range(5):  # interleaved: a drift of the machine hits both alike
                timings[True].append(await abest_of(lambda: a.call("noop", INPUT)))
                timings[False].append(await abest_of(lambda: b.call("noop", INPUT)))
        assert counted.health("noop2", "1.0.0").calls > 0
        assert uncounted.health("noop2", "1.0.0").calls == 0
    return min(timings[True]), min(timings[False])


def rows() -> list[Row]:
    table = {f"inst-{i}": i for i in range(INSTALLATIONS)}

    def plain(key: str) -> int:
        return table[key]

    on, off = anyio.run(resolve_during_rollout)
    baseline = best_of(lambda: plain("inst-5"))
    counted, uncounted = anyio.run(call_with_and_without_counting)
    return [
        Row(
            "resolve() during a rollout (an installation ramped)",
            "a function doing one dict lookup",
            on,
            baseline,
            "<= 2",
        ),
        Row(
            "resolve() during a rollout (an installation held back)",
            "a function doing one dict lookup",
            off,
            baseline,
            "<= 2",
        ),
        Row(
            "run.call() on a no-op tool, health counted",
            "the same, count_health=False",
            counted,
            uncounted,
            "<= 1.2",
        ),
    ]


if __name__ == "__main__":
    main(rows)
