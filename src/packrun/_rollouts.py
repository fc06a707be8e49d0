"""Ramped rollouts: a new version reaches a growing share of the installations that would take it,
step by step, each step behind a health gate.

A rollout lives in the store (its description, its step, a ``rev`` that every save checks, and a
lease on driving it), so any runtime on the store continues it: each runtime's background loop
claims the lease of every active rollout in turn and *reconciles* it, moving the pins of its
installations to what its current step says (pin events with origin ``rollout``). Moves are
conditional on the pin they saw, so an installation someone else moved meanwhile is left alone,
and a driver that dies halfway leaves nothing the next one cannot finish. Resolution is unchanged:
the rollout moves pins, ``resolve()`` stays one dictionary lookup.

Who is ramped at a share ``p`` is the first ``ceil(p% * n)`` installations in the order of a
SHA-256 of their ids: the same order in every process, and a growing prefix of it, so an
installation never flips back and forth between steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import anyio

from packrun._args import check_id, check_seconds, check_whole
from packrun._bulk import Selector
from packrun._catalog import CatalogEntry
from packrun._checks import VersionHealth
from packrun._resolver import DYNAMIC_PINS, exact_pin
from packrun._stores import ACTIVE_ROLLOUT_STATES, NewEvent, RolloutRow
from packrun._stores._fleet import encode_body
from packrun.errors import InvalidArgument, NotFound, PackrunError

if TYPE_CHECKING:
    from packrun._runtime import Runtime

__all__ = ["DEFAULT_STEPS", "RolloutState", "RolloutStatus", "Rollouts", "ramped"]

logger = logging.getLogger("packrun")

RolloutState: TypeAlias = Literal["running", "aborting", "aborted", "completed"]
"""``running`` (stepping), ``aborting`` (moving its installations back), ``aborted``,
``completed`` (every installation on the new version)."""

DEFAULT_STEPS = (1, 10, 50, 100)
REQUEST_WAIT = 5.0
"""Seconds a promote or abort waits for the runtime that holds the rollout to act on it."""


def ramped(installation_ids: Collection[str], share: int) -> list[str]:
    """The installations on the new version at ``share`` percent: a prefix of one stable order."""
    ordered = sorted(installation_ids, key=lambda i: hashlib.sha256(i.encode()).digest())
    return ordered[: math.ceil(len(ordered) * share / 100)]


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """Where a rollout stands: its state, its step, how many installations it covers and how many
    are on the new version, and the figures of its health gate."""

    id: str
    pack_id: str
    version: str
    project: str
    state: RolloutState
    steps: tuple[int, ...]
    step: int
    """The share (percent of its installations) on the new version now."""
    installations: int
    """How many installations the rollout covers."""
    ramped: int
    """How many of them the current step puts on the new version."""
    started_at: datetime
    step_started_at: datetime
    step_interval: float
    max_error_rate: float
    max_error_increase: float
    min_calls: int
    actor: str
    reason: str | None
    """Why it was aborted (the failed gate and its figures, or who aborted it)."""
    health: VersionHealth
    """The new version's figures, over the calls of the project's installations."""
    baseline: VersionHealth
    """The figures of the version(s) it replaces, the same way."""
    draining: int = 0
    """Runs of its installations still in flight on the new version (after an abort)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (what ``packrun rollout status --json`` prints)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, VersionHealth):
                value = _figures(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def __str__(self) -> str:
        lines = [
            f"rollout {self.id}: {self.pack_id} {self.version} in {self.project}: {self.state}, "
            f"step {self.step}% ({self.ramped} of {self.installations} installation(s)), "
            f"steps {', '.join(map(str, self.steps))}",
            f"  {self.version}: {_text(self.health)}",
            f"  {self.baseline.version}: {_text(self.baseline)}",
        ]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        if self.draining:
            lines.append(f"  draining: {self.draining} run(s) still on {self.version}")
        return "\n".join(lines)


def _text(h: VersionHealth) -> str:
    latency = f", p50 {h.p50 * 1000:g} ms, p99 {h.p99 * 1000:g} ms" if h.p50 and h.p99 else ""
    return f"{h.calls} call(s), {h.errors} error(s) ({h.error_rate:.1%}){latency}"


def _figures(h: VersionHealth) -> dict[str, Any]:
    return {
        "version": h.version,
        "calls": h.calls,
        "errors": h.errors,
        "error_rate": h.error_rate,
        "tool_errors": h.tool_errors,
        "timeouts": h.timeouts,
        "crashes": h.crashes,
        "invalid_input": h.invalid_input,
        "invalid_output": h.invalid_output,
        "p50": h.p50,
        "p99": h.p99,
    }


def _check_rate(what: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise InvalidArgument(what, value, ["a fraction of calls from 0.0 to 1.0, such as 0.05"])


def _check_steps(value: object) -> tuple[int, ...]:
    rule = ["increasing whole percentages from 1 to 100 ending at 100, such as (1, 10, 50, 100)"]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidArgument("steps", value, rule)
    if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in value):
        raise InvalidArgument("steps", value, rule)
    if list(value) != sorted(set(value)) or value[-1] != 100:
        raise InvalidArgument("steps", value, rule)
    return tuple(value)


class Rollouts:
    """The rollouts of one runtime's store: started, stepped, promoted and aborted from here."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._held: set[str] = set()  # rollouts whose lease this runtime took

    async def release(self) -> None:
        """Give up this runtime's leases (it is closing): another runtime continues at once."""
        for rollout_id in sorted(self._held):
            await self._rt._store.claim_rollout(rollout_id, self._rt.owner, 0)
        self._held.clear()

    @property
    def lease_ttl(self) -> float:
        return max(2.0, 10 * self._rt.fleet_interval)

    # --- starting -----------------------------------------------------------------------------

    async def start(
        self,
        pack_id: str,
        version: str,
        *,
        steps: Sequence[int],
        step_interval: float,
        max_error_rate: float,
        max_error_increase: float,
        min_calls: int,
        selector: Selector | str | Collection[str] | None,
        project: str,
        actor: str,
    ) -> RolloutStatus:
        rt = self._rt
        check_id("pack id", pack_id)
        shares = _check_steps(steps)
        check_seconds("step_interval", step_interval)
        _check_rate("max_error_rate", max_error_rate)
        _check_rate("max_error_increase", max_error_increase)
        check_whole("min_calls", min_calls, 0, 10**12)
        if isinstance(selector, Selector | str):
            selector = self._selected(pack_id, project, Selector._of(selector))
        elif selector is not None and (
            not isinstance(selector, list | tuple | set | frozenset)
            or not all(isinstance(i, str) for i in selector)
        ):
            raise InvalidArgument(
                "selector",
                selector,
                [
                    "None, a Selector or its text (pack=...,policy=...), or a collection of "
                    "installation ids"
                ],
            )
        target = rt._row(pack_id, version, project)
        members = self._members(pack_id, target, project, selector)
        if not members:
            raise InvalidArgument(
                f"rollout of {pack_id} {target.version} in project {project}",
                version,
                [
                    "a version some installation would take: a dynamic pin that picks it, an "
                    "auto policy that moved to it, or a selector of installations not on it"
                ],
            )
        now = time.time()
        rollout_id = uuid.uuid4().hex[:12]
        body: dict[str, Any] = {
            "id": rollout_id,
            "pack": pack_id,
            "project": project,
            "version": str(target.version),
            "qualified": f"{target.channel}:{target.version}",
            "steps": list(shares),
            "step_interval": float(step_interval),
            "max_error_rate": float(max_error_rate),
            "max_error_increase": float(max_error_increase),
            "min_calls": min_calls,
            "actor": actor,
            "started_at": now,
            "step_index": 0,
            "step_started": now,
            "request": None,
            "reason": None,
            "members": members,
        }
        row = RolloutRow(rollout_id, pack_id, project, "running", 1, encode_body(body))
        started = self._event(
            "rollout_started",
            body,
            {
                "step": shares[0],
                "installations": len(members),
                "ramped": len(ramped(members, shares[0])),
            },
        )
        await rt._store.create_rollout(row, rt.owner, self.lease_ttl, [started])
        self._held.add(rollout_id)
        self._log("started", body, f"at {shares[0]}% of {len(members)} installation(s)")
        await self._reconcile(body, shares[0])  # the first step: no gate before it
        if len(shares) == 1:
            await self._drive(row)  # a single step of 100: done
        return await self.status(pack_id, project)

    def _selected(self, pack_id: str, project: str, selector: Selector) -> tuple[str, ...]:
        """The ids of ``project``'s installations of ``pack_id`` that ``selector`` picks now (the
        same test as the bulk operations'); the rollout keeps them as its list."""
        if selector.pack not in (None, pack_id) or selector.project not in (None, project):
            raise InvalidArgument(
                "selector", str(selector), [f"a selector of {pack_id} installations in {project}"]
            )
        picked = []
        for inst in self._rt._resolver.installations(project):
            res = self._rt._cells[inst.id].value
            if inst.pack_id == pack_id and selector._matches(
                inst,
                None if res is None else res.entry.version,
                None if res is None else res.channel,
            ):
                picked.append(inst.id)
        return tuple(picked)

    def _members(
        self,
        pack_id: str,
        target: CatalogEntry,
        project: str,
        selector: Collection[str] | None,
    ) -> dict[str, list[str]]:
        """The installations that would take ``target``, each as ``[pin off the version, pin on
        it, the version it replaces as channel:version]``."""
        rt = self._rt
        resolver = rt._resolver
        keys = resolver.custom_keys(pack_id, project)
        on_target = exact_pin(target, keys)
        members: dict[str, list[str]] = {}
        chosen = set(selector) if selector is not None else None
        if chosen is not None:
            for iid in sorted(chosen):
                inst = resolver.find_installation(iid)
                if inst is None or inst.project != project or inst.pack_id != pack_id:
                    raise InvalidArgument(
                        "selector", iid, [f"installations of {pack_id} in project {project}"]
                    )
        for inst in resolver.installations(project):
            if inst.pack_id != pack_id or (chosen is not None and inst.id not in chosen):
                continue
            current = rt.resolve(inst.id).entry
            same = (current.channel, current.version_key) == (target.channel, target.version_key)
            if chosen is not None:
                if not same:
                    members[inst.id] = [inst.pin, on_target, _qualified(current)]
            elif inst.pin in DYNAMIC_PINS:
                if same:
                    before = resolver.pick_without(
                        pack_id, inst.pin, inst.allow_prerelease, target, project
                    )
                    if before is not None:
                        members[inst.id] = [exact_pin(before, keys), inst.pin, _qualified(before)]
            elif inst.policy != "manual" and same:
                history = resolver.history(inst.id)
                last = history[-1] if history else None
                if (
                    last is not None
                    and last.origin == "policy"
                    and last.from_pin is not None
                    and last.from_version is not None
                ):
                    before_row = resolver.pick(pack_id, last.from_pin, True, project)
                    if before_row is not None:
                        members[inst.id] = [last.from_pin, inst.pin, _qualified(before_row)]
        return members

    # --- requests -----------------------------------------------------------------------------

    async def request(
        self, pack_id: str, project: str, action: Literal["promote", "abort"], actor: str
    ) -> RolloutStatus:
        """Ask the rollout to promote or abort; done here at once unless another runtime holds
        the rollout's lease (then by that runtime within a tick)."""
        store = self._rt._store
        for _ in range(50):
            row = await self._active(pack_id, project)
            body = json.loads(row.body)
            body["request"] = action
            body["request_actor"] = actor
            if await store.save_rollout(
                dataclasses.replace(row, rev=row.rev + 1, body=encode_body(body)), []
            ):
                break
            await anyio.sleep(0.01)  # saved meanwhile by its driver: read it again
        else:  # pragma: no cover - fifty saves lost in a row
            raise InvalidArgument("rollout", pack_id, ["a rollout that holds still long enough"])
        await self.tick(only=row.id)
        # Held by another runtime: it acts within its next tick; wait a little for it to.
        with anyio.move_on_after(REQUEST_WAIT):
            while True:
                rows = [r for r in await store.rollouts(pack_id) if r.id == row.id]
                if not rows or json.loads(rows[0].body).get("request") is None:
                    break
                await anyio.sleep(0.05)
        return await self.status(pack_id, project)

    async def _active(self, pack_id: str, project: str) -> RolloutRow:
        rows = [
            r for r in await self._rt._store.rollouts(pack_id, active=True) if r.project == project
        ]
        if not rows:
            raise NotFound(f"running rollout of {pack_id} in project", project)
        return rows[-1]

    # --- driving ------------------------------------------------------------------------------

    async def tick(self, only: str | None = None) -> None:
        """Drive every active rollout whose lease this runtime holds or can take."""
        rt = self._rt
        for row in await rt._store.rollouts(active=True):
            if only is not None and row.id != only:
                continue
            if await rt._store.claim_rollout(row.id, rt.owner, self.lease_ttl):
                self._held.add(row.id)
                try:
                    await self._drive(row)
                except PackrunError as exc:  # the store away: the next tick tries again
                    rt._warn(f"rollout {row.id}", f"could not drive rollout {row.id}: {exc}")

    async def _drive(self, row: RolloutRow) -> None:
        rt = self._rt
        body = json.loads(row.body)
        state: str = row.state
        shares: list[int] = body["steps"]
        last = len(shares) - 1
        if state == "running":
            events: list[NewEvent] = []
            request = body.get("request")
            before = (state, body["step_index"])
            if request == "abort":
                state = "aborting"
                body["reason"] = f"aborted by {body.get('request_actor') or 'system'}"
            elif request == "promote":
                body["step_index"] = last
                body["step_started"] = time.time()
                events.append(self._event("rollout_promoted", body, {"step": 100}))
                self._log("promoted", body, f"by {body.get('request_actor')}")
            elif time.time() >= body["step_started"] + body["step_interval"]:
                new, base = self._figures(body)
                verdict = _gate(new, base, body)
                figures = {"health": _figures(new), "baseline": _figures(base)}
                if verdict is not None and verdict != "wait":
                    state = "aborting"
                    body["reason"] = verdict
                    body["figures"] = figures
                elif verdict is None and body["step_index"] < last:
                    body["step_index"] += 1
                    body["step_started"] = time.time()
                    share = shares[body["step_index"]]
                    events.append(self._event("rollout_step", body, {"step": share, **figures}))
                    self._log("stepped", body, f"to {share}% ({_text(new)})")
            body["request"] = None
            if (state, body["step_index"]) != before or request:
                row = dataclasses.replace(row, state=state, rev=row.rev + 1, body=encode_body(body))
                if not await rt._store.save_rollout(row, events):
                    return  # changed meanwhile (a request): the next tick reads it again
        members: dict[str, list[str]] = body["members"]
        if state == "aborting":
            moved = await self._reconcile(body, 0)
            draining = self._draining(body)
            extra = {
                "reason": body["reason"],
                "moved": sorted(set(moved) | set(body.get("moved", []))),
                "draining": draining,
                **body.get("figures", {}),
            }
            done = dataclasses.replace(row, state="aborted", rev=row.rev + 1, body=row.body)
            if await rt._store.save_rollout(done, [self._event("rollout_aborted", body, extra)]):
                self._log("aborted", body, f"({body['reason']}); {len(members)} moved back")
            return
        share = shares[body["step_index"]]
        await self._reconcile(body, share)
        if body["step_index"] == last:
            done = dataclasses.replace(row, state="completed", rev=row.rev + 1, body=row.body)
            extra = {"installations": len(members)}
            if await rt._store.save_rollout(done, [self._event("rollout_completed", body, extra)]):
                self._log("completed", body, f"on {len(members)} installation(s)")

    async def _reconcile(self, body: dict[str, Any], share: int) -> list[str]:
        """Move every installation of the rollout where ``share`` puts it; the ones moved."""
        rt = self._rt
        members: dict[str, list[str]] = body["members"]
        on = set(ramped(members, share))
        moved = []
        for iid in sorted(members):
            off_pin, on_pin, _ = members[iid]
            want = on_pin if iid in on else off_pin
            inst = rt._resolver.find_installation(iid)
            if inst is None or inst.pin == want or inst.pin not in (off_pin, on_pin):
                continue  # gone, there already, or moved by someone else: left alone
            try:
                await rt.set_pin(
                    iid, want, actor=f"rollout:{body['id']}", origin="rollout", expect_pin=inst.pin
                )
                moved.append(iid)
            except PackrunError as exc:
                rt._warn(f"rollout {iid}", f"rollout {body['id']} could not move {iid}: {exc}")
        return moved

    def _figures(self, body: dict[str, Any]) -> tuple[VersionHealth, VersionHealth]:
        rt = self._rt
        pack, project = body["pack"], body["project"]
        new = rt.health(pack, body["qualified"], project=project, per_project=True)
        versions = sorted({m[2] for m in body["members"].values()})
        parts = []
        for v in versions:
            try:
                parts.append(rt.health(pack, v, project=project, per_project=True))
            except NotFound:  # a replaced version no longer visible: it has no figures
                continue
        base = VersionHealth(
            pack,
            "+".join(v.partition(":")[2] for v in versions),
            calls=sum(p.calls for p in parts),
            invalid_input=sum(p.invalid_input for p in parts),
            invalid_output=sum(p.invalid_output for p in parts),
            tool_errors=sum(p.tool_errors for p in parts),
            timeouts=sum(p.timeouts for p in parts),
            crashes=sum(p.crashes for p in parts),
            project=project,
        )
        return new, base

    def _draining(self, body: dict[str, Any]) -> int:
        rt = self._rt
        try:
            vkey = rt._row(body["pack"], body["qualified"], body["project"]).version_key
        except NotFound:
            return 0
        return sum(len(rt._runs_of(iid, vkey)) for iid in body["members"])

    def _event(self, kind: str, body: dict[str, Any], extra: dict[str, Any]) -> NewEvent:
        data = {"rollout": body["id"], "version": body["version"], **extra}
        return (kind, body["pack"], body["project"], encode_body(data), None)

    @staticmethod
    def _log(what: str, body: dict[str, Any], detail: str) -> None:
        logger.info(
            "packrun rollout %s of %s %s in %s %s %s",
            body["id"],
            body["pack"],
            body["version"],
            body["project"],
            what,
            detail,
            extra={
                "event": f"rollout_{what}",
                "pack": body["pack"],
                "version": body["version"],
                "project": body["project"],
                "rollout": body["id"],
                "step": body["steps"][body["step_index"]],
                "reason": body.get("reason"),
            },
        )

    # --- reading ------------------------------------------------------------------------------

    async def status(self, pack_id: str, project: str) -> RolloutStatus:
        check_id("pack id", pack_id)
        rows = [r for r in await self._rt._store.rollouts(pack_id) if r.project == project]
        if not rows:
            raise NotFound(f"rollout of {pack_id} in project", project)
        active = [r for r in rows if r.state in ACTIVE_ROLLOUT_STATES]
        row = active[-1] if active else rows[-1]
        return self._status(row)

    def _status(self, row: RolloutRow) -> RolloutStatus:
        body = json.loads(row.body)
        shares = tuple(body["steps"])
        state: RolloutState = row.state  # type: ignore[assignment]
        share = 0 if state in ("aborting", "aborted") else shares[body["step_index"]]
        new, base = self._figures(body)
        return RolloutStatus(
            row.id,
            row.pack_id,
            body["version"],
            row.project,
            state,
            shares,
            share,
            len(body["members"]),
            len(ramped(body["members"], share)),
            datetime.fromtimestamp(body["started_at"], UTC),
            datetime.fromtimestamp(body["step_started"], UTC),
            body["step_interval"],
            body["max_error_rate"],
            body["max_error_increase"],
            body["min_calls"],
            body["actor"],
            body.get("reason"),
            new,
            base,
            self._draining(body) if state in ("aborting", "aborted") else 0,
        )


def _qualified(row: CatalogEntry) -> str:
    return f"{row.channel}:{row.version}"


def _gate(new: VersionHealth, base: VersionHealth, body: dict[str, Any]) -> str | None:
    """``None`` when the step passes, ``"wait"`` until ``min_calls`` calls were made, else why it
    fails."""
    min_calls = body["min_calls"]
    if new.calls < min_calls:
        return "wait"
    limit = body["max_error_rate"]
    if new.error_rate > limit:
        return (
            f"error rate {new.error_rate:.1%} ({new.errors} of {new.calls} calls) above "
            f"max_error_rate {limit:.1%}"
        )
    margin = body["max_error_increase"]
    if base.calls >= max(min_calls, 1) and new.error_rate > base.error_rate + margin:
        return (
            f"error rate {new.error_rate:.1%} ({new.errors} of {new.calls} calls) above "
            f"{base.version}'s {base.error_rate:.1%} by more than max_error_increase {margin:.1%}"
        )
    return None
