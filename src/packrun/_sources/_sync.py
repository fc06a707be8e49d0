"""Syncing pack sources: the runtime's side (``add_source``, ``sync``, the background loop).

One :class:`Syncer` per runtime. A sync takes the source's lease in the store (so that in a fleet
one process syncs a source at a time), fetches the source into a temporary folder, applies its
trust policy, reconciles the index with the catalog and publishes through the runtime's own
``publish`` (the same checks as any publish), then records a :class:`SyncReport` in the store.
A fetch that fails, or a source that fails its trust policy, publishes nothing and keeps the last
good revision in the status.
"""

from __future__ import annotations

import logging
import random
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import anyio.to_thread

from packrun._catalog import CatalogEntry, Channel
from packrun._sources import _git, _oci
from packrun._sources._model import (
    SourceSpec,
    SourceStatus,
    SourceUrl,
    SyncItem,
    SyncReport,
    Trust,
    decode_spec,
    decode_status,
    encode_spec,
    encode_status,
)
from packrun._sources._reconcile import Plan, plan
from packrun._stores import Store
from packrun._stores._pg_url import mask_url
from packrun.errors import InvalidArgument, NotFound, PackrunError, SourceError, UntrustedSource

__all__ = ["LEASE_SECONDS", "Syncer"]

logger = logging.getLogger("packrun")

LEASE_SECONDS: Final = 900.0
"""How long a sync's lease on its source lasts: a process that died mid-sync holds it that long."""
JITTER: Final = 0.1
"""The background interval is drawn from ``interval * (1 ± JITTER)``."""
_IDLE_CHECK: Final = 1.0  # seconds between looks at which source is due, at most

