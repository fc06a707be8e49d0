"""The typed public surface: a catalog row's ``Version`` and the text that records carry compare
as the same version, so code that mixes them finds what it looks for."""

from __future__ import annotations

from pathlib import Path

import pytest

import packrun

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


async def test_versions_filtered_by_a_resolution__find_the_row_that_runs() -> None:
    async with packrun.open_runtime("memory:") as rt:
        for version in ("1.0.0", "1.0.1", "1.1.0"):
            await rt.publish(dist(version))
        await rt.install("acme-prod", "acme", pin="1.0.1")
        res = rt.resolve("acme-prod")
        rows = [e for e in rt.versions("acme") if e.version == res.version]
        assert [str(e.version) for e in rows] == ["1.0.1"]
        assert rows[0] is res.entry
        assert res.entry.version == res.version
        [event] = await rt.history("acme-prod")
        assert res.entry.version == event.to_version
        assert {e.version for e in rt.versions("acme")} >= {"1.0.0", "1.1.0"}
