"""The legacy CRM's accounts, simulated in memory: 12 deterministic accounts per username.

The accounts are derived from the username through SHA-256 (the password is checked, never used
as data, never stored, returned or logged). Every call builds fresh data.
"""

from __future__ import annotations

import hashlib
from typing import Any

ACCOUNTS_PER_USER = 12

_NAMES = ("Apex", "Blue Harbor", "Cedar", "Northwind", "Orbit", "Pinecrest", "Redwood", "Summit")
_SUFFIXES = ("Labs", "Logistics", "Partners", "Systems", "Trading")
_INDUSTRIES = ("Energy", "Finance", "Health", "Manufacturing", "Retail", "Software")


def accounts_of(username: str) -> list[dict[str, Any]]:
    """The user's accounts a-001 to a-012: ``id``, ``name``, ``industry``, ``employees``."""
    user = hashlib.sha256(b"legacy-crm-user:" + username.encode()).digest()
    accounts: list[dict[str, Any]] = []
    for n in range(1, ACCOUNTS_PER_USER + 1):
        draw = hashlib.sha256(user + n.to_bytes(2, "big")).digest()
        name = f"{_NAMES[draw[0] % len(_NAMES)]} {_SUFFIXES[draw[1] % len(_SUFFIXES)]}"
        accounts.append(
            {
                "id": f"a-{n:03d}",
                "name": name,
                "industry": _INDUSTRIES[draw[2] % len(_INDUSTRIES)],
                "employees": 10 + int.from_bytes(draw[3:5], "big") % 5000,
            }
        )
    return accounts


def error(code: str, message: str) -> dict[str, Any]:
    """A generation-1 failure reply."""
    return {"error": {"code": code, "message": message}}
