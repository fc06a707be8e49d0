"""Acme's CRM, simulated in memory: 25 deterministic contacts per tenant, and cursor paging.

A tenant is derived from the caller's credential through SHA-256, so a given credential always
sees the same contacts and two credentials see different ones. The credential itself is never
stored, returned or logged. Every call builds fresh data: nothing is shared between calls.
"""

from __future__ import annotations

import hashlib
from typing import Any

from packrun.sdk import ToolError

CONTACTS_PER_TENANT = 25
MAX_LIMIT = 100

_FIRST = ("Ada", "Alan", "Barbara", "Donald", "Edsger", "Frances", "Grace", "Ken", "Linus", "Mary")
_LAST = ("Allen", "Hopper", "Knuth", "Liskov", "Lovelace", "Ritchie", "Turing", "Wirth")
_COMPANIES = ("Globex", "Hooli", "Initech", "Soylent", "Umbrella", "Vandelay")


def contacts_of(credential: str) -> list[dict[str, Any]]:
    """The tenant's contacts c-001 to c-025, each with ``id``, ``name``, ``email``, ``company``."""
    tenant = hashlib.sha256(b"acme-tenant:" + credential.encode()).digest()
    contacts: list[dict[str, Any]] = []
    for n in range(1, CONTACTS_PER_TENANT + 1):
        draw = hashlib.sha256(tenant + n.to_bytes(2, "big")).digest()
        first, last = _FIRST[draw[0] % len(_FIRST)], _LAST[draw[1] % len(_LAST)]
        company = _COMPANIES[draw[2] % len(_COMPANIES)]
        contacts.append(
            {
                "id": f"c-{n:03d}",
                "name": f"{first} {last}",
                "email": f"{first}.{last}@{company}.example".lower(),
                "company": company,
            }
        )
    return contacts


def read_limit(input: dict[str, Any], default: int) -> int:
    """``input["limit"]`` (or ``default``), refused unless it is an integer from 1 to 100."""
    limit = input.get("limit", default)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ToolError(
            "invalid_input", f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}"
        )
    return limit


def page(
    items: list[dict[str, Any]], limit: int, cursor: object
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``items`` and the cursor of the next page (``None`` on the last page).

    A cursor is the offset of the page's first item, as a decimal string (``"10"``).
    """
    start = 0
    if cursor is not None:
        if not isinstance(cursor, str) or not cursor.isdigit() or int(cursor) > len(items):
            raise ToolError("invalid_input", f"cursor {cursor!r} is not one this tool returned")
        start = int(cursor)
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else None)
