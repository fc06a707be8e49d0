"""Legacy CRM 1.1.0, still contract generation 1, now with an ``async`` ``handle``.

New in 1.1.0: the ``create_account`` action. The sample keeps no state between calls: the account
is added to this call's in-memory copy of the user's accounts, so it always gets id ``a-013`` and
is not listed by later calls.

Generation 1 predates the SDK: the runtime calls ``handle(action, params, auth)`` with ``auth`` as a
flat dict (here ``{"type": "basic", "username": ..., "password": ...}``) and expects
``{"data": ...}`` or ``{"error": {"code": ..., "message": ...}}`` back. packrun runs it through its
generation 1 -> 2 adapter.
"""

from __future__ import annotations

from typing import Any

from ._accounts import accounts_of, error

DEFAULT_LIMIT = 5
ACTIONS = ("list_accounts", "get_account", "create_account")


def _create(accounts: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Add the account described by ``params`` to ``accounts`` (this call's copy) and return it."""
    name = params.get("name")
    industry = params.get("industry", "Other")
    employees = params.get("employees", 0)
    if not isinstance(name, str) or not name:
        return error("invalid_input", "name is required: the new account's name")
    if not isinstance(industry, str) or not industry:
        return error("invalid_input", f"industry must be a non-empty string, got {industry!r}")
    if isinstance(employees, bool) or not isinstance(employees, int) or employees < 0:
        return error("invalid_input", f"employees must be an integer >= 0, got {employees!r}")
    account = {
        "id": f"a-{len(accounts) + 1:03d}",
        "name": name,
        "industry": industry,
        "employees": employees,
    }
    accounts.append(account)
    return {"data": {"account": account}}


async def handle(action: str, params: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    """Run ``action`` (``list_accounts``, ``get_account``, ``create_account``) for the user."""
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
    if action == "create_account":
        return _create(accounts, params)
    return error("unknown_action", f"unknown action {action!r}; expected one of {ACTIONS}")
