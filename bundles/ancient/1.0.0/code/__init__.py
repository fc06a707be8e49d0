"""Ancient Directory 1.0.0, written against contract generation 0: one ``execute(request)``.

Generation 0 passed one request dict (``{"action": ..., "params": {...}, "credentials": {...}}``)
and took back a status and a body. Current runtimes support generations 1 and 2 only, so packrun
refuses this bundle (``integration_contract_incompatible``, too old): rebuild it with the SDK.
"""

from __future__ import annotations

from typing import Any


def execute(request: dict[str, Any]) -> dict[str, Any]:
    """Answer ``lookup_user`` with ``{"status": 200, "body": {"user": {...}}}`` or a 4xx error."""
    if not request.get("credentials", {}).get("api_key"):
        return {"status": 401, "body": {"error": "an api_key credential is required"}}
    if request.get("action") != "lookup_user":
        return {"status": 400, "body": {"error": f"unknown action {request.get('action')!r}"}}
    login = request.get("params", {}).get("login")
    if not isinstance(login, str) or not login:
        return {"status": 400, "body": {"error": "params.login is required"}}
    display_name = " ".join(part.capitalize() for part in login.replace("_", ".").split("."))
    return {"status": 200, "body": {"user": {"login": login, "display_name": display_name}}}
