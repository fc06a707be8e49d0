"""Runs (DESIGN.md sections 6, 7 and 11): bound at their start, kept on their binding, accounted.

A run binds to the installation's ``(version, digest)`` when it starts and every call of it goes to
that artifact, whatever happens to pins meanwhile: a pin move, a forced overwrite of the same
version, a retirement, a rollback. The binding is durable (a run id seen again gets it back, in
this runtime or another one on the same store). In-flight accounting is exact per
``(pack, version)`` and per installation however a run ends, ``version_status`` and
``wait_drained`` follow it, and credentials never reach the store, a repr or an error message.

The custom bundles here (``probe``) carry tools made for the purpose: ``whoami`` answers the
version the run is bound to and a marker compiled into the code (so a digest is observable from
the output), ``context`` returns the ``ctx`` it was given, ``block`` is a sync tool waiting on a
``threading.Event``. Every behaviour that does not need two runtimes runs on ``memory:`` and SQLite.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

import packrun
import packrun._runtime
import packrun._stores
from _store_sql import execute
from packrun import (
    BundleContractIncompatible,
    DrainTimeout,
    IntegrationContractIncompatible,
    NotFound,
    Runtime,
    ToolFailed,
)
from packrun._bundle import bundle_bytes
from packrun.sdk import ToolContext

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
PACK = "probe"
# These tests are about runs (binding, accounting, redaction) and the in-process dispatch: a tool
# here receives Python objects (a threading.Event) and returns its ctx. tests/test_sandbox.py runs
# bundle code in sandbox workers.
TRUSTED = frozenset({"vendor", "custom"})
TOOLS = ("block", "context", "echo_key", "fail", "remember", "sleep", "whoami", "whoami_sync")

PROBE_CODE = '''\
"""A probe integration for the run tests."""

import threading

import anyio

from packrun.sdk import Integration, ToolError

integration = Integration("__PACK__")
MARKER = "__MARKER__"


@integration.tool("whoami")
async def whoami(ctx, input):
    return {"version": ctx.version, "marker": MARKER}


@integration.tool("whoami_sync")
def whoami_sync(ctx, input):
    return {"version": ctx.version, "marker": MARKER, "thread": threading.get_ident()}


@integration.tool("context")
async def context(ctx, input):
    ctx.logger.info("context called in run %s", ctx.run_id)
    return {"ctx": ctx}


@integration.tool("sleep")
async def sleep(ctx, input):
    await anyio.sleep(input["s"])
    return {"slept": input["s"]}


@integration.tool("block")
def block(ctx, input):
    return {"set": input["event"].wait(input["timeout"]), "thread": threading.get_ident()}


@integration.tool("remember")
async def remember(ctx, input):
    input["seen_by"] = [*input.get("seen_by", []), ctx.run_id]
    return dict(input)


@integration.tool("fail")
async def fail(ctx, input):
    raise ToolError(input["code"], input.get("message", ""))


@integration.tool("echo_key")
def echo_key(ctx, input):
    raise ToolError("bad_key", "the key " + ctx.auth.credentials.get("key", "") + " was refused")
'''

GEN1_ECHO_CODE = '''\
"""A generation-1 integration that echoes the basic-auth password in its error."""


def handle(action, params, auth):
    password = auth.get("password", "")
    return {"error": {"code": "bad_login", "message": "password " + password + " refused"}}
'''


def probe(version: str, marker: str, pack: str = PACK) -> bytes:
    """A generation-2 probe bundle of ``version`` whose ``whoami`` answers ``marker``."""
    manifest = packrun.decode_manifest(
        {
            "id": pack,
            "version": version,
            "contract": 2,
            # Declares no auth, so that runs may pass credentials of any mode to its tools.
            "auth": {"mode": "none"},
            "tools": [{"id": tool} for tool in TOOLS],
        }
    )
    code = PROBE_CODE.replace("__PACK__", pack).replace("__MARKER__", marker)
    return bundle_bytes(manifest, {"__init__.py": code.encode()})


def gen1_echo(version: str = "1.0.0") -> bytes:
    """A generation-1 bundle ``old-echo`` whose one tool ``login`` echoes the password."""
    manifest = packrun.decode_manifest(
        {
            "id": "old-echo",
            "version": version,
            "contract": 1,
            "auth": {"mode": "basic"},
            "tools": [{"id": "login"}],
        }
    )
    return bundle_bytes(manifest, {"__init__.py": GEN1_ECHO_CODE.encode()})


def digest(data: bytes) -> str:
    return packrun.read_bundle(data).digest


def dist(pack: str, version: str) -> Path:
    """The built artifact of a sample integration."""
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


def acme_variant(version: str, marker: str) -> bytes:
    """The sample acme ``version`` with a comment added to its code: same version, new digest."""
    bundle = packrun.read_bundle(dist("acme", version))
    files = dict(bundle.files)
    files["__init__.py"] = files["__init__.py"] + f"\n# {marker}\n".encode()
    return bundle_bytes(bundle.manifest, files)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as runtime:
        yield runtime


async def setup_probe(rt: Runtime, *versions: str, pin: str | None = None) -> dict[str, str]:
    """Publish probe ``versions`` (marker ``m<version>``), install ``inst`` pinned to ``pin`` (the
    first version by default); return each version's digest."""
    digests: dict[str, str] = {}
    for version in versions:
        data = probe(version, f"m{version}")
        entry = await rt.publish(data)
        assert entry.digest == digest(data)
        digests[version] = entry.digest
    await rt.install("inst", PACK, pin=pin or versions[0])
    return digests


def assert_idle(rt: Runtime, versions: tuple[str, ...] = ("1.0.0",), *iids: str) -> None:
    """Nothing in flight: per version, per installation, in the stats and the run-id lists."""
    for version in versions:
        assert rt.in_flight(PACK, version) == 0, version
        assert rt.runs_in_flight(PACK, version) == [], version
    for iid in iids or ("inst",):
        assert rt.in_flight_for(iid) == 0, iid
    assert rt.stats().runs_in_flight == 0


# --- 1. a run keeps its binding --------------------------------------------------------------


