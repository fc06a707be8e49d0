"""The generation 1 -> 2 adapter step.

A generation-1 bundle exposes one entry, ``handle(action, params, auth)`` (sync or async), where
``auth`` is a flat dict and the answer is ``{"data": ...}`` or ``{"error": {"code", "message"}}``.
The step gives it exactly that world and turns its answers into generation-2 results and tool
errors, so a run calls it like any generation-2 bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packrun._adapters._base import Step, is_async
from packrun._auth import Auth
from packrun._bundle import LoadedBundle
from packrun.sdk import ToolContext, ToolError

__all__ = ["STEP", "answer_of", "flat_auth"]


def flat_auth(auth: Auth) -> dict[str, Any]:
    """The generation-1 ``auth`` dict for a generation-2 :class:`~packrun.Auth`.

    >>> flat_auth(Auth.oauth2("t", scopes=("a", "b")))
    {'type': 'oauth2', 'access_token': 't', 'scope': 'a b'}
    """
    if auth.mode == "api_key":
        return {"type": "api_key", "key": auth.credentials["key"]}
    if auth.mode == "oauth2":
        return {
            "type": "oauth2",
            "access_token": auth.credentials["access_token"],
            "scope": " ".join(auth.scopes),
        }
    if auth.mode == "basic":
        return {
            "type": "basic",
            "username": auth.credentials["username"],
            "password": auth.credentials["password"],
        }
    return {"type": "none"}


def answer_of(tool: str, answer: object) -> Any:
    """A generation-1 answer as a generation-2 result: the ``data``, or a raised
    :class:`~packrun.sdk.ToolError` with the ``error``'s code and message."""
    if isinstance(answer, dict):
        if "error" in answer:
            error = answer["error"]
            if isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"]:
                message = error.get("message", "")
                raise ToolError(
                    error["code"], message if isinstance(message, str) else str(message)
                )
        elif "data" in answer:
            return answer["data"]
    shape = (
        type(answer).__name__ if not isinstance(answer, dict) else f"a dict with {sorted(answer)}"
    )
    raise ToolError(
        "invalid_response",
        f"generation-1 handle({tool!r}, ...) returned {shape}; expected "
        "{'data': ...} or {'error': {'code': ..., 'message': ...}}",
    )


def _wrap(loaded: LoadedBundle, previous: Mapping[str, Any]) -> Mapping[str, Any]:
    handle = loaded.handle
    assert handle is not None  # a generation-1 bundle is loaded with its handle
    awaitable = is_async(handle)

    def entry(tool: str) -> tuple[Any, bool]:
        if awaitable:

            async def call_async(ctx: ToolContext, params: dict[str, Any]) -> Any:
                return answer_of(tool, await handle(tool, dict(params), flat_auth(ctx.auth)))

            return call_async, True

        def call_sync(ctx: ToolContext, params: dict[str, Any]) -> Any:
            return answer_of(tool, handle(tool, dict(params), flat_auth(ctx.auth)))

        return call_sync, False

    return {tool: entry(tool) for tool in loaded.bundle.manifest.tool_ids()}


STEP = Step(source=1, wrap=_wrap)
"""The registered 1 -> 2 step."""
