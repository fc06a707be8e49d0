"""Update policies, the update review, updates and rollbacks (DESIGN.md sections 8, 9 and 11).

After a publish, ``auto_patch`` and ``auto_minor`` installations move to the highest version on
their channel that their policy allows and whose diff has no breaking finding; majors and versions
with breaking findings wait, and ``explain`` says ``update blocked: breaking_diff``. Every such move
is a pin event of origin ``policy``. ``review_update`` shows what an update would do (versions,
bumps, findings, verdict, the workflows that use a changed tool, the runs in flight), ``update``
refuses a major or a breaking target unless it is acknowledged, and ``rollback`` moves a pin back
and can wait for the version left behind to drain.

The sample ``acme`` versions are published in their order (1.0.0, 1.0.1, 1.1.0, the custom 1.1.1,
2.0.0, then the dishonest 1.2.0 whose ``list_contacts`` requires a new ``account_id``); variants of
them (another version, another auth) are built in memory with ``bundle_bytes``. Every behaviour that
does not need a second runtime runs on ``memory:`` and on SQLite.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import packrun
import packrun._catalog
import packrun._runtime
import packrun._stores
from packrun import BreakingDiff, CatalogEntry, InvalidArgument, Manifest, NotFound, Runtime
from packrun._bundle import bundle_bytes
from packrun._diff import DiffReport
from packrun._diff import diff as real_diff
from packrun._policy import Blocked, DiffOf
from packrun._policy import policy_target as real_policy_target
from packrun._stores import Policy

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
ORDER = ("1.0.0", "1.0.1", "1.1.0", "1.1.1", "2.0.0", "1.2.0")
"""The sample acme versions in the order they may be published."""
KEY = packrun.Auth.api_key("tenant-key")

TINY_CODE = (
    b"from packrun.sdk import Integration\n"
    b"integration = Integration('other')\n\n"
    b"@integration.tool('t')\n"
    b"def t(ctx, input):\n"
    b"    return {}\n"
)


def dist(version: str) -> Path:
    """The built artifact of a sample acme version."""
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def channel_of(version: str) -> packrun.Channel:
    return "custom" if version == "1.1.1" else "vendor"


def variant(
    base: str,
    version: str,
    change: Callable[[Manifest], Manifest] | None = None,
) -> bytes:
    """The sample acme ``base`` as ``version`` (its manifest changed by ``change``, if given)."""
    bundle = packrun.read_bundle(dist(base))
    manifest = msgspec.structs.replace(bundle.manifest, version=packrun.Version.parse(version))
    if change is not None:
        manifest = change(manifest)
    return bundle_bytes(manifest, dict(bundle.files))


def tiny(version: str) -> bytes:
    """A bundle of another pack, ``other``, with one tool."""
    manifest = packrun.decode_manifest(
        {"id": "other", "version": version, "contract": 2, "tools": [{"id": "t"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": TINY_CODE})


async def publish(rt: Runtime, *versions: str) -> None:
    """Publish sample acme versions, each on its channel."""
    for version in versions:
        await rt.publish(dist(version), channel=channel_of(version))


def versions_of(rt: Runtime, *iids: str) -> dict[str, str]:
    return {iid: rt.resolve(iid).version for iid in iids}


async def moves(rt: Runtime, iid: str) -> list[tuple[str, str, str | None, str | None]]:
    """``(origin, actor, from_version, to_version)`` of every pin event of ``iid``."""
    return [(e.origin, e.actor, e.from_version, e.to_version) for e in await rt.history(iid)]


@asynccontextmanager
async def held(rt: Runtime, *runs: tuple[str, str]) -> AsyncIterator[dict[str, packrun.Run]]:
    """Runs ``(installation, run id)`` held open for the body of the ``async with``."""
    async with AsyncExitStack() as stack:
        opened = {}
        for iid, run_id in runs:
            opened[run_id] = await stack.enter_async_context(rt.run(iid, run_id=run_id, auth=KEY))
        yield opened


async def eventually(check: Callable[[], bool], refresh: Callable[[], Any], timeout: float) -> bool:
    """Call ``refresh`` (awaited) until ``check()`` holds or ``timeout`` seconds pass."""
    with anyio.move_on_after(timeout):
        while True:
            await refresh()
            if check():
                return True
            await anyio.sleep(0.02)
    return check()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(store_url) as runtime:
        yield runtime


# --- 1. update policies -------------------------------------------------------------------------


async def test_auto_patch_and_auto_minor_follow_publishes_but_not_majors_or_breaking_findings(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0")
    await rt.install("patch", "acme", policy="auto_patch")
    await rt.install("minor", "acme", policy="auto_minor")
    await rt.install("manual", "acme")
    assert versions_of(rt, "patch", "minor", "manual") == dict.fromkeys(
        ("patch", "minor", "manual"), "1.0.0"
    )

    await publish(rt, "1.0.1")  # a patch: both policies take it
    assert versions_of(rt, "patch", "minor", "manual") == {
        "patch": "1.0.1",
        "minor": "1.0.1",
        "manual": "1.0.0",
    }
    await publish(rt, "1.1.0")  # a minor: only auto_minor takes it
    assert versions_of(rt, "patch", "minor", "manual") == {
        "patch": "1.0.1",
        "minor": "1.1.0",
        "manual": "1.0.0",
    }
    await publish(rt, "1.1.1", "2.0.0", "1.2.0")  # custom, major, dishonest minor: none moves
    assert versions_of(rt, "patch", "minor", "manual") == {
        "patch": "1.0.1",
        "minor": "1.1.0",
        "manual": "1.0.0",
    }
    for iid in ("patch", "minor", "manual"):
        assert rt.installation(iid).policy == {"patch": "auto_patch", "minor": "auto_minor"}.get(
            iid, "manual"
        )


async def test_explain_says_update_blocked_breaking_diff_naming_the_major_and_the_red_minor(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0")
    await rt.install("patch", "acme", policy="auto_patch")
    await rt.install("minor", "acme", policy="auto_minor")
    await publish(rt, *ORDER[1:])

    minor = rt.explain("minor")
    assert minor.resolution is not None
    assert minor.resolution.version == "1.1.0"
    blocked = dict(b.split(": ", 1) for b in minor.update_blocked)
    assert sorted(blocked) == ["1.2.0", "2.0.0"]  # the custom 1.1.1 is another channel
    assert "major" in blocked["2.0.0"]
    assert "breaking findings" in blocked["1.2.0"]
    assert "input.required_field_added" in blocked["1.2.0"]
    text = str(minor)
    assert "update blocked: breaking_diff" in text
    blocked_line = next(line for line in text.splitlines() if "update blocked" in line)
    assert "2.0.0" in blocked_line
    assert "1.2.0" in blocked_line

    # A minor is outside auto_patch whatever its findings: the policy does not take it, and that
    # is no blocked update. Only the major waits for a review.
    patch = rt.explain("patch")
    named = {b.split(": ", 1)[0] for b in patch.update_blocked}
    assert named == {"2.0.0"}
    assert "update blocked: breaking_diff (2.0.0: a major update" in str(patch)


async def test_manual_installations_never_move_and_show_no_blocked_update(rt: Runtime) -> None:
    await publish(rt, "1.0.0")
    await rt.install("manual", "acme")
    await rt.install("manual-custom", "acme", pin="1.0.0", policy="manual")
    await publish(rt, *ORDER[1:])
    assert versions_of(rt, "manual", "manual-custom") == {
        "manual": "1.0.0",
        "manual-custom": "1.0.0",
    }
    for iid in ("manual", "manual-custom"):
        assert (await moves(rt, iid)) == [("install", "system", None, "1.0.0")]
        why = rt.explain(iid)
        assert why.update_blocked == ()
        assert "update blocked" not in str(why)


async def test_dynamic_pins_are_not_touched_by_policies(rt: Runtime) -> None:
    await publish(rt, "1.0.0")
    await rt.install("latest", "acme", pin="latest", policy="auto_minor")
    await rt.install("vendor", "acme", pin="latest-vendor", policy="auto_patch")
    await publish(rt, "1.0.1", "1.1.0", "1.1.1", "2.0.0")
    # The pins follow their own rule (latest prefers the custom channel), never a policy's.
    assert versions_of(rt, "latest", "vendor") == {"latest": "1.1.1", "vendor": "2.0.0"}
    for iid, pin in (("latest", "latest"), ("vendor", "latest-vendor")):
        assert rt.installation(iid).pin == pin
        assert [e.origin for e in (await rt.history(iid))] == ["install"]
        assert rt.explain(iid).update_blocked == ()


async def test_pre_releases_are_policy_targets_only_with_allow_prerelease(rt: Runtime) -> None:
    await publish(rt, "1.0.0")
    await rt.install("plain", "acme", policy="auto_patch")
    await rt.install("early", "acme", policy="auto_patch", allow_prerelease=True)
    await rt.install("early-minor", "acme", policy="auto_minor", allow_prerelease=True)
    await rt.publish(variant("1.0.1", "1.0.1-rc.1"))
    assert versions_of(rt, "plain", "early", "early-minor") == {
        "plain": "1.0.0",
        "early": "1.0.1-rc.1",
        "early-minor": "1.0.1-rc.1",
    }
    assert "1.0.1-rc.1" not in " ".join(rt.explain("plain").update_blocked)
    await rt.publish(variant("1.1.0", "1.1.0-beta.1"))
    assert rt.resolve("plain").version == "1.0.0"
    assert rt.resolve("early-minor").version == "1.1.0-beta.1"
    assert rt.resolve("early").version == "1.0.1-rc.1"  # a minor: not for auto_patch
    assert (await rt.history("early"))[-1].actor == "policy:auto_patch"


async def test_auto_updates_stay_on_the_installation_channel(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0")
    await rt.install("vendor", "acme", pin="1.1.0", policy="auto_patch")
    await publish(rt, "1.1.1")  # a custom patch of 1.1.0
    assert rt.resolve("vendor").version == "1.1.0"
    assert all(not b.startswith("1.1.1") for b in rt.explain("vendor").update_blocked)

    await rt.install("custom", "acme", pin="1.1.1", policy="auto_minor")
    await rt.publish(variant("1.1.0", "1.1.2"))  # vendor
    assert versions_of(rt, "vendor", "custom") == {"vendor": "1.1.2", "custom": "1.1.1"}
    await rt.publish(variant("1.1.1", "1.1.3"), channel="custom")
    assert versions_of(rt, "vendor", "custom") == {"vendor": "1.1.2", "custom": "1.1.3"}
    assert rt.resolve("custom").channel == "custom"
    assert rt.resolve("vendor").channel == "vendor"
    await rt.publish(variant("1.1.1", "1.2.0"), channel="custom")  # a clean custom minor
    assert versions_of(rt, "vendor", "custom") == {"vendor": "1.1.2", "custom": "1.2.0"}


async def test_setting_a_policy_on_an_installation_behind_applies_at_once(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.0.1", "1.1.0", "2.0.0")
    await rt.install("a", "acme", pin="1.0.0")
    await rt.install("b", "acme", pin="1.0.0")
    assert versions_of(rt, "a", "b") == {"a": "1.0.0", "b": "1.0.0"}

    changed = await rt.set_policy("a", "auto_minor")
    assert changed.policy == "auto_minor"
    assert rt.resolve("a").version == "1.1.0"
    assert (await moves(rt, "a"))[-1] == ("policy", "policy:auto_minor", "1.0.0", "1.1.0")
    await rt.set_policy("b", "auto_patch")
    assert rt.resolve("b").version == "1.0.1"
    assert (await moves(rt, "b"))[-1] == ("policy", "policy:auto_patch", "1.0.0", "1.0.1")

    await rt.set_policy("a", "manual")  # nothing moves back
    assert rt.resolve("a").version == "1.1.0"
    assert len(await rt.history("a")) == 2


async def test_every_policy_move_is_a_pin_event_of_origin_policy(rt: Runtime) -> None:
    await publish(rt, "1.0.0")
    await rt.install("minor", "acme", policy="auto_minor", actor="ops")
    await publish(rt, *ORDER[1:])
    assert (await moves(rt, "minor")) == [
        ("install", "ops", None, "1.0.0"),
        ("policy", "policy:auto_minor", "1.0.0", "1.0.1"),
        ("policy", "policy:auto_minor", "1.0.1", "1.1.0"),
    ]
    events = await rt.history("minor")
    assert [(e.from_pin, e.to_pin) for e in events[1:]] == [("1.0.0", "1.0.1"), ("1.0.1", "1.1.0")]
    assert events[1].at <= events[2].at
    last = rt.explain("minor").last_event
    assert last is not None
    assert (last.origin, last.to_version) == ("policy", "1.1.0")
    assert "by policy:auto_minor (policy)" in str(rt.explain("minor"))


async def test_retired_versions_are_not_policy_targets(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.0.1")
    await rt.publish(variant("1.0.1", "1.0.2"))
    await rt.retire("acme", "1.0.2")
    await rt.install("p", "acme", pin="1.0.0")
    await rt.set_policy("p", "auto_patch")
    assert rt.resolve("p").version == "1.0.1"
    assert all(not b.startswith("1.0.2") for b in rt.explain("p").update_blocked)
    await rt.publish(variant("1.0.1", "1.0.3"))
    assert rt.resolve("p").version == "1.0.3"
    assert [e.to_version for e in (await rt.history("p"))] == ["1.0.0", "1.0.1", "1.0.3"]


async def test_a_policy_move_is_seen_by_another_runtime_and_recorded_once(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url) as a, packrun.open_runtime(shared_url) as b:
        await publish(a, "1.0.0")
        await a.install("p", "acme", policy="auto_patch")
        assert await eventually(lambda: "p" in {i.id for i in b.installations()}, b.refresh, 5)
        await publish(a, "1.0.1")
        assert await eventually(lambda: b.resolve("p").version == "1.0.1", b.refresh, 5)
        await anyio.sleep(0.2)
        await b.refresh()
        assert (
            (await moves(b, "p"))
            == (await moves(a, "p"))
            == [
                ("install", "system", None, "1.0.0"),
                ("policy", "policy:auto_patch", "1.0.0", "1.0.1"),
            ]
        )
    async with packrun.open_runtime(shared_url) as c:  # and it is durable
        assert c.resolve("p").version == "1.0.1"
        assert (await moves(c, "p"))[-1] == ("policy", "policy:auto_patch", "1.0.0", "1.0.1")


async def test_a_policy_move_never_undoes_a_concurrent_manual_update(rt: Runtime) -> None:
    """``set_policy`` writes the policy, then applies it from what memory says (1.0.0); an admin's
    update to 2.0.0 queued meanwhile is written first. The policy must not then pin 1.0.1."""
    await publish(rt, "1.0.0", "1.0.1", "2.0.0")
    await rt.install("crm", "acme", pin="1.0.0")
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.set_policy, "crm", "auto_patch")  # its policy step looks at 1.0.0
        await anyio.sleep(0)

        async def admin() -> None:
            await rt.update("crm", to="2.0.0", actor="ops", acknowledge_breaking=True)

        tg.start_soon(admin)
    history = await moves(rt, "crm")
    assert [m[3] for m in history if m[:2] == ("user", "ops")] == ["2.0.0"]
    downgrades = [
        m
        for m in history
        if m[0] == "policy"
        and m[2] is not None
        and m[3] is not None
        and packrun.Version.parse(m[3]) < packrun.Version.parse(m[2])
    ]
    assert downgrades == []
    assert rt.resolve("crm").version == "2.0.0"


async def test_a_stale_runtime_does_not_undo_another_runtimes_update_by_policy(
    shared_url: str,
) -> None:
    """A runtime that has not refreshed yet publishes a patch: its policy step must not move an
    installation that another runtime has just updated to a major back down to the patch."""
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url) as b,
    ):
        await publish(a, "1.0.0", "2.0.0")
        await a.install("crm", "acme", pin="1.0.0", policy="auto_patch")
        await b.refresh()
        await b.update("crm", to="2.0.0", actor="ops", acknowledge_breaking=True)
        await publish(a, "1.0.1")  # a has not seen b's update yet
        await b.refresh()
        assert b.resolve("crm").version == "2.0.0"
        assert (await moves(b, "crm"))[-1] == ("user", "ops", "1.0.0", "2.0.0")


async def test_each_diff_is_computed_once_however_many_installations_share_the_step(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: Counter[tuple[str, str]] = Counter()
    real = real_diff

    def counting(old: Manifest, new: Manifest, **kwargs: Any) -> DiffReport:
        computed[(str(old.version), str(new.version))] += 1
        return real(old, new, **kwargs)

    monkeypatch.setattr(packrun._runtime, "diff", counting)
    await publish(rt, "1.0.0")
    for i in range(12):
        await rt.install(f"patch-{i}", "acme", policy="auto_patch")
        await rt.install(f"minor-{i}", "acme", policy="auto_minor")
    await publish(rt, "1.0.1")
    assert computed == Counter({("1.0.0", "1.0.1"): 1})
    await publish(rt, "1.1.0", "1.1.1", "2.0.0", "1.2.0")
    for iid in [f"patch-{i}" for i in range(12)] + [f"minor-{i}" for i in range(12)]:
        rt.explain(iid)  # explanations reuse the same diffs
    assert computed == Counter(
        {("1.0.0", "1.0.1"): 1, ("1.0.1", "1.1.0"): 1, ("1.1.0", "1.2.0"): 1}
    )
    assert {rt.resolve(f"minor-{i}").version for i in range(12)} == {"1.1.0"}
    assert {rt.resolve(f"patch-{i}").version for i in range(12)} == {"1.0.1"}


async def test_applying_policies_looks_only_at_the_published_pack(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(rt, "1.0.0")
    await rt.publish(tiny("1.0.0"))
    for i in range(3):
        await rt.install(f"acme-auto-{i}", "acme", policy="auto_patch")
        await rt.install(f"other-auto-{i}", "other", policy="auto_minor")
    await rt.install("acme-manual", "acme")
    await rt.install("acme-latest", "acme", pin="latest", policy="auto_patch")
    looked_at: list[tuple[str, str]] = []
    real = real_policy_target

    def recording(
        policy: Policy,
        current: CatalogEntry,
        rows: Iterable[CatalogEntry],
        allow_prerelease: bool,
        diff_of: DiffOf,
        hold: packrun.Version | None = None,
        **soak: Any,
    ) -> tuple[CatalogEntry | None, tuple[Blocked, ...]]:
        looked_at.append((current.pack_id, str(current.version)))
        return real(policy, current, rows, allow_prerelease, diff_of, hold, **soak)

    # A refresh applies policies to the installations changed since the last one (here the
    # installs above, once); from then on a publish looks at its own pack's auto installations.
    await rt.refresh()
    monkeypatch.setattr(packrun._runtime, "policy_target", recording)
    await publish(rt, "1.0.1")
    assert looked_at == [("acme", "1.0.0")] * 3
    assert {rt.resolve(f"acme-auto-{i}").version for i in range(3)} == {"1.0.1"}

    looked_at.clear()
    await rt.publish(tiny("1.1.0"))
    assert looked_at == [("other", "1.0.0")] * 3
    assert {rt.resolve(f"other-auto-{i}").version for i in range(3)} == {"1.1.0"}
    assert versions_of(rt, "acme-manual") == {"acme-manual": "1.0.0"}


# --- 2. the update review -----------------------------------------------------------------------


async def test_review_reports_versions_bumps_findings_and_the_verdict(rt: Runtime) -> None:
    await publish(rt, *ORDER)
    await rt.install("on-1.1.0", "acme", pin="1.1.0")
    await rt.install("on-1.0.0", "acme", pin="1.0.0")

    major = rt.review_update("on-1.1.0", to="2.0.0")
    assert (major.installation_id, major.from_version, major.to_version) == (
        "on-1.1.0",
        "1.1.0",
        "2.0.0",
    )
    assert (major.bump, major.required_bump, major.verdict) == ("major", "major", "amber")
    rules = {f.rule_id for f in major.findings}
    assert {"auth.mode_changed", "output.field_removed"} <= rules
    assert major.findings == major.report.findings
    assert major.needs_acknowledgement
    assert any("major" in reason for reason in major.acknowledge)
    assert any("breaking" in reason for reason in major.acknowledge)

    red = rt.review_update("on-1.1.0", to="1.2.0")
    assert (red.bump, red.required_bump, red.verdict) == ("minor", "major", "red")
    assert [f.rule_id for f in red.findings if f.level == "breaking"] == [
        "input.required_field_added"
    ]
    assert red.needs_acknowledgement
    assert any("red" in reason for reason in red.acknowledge)
    assert any("input.required_field_added" in reason for reason in red.acknowledge)
    assert not any("major" in reason for reason in red.acknowledge)

    ok = rt.review_update("on-1.0.0", to="1.0.1")
    assert (ok.from_version, ok.to_version) == ("1.0.0", "1.0.1")
    assert (ok.bump, ok.required_bump, ok.verdict) == ("patch", "patch", "ok")
    assert ok.findings
    assert {f.level for f in ok.findings} == {"patch"}
    assert not ok.needs_acknowledgement
    assert ok.acknowledge == ()


async def test_review_without_a_target_picks_the_newest_version_on_the_channel(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0", "1.0.1", "1.1.0", "1.1.1")
    await rt.install("vendor", "acme", pin="1.0.0")
    assert rt.review_update("vendor").to_version == "1.1.0"  # not the custom 1.1.1
    await publish(rt, "2.0.0", "1.2.0")
    assert rt.review_update("vendor").to_version == "2.0.0"  # the highest, not the last published
    await rt.retire("acme", "2.0.0")
    assert rt.review_update("vendor").to_version == "1.2.0"
    await rt.publish(variant("1.1.1", "1.2.1"), channel="custom")
    await rt.install("custom", "acme", pin="1.1.1")
    assert rt.review_update("custom").to_version == "1.2.1"


async def test_review_of_an_unknown_target_or_without_a_newer_version_is_not_found(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0", "1.1.0", "1.1.1", "2.0.0")
    await rt.install("top", "acme", pin="2.0.0")
    await rt.install("custom", "acme", pin="1.1.1")
    await rt.install("low", "acme", pin="1.0.0")
    with pytest.raises(NotFound) as unknown:
        rt.review_update("low", to="9.9.9")
    assert unknown.value.code == "not_found"
    assert "9.9.9" in str(unknown.value)
    for iid in ("top", "custom"):  # nothing newer on their channel
        with pytest.raises(NotFound) as nothing:
            rt.review_update(iid)
        assert nothing.value.code == "not_found"
        assert iid in str(nothing.value)
    with pytest.raises(NotFound):
        rt.review_update("nobody")


async def test_review_lists_declared_workflows_that_use_a_changed_tool(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0", "2.0.0", "1.2.0")
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.declare_workflow("crm", "wf-list", ["list_contacts"])
    await rt.declare_workflow("crm", "wf-get", ["get_contact"])
    await rt.declare_workflow("crm", "wf-mixed", ["get_contact", "list_contacts"])

    red = rt.review_update("crm", to="1.2.0")  # list_contacts requires account_id now
    assert [(w.workflow_id, w.source, w.tools) for w in red.affected_workflows] == [
        ("wf-list", "declared", ("list_contacts",)),
        ("wf-mixed", "declared", ("list_contacts",)),
    ]
    await rt.declare_workflow("crm", "wf-list", ["search_contacts"])  # replaced: unchanged tool
    assert [w.workflow_id for w in rt.review_update("crm", to="1.2.0").affected_workflows] == [
        "wf-mixed"
    ]
    major = rt.review_update("crm", to="2.0.0")  # the auth changed: every tool is changed
    assert [w.workflow_id for w in major.affected_workflows] == ["wf-get", "wf-list", "wf-mixed"]


async def test_a_breaking_auth_change_makes_every_tool_changed(rt: Runtime) -> None:
    def scoped(manifest: Manifest) -> Manifest:
        auth = msgspec.structs.replace(manifest.auth, scopes=("contacts.read",))
        return msgspec.structs.replace(manifest, auth=auth)

    await publish(rt, "1.1.0")
    await rt.publish(variant("1.1.0", "3.0.0", scoped))
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.declare_workflow("crm", "wf-get", ["get_contact"])
    await rt.declare_workflow("crm", "wf-none", [])
    review = rt.review_update("crm", to="3.0.0")
    assert [(f.rule_id, f.path) for f in review.findings] == [
        ("auth.scope_added", "$.auth.scopes[contacts.read]")
    ]
    assert [(w.workflow_id, w.tools) for w in review.affected_workflows] == [
        ("wf-get", ("get_contact",))
    ]


async def test_review_lists_workflows_observed_from_runs_that_called_a_changed_tool(
    rt: Runtime,
) -> None:
    await publish(rt, "1.1.0", "2.0.0", "1.2.0")
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.install("elsewhere", "acme", pin="1.1.0")
    await rt.declare_workflow("crm", "wf-both", ["list_contacts"])

    async def workflow(iid: str, workflow_id: str | None, tools: list[str]) -> None:
        async with rt.run(iid, workflow_id=workflow_id, auth=KEY) as run:
            for tool in tools:
                await run.call(tool, {"id": "c-001"} if tool == "get_contact" else {"limit": 1})

    await workflow("crm", "wf-seen", ["list_contacts", "get_contact"])
    await workflow("crm", "wf-both", ["list_contacts"])
    await workflow("crm", "wf-get", ["get_contact"])
    await workflow("crm", None, ["list_contacts"])
    await workflow("elsewhere", "wf-other-installation", ["list_contacts"])

    review = rt.review_update("crm", to="1.2.0")
    assert [(w.workflow_id, w.source, w.tools) for w in review.affected_workflows] == [
        ("wf-both", "declared and observed", ("list_contacts",)),
        ("wf-seen", "observed", ("list_contacts",)),
    ]
    major = rt.review_update("crm", to="2.0.0")
    assert {w.workflow_id: w.source for w in major.affected_workflows} == {
        "wf-both": "declared and observed",
        "wf-get": "observed",
        "wf-seen": "observed",
    }
    assert {w.workflow_id: w.tools for w in major.affected_workflows}["wf-seen"] == (
        "get_contact",
        "list_contacts",
    )


async def test_review_lists_the_runs_in_flight_of_the_installation_on_its_version(
    rt: Runtime,
) -> None:
    await publish(rt, "1.1.0", "2.0.0")
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.install("neighbour", "acme", pin="1.1.0")
    assert rt.review_update("crm").runs_in_flight == ()
    async with held(rt, ("crm", "r-1"), ("crm", "r-2"), ("neighbour", "n-1")):
        review = rt.review_update("crm", to="2.0.0")
        assert review.runs_in_flight == ("r-1", "r-2")
        assert rt.review_update("neighbour").runs_in_flight == ("n-1",)
    assert rt.review_update("crm").runs_in_flight == ()


async def test_review_str_is_readable(rt: Runtime) -> None:
    await publish(rt, "1.1.0", "2.0.0", "1.2.0")
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.declare_workflow("crm", "wf-list", ["list_contacts"])
    async with held(rt, ("crm", "r-open")):
        text = str(rt.review_update("crm", to="1.2.0"))
    lines = text.splitlines()
    assert lines[0].startswith("update crm: 1.1.0 -> 1.2.0 (minor")
    assert "verdict red" in lines[0]
    assert "input.required_field_added" in text
    assert "$.tools[list_contacts].input[account_id]" in text
    assert "affected workflows:" in lines
    assert "  wf-list (declared): list_contacts" in lines
    assert "runs in flight on 1.1.0: 1 (r-open)" in lines
    assert any(line.startswith("needs acknowledge_breaking=True: ") for line in lines)

    await rt.install("quiet", "acme", pin="1.1.0")
    quiet = str(rt.review_update("quiet", to="2.0.0"))
    assert "verdict amber" in quiet.splitlines()[0]
    assert "affected workflows: none known" in quiet
    assert "runs in flight on 1.1.0: 0" in quiet


async def test_review_sees_workflows_and_runs_of_another_runtime_on_the_same_file(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url) as a, packrun.open_runtime(shared_url) as b:
        await publish(a, "1.1.0", "1.2.0")
        await a.install("crm", "acme", pin="1.1.0")
        await b.refresh()
        async with b.run("crm", run_id="b-wf", workflow_id="wf-remote", auth=KEY) as run:
            await run.call("list_contacts", {"limit": 1})

        def seen() -> bool:
            return [
                (w.workflow_id, w.source) for w in a.review_update("crm").affected_workflows
            ] == [("wf-remote", "observed")]

        assert await eventually(seen, a.refresh, 5)
        async with held(b, ("crm", "b-open")):
            await a.refresh()
            assert a.review_update("crm").runs_in_flight == ("b-open",)
    async with packrun.open_runtime(shared_url) as c:  # observed usage is durable
        assert [w.workflow_id for w in c.review_update("crm").affected_workflows] == ["wf-remote"]


async def test_review_does_not_list_runs_of_other_installations_in_another_runtime(
    shared_url: str,
) -> None:
    """``runs_in_flight`` is the installation's runs, wherever they run (here: in runtime b)."""
    async with packrun.open_runtime(shared_url) as a, packrun.open_runtime(shared_url) as b:
        await publish(a, "1.1.0", "1.2.0")
        await a.install("crm", "acme", pin="1.1.0")
        await a.install("neighbour", "acme", pin="1.1.0")
        await b.refresh()
        async with held(b, ("neighbour", "b-neighbour"), ("crm", "b-crm")):
            await a.refresh()
            assert a.in_flight("acme", "1.1.0") == 2
            assert a.review_update("crm").runs_in_flight == ("b-crm",)