async def test_a_run_keeps_its_binding_through_pin_moves_overwrites_retires_and_rollbacks(
    rt: Runtime,
) -> None:
    digests = await setup_probe(rt, "1.0.0", "1.1.0", "2.0.0")
    await rt.install("follow", PACK, pin="latest")
    runs: dict[str, packrun.Run] = {}
    expected: dict[str, tuple[str, str, str]] = {}  # run -> (version, marker, digest)

    async with anyio.create_task_group() as tg:
        gates: dict[str, anyio.Event] = {}
        opened: dict[str, anyio.Event] = {}
        finished: dict[str, list[tuple[Any, Any]]] = {}

        async def hold(name: str, iid: str) -> None:
            async with rt.run(iid, run_id=name, auth=packrun.Auth.api_key("k")) as run:
                runs[name] = run
                opened[name].set()
                await gates[name].wait()
                finished[name] = [
                    (await run.call("whoami"), await run.call("whoami_sync")) for _ in range(2)
                ]

        async def start(name: str, iid: str, version: str, marker: str, dig: str) -> None:
            gates[name], opened[name] = anyio.Event(), anyio.Event()
            expected[name] = (version, marker, dig)
            tg.start_soon(hold, name, iid)
            await opened[name].wait()
            assert (runs[name].version, runs[name].digest) == (version, dig), name
            assert runs[name].resumed is False

        await start("r1", "inst", "1.0.0", "m1.0.0", digests["1.0.0"])
        await start("f1", "follow", "2.0.0", "m2.0.0", digests["2.0.0"])

        await rt.set_pin("inst", "1.1.0")  # an upgrade
        await start("r2", "inst", "1.1.0", "m1.1.0", digests["1.1.0"])

        await rt.set_immutable_versions(False)  # a forced overwrite of 1.1.0: a new digest
        replacement = probe("1.1.0", "m1.1.0-forced")
        await rt.publish(replacement, force=True)
        assert rt.resolve("inst").digest == digest(replacement) != digests["1.1.0"]
        await start("r3", "inst", "1.1.0", "m1.1.0-forced", digest(replacement))

        await rt.retire(
            PACK, "2.0.0", acknowledge_breaking=True
        )  # latest moves back to 1.1.0 (the overwrite)
        await start("f2", "follow", "1.1.0", "m1.1.0-forced", digest(replacement))

        await rt.set_pin("inst", "1.0.0", origin="rollback")  # a pin back
        await start("r4", "inst", "1.0.0", "m1.0.0", digests["1.0.0"])

        assert rt.in_flight(PACK, "1.0.0") == 2
        assert rt.in_flight(PACK, "1.1.0") == 3
        assert rt.in_flight(PACK, "2.0.0") == 1
        assert rt.in_flight_for("inst") == 4
        assert rt.in_flight_for("follow") == 2
        for gate in gates.values():
            gate.set()

    for name, (version, marker, dig) in expected.items():
        assert runs[name].version == version
        assert runs[name].digest == dig
        for answer, answer_sync in finished[name]:
            assert (answer["version"], answer["marker"]) == (version, marker), name
            assert (answer_sync["version"], answer_sync["marker"]) == (version, marker), name
    assert_idle(rt, ("1.0.0", "1.1.0", "2.0.0"), "inst", "follow")


