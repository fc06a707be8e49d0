"""Acme CRM 2.0.0: a major release with two breaking changes, both declared by the version.

* Auth moved from an API key to OAuth 2: an access token granted the ``contacts.read`` scope.
* Contacts no longer carry ``email`` (and ``search_contacts`` no longer matches on it).

The data lives in ``_crm.py`` (imported relatively: each bundle version is loaded under a package
name of its own). This file holds the tools and the credential check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packrun.sdk import Integration, ToolError

from ._crm import contacts_of, page, read_limit

if TYPE_CHECKING:
    from packrun.sdk import ToolContext

integration = Integration("acme")

DEFAULT_LIMIT = 10
REQUIRED_SCOPE = "contacts.read"


def _contacts(ctx: ToolContext) -> list[dict[str, Any]]:
    """The caller's contacts. Needs an OAuth 2 token with ``contacts.read``; never echoes it."""
    mode = ctx.auth.mode
    token = ctx.auth.credentials.get("access_token", "") if mode == "oauth2" else ""
    if not token:
        given = "an empty access token" if mode == "oauth2" else f"auth mode {mode!r}"
        raise ToolError("unauthorized", f"got {given}; expected auth mode 'oauth2' with a token")
    if REQUIRED_SCOPE not in ctx.auth.scopes:
        granted = ", ".join(ctx.auth.scopes) or "none"
        raise ToolError("forbidden", f"scope {REQUIRED_SCOPE!r} is required; granted: {granted}")
    return contacts_of(token)


@integration.tool("list_contacts")
async def list_contacts(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """One page of contacts: up to ``limit`` (default 10), from ``cursor`` when one is given.

    ``company`` keeps only that company's contacts (case-insensitive).
    """
    everyone = _contacts(ctx)
    company = input.get("company")
    if company is not None:
        everyone = [c for c in everyone if c["company"].lower() == str(company).lower()]
    contacts, next_cursor = page(everyone, read_limit(input, DEFAULT_LIMIT), input.get("cursor"))
    ctx.logger.info("list_contacts: %d of %d contacts", len(contacts), len(everyone))
    return {"contacts": contacts, "next_cursor": next_cursor}


@integration.tool("get_contact")
def get_contact(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """The contact with ``id``, or ``not_found``."""
    everyone = _contacts(ctx)
    contact_id = input.get("id")
    if not isinstance(contact_id, str) or not contact_id:
        raise ToolError("invalid_input", "id is required: a contact id such as 'c-001'")
    for contact in everyone:
        if contact["id"] == contact_id:
            return {"contact": contact}
    raise ToolError("not_found", f"no contact {contact_id!r}")


@integration.tool("search_contacts")
async def search_contacts(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """The first ``limit`` contacts whose name or company contains ``query`` (case-insensitive)."""
    everyone = _contacts(ctx)
    query = input.get("query")
    if not isinstance(query, str) or not query:
        raise ToolError("invalid_input", "query is required: the text to look for")
    limit = read_limit(input, DEFAULT_LIMIT)
    needle, searched = query.lower(), ("name", "company")  # 1.x also searched "email"
    found = [c for c in everyone if any(needle in c[key].lower() for key in searched)]
    return {"contacts": found[:limit]}