# --- 3. update ----------------------------------------------------------------------------------


async def test_update_to_a_minor_needs_no_acknowledgement_and_records_the_actor(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0", "1.0.1", "1.1.0")
    await rt.install("crm", "acme", pin="1.0.0")
    review = await rt.update("crm", to="1.1.0", actor="ops")
    assert (review.from_version, review.to_version, review.verdict) == ("1.0.0", "1.1.0", "ok")
    assert rt.resolve("crm").version == "1.1.0"
    assert rt.installation("crm").pin == "1.1.0"
    assert (await moves(rt, "crm"))[-1] == ("user", "ops", "1.0.0", "1.1.0")
    await publish(rt, "2.0.0")
    await rt.install("crm2", "acme", pin="1.0.0")
    await rt.update("crm2", to="1.0.1")  # a patch, default actor
    assert (await moves(rt, "crm2"))[-1] == ("user", "system", "1.0.0", "1.0.1")


@pytest.mark.parametrize(
    ("target", "reasons"),
    [
        ("2.0.0", ("2.0.0 is a major update from 1.1.0", "breaking finding")),
        ("1.2.0", ("input.required_field_added", "red")),
    ],
)
async def test_update_to_a_major_or_a_breaking_target_needs_acknowledge_breaking(
    rt: Runtime, target: str, reasons: tuple[str, ...]
) -> None:
    await publish(rt, *ORDER)
    await rt.install("crm", "acme", pin="1.1.0")
    before = await rt.history("crm")
    with pytest.raises(BreakingDiff) as refused:
        await rt.update("crm", to=target, actor="ops")
    error = refused.value
    assert error.code == "breaking_diff"
    assert (error.installation, error.from_version, error.to_version) == ("crm", "1.1.0", target)
    message = str(error)
    assert "crm" in message
    assert "1.1.0" in message
    assert target in message
    assert "acknowledge_breaking=True" in message
    for reason in reasons:
        assert reason in message
    assert rt.resolve("crm").version == "1.1.0"
    assert rt.installation("crm").pin == "1.1.0"
    assert await rt.history("crm") == before

    review = await rt.update("crm", to=target, actor="ops", acknowledge_breaking=True)
    assert review.needs_acknowledgement
    assert rt.resolve("crm").version == target
    assert (await moves(rt, "crm"))[-1] == ("user", "ops", "1.1.0", target)


async def test_update_without_a_target_goes_to_the_newest_on_the_channel(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.0.1", "1.1.0", "1.1.1")
    await rt.install("crm", "acme", pin="1.0.0")
    review = await rt.update("crm")
    assert review.to_version == rt.resolve("crm").version == "1.1.0"
    await publish(rt, "2.0.0")
    with pytest.raises(BreakingDiff):
        await rt.update("crm")
    await rt.update("crm", acknowledge_breaking=True)
    assert rt.resolve("crm").version == "2.0.0"


async def test_runs_in_flight_finish_on_their_version_while_new_runs_use_the_new_one(
    rt: Runtime,
) -> None:
    await publish(rt, "1.1.0", "2.0.0")
    await rt.install("crm", "acme", pin="1.1.0")
    token = packrun.Auth.oauth2("tenant-token", scopes=("contacts.read",))
    async with rt.run("crm", run_id="old", auth=KEY) as old:
        review = await rt.update("crm", to="2.0.0", acknowledge_breaking=True)
        assert review.runs_in_flight == ("old",)
        contacts = (await old.call("list_contacts", {"limit": 2}))["contacts"]
        assert old.version == "1.1.0"
        assert all("email" in c for c in contacts)  # the 1.x behaviour, with the API key
        async with rt.run("crm", run_id="new", auth=token) as new:
            assert new.version == "2.0.0"
            fresh = (await new.call("list_contacts", {"limit": 2}))["contacts"]
            assert all("email" not in c for c in fresh)
        assert rt.in_flight("acme", "1.1.0") == 1
        assert rt.version_status("acme", "1.1.0") == "draining"
    assert rt.in_flight("acme", "1.1.0") == 0
    assert rt.version_status("acme", "1.1.0") == "drained"


# --- 4. rollback --------------------------------------------------------------------------------


async def test_rollback_to_an_earlier_live_or_retired_version(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.0.1", "1.1.0", "2.0.0")
    await rt.install("crm", "acme", pin="2.0.0")
    done = await rt.rollback("crm", to="1.1.0", actor="ops")
    assert (done.installation_id, done.from_version, done.to_version) == ("crm", "2.0.0", "1.1.0")
    assert done.drained is None
    assert done.still_in_flight == ()
    assert rt.resolve("crm").version == "1.1.0"
    assert (await moves(rt, "crm"))[-1] == ("rollback", "ops", "2.0.0", "1.1.0")

    await rt.retire("acme", "1.0.1")
    done = await rt.rollback("crm", to="1.0.1")
    assert (done.from_version, done.to_version) == ("1.1.0", "1.0.1")
    assert rt.resolve("crm").version == "1.0.1"
    assert (await moves(rt, "crm"))[-1] == ("rollback", "system", "1.1.0", "1.0.1")
    assert "retired" in " ".join(rt.explain("crm").notes)


async def test_rollback_to_the_same_or_a_later_version_is_invalid(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0", "2.0.0")
    await rt.install("crm", "acme", pin="1.1.0")
    before = await rt.history("crm")
    for target in ("1.1.0", "2.0.0"):
        with pytest.raises(InvalidArgument) as refused:
            await rt.rollback("crm", to=target)
        assert refused.value.code == "invalid_argument"
        assert target in str(refused.value)
    with pytest.raises(NotFound):
        await rt.rollback("crm", to="0.9.0")
    assert rt.resolve("crm").version == "1.1.0"
    assert await rt.history("crm") == before


async def test_rollback_with_a_drain_timeout_reports_the_runs_still_in_flight(
    rt: Runtime,
) -> None:
    await publish(rt, "1.0.0", "1.1.0")
    await rt.install("crm", "acme", pin="1.1.0")
    async with held(rt, ("crm", "r-stuck")):
        started = time.monotonic()
        done = await rt.rollback("crm", to="1.0.0", drain_timeout=0.3)
        elapsed = time.monotonic() - started
        assert done.drained is False
        assert done.still_in_flight == ("r-stuck",)
        assert 0.25 <= elapsed < 3
        assert rt.resolve("crm").version == "1.0.0"  # the pin moved anyway
        assert (await moves(rt, "crm"))[-1][:1] == ("rollback",)
        assert rt.version_status("acme", "1.1.0") == "draining"


async def test_rollback_reports_drained_when_the_run_ends_in_time(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0")
    await rt.install("crm", "acme", pin="1.1.0")
    opened, release = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with rt.run("crm", run_id="r-short", auth=KEY):
            opened.set()
            await release.wait()

    async def end_soon() -> None:
        await anyio.sleep(0.15)
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await opened.wait()
        tg.start_soon(end_soon)
        started = time.monotonic()
        done = await rt.rollback("crm", to="1.0.0", drain_timeout=10)
        elapsed = time.monotonic() - started
    assert done.drained is True
    assert done.still_in_flight == ()
    assert release.is_set()
    assert 0.1 <= elapsed < 5


async def test_rollback_does_not_wait_for_other_installations_runs(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0")
    await rt.install("crm", "acme", pin="1.1.0")
    await rt.install("neighbour", "acme", pin="1.1.0")
    async with held(rt, ("neighbour", "n-open")):
        started = time.monotonic()
        done = await rt.rollback("crm", to="1.0.0", drain_timeout=5)
        assert time.monotonic() - started < 2
        assert (done.drained, done.still_in_flight) == (True, ())
        assert rt.in_flight("acme", "1.1.0") == 1


async def test_rollback_without_a_drain_timeout_does_not_wait(rt: Runtime) -> None:
    await publish(rt, "1.0.0", "1.1.0")
    await rt.install("crm", "acme", pin="1.1.0")
    async with held(rt, ("crm", "r-open")) as runs:
        started = time.monotonic()
        done = await rt.rollback("crm", to="1.0.0")
        assert time.monotonic() - started < 2
        assert (done.drained, done.still_in_flight) == (None, ())
        assert runs["r-open"].version == "1.1.0"
        async with rt.run("crm", auth=KEY) as fresh:
            assert fresh.version == "1.0.0"


async def test_rollback_waits_for_the_installations_runs_in_another_runtime(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url) as a, packrun.open_runtime(shared_url) as b:
        await publish(a, "1.0.0", "1.1.0")
        await a.install("crm", "acme", pin="1.1.0")
        await b.refresh()
        async with held(b, ("crm", "b-open")):
            done = await a.rollback("crm", to="1.0.0", drain_timeout=0.3)
            assert (done.drained, done.still_in_flight) == (False, ("b-open",))


# --- found in review: other processes, pre-releases, bad input ------------------------------------


async def test_a_publisher_applies_policies_to_installations_made_by_another_runtime(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with (
        packrun.open_runtime(url, refresh_interval=0) as a,
        packrun.open_runtime(url, refresh_interval=0) as b,
    ):
        await publish(a, "1.0.0")
        await b.refresh()
        await b.install("from-b", "acme", pin="1.0.0", policy="auto_minor")
        await publish(a, "1.0.1")  # a has not refreshed since b installed
        await b.refresh()
        assert b.resolve("from-b").version == "1.0.1"
        assert (await b.history("from-b"))[-1].origin == "policy"


async def test_a_runtime_that_learns_of_a_new_version_applies_the_policy_too(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        await publish(rt, "1.0.0")
        await rt.install("auto", "acme", pin="1.0.0", policy="auto_patch")
        # A publish whose publisher died before applying policies: only the store write happened.
        store = packrun._stores.open_store(url)
        await store.open()
        try:
            prepared = packrun._catalog.prepare(
                dist("1.0.1"),
                channel="vendor",
                generations={1, 2},
                strict_versions=False,
                now=packrun._runtime._now(),
            )
            await store.publish(prepared, lambda rows, settings: "insert")
        finally:
            await store.close()
        await rt.refresh()
        assert rt.resolve("auto").version == "1.0.1"
        assert (await rt.history("auto"))[-1].origin == "policy"


async def test_an_installation_on_a_release_candidate__moves_to_its_release(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await publish(rt, "1.0.0")
        await rt.install("rc", "acme", pin="1.0.0", policy="auto_minor", allow_prerelease=True)
        await rt.publish(variant("1.1.0", "1.1.0-rc.1"))
        assert rt.resolve("rc").version == "1.1.0-rc.1"
        await rt.publish(variant("1.1.0", "1.1.0"))
        assert rt.resolve("rc").version == "1.1.0"


@pytest.mark.parametrize("tools", ["list_contacts", [3, None], [""]])
async def test_declare_workflow__tools_must_be_a_list_of_ids(store_url: str, tools: object) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await publish(rt, "1.0.0")
        await rt.install("i", "acme")
        with pytest.raises(packrun.InvalidArgument, match="tool ids"):
            await rt.declare_workflow("i", "wf", tools)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [float("nan"), -1.0, float("inf"), "5"])
async def test_timeouts__must_be_seconds(store_url: str, timeout: object) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await publish(rt, "1.0.0", "1.0.1")
        await rt.install("i", "acme")
        with pytest.raises(packrun.InvalidArgument, match="drain_timeout"):
            await rt.rollback("i", to="1.0.0", drain_timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(packrun.InvalidArgument, match="timeout"):
            await rt.wait_drained("acme", "1.0.0", timeout=timeout)  # type: ignore[arg-type]
        assert rt.resolve("i").version == "1.0.1"


# --- comparisons of integrations use the artifact version ----------------------------------------

HELPDESK = Path(__file__).resolve().parent.parent / "bundles" / "helpdesk"


async def test_a_pack_release_that_leaves_its_integration_unchanged__explain_and_review_agree(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.publish(HELPDESK / "1.0.0")
        await rt.install("desk", "helpdesk", pin="1.0.0")
        await rt.publish(HELPDESK / "1.1.0")  # a new process flow; the integration stays 1.0.0
        assert [str(e.version) for e in rt.versions("helpdesk")] == ["1.0.0", "1.1.0"]
        review = rt.review_update("desk")
        assert (review.from_version, review.to_version, review.bump) == ("1.0.0", "1.1.0", "none")
        why = rt.explain("desk")
        assert why.update == "1.1.0 (none, vendor; integration 1.0.0 -> 1.0.0)"
        assert "update available: 1.1.0 (none, vendor; integration 1.0.0 -> 1.0.0)" in str(why)


async def test_an_integration_published_alone__explain_shows_its_own_bump(
    store_url: str,
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await publish(rt, "1.0.0", "1.1.0")
        await rt.install("i", "acme", pin="1.0.0")
        assert rt.explain("i").update == "1.1.0 (minor, vendor)"
        assert rt.review_update("i").bump == "minor"
