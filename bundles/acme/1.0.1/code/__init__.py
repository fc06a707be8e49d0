"""Acme CRM 1.0.1: the same tools as 1.0.0; this patch only fixes typos in the manifest's text.

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
    """One page of contacts: up to ``limit`` (default 10), from ``cursor`` when one is given."""
    everyone = _contacts(ctx)
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
