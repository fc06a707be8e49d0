"""What every store writes for the fleet's event log inside its own transactions: the body of a
publish event and of a pin move event (JSON text, the same on every store)."""

from __future__ import annotations

import json
from typing import Any

from packrun._catalog import CatalogEntry
from packrun._stores import PinEvent

__all__ = ["encode_body", "pin_move_body", "publish_body"]


def encode_body(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def publish_body(entry: CatalogEntry) -> str:
    return encode_body(
        {
            "version": str(entry.version),
            "channel": entry.channel,
            "digest": entry.digest,
            "contract": entry.contract,
        }
    )


def pin_move_body(event: PinEvent) -> str:
    return encode_body(
        {
            "installation": event.installation_id,
            "actor": event.actor,
            "origin": event.origin,
            "from_pin": event.from_pin,
            "to_pin": event.to_pin,
            "from_version": event.from_version,
            "to_version": event.to_version,
        }
    )
