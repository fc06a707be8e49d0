"""Acme CRM 1.1.0: adds the ``search_contacts`` tool and an optional ``company`` filter on
``list_contacts``. Callers of 1.0.x keep working unchanged.

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


def _contacts(ctx: ToolContext) -> list[dict[str, Any]]:
    """The caller's contacts. Refuses anything but a non-empty API key, and never echoes the key."""
    key = ctx.auth.credentials.get("key", "") if ctx.auth.mode == "api_key" else ""
    if not key:
        given = "an empty API key" if ctx.auth.mode == "api_key" else f"auth mode {ctx.auth.mode!r}"
        raise ToolError("unauthorized", f"got {given}; expected auth mode 'api_key' with a key")
    return contacts_of(key)


@integration.tool("list_contacts")
async def list_contacts(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """One page of contacts: up to ``limit`` (default 10), from ``cursor`` when one is given.

    New in 1.1.0: ``company`` keeps only that company's contacts (case-insensitive).
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
    """New in 1.1.0: the first ``limit`` contacts whose name, email or company has ``query``."""
    everyone = _contacts(ctx)
    query = input.get("query")
    if not isinstance(query, str) or not query:
        raise ToolError("invalid_input", "query is required: the text to look for")
    limit = read_limit(input, DEFAULT_LIMIT)
    needle, searched = query.lower(), ("name", "email", "company")
    found = [c for c in everyone if any(needle in c[key].lower() for key in searched)]
    return {"contacts": found[:limit]}