Publish = Callable[[Path, Channel, str | None], Awaitable[CatalogEntry]]
"""Publishes a folder on a channel (and, for the custom channel, a project)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _next(interval: float, after: datetime) -> datetime:
    return after + timedelta(seconds=interval * random.uniform(1 - JITTER, 1 + JITTER))


class Syncer:
    """The sources of one runtime: kept in memory, refreshed from the store, synced on demand and
    (when enabled) in the background."""

    def __init__(
        self,
        store: Store,
        owner: str,
        publish: Publish,
        known: Callable[[Channel, str | None], frozenset[tuple[str, str]]],
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._owner = owner
        self._publish = publish
        self._known = known
        self._refresh = refresh
        self.statuses: dict[str, SourceStatus] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._looping = False
        self._wake = anyio.Event()

    # --- state ----------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every source from the store."""
        self.statuses = {
            name: decode_status(decode_spec(spec), status)
            for name, spec, status in await self._store.sources()
        }

    async def reload(self, names: set[str]) -> None:
        """Read the sources ``names`` again (after the change log named them)."""
        rows = {name: (spec, status) for name, spec, status in await self._store.sources()}
        for name in names:
            if name in rows:
                spec, status = rows[name]
                self.statuses[name] = decode_status(decode_spec(spec), status)
            else:
                self.statuses.pop(name, None)
        self._wake.set()

    def status(self, name: str) -> SourceStatus:
        """One source's status; ``not_found`` naming the known sources."""
        try:
            return self.statuses[name]
        except KeyError:
            raise NotFound("source", name, sorted(self.statuses)) from None

    # --- changes --------------------------------------------------------------------------------

    async def add(self, spec: SourceSpec) -> SourceStatus:
        """Store a new source; its first background sync is due one interval from now."""
        spec.checked()
        await self._store.add_source(spec.name, encode_spec(spec))
        status = SourceStatus(spec, next_sync=_next(spec.interval, spec.added_at or _now()))
        await self._store.save_source_status(spec.name, encode_status(status))
        self.statuses[spec.name] = status
        self._wake.set()
        logger.info(
            "packrun added source %s (%s)",
            spec.name,
            mask_url(spec.url),
            extra={"event": "source_added", "source": spec.name, "channel": spec.channel},
        )
        return status

    async def remove(self, name: str) -> None:
        """Forget a source (what it published stays published)."""
        if not await self._store.remove_source(name):
            raise NotFound("source", name, sorted(self.statuses))
        self.statuses.pop(name, None)
        logger.info("packrun removed source %s", name)

    # --- syncing --------------------------------------------------------------------------------

    async def sync(self, name: str) -> SyncReport:
        """Sync one source now (Refresh) and record the report; see :meth:`Runtime.sync`."""
        await self.reload({name})
        status = self.status(name)
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            started = _now()
            holder = await self._store.claim_source(name, self._owner, LEASE_SECONDS)
            if holder is not None:
                logger.info("packrun source %s is being synced by %s; skipped here", name, holder)
                self.statuses[name] = SourceStatus(
                    status.spec,
                    status.last_sync,
                    status.revision,
                    status.report,
                    _next(status.spec.interval, started),
                )
                return SyncReport(name, started, _now(), held_by=holder)
            try:
                report, good = await self._sync_held(status.spec, started)
                finished = report.finished_at
                new = SourceStatus(
                    status.spec,
                    finished,
                    good if good is not None else status.revision,
                    report,
                    _next(status.spec.interval, finished),
                )
                await self._store.save_source_status(name, encode_status(new))
                self.statuses[name] = new
            finally:
                with anyio.CancelScope(shield=True):
                    await self._store.release_source(name, self._owner)
        logger.info(
            "packrun synced source %s at %s: %d published, %d skipped, %d error(s)",
            name,
            report.revision,
            len(report.published),
            len(report.skipped),
            len(report.errors),
            extra={
                "event": "source_synced",
                "source": name,
                "revision": report.revision,
                "published": [f"{p.pack_id} {p.version}" for p in report.published],
                "skipped": len(report.skipped),
                "errors": len(report.errors),
            },
        )
        return report

    async def _sync_held(
        self, spec: SourceSpec, started: datetime
    ) -> tuple[SyncReport, str | None]:
        """Fetch, check trust, reconcile and publish; ``(report, the good revision or None)``."""
        url = spec.checked()
        fetches = 0
        with tempfile.TemporaryDirectory(prefix="packrun-sync-") as folder:
            try:
                root, revision, fetches = await anyio.to_thread.run_sync(
                    _fetch, spec.name, url, Path(folder)
                )
                fetches += await anyio.to_thread.run_sync(
                    _check_trust, spec.name, url, spec.trust, root, revision
                )
            except UntrustedSource as exc:
                item = SyncItem(exc.code, exc.detail)
                return SyncReport(
                    spec.name, started, _now(), exc.revision, errors=(item,), fetches=fetches
                ), None
            except SourceError as exc:
                item = SyncItem(exc.code, exc.detail)
                return SyncReport(spec.name, started, _now(), errors=(item,), fetches=fetches), None
            await self._refresh()  # versions published elsewhere meanwhile count as known
            known = self._known(spec.channel, spec.project)
            planned: Plan = await anyio.to_thread.run_sync(
                lambda: plan(
                    root.tree,
                    lambda p, k: (p, k) in known,
                    require_rebuild=spec.trust.require_rebuild,
                )
            )
            published: list[SyncItem] = []
            skipped = list(planned.skipped)
            for candidate in planned.candidates:
                pack_id, version = candidate.pack_id, str(candidate.version)
                try:
                    entry = await self._publish(candidate.folder, spec.channel, spec.project)
                except PackrunError as exc:
                    skipped.append(SyncItem(exc.code, exc.detail, pack_id, version))
                    continue
                published.append(
                    SyncItem(
                        "published",
                        f"published {pack_id} {entry.version} on the {spec.channel} channel",
                        pack_id,
                        version,
                    )
                )
        report = SyncReport(
            spec.name,
            started,
            _now(),
            revision,
            tuple(published),
            tuple(skipped),
            tuple(planned.errors),
            planned.unchanged,
            fetches,
        )
        return report, revision

    # --- the background -------------------------------------------------------------------------

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run the background loop in ``task_group`` (once)."""
        if not self._looping:
            self._looping = True
            task_group.start_soon(self._loop)

    async def _loop(self) -> None:
        while True:
            now = _now()
            due = sorted(
                name
                for name, s in self.statuses.items()
                if s.next_sync is None or s.next_sync <= now
            )
            for name in due:
                try:
                    await self.sync(name)
                except Exception as exc:  # never let a sync take the host's code down
                    logger.warning("packrun could not sync source %s: %s", name, exc)
                    status = self.statuses.get(name)
                    if status is not None:
                        self.statuses[name] = SourceStatus(
                            status.spec,
                            status.last_sync,
                            status.revision,
                            status.report,
                            _next(status.spec.interval, _now()),
                        )
            upcoming = [s.next_sync for s in self.statuses.values() if s.next_sync is not None]
            wait = _IDLE_CHECK
            if upcoming:
                wait = min(wait, max(0.0, (min(upcoming) - _now()).total_seconds()))
            self._wake = anyio.Event()
            with anyio.move_on_after(wait):
                await self._wake.wait()


@dataclass(frozen=True, slots=True)
class _Fetched:
    """Where a fetched tree is, and (for Git) what to check its signature with."""

    tree: Path
    git: _git.GitTree | None


def _fetch(name: str, url: SourceUrl, into: Path) -> tuple[_Fetched, str, int]:
    if url.kind == "git":
        tree = _git.fetch(name, url.location, url.ref, into)
        return _Fetched(tree.root, tree), tree.commit, 1
    oci = _oci.fetch(name, url, into)
    return _Fetched(oci.root, None), oci.digest, oci.fetches


def _check_trust(name: str, url: SourceUrl, trust: Trust, root: _Fetched, revision: str) -> int:
    """Apply the signature policy; the registry requests it made."""
    if not trust.signed_only:
        return 0
    if root.git is not None:
        _git.verify_signature(name, root.git, trust.allowed_signers, gpg=trust.gpg)
        return 0
    if trust.allowed_signers is None:
        raise UntrustedSource(
            name,
            revision,
            "OCI artifacts are checked with SSH signatures only: give the source an "
            "allowed-signers file",
        )
    _, requests = _oci.verify_signature(name, url, revision, trust.allowed_signers)
    return requests


_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: object) -> None:
    """Refuse a bad source name (``invalid_argument``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            "source name",
            name,
            ["1 to 100 characters: letters, digits and . _ -, starting with a letter or digit"],
        )
