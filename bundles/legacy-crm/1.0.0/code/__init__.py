"""Legacy CRM 1.0.0, written against contract generation 1: one synchronous ``handle`` function.

Generation 1 predates the SDK: the runtime calls ``handle(action, params, auth)`` with ``auth`` as a
flat dict (here ``{"type": "basic", "username": ..., "password": ...}``) and expects
``{"data": ...}`` or ``{"error": {"code": ..., "message": ...}}`` back. packrun runs it through its
generation 1 -> 2 adapter.
"""

from __future__ import annotations

from typing import Any

from ._accounts import accounts_of, error

DEFAULT_LIMIT = 5
ACTIONS = ("list_accounts", "get_account")


def handle(action: str, params: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    """Run ``action`` (``list_accounts`` or ``get_account``) for the basic-auth user."""
    if auth.get("type") != "basic":
        return error("unauthorized", f"got auth type {auth.get('type')!r}; expected 'basic'")
    if not auth.get("username") or not auth.get("password"):
        return error("unauthorized", "basic auth needs a non-empty username and password")
    accounts = accounts_of(auth["username"])
    if action == "list_accounts":
        limit = params.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            return error("invalid_input", f"limit must be an integer from 1 to 100, got {limit!r}")
        return {"data": {"accounts": accounts[:limit]}}
    if action == "get_account":
        account_id = params.get("id")
        if not isinstance(account_id, str) or not account_id:
            return error("invalid_input", "id is required: an account id such as 'a-001'")
        for account in accounts:
            if account["id"] == account_id:
                return {"data": {"account": account}}
        return error("not_found", f"no account {account_id!r}")
    return error("unknown_action", f"unknown action {action!r}; expected one of {ACTIONS}")
