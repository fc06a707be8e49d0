"""Laws of "the update available", over random catalogs, pins, policies and pre-release opt-ins.

Whatever was published (in any channel mix, with pre-releases and retirements), ``explain``,
``review_update`` and ``update`` without a target name the same version: the newest live one above
the installation's on its own channel; and an update policy stays on that channel.
"""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

import packrun
from packrun import NotFound
from packrun._bundle import bundle_bytes
from packrun._stores import POLICIES, Policy

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
POOL = ("0.9.0", "1.0.0", "1.0.1", "1.1.0-rc.1", "1.1.0", "1.2.0", "2.0.0-beta.1", "2.0.0", "2.1.0")
"""Candidate versions, ascending: publishing any subset in this order obeys the publish rule."""


@functools.cache
def bundle(version: str) -> bytes:
    """The sample acme 1.0.0 (its tools unchanged) as ``version``: no diff breaks a policy step."""
    base = packrun.read_bundle(BUNDLES / "acme" / "1.0.0" / "dist" / "acme-1.0.0.bundle.tar.gz")
    manifest = msgspec.structs.replace(base.manifest, version=packrun.Version.parse(version))
    return bundle_bytes(manifest, dict(base.files))


catalogs = st.lists(
    st.tuples(st.sampled_from(POOL), st.sampled_from(("vendor", "custom")), st.booleans()),
    min_size=1,
    max_size=len(POOL),
    unique_by=lambda t: t[0],
)
"""``(version, channel, retired)`` rows."""

installs = st.lists(
    st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(POLICIES), st.booleans()),
    min_size=1,
    max_size=6,
)
"""``(index of the pinned row, policy, allow_prerelease)``."""


async def check(rows: list[tuple[str, str, bool]], wanted: list[tuple[int, Policy, bool]]) -> None:
    rows = sorted(rows, key=lambda r: packrun.Version.parse(r[0]))
    async with packrun.open_runtime("memory:") as rt:
        for version, channel, _ in rows:
            await rt.publish(bundle(version), channel=channel)  # type: ignore[arg-type]
        for version, _, retired in rows:
            if retired:
                await rt.retire("acme", version, acknowledge_breaking=True)
        names = []
        for n, (index, policy, early) in enumerate(wanted):
            pin = rows[index % len(rows)][0]
            name = f"i{n}"
            await rt.install(name, "acme", pin, policy, allow_prerelease=early)
            names.append(name)
        for name in names:
            inst = rt.installation(name)
            current = rt.resolve(name).entry
            newer = [
                r
                for r in rt.versions("acme")
                if r.is_live
                and r.channel == current.channel
                and r.version > current.version
                and (inst.allow_prerelease or not r.version.is_prerelease)
            ]
            expected = str(newer[-1].version) if newer else None
            update = rt.explain(name).update
            assert (update.split(" ", 1)[0] if update else None) == expected
            try:
                reviewed: str | None = rt.review_update(name).to_version
            except NotFound:
                reviewed = None
            assert reviewed == expected
            for event in await rt.history(name):
                if event.origin == "policy":
                    assert event.to_version is not None
                    moved = rt.versions("acme")
                    row = next(r for r in moved if str(r.version) == event.to_version)
                    assert row.channel == current.channel
            if expected is not None:
                review = await rt.update(name, acknowledge_breaking=True)
                assert review.to_version == rt.resolve(name).version == expected


@settings(max_examples=40, deadline=None)
@given(catalogs, installs)
def test_explain_review_update_and_policies__agree(
    rows: list[tuple[str, str, bool]], wanted: list[tuple[int, Policy, bool]]
) -> None:
    anyio.run(check, rows, wanted)