async def test_an_open_acme_run_keeps_the_1_0_0_behaviour_after_the_pin_moves_to_2_0_0(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.publish(dist("acme", "2.0.0"))
    await rt.install("crm", "acme", pin="1.0.0")
    key = packrun.Auth.api_key("tenant-key")
    token = packrun.Auth.oauth2("tenant-token", scopes=("contacts.read",))

    async with rt.run("crm", run_id="old", auth=key) as old:
        before = await old.call("list_contacts", {"limit": 3})
        await rt.set_pin("crm", "2.0.0")
        after = await old.call("list_contacts", {"limit": 3})
        assert after == before
        assert all("email" in c for c in after["contacts"])  # 1.x contacts carry an email
        with pytest.raises(NotFound):  # 1.0.0 has no search_contacts; 2.0.0 has
            await old.call("search_contacts", {"query": "a"})

        with pytest.raises(packrun.NeedsReauth) as refused:  # 2.0.0 needs OAuth 2
            async with rt.run("crm", run_id="new-key", auth=key):
                pass
        assert refused.value.missing == ("auth mode oauth2 (the run has api_key)",)
        async with rt.run("crm", run_id="new-token", auth=token) as new:
            contacts = (await new.call("list_contacts", {"limit": 3}))["contacts"]
            assert len(contacts) == 3
            assert all("email" not in c for c in contacts)

        assert old.version == "1.0.0"
        assert old.digest == packrun.read_bundle(dist("acme", "1.0.0")).digest
        assert await old.call("get_contact", {"id": "c-001"}) == {"contact": before["contacts"][0]}


async def test_an_open_run_keeps_its_digest_after_a_forced_overwrite_of_its_version(
    rt: Runtime,
) -> None:
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("crm", "acme", pin="1.0.0")
    await rt.set_immutable_versions(False)
    original = packrun.read_bundle(dist("acme", "1.0.0")).digest
    async with rt.run("crm", auth=packrun.Auth.api_key("k")) as run:
        replacement = acme_variant("1.0.0", "hotfix")
        await rt.publish(replacement, force=True)
        assert rt.resolve("crm").digest == digest(replacement)
        assert run.digest == original
        async with rt.run("crm", auth=packrun.Auth.api_key("k")) as fresh:
            assert fresh.version == run.version == "1.0.0"
            assert fresh.digest == digest(replacement)
        assert rt.in_flight("acme", "1.0.0") == 1
    assert rt.in_flight("acme", "1.0.0") == 0


# --- 2. generation-2 dispatch ----------------------------------------------------------------


async def test_ctx_carries_the_run_the_installation_the_pack_the_version_typed_auth_and_a_logger(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await setup_probe(rt, "1.2.3")
    auth = packrun.Auth.oauth2("tok-123", scopes=("a", "b"))
    caplog.set_level(logging.INFO)
    async with rt.run("inst", run_id="run-ctx", workflow_id="wf-9", auth=auth) as run:
        ctx = (await run.call("context"))["ctx"]
        assert run.run_id == "run-ctx"
        assert run.workflow_id == "wf-9"
        assert run.installation_id == "inst"
        assert run.pack_id == PACK
        assert run.generation == 2
        assert run.contract == 2
        assert run.adapter is None
        assert run.channel == "vendor"
        assert run.calls == {"context"}
    assert isinstance(ctx, ToolContext)
    assert (ctx.run_id, ctx.installation_id, ctx.pack_id, ctx.version) == (
        "run-ctx",
        "inst",
        PACK,
        "1.2.3",
    )
    assert isinstance(ctx.auth, packrun.Auth)
    assert ctx.auth.mode == "oauth2"
    assert ctx.auth.scopes == ("a", "b")
    assert ctx.auth.credentials["access_token"] == "tok-123"
    assert ctx.auth.headers() == {"Authorization": "Bearer tok-123"}
    # A logger of packrun.tools.<pack>, behind an adapter that removes the run's credentials.
    assert isinstance(ctx.logger, logging.Logger | logging.LoggerAdapter)
    assert "context called in run run-ctx" in caplog.text
    assert any(r.name == f"packrun.tools.{PACK}" for r in caplog.records)


async def test_without_auth_a_tool_sees_auth_mode_none(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    ctx = (await rt.call("inst", "context"))["ctx"]
    assert isinstance(ctx.auth, packrun.Auth)
    assert ctx.auth.mode == "none"
    assert ctx.auth.headers() == {}


async def test_a_generated_run_id_is_unique_per_run(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    ids = set()
    for _ in range(5):
        async with rt.run("inst") as run:
            ids.add(run.run_id)
            assert (await run.call("context"))["ctx"].run_id == run.run_id
    assert len(ids) == 5


async def test_a_sync_tool_runs_off_the_event_loop(rt: Runtime) -> None:
    """The sync tool waits for an event only a task on the event loop sets: run on the loop, it
    would block the loop and never see the event set."""
    await setup_probe(rt, "1.0.0")
    event = threading.Event()
    answers: list[Any] = []

    async with rt.run("inst") as run:

        async def call_block() -> None:
            answers.append(await run.call("block", {"event": event, "timeout": 5.0}))

        async def set_later() -> None:
            await anyio.sleep(0.05)
            event.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_block)
                tg.start_soon(set_later)
        sync_answer = await run.call("whoami_sync")

    [answer] = answers
    assert answer["set"] is True
    assert answer["thread"] != threading.get_ident()
    assert sync_answer["thread"] != threading.get_ident()


async def test_async_and_sync_tools_both_answer_in_a_run(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst") as run:
        assert await run.call("whoami") == {"version": "1.0.0", "marker": "m1.0.0"}
        assert (await run.call("whoami_sync"))["marker"] == "m1.0.0"
        assert await run.call("sleep", {"s": 0}) == {"slept": 0}
        assert run.calls == {"whoami", "whoami_sync", "sleep"}


async def test_a_call_without_input_gets_a_fresh_input_no_earlier_call_changed(
    rt: Runtime,
) -> None:
    """A tool may write into its input dict; with no input given, that must not leak into the
    next call (of this run, another run, another tenant)."""
    await setup_probe(rt, "1.0.0")
    assert await rt.call("inst", "remember", run_id="first") == {"seen_by": ["first"]}
    assert await rt.call("inst", "remember", run_id="second") == {"seen_by": ["second"]}
    async with rt.run("inst", run_id="third") as run:
        assert await run.call("remember") == {"seen_by": ["third"]}
        assert await run.call("remember", None) == {"seen_by": ["third"]}
        ctx = (await run.call("context"))["ctx"]
    assert ctx.run_id == "third"


async def test_a_tool_error_becomes_tool_failed_with_the_tool_code(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst") as run:
        with pytest.raises(ToolFailed) as failed:
            await run.call("fail", {"code": "rate_limited", "message": "slow down"})
        # the run goes on after a tool error
        assert (await run.call("whoami"))["version"] == "1.0.0"
    assert failed.value.code == "tool_error"
    assert failed.value.tool_code == "rate_limited"
    assert failed.value.tool == "fail"
    assert "slow down" in str(failed.value)
    assert "rate_limited" in str(failed.value)
    assert isinstance(failed.value, packrun.PackrunError)
    with pytest.raises(ToolFailed) as once:
        await rt.call("inst", "fail", {"code": "not_found"})
    assert once.value.tool_code == "not_found"
    assert_idle(rt)


async def test_a_generation_1_error_answer_becomes_tool_failed_through_the_adapter(
    rt: Runtime,
) -> None:
    await rt.publish(dist("legacy-crm", "1.0.0"))
    await rt.install("legacy", "legacy-crm")
    async with rt.run("legacy", auth=packrun.Auth.basic("ann", "pw")) as run:
        assert run.generation == 1
        assert run.adapter == "1->2"
        with pytest.raises(ToolFailed) as failed:
            await run.call("get_account", {"id": "a-999"})
        assert failed.value.tool_code == "not_found"
        accounts = await run.call("list_accounts", {"limit": 2})
        assert len(accounts["accounts"]) == 2
    assert rt.stats().adapter_runs == {("legacy-crm", "1.0.0", "1->2"): 1}


async def test_an_unknown_tool_is_not_found_listing_the_tools(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst") as run:
        with pytest.raises(NotFound) as missing:
            await run.call("delete_everything", {})
        assert "delete_everything" not in run.calls
    assert missing.value.code == "not_found"
    assert missing.value.name == "delete_everything"
    assert missing.value.known == tuple(sorted(TOOLS))
    message = str(missing.value)
    assert "delete_everything" in message
    for tool in TOOLS:
        assert tool in message
    assert_idle(rt)


async def test_an_unknown_installation_is_not_found_and_starts_nothing(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    with pytest.raises(NotFound) as missing:
        async with rt.run("nobody"):
            pytest.fail("the body of a run of an unknown installation ran")
    assert missing.value.code == "not_found"
    assert "nobody" in str(missing.value)
    with pytest.raises(NotFound):
        await rt.call("nobody", "whoami")
    assert rt.stats().runs_started == 0
    assert_idle(rt, ("1.0.0",), "inst", "nobody")


# --- 3. the contract gate at run time --------------------------------------------------------


async def test_a_generation_1_installation_cannot_start_a_run_in_a_generation_2_runtime(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url, in_process=TRUSTED) as default:
        await default.publish(dist("legacy-crm", "1.0.0"))
        await default.install("legacy", "legacy-crm")
        await default.call("legacy", "list_accounts", auth=packrun.Auth.basic("u", "p"))

    async with packrun.open_runtime(shared_url, generations={2}, in_process=TRUSTED) as rt:
        # the catalog and the installation still load and resolve ...
        assert [str(e.version) for e in rt.versions("legacy-crm")] == ["1.0.0"]
        assert [i.id for i in rt.installations()] == ["legacy"]
        res = rt.resolve("legacy")
        assert (res.version, res.contract) == ("1.0.0", 1)
        # ... a new install is refused (DESIGN §6: at install with integration_contract_...)
        with pytest.raises(IntegrationContractIncompatible):
            await rt.install("legacy-2", "legacy-crm", pin="1.0.0")
        # ... and a run does not start: loudly, by the one checker, with what to do
        body_ran = False
        with pytest.raises(BundleContractIncompatible) as refused:
            async with rt.run("legacy", run_id="gated", auth=packrun.Auth.basic("u", "p")):
                body_ran = True
        assert body_ran is False
        error = refused.value
        assert error.code == "BUNDLE_CONTRACT_INCOMPATIBLE"
        assert (error.bundle, error.generation, error.supported) == ("legacy-crm", 1, (2,))
        assert error.direction == "too_old"
        message = str(error)
        assert "legacy-crm" in message
        assert "generation 1" in message
        assert "supports 2" in message
        assert "rebuild" in message
        with pytest.raises(BundleContractIncompatible):
            await rt.call("legacy", "list_accounts", auth=packrun.Auth.basic("u", "p"))
        # nothing stays in flight, here or in the store
        assert rt.in_flight("legacy-crm", "1.0.0") == 0
        assert rt.in_flight_for("legacy") == 0
        assert rt.runs_in_flight("legacy-crm", "1.0.0") == []
        assert rt.stats().runs_in_flight == 0
        assert rt.version_status("legacy-crm", "1.0.0") == "active"  # still pinned

    async with packrun.open_runtime(shared_url, in_process=TRUSTED) as later:
        await later.wait_drained("legacy-crm", "1.0.0", timeout=5)
        assert later.in_flight("legacy-crm", "1.0.0") == 0


# --- 4. the binding is durable ---------------------------------------------------------------


async def test_a_run_id_seen_again_gets_its_original_binding_back_in_the_same_runtime(
    rt: Runtime,
) -> None:
    digests = await setup_probe(rt, "1.0.0", "2.0.0")
    async with rt.run("inst", run_id="r-1", workflow_id="wf") as first:
        assert first.resumed is False
        assert (await first.call("whoami"))["marker"] == "m1.0.0"
        started_at = first.started_at

    await rt.set_pin("inst", "2.0.0")
    await rt.set_immutable_versions(False)
    await rt.publish(probe("1.0.0", "m1.0.0-forced"), force=True)  # even the digest moves

    async with rt.run("inst", run_id="r-1") as again:
        assert again.resumed is True
        assert (again.version, again.digest) == ("1.0.0", digests["1.0.0"])
        assert again.started_at == started_at
        assert await again.call("whoami") == {"version": "1.0.0", "marker": "m1.0.0"}
        assert rt.in_flight(PACK, "1.0.0") == 1
        assert rt.in_flight(PACK, "2.0.0") == 0
    async with rt.run("inst", run_id="r-2") as fresh:
        assert fresh.resumed is False
        assert (fresh.version, fresh.digest) == ("2.0.0", digests["2.0.0"])
    assert_idle(rt, ("1.0.0", "2.0.0"))


async def test_a_run_id_seen_again_gets_its_original_binding_back_in_another_runtime(
    shared_url: str,
) -> None:
    async with packrun.open_runtime(shared_url, in_process=TRUSTED) as first:
        digests = await setup_probe(first, "1.0.0", "2.0.0")
        async with first.run("inst", run_id="r-1") as run:
            assert (await run.call("whoami"))["marker"] == "m1.0.0"
        await first.set_pin("inst", "2.0.0")
        await first.set_immutable_versions(False)
        await first.publish(probe("1.0.0", "m1.0.0-forced"), force=True)

        async with packrun.open_runtime(
            shared_url, in_process=TRUSTED
        ) as second:  # a fresh process's view
            async with second.run("inst", run_id="r-1") as resumed:
                assert resumed.resumed is True
                assert (resumed.version, resumed.digest) == ("1.0.0", digests["1.0.0"])
                assert await resumed.call("whoami") == {"version": "1.0.0", "marker": "m1.0.0"}
                assert second.in_flight(PACK, "1.0.0") == 1
            async with second.run("inst", run_id="r-2") as fresh:
                assert fresh.resumed is False
                assert fresh.version == "2.0.0"
            assert_idle(second, ("1.0.0", "2.0.0"))

    async with (
        packrun.open_runtime(
            shared_url, in_process=TRUSTED
        ) as third,  # and after every runtime closed
        third.run("inst", run_id="r-1") as resumed,
    ):
        assert resumed.resumed is True
        assert resumed.digest == digests["1.0.0"]
        assert (await resumed.call("whoami_sync"))["marker"] == "m1.0.0"


async def test_run_ends_the_store_could_not_take_are_written_once_it_can(
    shared_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="packrun")
    async with packrun.open_runtime(shared_url, refresh_interval=0, in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        async with rt.run("inst", run_id="r-1", workflow_id="wf") as run:
            await run.call("whoami")
            execute(shared_url, "ALTER TABLE runs RENAME TO runs_away")  # the store fails
        with anyio.fail_after(10):
            while "could not record the end of 1 run(s)" not in caplog.text:
                await anyio.sleep(0.01)
        execute(shared_url, "ALTER TABLE runs_away RENAME TO runs")  # and is back
        with anyio.fail_after(10):
            while execute(shared_url, "SELECT ended_at FROM runs") == [(None,)]:
                await anyio.sleep(0.05)
        assert_idle(rt)
    rows = execute(shared_url, "SELECT run_id, calls FROM runs")
    assert rows == [("r-1", '["whoami"]')]
    async with packrun.open_runtime(
        shared_url, in_process=TRUSTED
    ) as later:  # and a later runtime sees it ended
        await later.refresh()
        assert later.in_flight(PACK, "1.0.0") == 0


# --- 5. accounting ---------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("ending", ["normal", "exception", "tool_failed", "cancelled"])
async def test_counts_go_up_inside_and_back_to_zero_however_the_runs_end(
    rt: Runtime, ending: Literal["normal", "exception", "tool_failed", "cancelled"]
) -> None:
    await setup_probe(rt, "1.0.0")
    await rt.install("other", PACK, pin="1.0.0")
    count = 6
    inside = 0
    all_inside = anyio.Event()
    release = anyio.Event()
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        nonlocal inside
        iid = "inst" if i % 2 else "other"
        try:
            async with rt.run(iid, run_id=f"run-{i}") as run:
                inside += 1
                if inside == count:
                    all_inside.set()
                await release.wait()
                await run.call("whoami")
                if ending == "exception":
                    raise Boom(i)
                if ending == "tool_failed":
                    await run.call("fail", {"code": "x"})
        except (Boom, ToolFailed) as exc:
            errors.append(exc)

    with anyio.fail_after(20), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
            await all_inside.wait()
            assert rt.in_flight(PACK, "1.0.0") == count
            assert rt.in_flight_for("inst") == count // 2
            assert rt.in_flight_for("other") == count // 2
            assert rt.stats().runs_in_flight == count
            assert rt.runs_in_flight(PACK, "1.0.0") == sorted(f"run-{i}" for i in range(count))
            if ending == "cancelled":
                scope.cancel()
            else:
                release.set()

    assert scope.cancelled_caught is (ending == "cancelled")
    assert len(errors) == (count if ending in ("exception", "tool_failed") else 0)
    assert_idle(rt, ("1.0.0",), "inst", "other")
    assert rt.stats().runs_started == count
    await rt.wait_drained(PACK, "1.0.0", timeout=5)


async def test_cancelling_runs_while_they_start_and_call_leaks_no_count(store_url: str) -> None:
    """A cancellation may land anywhere: while a run's start is being written, during the first
    load of its artifact, in a call to a sync tool, or at the end. Nothing may stay counted: not
    here, and (on SQLite) not in the store, where another runtime would see a leaked run."""
    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0", "1.1.0")
        for round_ in range(6):
            if round_ == 3:
                await rt.set_pin("inst", "1.1.0")  # a digest not loaded yet: a new load to cancel

            async def one(i: int, r: int = round_) -> None:
                async with rt.run("inst", run_id=f"c{r}-{i}") as run:
                    while True:
                        await run.call("whoami_sync")
                        await run.call("sleep", {"s": 0})

            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    for i in range(25):
                        tg.start_soon(one, i)
                    for _ in range(round_ * 3):
                        await anyio.sleep(0)
                    scope.cancel()
            assert_idle(rt, ("1.0.0", "1.1.0"))
        await rt.wait_drained(PACK, "1.0.0", timeout=5)
        await rt.wait_drained(PACK, "1.1.0", timeout=5)
        if store_url.startswith("sqlite"):
            async with packrun.open_runtime(
                store_url, in_process=TRUSTED
            ) as other:  # the store agrees: nothing live
                for version in ("1.0.0", "1.1.0"):
                    await other.wait_drained(PACK, version, timeout=3)  # drain_timeout names leaks
                    assert other.in_flight(PACK, version) == 0


async def test_a_runtime_that_closes_records_the_end_of_every_run(tmp_path: Path) -> None:
    """Ends are written behind, in batches; closing the runtime must still record every one of
    them, or other processes count finished runs until their leases expire. The runtime is closed
    at several moments after the last end (around the batching delay), each on a fresh file."""
    for n, delay in enumerate([0.0, 0.001, 0.003, 0.004, 0.005, 0.0055, 0.006, 0.008, 0.012]):
        db = tmp_path / f"close-{n}.db"
        async with packrun.open_runtime(f"sqlite:///{db}", in_process=TRUSTED) as rt:
            await setup_probe(rt, "1.0.0")
            for i in range(3):
                async with rt.run("inst", run_id=f"r{i}") as run:
                    await run.call("whoami")
                await anyio.sleep(delay)
        conn = sqlite3.connect(db)
        try:
            unended = conn.execute("SELECT run_id FROM runs WHERE ended_at IS NULL").fetchall()
        finally:
            conn.close()
        assert unended == [], f"closed {delay}s after the last end: {unended} never ended"
        async with packrun.open_runtime(f"sqlite:///{db}", in_process=TRUSTED) as later:
            assert later.in_flight(PACK, "1.0.0") == 0
            await later.wait_drained(PACK, "1.0.0", timeout=0.5)


async def test_two_concurrent_starts_of_one_run_id_leave_no_count_behind(rt: Runtime) -> None:
    """A run id is either refused while it is in flight in this runtime, or each of its starts
    is matched by an end: the counts return to zero either way."""
    await setup_probe(rt, "1.0.0")
    entered: list[str] = []
    refused: list[str] = []

    async def one(name: str) -> None:
        try:
            async with rt.run("inst", run_id="same") as run:
                entered.append(name)
                await run.call("sleep", {"s": 0.05})
        except packrun.InvalidArgument:
            refused.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    assert len(entered) + len(refused) == 2
    assert_idle(rt)


async def test_a_run_id_in_flight_in_this_runtime_is_refused(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst", run_id="dup"):
        with pytest.raises(packrun.InvalidArgument) as refused:
            async with rt.run("inst", run_id="dup"):
                pytest.fail("a second run with an id in flight started")
        assert "dup" in str(refused.value)
        assert rt.in_flight(PACK, "1.0.0") == 1
    assert_idle(rt)


async def test_version_status_goes_active_draining_drained(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0", "1.1.0")
    assert rt.version_status(PACK, "1.0.0") == "active"
    assert rt.version_status(PACK, "1.1.0") == "drained"  # nobody on it
    async with rt.run("inst", run_id="slow") as run:
        assert rt.version_status(PACK, "1.0.0") == "active"
        await rt.set_pin("inst", "1.1.0")
        assert rt.version_status(PACK, "1.0.0") == "draining"
        assert rt.version_status(PACK, "1.1.0") == "active"
        assert rt.runs_in_flight(PACK, "1.0.0") == ["slow"]
        await run.call("whoami")
        assert rt.version_status(PACK, "1.0.0") == "draining"
    assert rt.version_status(PACK, "1.0.0") == "drained"
    assert rt.version_status(PACK, "1.1.0") == "active"
    await rt.set_pin("inst", "1.0.0", origin="rollback")
    assert rt.version_status(PACK, "1.0.0") == "active"
    assert rt.version_status(PACK, "1.1.0") == "drained"


async def test_wait_drained_returns_when_the_last_run_ends(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0", "1.1.0")
    await rt.wait_drained(PACK, "1.0.0", timeout=1)  # nothing in flight: at once
    releases = [anyio.Event() for _ in range(3)]
    opened = anyio.Event()
    drained = anyio.Event()
    in_flight_when_drained: list[int] = []
    inside = 0

    async def hold(i: int) -> None:
        nonlocal inside
        async with rt.run("inst", run_id=f"h{i}"):
            inside += 1
            if inside == len(releases):
                opened.set()
            await releases[i].wait()

    async def wait() -> None:
        await rt.wait_drained(PACK, "1.0.0", timeout=20)
        in_flight_when_drained.append(rt.in_flight(PACK, "1.0.0"))
        drained.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(len(releases)):
                tg.start_soon(hold, i)
            await opened.wait()
            await rt.set_pin("inst", "1.1.0")
            tg.start_soon(wait)
            for i in range(len(releases) - 1):
                releases[i].set()
                await anyio.sleep(0.1)
                assert not drained.is_set(), f"wait_drained returned with h{i + 1}.. in flight"
            assert rt.runs_in_flight(PACK, "1.0.0") == ["h2"]
            releases[-1].set()
            await drained.wait()
    assert in_flight_when_drained == [0]
    assert rt.version_status(PACK, "1.0.0") == "drained"


@pytest.mark.parametrize("timeout", [0, 0.0001])
async def test_wait_drained_with_a_tiny_timeout_returns_when_nothing_is_in_flight(
    rt: Runtime, timeout: float
) -> None:
    await setup_probe(rt, "1.0.0")
    await rt.call("inst", "whoami")
    assert rt.in_flight(PACK, "1.0.0") == 0
    await rt.wait_drained(PACK, "1.0.0", timeout=timeout)  # drained already: no drain_timeout


async def test_wait_drained_raises_drain_timeout_naming_the_runs_still_in_flight(
    rt: Runtime,
) -> None:
    await setup_probe(rt, "1.0.0", "1.1.0")
    async with rt.run("inst", run_id="stuck-b"), rt.run("inst", run_id="stuck-a"):
        await rt.set_pin("inst", "1.1.0")
        with anyio.fail_after(10), pytest.raises(DrainTimeout) as timed_out:
            await rt.wait_drained(PACK, "1.0.0", timeout=0.2)
        await rt.wait_drained(PACK, "1.1.0", timeout=0.2)  # the other version is idle
    error = timed_out.value
    assert error.code == "drain_timeout"
    assert error.run_ids == ("stuck-a", "stuck-b")
    assert (error.pack, error.version) == (PACK, "1.0.0")
    assert "stuck-a" in str(error)
    assert "stuck-b" in str(error)
    assert isinstance(error, packrun.PackrunError)
    await rt.wait_drained(PACK, "1.0.0", timeout=5)


async def test_stats_count_runs_started_and_in_flight(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    assert (rt.stats().runs_started, rt.stats().runs_in_flight) == (0, 0)
    async with rt.run("inst"):
        assert (rt.stats().runs_started, rt.stats().runs_in_flight) == (1, 1)
        async with rt.run("inst"):
            assert (rt.stats().runs_started, rt.stats().runs_in_flight) == (2, 2)
        assert (rt.stats().runs_started, rt.stats().runs_in_flight) == (2, 1)
    await rt.call("inst", "whoami")
    async with rt.run("inst", run_id="again"):
        pass
    async with rt.run("inst", run_id="again"):  # a resumed run is a start too
        pass
    stats = rt.stats()
    assert (stats.runs_started, stats.runs_in_flight) == (5, 0)
    assert stats.adapter_runs == {}


# --- a run on a chosen version ------------------------------------------------------------------


async def test_a_run_on_a_chosen_version__binds_to_it_counts_on_it_and_leaves_the_pin(
    rt: Runtime,
) -> None:
    digests = await setup_probe(rt, "1.0.0", "2.0.0")
    history = await rt.history("inst")
    async with rt.run("inst", version="2.0.0") as run:
        assert (run.version, run.digest, run.chosen, run.resumed) == (
            "2.0.0", digests["2.0.0"], True, False
        )  # fmt: skip
        assert "chosen" in repr(run)
        assert await run.call("whoami") == {"version": "2.0.0", "marker": "m2.0.0"}
        assert rt.resolve("inst").version == "1.0.0"  # the pin did not move
        assert rt.runs_in_flight(PACK, "2.0.0") == [run.run_id]
        assert (rt.in_flight(PACK, "2.0.0"), rt.in_flight(PACK, "1.0.0")) == (1, 0)
        assert rt.in_flight_for("inst") == 1
        assert rt.version_status(PACK, "2.0.0") == "draining"
        with pytest.raises(DrainTimeout) as still:
            await rt.wait_drained(PACK, "2.0.0", timeout=0.05)
        assert still.value.run_ids == (run.run_id,)
        async with rt.run("inst") as usual:
            assert (usual.version, usual.chosen) == ("1.0.0", False)
    assert rt.version_status(PACK, "2.0.0") == "drained"
    await rt.wait_drained(PACK, "2.0.0", timeout=5)
    assert await rt.history("inst") == history
    assert rt.resolve("inst").version == "1.0.0"
    assert await rt.call("inst", "whoami", version="vendor:2.0.0") == {
        "version": "2.0.0",
        "marker": "m2.0.0",
    }


async def test_a_resumed_run_named_with_a_version__keeps_its_original_binding(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0", "2.0.0")
    async with rt.run("inst", run_id="again"):
        pass
    async with rt.run("inst", run_id="again", version="2.0.0") as run:
        assert (run.version, run.resumed, run.chosen) == ("1.0.0", True, False)


@pytest.mark.parametrize(
    ("version", "code"),
    [
        ("9.9.9", "not_found"),  # no such version
        ("custom:2.0.0", "not_found"),  # the project has no custom row of it
        ("latest", "invalid_version"),  # a version, not a pin
        ("", "invalid_version"),
        (2, "invalid_argument"),
        (b"2.0.0", "invalid_argument"),
    ],
)
async def test_a_chosen_version_the_installation_cannot_move_to__is_refused_and_starts_nothing(
    rt: Runtime, version: Any, code: str
) -> None:
    await setup_probe(rt, "1.0.0", "2.0.0")
    with pytest.raises(packrun.PackrunError) as refused:
        async with rt.run("inst", version=version):
            pass
    assert refused.value.code == code
    assert repr(version)[:20] in str(refused.value) or code == "invalid_argument"
    assert rt.stats().runs_started == 0
    assert_idle(rt, ("1.0.0", "2.0.0"))


async def test_a_chosen_version__of_another_pack_or_retired__is_refused(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0", "2.0.0")
    await rt.publish(probe("3.0.0", "m3", pack="other"))
    with pytest.raises(NotFound):
        async with rt.run("inst", version="3.0.0"):
            pass
    await rt.retire(PACK, "2.0.0", acknowledge_breaking=True)
    with pytest.raises(packrun.PackrunError) as refused:
        async with rt.run("inst", version="2.0.0"):
            pass
    assert refused.value.code == "invalid_argument"
    assert "retired" in str(refused.value)
    assert rt.stats().runs_started == 0


async def test_a_chosen_version_outside_the_contract_window__is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    manifest = packrun.decode_manifest(
        {"id": PACK, "version": "1.5.0", "contract": 1, "tools": [{"id": "whoami"}]}
    )
    code = b'def handle(action, params, auth):\n    return {"data": None}\n'
    async with packrun.open_runtime(url, in_process=TRUSTED) as both:
        await setup_probe(both, "2.0.0")
        await both.publish(bundle_bytes(manifest, {"__init__.py": code}))
        async with both.run("inst", version="1.5.0") as run:  # inside this runtime's window
            assert (run.version, run.adapter, run.chosen) == ("1.5.0", "1->2", True)
    async with packrun.open_runtime(url, in_process=TRUSTED, generations={2}) as rt:
        with pytest.raises(IntegrationContractIncompatible):
            async with rt.run("inst", version="1.5.0"):
                pass
        assert rt.stats().runs_started == 0


async def test_run_ids_made_by_runtimes_are_unique_across_runtimes_on_one_store(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    seen: list[str] = []
    async with (
        packrun.open_runtime(url, in_process=TRUSTED) as one,
        packrun.open_runtime(url, in_process=TRUSTED) as two,
    ):
        await setup_probe(one, "1.0.0")
        await two.refresh()
        for runtime in (one, two, one, two):
            for _ in range(3):
                async with runtime.run("inst") as run:
                    seen.append(run.run_id)
                    assert not run.resumed
    assert len(set(seen)) == len(seen) == 12
    for run_id in seen:
        assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", run_id), run_id
    assert len({run_id.partition("-")[0] for run_id in seen}) == 2  # one prefix a runtime


def test_the_runs_module_does_not_import_the_runtime() -> None:
    import ast

    import packrun._runs

    tree = ast.parse(Path(packrun._runs.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "packrun._runtime" not in imported
    assert "packrun._tracker" not in imported


# --- 6. credentials --------------------------------------------------------------------------


async def test_credentials_never_reach_the_store_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"s3cr3t-XYZ-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "state.db"
    run_ids: list[str] = []

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file()}

    async with packrun.open_runtime(f"sqlite:///{db}", in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        await rt.publish(dist("legacy-crm", "1.0.0"))
        await rt.install("legacy", "legacy-crm")
        await rt.publish(gen1_echo())
        await rt.install("echo", "old-echo")
        for auth in (
            packrun.Auth.api_key(secret),
            packrun.Auth.oauth2(secret, scopes=("contacts.read",)),
            packrun.Auth.basic("user", secret),
        ):
            async with rt.run("inst", workflow_id="wf-secret", auth=auth) as run:
                run_ids.append(run.run_id)
                await run.call("whoami")
                await run.call("context")
                with pytest.raises(ToolFailed):
                    await run.call("echo_key")
        async with rt.run("legacy", auth=packrun.Auth.basic(secret, secret)) as run:
            run_ids.append(run.run_id)
            await run.call("list_accounts", {"limit": 1})
        with pytest.raises(ToolFailed):
            await rt.call("echo", "login", auth=packrun.Auth.basic("user", secret))
        open_files = files()
        assert "state.db-wal" in open_files
    closed_files = files()

    for label, snapshot in (("open", open_files), ("closed", closed_files)):
        everything = b"".join(snapshot.values())
        for run_id in run_ids:  # the runs were recorded: the bytes searched are the right ones
            assert run_id.encode() in everything, (label, run_id)
        for name, data in snapshot.items():
            assert secret.encode() not in data, (label, name)
            assert secret.encode("utf-16-le") not in data, (label, name)
    assert secret not in caplog.text


async def test_the_repr_of_a_run_its_context_and_its_auth_hold_no_secret(rt: Runtime) -> None:
    secret = "s3cr3t-XYZ-repr"
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst", run_id="r", auth=packrun.Auth.api_key(secret)) as run:
        ctx = (await run.call("context"))["ctx"]
        shown = [repr(run), str(run), repr(ctx), str(ctx), repr(ctx.auth), str(ctx.auth)]
        assert "r" in repr(run)
        assert PACK in repr(run)
        assert ctx.auth.credentials["key"] == secret  # the tool does get it
    for text in shown:
        assert secret not in text, text


@pytest.mark.parametrize("kind", ["gen2_api_key", "gen1_basic"])
async def test_a_tool_echoing_the_credential_gets_it_redacted_in_tool_failed(
    rt: Runtime, kind: str
) -> None:
    secret = "s3cr3t-XYZ-echoed"
    if kind == "gen2_api_key":
        await setup_probe(rt, "1.0.0")
        iid, tool, auth = "inst", "echo_key", packrun.Auth.api_key(secret)
    else:
        await rt.publish(gen1_echo())
        await rt.install("echo", "old-echo")
        iid, tool, auth = "echo", "login", packrun.Auth.basic("user", secret)
    async with rt.run(iid, auth=auth) as run:
        with pytest.raises(ToolFailed) as failed:
            await run.call(tool)
    error = failed.value
    assert "<redacted>" in str(error)
    assert error.code == "tool_error"
    texts = [
        str(error),
        repr(error),
        error.detail,
        error.tool_message,
        *map(str, error.args),
        "".join(traceback.format_exception(error)),
    ]
    for text in texts:
        assert secret not in text, text


# --- 7. hundreds of concurrent runs while pins move and versions are overwritten -----------------

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
VARIANTS = 4
PINS = ("1.0.0", "1.1.0", "2.0.0", "latest", "latest-vendor")


async def test_hundreds_of_concurrent_runs_each_see_exactly_one_version_and_digest(
    store_url: str,
) -> None:
    runs = 300
    calls = 5
    ops = 30
    builds = {(v, k): probe(v, f"{v}#{k}") for v in VERSIONS for k in range(VARIANTS)}
    marker_digest = {f"{v}#{k}": digest(data) for (v, k), data in builds.items()}
    installations = ("i-a", "i-b", "i-c", "i-d")
    stages = [anyio.Event() for _ in range(ops + 1)]
    seen: dict[str, list[tuple[str, str]]] = {}
    bound: dict[str, tuple[str, str | None]] = {}
    at_start: dict[str, tuple[str, str | None]] = {}

    async with packrun.open_runtime(store_url, in_process=TRUSTED) as rt:
        for v in VERSIONS:
            await rt.publish(builds[(v, 0)])
        for n, iid in enumerate(installations):
            await rt.install(iid, PACK, pin=PINS[n])
        await rt.set_immutable_versions(False)

        async def mover() -> None:
            stages[0].set()
            for op in range(1, ops + 1):
                iid = installations[op % len(installations)]
                if op % 3 == 0:  # a forced overwrite of one version with another build
                    version = VERSIONS[op % len(VERSIONS)]
                    await rt.publish(builds[(version, op % VARIANTS)], force=True)
                elif op % 3 == 1:
                    await rt.set_pin(iid, PINS[op % len(PINS)])
                else:  # a rollback to what the pin was before
                    previous = (await rt.history(iid))[-1].from_pin or PINS[0]
                    await rt.set_pin(iid, previous, origin="rollback")
                stages[op].set()
                await anyio.sleep(0)

        async def one(i: int) -> None:
            run_id = f"run-{i:03d}"
            iid = installations[i % len(installations)]
            stage = i % (ops - calls)
            await stages[stage].wait()
            for _ in range(i % 5):
                await anyio.sleep(0)
            res = rt.resolve(iid)  # no checkpoint from here to the start of the run
            at_start[run_id] = (res.version, res.digest)
            async with rt.run(iid, run_id=run_id, auth=packrun.Auth.api_key("k")) as run:
                bound[run_id] = (run.version, run.digest)
                answers = seen[run_id] = []
                for c in range(calls):
                    tool = "whoami_sync" if c % 2 else "whoami"
                    answer = await run.call(tool)
                    answers.append((answer["version"], answer["marker"]))
                    await stages[min(stage + c + 1, ops)].wait()  # pins move under the run
                    await anyio.sleep(0)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(mover)
                for i in range(runs):
                    tg.start_soon(one, i)

        assert len(seen) == runs
        for run_id, answers in seen.items():
            version, dig = bound[run_id]
            assert at_start[run_id] == (version, dig), run_id
            assert len(answers) == calls
            assert len(set(answers)) == 1, (run_id, answers)
            [(answered_version, marker)] = set(answers)
            assert answered_version == version, run_id
            assert marker_digest[marker] == dig, run_id
        distinct = set(bound.values())
        assert len(distinct) >= 4, distinct  # the runs did start under different resolutions
        per_version = Counter(v for v, _ in bound.values())
        assert set(per_version) == set(VERSIONS), per_version

        for version in VERSIONS:
            assert rt.in_flight(PACK, version) == 0
            assert rt.runs_in_flight(PACK, version) == []
            await rt.wait_drained(PACK, version, timeout=5)
        for iid in installations:
            assert rt.in_flight_for(iid) == 0
        stats = rt.stats()
        assert (stats.runs_started, stats.runs_in_flight) == (runs, 0)
        if store_url.startswith("sqlite"):  # and the store agrees: no run left live in it
            async with packrun.open_runtime(store_url, in_process=TRUSTED) as other:
                for version in VERSIONS:
                    await other.wait_drained(PACK, version, timeout=5)


# --- fixes found in review: ends racing reopens, leases, close, limits, redaction -----------------

LEAKY_CODE = b"""\
from packrun.sdk import Integration, ToolError

integration = Integration("leaky")


@integration.tool("code")
async def code(ctx, input):
    raise ToolError("bad-" + ctx.auth.credentials["password"], "no")


@integration.tool("header")
async def header(ctx, input):
    raise ToolError("refused", "sent " + str(ctx.auth.headers()))


@integration.tool("crash")
async def crash(ctx, input):
    raise ValueError("auth was " + repr(dict(ctx.auth.credentials)))


@integration.tool("log")
async def log(ctx, input):
    ctx.logger.warning("calling with password %s as %s", ctx.auth.credentials["password"], "user")
    return {"username": ctx.auth.credentials["username"]}
"""


def leaky() -> bytes:
    tools = [{"id": t} for t in ("code", "header", "crash", "log")]
    manifest = packrun.decode_manifest(
        {"id": "leaky", "version": "1.0.0", "contract": 2, "tools": tools}
    )
    return bundle_bytes(manifest, {"__init__.py": LEAKY_CODE})


async def test_redaction__tool_codes_headers_raw_exceptions_and_log_lines(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await rt.publish(leaky())
    await rt.install("leak", "leaky")
    auth = packrun.Auth.basic("user", "hunter2pw")
    with pytest.raises(packrun.ToolFailed) as code:
        await rt.call("leak", "code", auth=auth)
    assert "hunter2pw" not in str(code.value)
    assert code.value.tool_code == "bad-<redacted>"
    with pytest.raises(packrun.ToolFailed) as header:
        await rt.call("leak", "header", auth=auth)
    assert "dXNlcjpodW50ZXIycHc=" not in str(header.value)  # base64 of user:hunter2pw
    with pytest.raises(ValueError, match="auth was") as crash:
        await rt.call("leak", "crash", auth=auth)
    assert "hunter2pw" not in str(crash.value)
    with caplog.at_level("WARNING", logger="packrun.tools.leaky"):
        assert await rt.call("leak", "log", auth=auth) == {"username": "user"}
    assert "calling with password <redacted> as <redacted>" in caplog.text
    assert "hunter2pw" not in caplog.text


async def test_a_run_that_has_ended__refuses_further_calls(rt: Runtime) -> None:
    await setup_probe(rt, "1.0.0")
    async with rt.run("inst") as run:
        await run.call("whoami")
    with pytest.raises(packrun.InvalidArgument, match="has ended"):
        await run.call("whoami")


@pytest.mark.parametrize("run_id", ["", "x" * 201, "line\nbreak", " lead"])
async def test_an_unusable_run_id__is_invalid_argument(rt: Runtime, run_id: str) -> None:
    await setup_probe(rt, "1.0.0")
    with pytest.raises(packrun.InvalidArgument, match="run id"):
        async with rt.run("inst", run_id=run_id):
            pass
    assert_idle(rt)


@pytest.mark.parametrize("generations", [{0, 1, 2}, {2, 3}, set()])
async def test_open_runtime__generations_it_cannot_serve__are_refused(
    generations: set[int],
) -> None:
    with pytest.raises(packrun.InvalidArgument, match="generations"):
        packrun.open_runtime("memory:", generations=generations, in_process=TRUSTED)


async def test_sync_tools__run_on_the_runtimes_own_threads(store_url: str) -> None:
    async with packrun.open_runtime(store_url, tool_threads=1, in_process=TRUSTED) as rt:
        await setup_probe(rt, "1.0.0")
        event = threading.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(rt.call, "inst", "block", {"event": event, "timeout": 0.3})
            await anyio.sleep(0.1)
            event.set()
        # With one tool thread the two blocking tools ran one after the other; the store's own
        # writes (the runs' starts and ends) were not held up behind them.
        assert_idle(rt)


async def test_closing_a_runtime_with_runs_open__releases_their_counts(store_url: str) -> None:
    rt = packrun.open_runtime(store_url, in_process=TRUSTED)
    async with rt:
        await setup_probe(rt, "1.0.0")
        scope = rt.run("inst", run_id="left-open")
        await scope.__aenter__()
        assert rt.in_flight(PACK, "1.0.0") == 1
    assert rt.in_flight(PACK, "1.0.0") == 0
    assert rt.stats().runs_in_flight == 0


async def test_a_run_id_reopened_right_after_it_ended__stays_in_flight_for_others(
    shared_url: str,
) -> None:
    async with (
        packrun.open_runtime(shared_url, in_process=TRUSTED) as a,
        packrun.open_runtime(shared_url, in_process=TRUSTED) as b,
    ):
        await setup_probe(a, "1.0.0")
        async with a.run("inst", run_id="r"):
            pass
        async with a.run("inst", run_id="r") as again:  # its end was still queued
            assert again.resumed is True
            await anyio.sleep(0.05)  # longer than the ends' batching
            await b.refresh()
            assert b.in_flight(PACK, "1.0.0") == 1
            assert b.runs_in_flight(PACK, "1.0.0") == ["r"]


async def test_a_run_id_held_live_by_another_runtime__is_not_taken_over(shared_url: str) -> None:
    async with (
        packrun.open_runtime(shared_url, in_process=TRUSTED) as a,
        packrun.open_runtime(shared_url, in_process=TRUSTED) as b,
    ):
        await setup_probe(a, "1.0.0")
        await b.refresh()
        async with a.run("inst", run_id="shared"):
            with pytest.raises(
                packrun.InvalidArgument, match="holds it under a live lease"
            ) as held:
                async with b.run("inst", run_id="shared"):
                    pass
            assert str(held.value).startswith(
                "[invalid_argument] 'shared' is not a valid run id: expected an id not in flight "
                "elsewhere (runtime "
            )
            assert "one of" not in str(held.value)
            assert b.stats().runs_in_flight == 0  # b holds nothing; a's run still counts
            await b.refresh()
            assert b.runs_in_flight(PACK, "1.0.0") == ["shared"]
        async with b.run("inst", run_id="shared") as resumed:  # once A has ended it
            assert resumed.resumed is True


async def test_leases__are_renewed_for_runs_in_flight_only(store_url: str) -> None:
    store = packrun._stores.open_store(store_url)
    await store.open()
    try:
        now = time.time()
        record = packrun._stores.RunRecord(
            "a", "inst", PACK, "1.0.0", "sha256:x", 2, "vendor", None, packrun._runtime._now()
        )
        await store.start_runs([record, record._replace(run_id="b")], "me", now, now + 60)
        await store.renew_leases("me", ["a"], now + 600)
        leases = {r.record.run_id: r.lease_until for r in await store.live_runs(now)}
        # "a" renewed to ten minutes, "b" left at one. PostgreSQL measures leases on its own
        # clock (the lengths are ours): here the same machine's, give or take the calls between.
        assert set(leases) == {"a", "b"}
        assert leases["a"] == pytest.approx(now + 600, abs=30)
        assert leases["b"] == pytest.approx(now + 60, abs=30)
        await store.end_runs([("a", frozenset())], "someone-else", packrun._runtime._now())
        assert {r.record.run_id for r in await store.live_runs(now)} == {"a", "b"}
        await store.end_runs([("a", frozenset())], "me", packrun._runtime._now())
        assert {r.record.run_id for r in await store.live_runs(now)} == {"b"}
    finally:
        await store.close()
