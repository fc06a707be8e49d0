"""The contract-generation adapters (DESIGN section 6), through the runtime and directly.

* the flat generation-1 ``auth`` dict, per mode, as ``flat_auth`` builds it and as a generation-1
  bundle (sync and async ``handle``) actually receives it through a runtime;
* generation-1 answers turned into results and typed errors: ``{"data"}``, ``{"error"}``, malformed
  answers (``invalid_response``), exceptions and ``ToolError`` raised inside ``handle``;
* what a run shows and counts: ``run.adapter``, ``run.generation``, ``stats().adapter_runs`` and
  the rate-limited warning;
* the registry shape: a hypothetical ``2 -> 3`` step chained after ``1 -> 2`` only when the
  window admits generation 1, and a generation without a step refused;
* the golden transcripts of the legacy-crm samples in ``tests/data/transcripts`` (written by
  ``tests/record_transcripts.py``), replayed call by call.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import packrun
from packrun import Auth, BundleContractIncompatible, NotFound, Runtime, ToolFailed
from packrun._adapters import STEPS, Dispatcher, Step, ToolEntry, dispatcher_for
from packrun._adapters._gen1 import answer_of, flat_auth
from packrun._bundle import LoadedBundle, bundle_bytes, load_bundle
from packrun.errors import PackrunError
from packrun.sdk import ToolContext, ToolError

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ROOT / "bundles"
TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "transcripts"
LEGACY_VERSIONS = ("1.0.0", "1.1.0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dist(pack: str, version: str) -> Path:
    """The built artifact of a sample."""
    return BUNDLES / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


# --- bundles built in memory --------------------------------------------------------------------

GEN1_TOOLS = (
    "echo_auth",
    "echo",
    "answer",
    "fail",
    "explode",
    "raise_tool_error",
    "leak",
    "thread",
    "mutate",
)

GEN1_CODE = '''
"""A generation-1 test bundle: one handle(action, params, auth)."""
import threading

from packrun.sdk import ToolError


class Boom(Exception):
    """An error of the bundle's own."""


ANSWERS = {
    "none": None,
    "text": "x",
    "list": [1],
    "empty": {},
    "error_text": {"error": "oops"},
    "error_none": {"error": None},
    "no_code": {"error": {"message": "no code"}},
    "empty_code": {"error": {"code": "", "message": "m"}},
    "int_code": {"error": {"code": 7, "message": "m"}},
    "both": {"data": 1, "error": {"code": "conflict", "message": "error wins"}},
    "both_bad": {"data": 1, "error": "oops"},
    "no_message": {"error": {"code": "bare"}},
    "int_message": {"error": {"code": "numbered", "message": 42}},
    "secret_keys": {"secret": "s3cr3t-value"},
}


ASYNC_def handle(action, params, auth):
    if action == "echo_auth":
        return {"data": auth}
    if action == "echo":
        return {"data": params}
    if action == "answer":
        return ANSWERS[params["case"]]
    if action == "fail":
        return {"error": {"code": params["code"], "message": params["message"]}}
    if action == "explode":
        raise Boom("boom", action)
    if action == "raise_tool_error":
        raise ToolError("rate_limited", "slow down")
    if action == "leak":
        return {"error": {"code": "denied", "message": "wrong password " + auth["password"]}}
    if action == "thread":
        return {"data": threading.get_ident()}
    if action == "mutate":
        params["added"] = True
        params.pop("x", None)
        auth["type"] = "tampered"
        return {"data": sorted(params)}
    return {"error": {"code": "unknown_action", "message": action}}
'''


def manifest(pack: str, version: str, contract: int, tools: tuple[str, ...]) -> packrun.Manifest:
    """A minimal manifest stamped with ``contract``."""
    return packrun.decode_manifest(
        {
            "id": pack,
            "version": version,
            "contract": contract,
            "tools": [{"id": tool} for tool in tools],
        }
    )


def gen1_bundle(pack: str, *, is_async: bool, version: str = "1.0.0") -> bytes:
    """A generation-1 bundle with the tools of :data:`GEN1_TOOLS`, sync or async ``handle``."""
    code = GEN1_CODE.replace("ASYNC_", "async " if is_async else "")
    return bundle_bytes(manifest(pack, version, 1, GEN1_TOOLS), {"__init__.py": code.encode()})


MODERN_CODE = '''
"""A test bundle built against generation {contract}: an Integration with two tools."""
from packrun.sdk import Integration, ToolError

