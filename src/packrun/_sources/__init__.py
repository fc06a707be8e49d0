"""Pack sources in Git or OCI, synced into the catalog by a reconciler (``docs/sources.md``)."""

from __future__ import annotations

from packrun._sources._model import (
    DEFAULT_INTERVAL,
    SourceSpec,
    SourceStatus,
    SyncItem,
    SyncReport,
    Trust,
)

__all__ = ["DEFAULT_INTERVAL", "SourceSpec", "SourceStatus", "SyncItem", "SyncReport", "Trust"]
