"""The helpdesk's tickets, simulated in memory: 10 deterministic tickets per tenant.

A tenant is derived from the API key through SHA-256, so a given key always sees the same tickets.
The key itself is never stored, returned or logged. Every call builds fresh data.
"""

from __future__ import annotations

import hashlib
from typing import Any

TICKETS_PER_TENANT = 10
STATUSES = ("open", "pending", "closed")
PRIORITIES = ("low", "normal", "high")

_SUBJECTS = (
    "Cannot log in",
    "Invoice shows the wrong amount",
    "Export to CSV times out",
    "Password reset email never arrives",
    "Dashboard is blank after the update",
    "Please add a second admin",
    "Webhook deliveries fail with 500",
    "Typo on the pricing page",
)


def tickets_of(key: str) -> list[dict[str, Any]]:
    """The tenant's tickets t-001 to t-010: ``id``, ``subject``, ``status``, ``priority``."""
    tenant = hashlib.sha256(b"helpdesk-tenant:" + key.encode()).digest()
    tickets: list[dict[str, Any]] = []
    for n in range(1, TICKETS_PER_TENANT + 1):
        draw = hashlib.sha256(tenant + n.to_bytes(2, "big")).digest()
        tickets.append(
            {
                "id": f"t-{n:03d}",
                "subject": _SUBJECTS[draw[0] % len(_SUBJECTS)],
                "status": STATUSES[draw[1] % len(STATUSES)],
                "priority": PRIORITIES[draw[2] % len(PRIORITIES)],
            }
        )
    return tickets