integration = Integration({pack!r})


@integration.tool("ping")
async def ping(ctx, input):
    return {{"pong": dict(input), "mode": ctx.auth.mode}}


@integration.tool("refuse")
def refuse(ctx, input):
    raise ToolError("nope", "refused")
'''


def modern_bundle(pack: str, contract: int) -> bytes:
    """A bundle of generation ``contract`` (2 or more) with the tools ``ping`` and ``refuse``."""
    code = MODERN_CODE.format(pack=pack, contract=contract)
    return bundle_bytes(
        manifest(pack, "1.0.0", contract, ("ping", "refuse")), {"__init__.py": code.encode()}
    )


@dataclass(frozen=True, slots=True)
class Gen1:
    """A runtime with a generation-1 test bundle installed as ``installation``."""

    rt: Runtime
    installation: str
    is_async: bool

    async def call(
        self, tool: str, input: dict[str, Any] | None = None, auth: Auth | None = None
    ) -> Any:
        return await self.rt.call(self.installation, tool, input, auth=auth)


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:") as runtime:
        yield runtime


@pytest.fixture(params=["sync", "async"])
async def gen1(request: pytest.FixtureRequest, rt: Runtime) -> Gen1:
    is_async = request.param == "async"
    pack = f"gen1-{request.param}"
    await rt.publish(gen1_bundle(pack, is_async=is_async))
    await rt.install(pack, pack, "1.0.0")
    return Gen1(rt, pack, is_async)


@pytest.fixture(params=["sync", "async"])
async def gen1_in_process(request: pytest.FixtureRequest) -> AsyncIterator[Gen1]:
    """``gen1`` in a runtime that trusts its code to run in-process (threads, the bundle's own
    exception classes): what the adapter does where the executor imports the bundle itself."""
    is_async = request.param == "async"
    pack = f"gen1-{request.param}"
    async with packrun.open_runtime("memory:", in_process={"vendor"}) as runtime:
        await runtime.publish(gen1_bundle(pack, is_async=is_async))
        await runtime.install(pack, pack, "1.0.0")
        yield Gen1(runtime, pack, is_async)


# --- 1. the flat auth dict ----------------------------------------------------------------------

# Every mode, the Auth a generation-2 caller passes and the dict DESIGN section 6 prescribes.
AUTH_CASES: list[tuple[str, Auth, dict[str, Any]]] = [
    ("api_key", Auth.api_key("k-123"), {"type": "api_key", "key": "k-123"}),
    (
        "api_key-custom-header",
        Auth.api_key("k-456", header="Authorization"),
        {"type": "api_key", "key": "k-456"},
    ),
    (
        "oauth2-two-scopes",
        Auth.oauth2("tok-1", scopes=["a", "b"]),
        {"type": "oauth2", "access_token": "tok-1", "scope": "a b"},
    ),
    (
        "oauth2-one-scope",
        Auth.oauth2("tok-2", scopes=("contacts.read",)),
        {"type": "oauth2", "access_token": "tok-2", "scope": "contacts.read"},
    ),
    (
        "oauth2-no-scope",
        Auth.oauth2("tok-3"),
        {"type": "oauth2", "access_token": "tok-3", "scope": ""},
    ),
    (
        "basic",
        Auth.basic("ada", "pw-ada"),
        {"type": "basic", "username": "ada", "password": "pw-ada"},
    ),
    (
        "basic-empty-password",
        Auth.basic("ada", ""),
        {"type": "basic", "username": "ada", "password": ""},
    ),
    ("none", Auth.none(), {"type": "none"}),
]
AUTH_IDS = [case[0] for case in AUTH_CASES]


@pytest.mark.parametrize(("name", "auth", "expected"), AUTH_CASES, ids=AUTH_IDS)
def test_flat_auth_is_the_generation_1_dict_of_each_mode(
    name: str, auth: Auth, expected: dict[str, Any]
) -> None:
    flat = flat_auth(auth)
    assert type(flat) is dict
    assert flat == expected
    assert list(flat) == list(expected)  # same keys, nothing extra, "type" first


def test_flat_auth_returns_a_fresh_dict_every_time() -> None:
    auth = Auth.basic("ada", "pw-ada")
    first = flat_auth(auth)
    first["username"] = "mallory"
    assert flat_auth(auth) == {"type": "basic", "username": "ada", "password": "pw-ada"}
    assert auth.credentials["username"] == "ada"


@pytest.mark.parametrize(("name", "auth", "expected"), AUTH_CASES, ids=AUTH_IDS)
async def test_a_generation_1_handle_receives_exactly_the_flat_auth_dict(
    gen1: Gen1, name: str, auth: Auth, expected: dict[str, Any]
) -> None:
    received = await gen1.call("echo_auth", {}, auth)
    assert received == expected
    assert list(received) == list(expected)


async def test_a_run_without_auth_gives_the_handle_the_none_dict(gen1: Gen1) -> None:
    assert await gen1.call("echo_auth") == {"type": "none"}


async def test_a_handle_that_mutates_auth_and_params_changes_nothing_for_the_caller(
    gen1: Gen1,
) -> None:
    auth = Auth.basic("ada", "pw-ada")
    params = {"x": 1, "y": 2}
    async with gen1.rt.run(gen1.installation, auth=auth) as run:
        assert await run.call("mutate", params) == ["added", "y"]
        assert params == {"x": 1, "y": 2}
        # the next call of the same run gets a fresh auth dict, not the tampered one
        assert await run.call("echo_auth", {}) == {
            "type": "basic",
            "username": "ada",
            "password": "pw-ada",
        }
    assert auth.mode == "basic"


async def test_a_sync_handle_runs_off_the_event_loop_and_an_async_one_on_it(
    gen1_in_process: Gen1,
) -> None:
    gen1 = gen1_in_process
    ident = await gen1.call("thread")
    if gen1.is_async:
        assert ident == threading.get_ident()
    else:
        assert ident != threading.get_ident()


# --- 2. answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        None,
        0,
        False,
        "",
        "text",
        1.5,
        [],
        [1, "two", None, [3.0]],
        {},
        {"nested": {"list": [{"deep": [None, True]}], "n": -1}},
    ],
)
def test_answer_of_data_is_the_data_itself(data: object) -> None:
    answer = {"data": data}
    assert answer_of("t", answer) is data


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ({"code": "not_found", "message": "no account 'a-013'"}, "not_found", "no account 'a-013'"),
        ({"code": "c", "message": ""}, "c", ""),
        ({"code": "bare"}, "bare", ""),
        ({"code": "numbered", "message": 42}, "numbered", "42"),
    ],
)
def test_answer_of_error_raises_a_tool_error_with_its_code_and_message(
    error: dict[str, Any], code: str, message: str
) -> None:
    with pytest.raises(ToolError) as raised:
        answer_of("t", {"error": error})
    assert (raised.value.code, raised.value.message) == (code, message)


def test_answer_of_an_answer_with_data_and_error_is_the_error() -> None:
    with pytest.raises(ToolError) as raised:
        answer_of("t", {"data": 1, "error": {"code": "conflict", "message": "error wins"}})
    assert (raised.value.code, raised.value.message) == ("conflict", "error wins")


@pytest.mark.parametrize(
    ("answer", "shape"),
    [
        (None, "returned NoneType"),
        ("x", "returned str"),
        ([1], "returned list"),
        (1, "returned int"),
        ({}, "returned a dict with []"),
        ({"error": "oops"}, "returned a dict with ['error']"),
        ({"error": None}, "returned a dict with ['error']"),
        ({"error": {"message": "no code"}}, "returned a dict with ['error']"),
        ({"error": {"code": "", "message": "m"}}, "returned a dict with ['error']"),
        ({"error": {"code": 7, "message": "m"}}, "returned a dict with ['error']"),
        ({"data": 1, "error": "oops"}, "returned a dict with ['data', 'error']"),
        ({"result": 1}, "returned a dict with ['result']"),
    ],
)
def test_answer_of_a_malformed_answer_is_invalid_response_naming_what_came_back(
    answer: object, shape: str
) -> None:
    with pytest.raises(ToolError) as raised:
        answer_of("get_thing", answer)
    assert raised.value.code == "invalid_response"
    assert raised.value.message.startswith(f"generation-1 handle('get_thing', ...) {shape};")
    assert "expected {'data': ...} or {'error': {'code': ..., 'message': ...}}" in (
        raised.value.message
    )


@pytest.mark.parametrize(
    ("case", "shape"),
    [
        ("none", "returned NoneType"),
        ("text", "returned str"),
        ("list", "returned list"),
        ("empty", "returned a dict with []"),
        ("error_text", "returned a dict with ['error']"),
        ("error_none", "returned a dict with ['error']"),
        ("no_code", "returned a dict with ['error']"),
        ("empty_code", "returned a dict with ['error']"),
        ("int_code", "returned a dict with ['error']"),
        ("both_bad", "returned a dict with ['data', 'error']"),
    ],
)
async def test_a_malformed_answer_through_a_run_is_tool_failed_invalid_response(
    gen1: Gen1, case: str, shape: str
) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("answer", {"case": case})
    assert failed.value.code == "tool_error"
    assert failed.value.tool == "answer"
    assert failed.value.tool_code == "invalid_response"
    assert failed.value.tool_message.startswith(f"generation-1 handle('answer', ...) {shape};")


async def test_an_invalid_response_names_the_keys_never_the_values(gen1: Gen1) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("answer", {"case": "secret_keys"})
    assert failed.value.tool_code == "invalid_response"
    assert "['secret']" in failed.value.tool_message
    assert "s3cr3t-value" not in str(failed.value)


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("both", "conflict", "error wins"),
        ("no_message", "bare", ""),
        ("int_message", "numbered", "42"),
    ],
)
async def test_an_error_answer_through_a_run_is_tool_failed_with_its_code(
    gen1: Gen1, case: str, code: str, message: str
) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("answer", {"case": case})
    assert (failed.value.code, failed.value.tool, failed.value.tool_code) == (
        "tool_error",
        "answer",
        code,
    )
    assert failed.value.tool_message == message


@pytest.mark.parametrize(
    "data",
    [None, [], [1, [2, [3]]], {"a": {"b": [None, False, 0, ""]}}, "text", 0, -2.5],
    ids=["none", "empty-list", "nested-lists", "nested-dict", "text", "zero", "float"],
)
async def test_data_through_a_run_is_returned_as_is(gen1: Gen1, data: object) -> None:
    assert await gen1.call("echo", {"value": data}) == {"value": data}


async def test_an_error_answer_from_the_sample_is_tool_failed(gen1: Gen1) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("fail", {"code": "rate_limited", "message": "try later"})
    assert str(failed.value) == "[tool_error] tool 'fail' failed with 'rate_limited': try later"


async def test_an_exception_raised_in_handle_propagates_unchanged(gen1_in_process: Gen1) -> None:
    gen1 = gen1_in_process
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the bundle's own class
        await gen1.call("explode")
    assert type(raised.value).__name__ == "Boom"
    assert type(raised.value).__module__.startswith("_packrun_bundle_gen1_")
    assert raised.value.args == ("boom", "explode")
    assert not isinstance(raised.value, PackrunError | ToolError)


async def test_an_exception_raised_in_handle_in_the_sandbox_is_tool_failed_naming_it(
    gen1: Gen1,
) -> None:
    with pytest.raises(ToolFailed) as raised:
        await gen1.call("explode")
    assert raised.value.tool_code == "unhandled_exception"
    assert raised.value.tool_message.startswith("Boom: ")


async def test_a_tool_error_raised_in_handle_is_tool_failed(gen1: Gen1) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("raise_tool_error")
    assert (failed.value.tool, failed.value.tool_code, failed.value.tool_message) == (
        "raise_tool_error",
        "rate_limited",
        "slow down",
    )


async def test_a_credential_echoed_in_an_error_message_is_redacted(gen1: Gen1) -> None:
    with pytest.raises(ToolFailed) as failed:
        await gen1.call("leak", {}, Auth.basic("ada", "hunter2-secret"))
    assert failed.value.tool_code == "denied"
    assert failed.value.tool_message == "wrong password <redacted>"
    assert "hunter2-secret" not in str(failed.value)


async def test_an_unknown_tool_is_not_found_before_handle_is_called(gen1: Gen1) -> None:
    with pytest.raises(NotFound) as missing:
        await gen1.call("no_such_action")
    assert missing.value.code == "not_found"
    assert "'no_such_action'" in str(missing.value)
    assert set(GEN1_TOOLS) <= set(missing.value.known)


# --- 3. what a run shows and counts -------------------------------------------------------------


async def install_samples(rt: Runtime) -> None:
    """legacy-crm 1.0.0 and 1.1.0 (generation 1) and acme 1.0.0 (generation 2), one each."""
    for version in LEGACY_VERSIONS:
        await rt.publish(dist("legacy-crm", version))
        await rt.install(f"crm-{version}", "legacy-crm", version)
    await rt.publish(dist("acme", "1.0.0"))
    await rt.install("acme", "acme", "1.0.0")


async def test_a_run_names_its_adapter_and_generation(rt: Runtime) -> None:
    await install_samples(rt)
    for version in LEGACY_VERSIONS:
        async with rt.run(f"crm-{version}", auth=Auth.basic("ada", "pw-ada")) as run:
            assert (run.adapter, run.generation, run.contract) == ("1->2", 1, 1)
            assert "adapter 1->2" in repr(run)
            accounts = await run.call("list_accounts", {"limit": 2})
            assert [a["id"] for a in accounts["accounts"]] == ["a-001", "a-002"]
    async with rt.run("acme", auth=Auth.api_key("acme-key")) as run:
        assert (run.adapter, run.generation, run.contract) == (None, 2, 2)
        assert "adapter" not in repr(run)


async def test_adapter_runs_count_runs_per_pack_version_and_adapter(rt: Runtime) -> None:
    await install_samples(rt)
    assert rt.stats().adapter_runs == {}
    auth = Auth.basic("ada", "pw-ada")
    for _ in range(3):
        await rt.call("crm-1.0.0", "list_accounts", {}, auth=auth)
    with pytest.raises(ToolFailed):  # a run whose call fails still ran through the adapter
        await rt.call("crm-1.0.0", "get_account", {"id": "a-999"}, auth=auth)
    async with rt.run("crm-1.1.0", auth=auth) as run:  # one run, several calls: counted once
        await run.call("list_accounts", {})
        await run.call("create_account", {"name": "Initech"})
    for _ in range(5):
        async with rt.run("acme", auth=Auth.api_key("acme-key")):
            pass
    stats = rt.stats()
    assert stats.adapter_runs == {
        ("legacy-crm", "1.0.0", "1->2"): 4,
        ("legacy-crm", "1.1.0", "1->2"): 1,
    }
    assert stats.runs_started == 10
    assert stats.runs_in_flight == 0


async def test_the_previous_generation_warning_is_logged_once_per_version(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="packrun")
    await install_samples(rt)
    auth = Auth.basic("ada", "pw-ada")

    def adapter_warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "packrun" and "adapter" in r.getMessage()
        ]

    for _ in range(25):
        await rt.call("crm-1.0.0", "list_accounts", {}, auth=auth)
    for _ in range(3):
        await rt.call("acme", "list_contacts", {}, auth=Auth.api_key("acme-key"))
    warnings = adapter_warnings()
    assert len(warnings) == 1
    assert warnings[0] == (
        "packrun runs legacy-crm 1.0.0 (contract generation 1) through the 1->2 adapter; "
        "rebuild it with a current SDK so generation 1 can be dropped"
    )
    for _ in range(10):
        await rt.call("crm-1.1.0", "list_accounts", {}, auth=auth)
    warnings = adapter_warnings()
    assert len(warnings) == 2
    assert "legacy-crm 1.1.0 (contract generation 1)" in warnings[1]
    assert rt.stats().adapter_runs == {
        ("legacy-crm", "1.0.0", "1->2"): 25,
        ("legacy-crm", "1.1.0", "1->2"): 10,
    }


# --- 4. the registry shape: steps and the window ------------------------------------------------

# A hypothetical generation 3: a tool's output comes back wrapped as {"v3": output}.


def native(loaded: LoadedBundle) -> dict[str, ToolEntry]:
    """The tools of a bundle of the step's own source generation, as its runtime calls them."""
    return {tool: (fn, inspect.iscoroutinefunction(fn)) for tool, fn in loaded.tools.items()}


def to_gen3(entry: ToolEntry) -> ToolEntry:
    """A generation-2 tool as generation 3 calls it."""
    fn, is_async = entry
    if is_async:

        async def call_async(ctx: ToolContext, input: Mapping[str, Any]) -> Any:
            return {"v3": await fn(ctx, input)}

        return call_async, True

    def call_sync(ctx: ToolContext, input: Mapping[str, Any]) -> Any:
        return {"v3": fn(ctx, input)}

    return call_sync, False


step_calls: list[tuple[str, int, tuple[str, ...]]] = []


def wrap_2_to_3(loaded: LoadedBundle, previous: Mapping[str, ToolEntry]) -> Mapping[str, ToolEntry]:
    """The ``2 -> 3`` step: the previous step's tools, or the bundle's own for a generation-2
    bundle (the first step of a chain receives an empty mapping)."""
    step_calls.append((loaded.bundle.id, loaded.generation, tuple(sorted(previous))))
    source = previous if loaded.generation < 2 else native(loaded)
    return MappingProxyType({tool: to_gen3(entry) for tool, entry in source.items()})


STEP_2_TO_3 = Step(source=2, wrap=wrap_2_to_3)
STEPS_TO_3: Mapping[int, Step] = {**STEPS, 2: STEP_2_TO_3}
ALL_THREE = frozenset({1, 2, 3})


def loaded(data: bytes) -> LoadedBundle:
    """A bundle loaded as a runtime admitting generations 1 to 3 would load it."""
    return load_bundle(data, generations=ALL_THREE)


def context(pack: str, auth: Auth | None = None) -> ToolContext:
    return ToolContext(
        "run-1", "inst-1", pack, "1.0.0", auth or Auth.none(), logging.getLogger("test")
    )


async def call(
    dispatcher: Dispatcher, tool: str, input: Mapping[str, Any], ctx: ToolContext
) -> Any:
    """Call a dispatcher's tool the way a run does (without the worker thread)."""
    fn, is_async = dispatcher.tools[tool]
    return await fn(ctx, input) if is_async else fn(ctx, input)


def test_the_registered_steps_are_exactly_1_to_2_and_read_only() -> None:
    assert set(STEPS) == {1}
    assert STEPS[1].source == 1
    assert STEPS[1].name == "1->2"
    assert STEP_2_TO_3.name == "2->3"
    with pytest.raises(TypeError):
        STEPS[2] = STEP_2_TO_3  # type: ignore[index]
    assert set(STEPS) == {1}


async def test_today_generation_1_goes_through_1_to_2_and_generation_2_directly() -> None:
    old = dispatcher_for(loaded(gen1_bundle("gen1-sync", is_async=False)), {1, 2})
    assert (old.generation, old.adapter) == (1, "1->2")
    assert set(old.tools) == set(GEN1_TOOLS)
    assert await call(old, "echo", {"a": 1}, context("gen1-sync")) == {"a": 1}
    new = dispatcher_for(loaded(modern_bundle("modern", 2)), {1, 2})
    assert (new.generation, new.adapter) == (2, None)
    assert await call(new, "ping", {"a": 1}, context("modern")) == {
        "pong": {"a": 1},
        "mode": "none",
    }


async def test_a_2_to_3_step_serves_a_generation_2_bundle_as_generation_3() -> None:
    step_calls.clear()
    dispatcher = dispatcher_for(
        loaded(modern_bundle("modern", 2)), ALL_THREE, current=3, steps=STEPS_TO_3
    )
    assert (dispatcher.generation, dispatcher.adapter) == (2, "2->3")
    assert set(dispatcher.tools) == {"ping", "refuse"}
    assert [c[:2] for c in step_calls] == [("modern", 2)]
    ctx = context("modern", Auth.api_key("k"))
    assert await call(dispatcher, "ping", {"x": [1]}, ctx) == {
        "v3": {"pong": {"x": [1]}, "mode": "api_key"}
    }
    with pytest.raises(ToolError) as refused:
        await call(dispatcher, "refuse", {}, ctx)
    assert refused.value.code == "nope"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_generation_1_bundle_is_served_through_1_to_2_to_3(is_async: bool) -> None:
    step_calls.clear()
    pack = "gen1-async" if is_async else "gen1-sync"
    dispatcher = dispatcher_for(
        loaded(gen1_bundle(pack, is_async=is_async)), ALL_THREE, current=3, steps=STEPS_TO_3
    )
    assert (dispatcher.generation, dispatcher.adapter) == (1, "1->2->3")
    assert set(dispatcher.tools) == set(GEN1_TOOLS)
    # the 2 -> 3 step got the 1 -> 2 step's tools
    assert step_calls == [(pack, 1, tuple(sorted(GEN1_TOOLS)))]
    ctx = context(pack, Auth.oauth2("tok", scopes=["a", "b"]))
    assert await call(dispatcher, "echo_auth", {}, ctx) == {
        "v3": {"type": "oauth2", "access_token": "tok", "scope": "a b"}
    }
    assert await call(dispatcher, "echo", {"k": None}, ctx) == {"v3": {"k": None}}
    with pytest.raises(ToolError) as failed:
        await call(dispatcher, "fail", {"code": "busy", "message": "later"}, ctx)
    assert (failed.value.code, failed.value.message) == ("busy", "later")


async def test_a_generation_3_bundle_is_called_directly_when_3_is_current() -> None:
    dispatcher = dispatcher_for(
        loaded(modern_bundle("future", 3)), ALL_THREE, current=3, steps=STEPS_TO_3
    )
    assert (dispatcher.generation, dispatcher.adapter) == (3, None)
    assert await call(dispatcher, "ping", {}, context("future")) == {"pong": {}, "mode": "none"}


def test_hops_are_never_chained_beyond_the_window() -> None:
    bundle = loaded(gen1_bundle("gen1-sync", is_async=False))
    with pytest.raises(BundleContractIncompatible) as refused:
        dispatcher_for(bundle, {2, 3}, current=3, steps=STEPS_TO_3)
    error = refused.value
    assert error.code == "BUNDLE_CONTRACT_INCOMPATIBLE"
    assert (error.bundle, error.version, error.generation) == ("gen1-sync", "1.0.0", 1)
    assert error.supported == (2, 3)
    assert error.direction == "too_old"
    assert "this runtime supports 2, 3" in str(error)
    # generation 2 is still in that window, through its one step
    modern = dispatcher_for(loaded(modern_bundle("modern", 2)), {2, 3}, current=3, steps=STEPS_TO_3)
    assert modern.adapter == "2->3"


@pytest.mark.parametrize(
    ("data", "pack", "generation"),
    [
        (modern_bundle("modern", 2), "modern", 2),
        (gen1_bundle("gen1-sync", is_async=False), "gen1-sync", 1),
    ],
    ids=["generation-2", "generation-1"],
)
def test_a_generation_without_a_registered_step_is_refused(
    data: bytes, pack: str, generation: int
) -> None:
    # current is 3 and the window admits 1 to 3, but only the 1 -> 2 step is registered
    with pytest.raises(BundleContractIncompatible) as refused:
        dispatcher_for(loaded(data), ALL_THREE, current=3, steps=STEPS)
    assert refused.value.code == "BUNDLE_CONTRACT_INCOMPATIBLE"
    assert (refused.value.bundle, refused.value.generation) == (pack, generation)
    assert refused.value.direction == "too_old"


def test_a_bundle_newer_than_the_current_generation_is_refused() -> None:
    with pytest.raises(BundleContractIncompatible) as refused:
        dispatcher_for(loaded(modern_bundle("future", 3)), ALL_THREE, current=2, steps=STEPS_TO_3)
    assert (refused.value.generation, refused.value.direction) == (3, "too_new")


def test_a_runtime_without_generation_1_refuses_legacy_crm_at_run_time() -> None:
    bundle = load_bundle(dist("legacy-crm", "1.0.0").read_bytes(), generations={1, 2})
    with pytest.raises(BundleContractIncompatible) as refused:
        dispatcher_for(bundle, {2})
    assert (refused.value.bundle, refused.value.generation, refused.value.supported) == (
        "legacy-crm",
        1,
        (2,),
    )


# --- 5. golden transcripts ----------------------------------------------------------------------


def canonical(value: object) -> bytes:
    """The JSON bytes a result or an error is compared by."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def auth_of(spec: Mapping[str, Any]) -> Auth:
    """The Auth a transcript entry's ``auth`` describes."""
    mode = spec["mode"]
    if mode == "basic":
        return Auth.basic(spec["username"], spec["password"])
    if mode == "api_key":
        return Auth.api_key(spec["key"])
    if mode == "oauth2":
        return Auth.oauth2(spec["access_token"], scopes=list(spec.get("scopes", [])))
    assert mode == "none", f"unknown auth mode {mode!r} in a transcript"
    return Auth.none()


def transcript(version: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (TRANSCRIPTS / f"legacy-crm-{version}.json").read_text(encoding="utf-8")
    )
    return document


OUTCOMES = ("result", "error", "packrun_error")


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_a_transcript_was_recorded_from_the_current_sample_artifact(version: str) -> None:
    recorded = transcript(version)["recorded_with"]
    artifact = dist("legacy-crm", version)
    assert recorded["artifact"] == artifact.relative_to(ROOT).as_posix()
    assert (recorded["pack"], recorded["version"]) == ("legacy-crm", version)
    assert isinstance(recorded["packrun"], str)
    assert recorded["packrun"]
    # a changed sample must be recorded again: python tests/record_transcripts.py
    assert recorded["digest"] == packrun.read_bundle(artifact).digest


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_a_transcript_covers_every_tool_and_every_error_path(version: str) -> None:
    calls = transcript(version)["calls"]
    for entry in calls:
        assert set(entry) == {"tool", "input", "auth", next(k for k in OUTCOMES if k in entry)}
    tools = packrun.read_bundle(dist("legacy-crm", version)).manifest.tool_ids()
    succeeded = {c["tool"] for c in calls if "result" in c}
    assert succeeded == set(tools)
    failed = {(c["tool"], c["error"]["tool_code"]) for c in calls if "error" in c}
    for tool in tools:
        assert (tool, "invalid_input") in failed
        assert (tool, "unauthorized") in failed
    assert ("get_account", "not_found") in failed
    unauthorized_modes = {
        c["auth"]["mode"]
        for c in calls
        if "error" in c and c["error"]["tool_code"] == "unauthorized"
    }
    assert {"api_key", "oauth2", "none", "basic"} <= unauthorized_modes
    assert any(c.get("packrun_error") == "not_found" for c in calls)


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
async def test_a_transcript_replays_byte_for_byte(version: str) -> None:
    # The transcripts record what the bundle itself answers, so the runtime's own checks of the
    # declared input and output stay out of the way.
    async with packrun.open_runtime(
        "memory:", check_input="off", check_output="off", check_auth="off"
    ) as rt:
        await _replay(rt, version)


async def _replay(rt: Runtime, version: str) -> None:
    await rt.publish(dist("legacy-crm", version))
    await rt.install("replay", "legacy-crm", version)
    calls = transcript(version)["calls"]
    assert calls
    for index, entry in enumerate(calls):
        recorded = {k: entry[k] for k in OUTCOMES if k in entry}
        try:
            result = await rt.call(
                "replay", entry["tool"], dict(entry["input"]), auth=auth_of(entry["auth"])
            )
        except ToolFailed as exc:
            replayed: dict[str, Any] = {
                "error": {"tool_code": exc.tool_code, "message": exc.tool_message}
            }
        except PackrunError as exc:
            replayed = {"packrun_error": exc.code}
        else:
            replayed = {"result": result}
        assert canonical(replayed) == canonical(recorded), (
            f"legacy-crm {version} call #{index} {entry['tool']}({entry['input']}) changed"
        )
    assert rt.stats().adapter_runs == {("legacy-crm", version, "1->2"): len(calls)}


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_a_transcript_holds_exactly_the_recorders_calls(version: str) -> None:
    import record_transcripts  # the list of calls only; the recorder is not run here

    recorded = [
        {"tool": c["tool"], "input": c["input"], "auth": c["auth"]}
        for c in transcript(version)["calls"]
    ]
    assert canonical(recorded) == canonical(record_transcripts.CALLS[version])
    assert callable(record_transcripts.main)


async def test_gen1__a_handle_object_with_an_async_call__is_awaited() -> None:
    manifest = packrun.decode_manifest(
        {"id": "callable-crm", "version": "1.0.0", "contract": 1, "tools": [{"id": "ping"}]}
    )
    code = (
        b"class Handler:\n"
        b"    async def __call__(self, action, params, auth):\n"
        b"        return {'data': {'action': action}}\n"
        b"handle = Handler()\n"
    )
    async with packrun.open_runtime("memory:") as rt:
        await rt.publish(bundle_bytes(manifest, {"__init__.py": code}))
        await rt.install("c", "callable-crm")
        assert await rt.call("c", "ping") == {"action": "ping"}
