"""One answer to "which update is available": ``explain``, ``packrun status``, ``review_update``,
``update`` (without a target) and the update policies agree, over a table of pins, channels,
policies and pre-release opt-ins."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import anyio
import msgspec
import pytest

import packrun
from packrun import NotFound, Runtime
from packrun._bundle import bundle_bytes
from packrun._cli import main
from packrun._stores import Policy

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
PINS = ("1.0.0", "1.0.1", "1.1.0", "1.1.1", "1.2.0", "2.0.0")
POLICIES: tuple[Policy, ...] = ("manual", "auto_patch", "auto_minor")
TABLE = list(itertools.product(PINS, POLICIES, (False, True)))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def variant(base: str, version: str) -> bytes:
    bundle = packrun.read_bundle(dist(base))
    manifest = msgspec.structs.replace(bundle.manifest, version=packrun.Version.parse(version))
    return bundle_bytes(manifest, dict(bundle.files))


async def catalog(rt: Runtime) -> None:
    """Vendor 1.0.0 1.0.1 1.1.0 2.0.0 1.2.0 and 2.1.0-rc.1, custom 1.1.1; 1.0.1 retired."""
    for version in ("1.0.0", "1.0.1", "1.1.0", "1.1.1", "2.0.0", "1.2.0"):
        await rt.publish(dist(version), channel="custom" if version == "1.1.1" else "vendor")
    await rt.publish(variant("2.0.0", "2.1.0-rc.1"))
    await rt.retire("acme", "1.0.1")


def iid(pin: str, policy: Policy, early: bool) -> str:
    return f"{pin}-{policy}{'-early' if early else ''}"


def explained_update(rt: Runtime, installation: str) -> str | None:
    update = rt.explain(installation).update
    return update.split(" ", 1)[0] if update else None


def reviewed_update(rt: Runtime, installation: str) -> str | None:
    try:
        return rt.review_update(installation).to_version
    except NotFound:
        return None


async def test_explain_review_update_and_policies__agree_on_the_update_available(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await catalog(rt)
        for pin, policy, early in TABLE:
            await rt.install(iid(pin, policy, early), "acme", pin, policy, allow_prerelease=early)
        seen = {}
        for pin, policy, early in TABLE:
            name = iid(pin, policy, early)
            res = rt.resolve(name)
            available = explained_update(rt, name)
            assert available == reviewed_update(rt, name), name
            seen[name] = available
            if available is None:
                continue
            row = next(r for r in rt.versions("acme") if str(r.version) == available)
            # The one rule: the newest live version above the current one on its own channel.
            assert row.channel == res.channel, name
            assert row.is_live, name
            assert early or not row.version.is_prerelease, name
            # A policy moves within what is available, never past it.
            last = (await rt.history(name))[-1]
            if last.origin == "policy":
                assert last.to_version is not None
                assert packrun.Version.parse(last.to_version) <= row.version, name
        # update() without a target goes where explain and review said.
        for pin, policy, early in TABLE:
            name = iid(pin, policy, early)
            if seen[name] is None:
                with pytest.raises(NotFound):
                    await rt.update(name, acknowledge_breaking=True)
                continue
            review = await rt.update(name, acknowledge_breaking=True)
            assert review.to_version == seen[name] == rt.resolve(name).version, name
        # A few rows of the table, spelled out.
        assert seen[iid("1.1.0", "manual", False)] == "2.0.0"  # not the custom 1.1.1
        assert seen[iid("1.1.1", "manual", False)] is None  # nothing newer on the custom channel
        assert seen[iid("2.0.0", "manual", True)] == "2.1.0-rc.1"
        assert seen[iid("2.0.0", "manual", False)] is None


def test_status_json__shows_the_update_explain_shows(sqlite_url: str) -> None:
    async def setup() -> None:
        async with packrun.open_runtime(sqlite_url) as rt:
            await catalog(rt)
            await rt.install("vendor", "acme", "1.1.0")
            await rt.install("custom", "acme", "1.1.1")

    anyio.run(setup)
    out = io.StringIO()
    assert main(["status", "--json", "--store", sqlite_url], stdout=out) == 0
    rows = {i["id"]: i for i in json.loads(out.getvalue())["installations"]}
    assert rows["vendor"]["update"] == "2.0.0 (major, vendor)"
    assert rows["custom"]["update"] is None
    assert rows["vendor"]["holding"] is None
