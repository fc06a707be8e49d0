"""Helpdesk 1.0.0: list and open tickets, authenticated with an API key.

The integration entry of the ``helpdesk`` pack; the pack also holds the ``ticket-triage`` process
flow and the ``support-terms`` ontology, each versioned on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packrun.sdk import Integration, ToolError

from ._tickets import PRIORITIES, STATUSES, tickets_of

if TYPE_CHECKING:
    from packrun.sdk import ToolContext

integration = Integration("helpdesk")

DEFAULT_LIMIT = 10


def _tickets(ctx: ToolContext) -> list[dict[str, Any]]:
    """The caller's tickets. Refuses anything but a non-empty API key, and never echoes the key."""
    key = ctx.auth.credentials.get("key", "") if ctx.auth.mode == "api_key" else ""
    if not key:
        given = "an empty API key" if ctx.auth.mode == "api_key" else f"auth mode {ctx.auth.mode!r}"
        raise ToolError("unauthorized", f"got {given}; expected auth mode 'api_key' with a key")
    return tickets_of(key)


@integration.tool("list_tickets")
def list_tickets(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """The first ``limit`` tickets (default 10), only those with ``status`` when given."""
    tickets = _tickets(ctx)
    status = input.get("status")
    if status is not None and status not in STATUSES:
        raise ToolError("invalid_input", f"status must be one of {STATUSES}, got {status!r}")
    limit = input.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ToolError("invalid_input", f"limit must be an integer from 1 to 100, got {limit!r}")
    if status is not None:
        tickets = [t for t in tickets if t["status"] == status]
    return {"tickets": tickets[:limit]}


@integration.tool("create_ticket")
async def create_ticket(ctx: ToolContext, input: dict[str, Any]) -> dict[str, Any]:
    """Open a ticket; it is added to this call's copy only, so its id is always ``t-011``."""
    tickets = _tickets(ctx)
    subject = input.get("subject")
    priority = input.get("priority", "normal")
    if not isinstance(subject, str) or not subject:
        raise ToolError("invalid_input", "subject is required: what the ticket is about")
    if priority not in PRIORITIES:
        raise ToolError("invalid_input", f"priority must be one of {PRIORITIES}, got {priority!r}")
    number = len(tickets) + 1
    ticket = {"id": f"t-{number:03d}", "subject": subject, "status": "open", "priority": priority}
    ctx.logger.info("create_ticket: opened %s (%s priority)", ticket["id"], priority)
    return {"ticket": ticket}
