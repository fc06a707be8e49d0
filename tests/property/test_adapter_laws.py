"""Round-trip laws of the generation 1 -> 2 adapter, on generated data, credentials and errors.

Each example runs through a real ``memory:`` runtime (opened per example with ``anyio.run``, which
takes a few milliseconds): a generation-1 echo bundle, sync or async ``handle``, is published and
installed, and one run calls it.

* ``{"data": params}`` comes back as exactly ``params`` for any JSON-like value;
* ``{"error": {"code": c, "message": m}}`` becomes ``ToolFailed`` with ``tool_code`` c and message m;
* a handle receives exactly ``flat_auth(auth)``, and the credentials never show in ``repr(auth)``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import packrun
from packrun import Auth, ToolFailed
from packrun._adapters._gen1 import answer_of, flat_auth
from packrun._bundle import bundle_bytes
from packrun.sdk import ToolError

TOOLS = ("echo", "echo_value", "fail", "echo_auth")

ECHO_CODE = """
ASYNC_def handle(action, params, auth):
    if action == "echo":
        return {"data": params}
    if action == "echo_value":
        return {"data": params["value"]}
    if action == "fail":
        return {"error": {"code": params["code"], "message": params["message"]}}
    if action == "echo_auth":
        return {"data": auth}
    return {"error": {"code": "unknown_action", "message": action}}
"""


def echo_bundle(is_async: bool) -> tuple[str, bytes]:
    """``(pack id, bytes)`` of the generation-1 echo bundle with a sync or an async handle."""
    pack = "echo-async" if is_async else "echo-sync"
    manifest = packrun.decode_manifest(
        {"id": pack, "version": "1.0.0", "contract": 1, "tools": [{"id": t} for t in TOOLS]}
    )
    code = ECHO_CODE.replace("ASYNC_", "async " if is_async else "")
    return pack, bundle_bytes(manifest, {"__init__.py": code.encode()})


ECHO = {is_async: echo_bundle(is_async) for is_async in (False, True)}

SETTINGS = settings(max_examples=100, deadline=None)


async def call_gen1(is_async: bool, tool: str, input: dict[str, Any], auth: Auth) -> Any:
    """Call ``tool`` of the echo bundle in one run of a fresh ``memory:`` runtime."""
    pack, data = ECHO[is_async]
    async with packrun.open_runtime(
        "memory:", refresh_interval=0, in_process={"vendor", "custom"}
    ) as rt:
        await rt.publish(data)
        await rt.install("echo", pack, "1.0.0")
        async with rt.run("echo", auth=auth) as run:
            assert (run.adapter, run.generation) == ("1->2", 1)
            return await run.call(tool, input)


def run_gen1(is_async: bool, tool: str, input: dict[str, Any], auth: Auth | None = None) -> Any:
    return anyio.run(
        functools.partial(call_gen1, is_async, tool, input, auth or Auth.none()),
        backend="asyncio",
    )


def exact(value: object) -> str:
    """JSON text that tells ``-0.0`` from ``0.0`` and ``True`` from ``1``."""
    return json.dumps(value, sort_keys=True)


# --- strategies ---------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
PARAMS = st.dictionaries(st.text(max_size=8), JSON, max_size=5)
CREDENTIAL = st.text(max_size=30)
SCOPES = st.lists(st.text(max_size=12), max_size=4)


@st.composite
def auths(draw: st.DrawFn) -> tuple[Auth, dict[str, Any]]:
    """An Auth of any mode and the flat dict DESIGN section 6 says a generation-1 handle gets."""
    mode = draw(st.sampled_from(["api_key", "oauth2", "basic", "none"]))
    if mode == "api_key":
        key = draw(CREDENTIAL)
        header = draw(st.sampled_from(["X-API-Key", "Authorization"]))
        return Auth.api_key(key, header=header), {"type": "api_key", "key": key}
    if mode == "oauth2":
        token, scopes = draw(CREDENTIAL), draw(SCOPES)
        return Auth.oauth2(token, scopes=scopes), {
            "type": "oauth2",
            "access_token": token,
            "scope": " ".join(scopes),
        }
    if mode == "basic":
        username, password = draw(CREDENTIAL), draw(CREDENTIAL)
        return Auth.basic(username, password), {
            "type": "basic",
            "username": username,
            "password": password,
        }
    return Auth.none(), {"type": "none"}


# --- data ---------------------------------------------------------------------------------------


@SETTINGS
@given(params=PARAMS, is_async=st.booleans())
def test_data_params_come_back_exactly(params: dict[str, Any], is_async: bool) -> None:
    result = run_gen1(is_async, "echo", params)
    assert result == params
    assert exact(result) == exact(params)


@SETTINGS
@given(value=JSON, is_async=st.booleans())
def test_any_json_value_as_data_comes_back_exactly(value: object, is_async: bool) -> None:
    result = run_gen1(is_async, "echo_value", {"value": value})
    assert result == value
    assert exact(result) == exact(value)


@SETTINGS
@given(value=JSON)
def test_answer_of_data_is_the_very_object(value: object) -> None:
    assert answer_of("t", {"data": value}) is value


# --- errors -------------------------------------------------------------------------------------


@SETTINGS
@given(code=st.text(min_size=1, max_size=30), message=st.text(max_size=60), is_async=st.booleans())
def test_an_error_answer_is_tool_failed_with_its_code_and_message(
    code: str, message: str, is_async: bool
) -> None:
    with pytest.raises(ToolFailed) as failed:
        run_gen1(is_async, "fail", {"code": code, "message": message})
    error = failed.value
    assert (error.code, error.tool, error.tool_code, error.tool_message) == (
        "tool_error",
        "fail",
        code,
        message,
    )
    assert str(error) == f"[tool_error] tool 'fail' failed with {code!r}: {message}"


@SETTINGS
@given(answer=JSON.filter(lambda a: not isinstance(a, dict)))
def test_a_non_dict_answer_is_invalid_response(answer: object) -> None:
    with pytest.raises(ToolError) as raised:
        answer_of("t", answer)
    assert raised.value.code == "invalid_response"
    assert f"returned {type(answer).__name__};" in raised.value.message


@SETTINGS
@given(
    answer=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("data", "error")), JSON)
)
def test_a_dict_without_data_or_error_is_invalid_response_naming_its_keys(
    answer: dict[str, Any],
) -> None:
    with pytest.raises(ToolError) as raised:
        answer_of("t", answer)
    assert raised.value.code == "invalid_response"
    assert f"returned a dict with {sorted(answer)};" in raised.value.message


# --- auth ---------------------------------------------------------------------------------------


@SETTINGS
@given(case=auths(), is_async=st.booleans())
def test_a_handle_receives_exactly_flat_auth(
    case: tuple[Auth, dict[str, Any]], is_async: bool
) -> None:
    auth, expected = case
    assert flat_auth(auth) == expected
    received = run_gen1(is_async, "echo_auth", {}, auth)
    assert received == flat_auth(auth) == expected
    assert list(received) == list(expected)


@SETTINGS
@given(case=auths())
def test_credentials_never_show_in_repr(case: tuple[Auth, dict[str, Any]]) -> None:
    auth, _ = case
    blank = Auth(auth.mode, dict.fromkeys(auth.credentials, ""), auth.scopes, auth.header)
    # repr and str depend on the mode, the credential names and the scopes, never the values
    assert repr(auth) == repr(blank)
    assert str(auth) == str(blank)
    for value in auth.credentials.values():
        if value and value not in repr(blank):
            assert value not in repr(auth)
