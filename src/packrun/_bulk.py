"""Bulk operations: update or roll back every installation a selector picks, with a what-if first.

A :class:`Selector` picks installations by pack, the version they resolve to now, project,
update policy and pin. ``bulk_update``/``bulk_rollback`` first make a :class:`BulkPlan`: which
installations move (from what to what, with the runs in flight on the version they leave and the
workflows that use a changed tool) and which are blocked, each with its reason. ``dry_run=True``
(the default) returns that plan and changes nothing; ``dry_run=False`` makes the same plan and
applies each move in its own transaction, conditional on the pin the plan saw: an installation
moved meanwhile (by a person, a policy or another bulk operation, in any process) is left as it is
and reported blocked (``moved_meanwhile``), so two operators never move one installation twice.
Moves are recorded as pin events with origin ``bulk``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import anyio

from packrun._contract import check_generation
from packrun._policy import AffectedWorkflow
from packrun._resolver import DYNAMIC_PINS, exact_pin, normalize_pin
from packrun._stores import POLICIES, Installation, Policy
from packrun._versions import Version, version_key
from packrun.errors import InvalidArgument, InvalidVersion, NotFound, PackrunError

if TYPE_CHECKING:
    from packrun._runtime import Runtime

__all__ = [
    "BulkBlocked",
    "BulkMove",
    "BulkPlan",
    "Selector",
    "bulk_apply",
    "bulk_plan",
    "wait_drained",
]

BulkAction: TypeAlias = Literal["update", "rollback"]

BlockedKind: TypeAlias = Literal[
    "up_to_date",
    "dynamic_pin",
    "no_version",
    "not_above",
    "not_below",
    "breaking",
    "unresolved",
    "moved_meanwhile",
    "refused",
]

_FIELDS: Final = ("pack", "version", "project", "policy", "pin")
_SELECTOR_RULE: Final = (
    "a packrun.Selector, or text such as 'pack=acme,version=1.1.0,policy=auto_patch' "
    f"(keys: {', '.join(_FIELDS)}; each at most once)"
)
_VALUE: Final = re.compile(r"[A-Za-z0-9@][A-Za-z0-9._:@+-]{0,199}")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which installations a bulk operation takes: those matching every field given.

    ``version`` is the version an installation resolves to now (``1.1.0``, or ``vendor:1.1.0`` /
    ``custom:1.1.0`` to name a channel); ``pin`` is its stored pin (``latest``, ``1.1.0``,
    ``@stable``). ``str()`` gives the text form :meth:`parse` reads back:

    >>> str(Selector.parse("policy=auto_patch,pack=acme"))
    'pack=acme,policy=auto_patch'
    """

    pack: str | None = None
    version: str | None = None
    project: str | None = None
    policy: Policy | None = None
    pin: str | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _VALUE.fullmatch(value)):
                raise InvalidArgument(f"selector {name}", value, [_SELECTOR_RULE])
        if self.policy is not None and self.policy not in POLICIES:
            raise InvalidArgument("selector policy", self.policy, POLICIES)
        if self.version is not None:
            channel, sep, rest = self.version.partition(":")
            try:
                Version.parse(rest if sep and channel in ("vendor", "custom") else self.version)
            except InvalidVersion:
                raise InvalidArgument(
                    "selector version", self.version, ["a version such as 1.1.0 or vendor:1.1.0"]
                ) from None
        if self.pin is not None:
            object.__setattr__(self, "pin", normalize_pin(self.pin, "selector pin"))

    @classmethod
    def parse(cls, text: str) -> Selector:
        """A selector from ``key=value`` pairs separated by commas."""
        if not isinstance(text, str) or not text.strip() or "\x00" in text or len(text) > 2000:
            raise InvalidArgument("selector", text, [_SELECTOR_RULE])
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            key = key.strip()
            if not sep or key not in _FIELDS or key in fields or not value.strip():
                raise InvalidArgument("selector", text, [_SELECTOR_RULE])
            fields[key] = value.strip()
        return cls(**fields)  # type: ignore[arg-type]

    @classmethod
    def _of(cls, value: object) -> Selector:
        """``value`` as a selector: a :class:`Selector` as is, text through :meth:`parse`."""
        if isinstance(value, Selector):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise InvalidArgument("selector", value, [_SELECTOR_RULE])

    def _matches(self, inst: Installation, resolved: Version | None, channel: str | None) -> bool:
        """Whether ``inst`` (resolving to ``resolved`` on ``channel``) is selected."""
        if self.pack is not None and inst.pack_id != self.pack:
            return False
        if self.project is not None and inst.project != self.project:
            return False
        if self.policy is not None and inst.policy != self.policy:
            return False
        if self.pin is not None and inst.pin != self.pin:
            return False
        if self.version is not None:
            if resolved is None:
                return False
            want, sep, rest = self.version.partition(":")
            if sep and want in ("vendor", "custom"):
                return channel == want and resolved == Version.parse(rest)
            return resolved == Version.parse(self.version)
        return True

    def __str__(self) -> str:
        return ",".join(f"{n}={getattr(self, n)}" for n in _FIELDS if getattr(self, n) is not None)


@dataclass(frozen=True, slots=True)
class BulkMove:
    """One installation a bulk operation moves: its pin and version before and after."""

    installation_id: str
    project: str
    pack_id: str
    from_pin: str
    to_pin: str
    from_version: str
    to_version: str
    bump: str
    """``bump_kind(from_version, to_version)`` (``downgrade`` for a rollback)."""
    runs_in_flight: tuple[str, ...]
    """This installation's runs in flight on ``from_version``: they finish on it."""
    affected_workflows: tuple[AffectedWorkflow, ...]
    """The workflows of this installation that use a tool the move changes."""

    def __str__(self) -> str:
        runs = f"; {len(self.runs_in_flight)} run(s) in flight" if self.runs_in_flight else ""
        return (
            f"{self.installation_id} ({self.pack_id}): {self.from_version} -> {self.to_version} "
            f"({self.bump}; pin {self.from_pin} -> {self.to_pin}){runs}"
        )


@dataclass(frozen=True, slots=True)
class BulkBlocked:
    """One selected installation a bulk operation does not move, and why.

    ``kind``: ``up_to_date`` (no newer version, or already on the target), ``dynamic_pin`` (a
    ``latest*`` or alias pin, which bulk moves leave to their own mechanics), ``no_version`` (the
    target does not exist for it), ``not_above`` / ``not_below`` (an update target not above, a
    rollback target not below the current version), ``breaking`` (a major, breaking findings or
    a red verdict without ``acknowledge_breaking=True``), ``unresolved`` (nothing satisfies its
    pin), ``moved_meanwhile`` (its pin changed between the plan and the move), ``refused`` (the
    target is outside this runtime's contract generations, or the move failed when applied; the
    reason says why).
    """

    installation_id: str
    pack_id: str
    from_version: str | None
    to_version: str | None
    kind: BlockedKind
    reason: str

    def __str__(self) -> str:
        return f"{self.installation_id} ({self.pack_id}): {self.kind}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk operation does (``dry_run=True``: would do): the moves and the blocked, by
    installation id. ``str()`` gives a readable plan."""

    action: BulkAction
    selector: Selector
    to: str | None
    dry_run: bool
    moves: tuple[BulkMove, ...]
    blocked: tuple[BulkBlocked, ...]
    drained: bool | None = None
    """``None`` when the operation did not wait; else whether the runs of the moved installations
    on the versions they left all ended within ``drain_timeout``."""
    still_in_flight: tuple[str, ...] = ()
    """Those runs still in flight when it stopped waiting."""

    @property
    def runs_in_flight(self) -> int:
        """Runs in flight on the versions the moves leave (they finish on them)."""
        return sum(len(m.runs_in_flight) for m in self.moves)

    @property
    def affected_workflows(self) -> tuple[str, ...]:
        """Every workflow that uses a tool one of the moves changes, as ``installation/workflow``."""
        return tuple(
            sorted(
                {
                    f"{m.installation_id}/{w.workflow_id}"
                    for m in self.moves
                    for w in m.affected_workflows
                }
            )
        )

    def __str__(self) -> str:
        head = (
            f"bulk {self.action} {self.selector or '(every installation)'}"
            + (f" to {self.to}" if self.to else "")
            + (" (dry run: nothing moved)" if self.dry_run else "")
        )
        lines = [
            head,
            f"{'would move' if self.dry_run else 'moved'}: {len(self.moves)}; "
            f"blocked: {len(self.blocked)}; runs in flight on the versions left: "
            f"{self.runs_in_flight}",
        ]
        lines += [f"  move {m}" for m in self.moves]
        lines += [f"  blocked {b}" for b in self.blocked]
        if self.affected_workflows:
            lines.append("affected workflows: " + ", ".join(self.affected_workflows))
        if self.drained is not None:
            lines.append(
                "the versions left drained"
                if self.drained
                else f"still in flight on the versions left: {', '.join(self.still_in_flight)}"
            )
        return "\n".join(lines)


def _check_to(to: object, optional: bool) -> str | None:
    if to is None and optional:
        return None
    if not isinstance(to, str):
        raise InvalidArgument("to (the target version)", to, ["a version such as 1.2.0"])
    normalize_pin(to, "to (the target version)")
    if to.startswith("@") or to in DYNAMIC_PINS:
        raise InvalidArgument(
            "to (the target version)", to, ["a version such as 1.2.0, vendor:1.2.0 or custom:1.2.0"]
        )
    return to


def bulk_plan(
    rt: Runtime,
    action: BulkAction,
    selector: object,
    to: object,
    acknowledge_breaking: bool,
) -> BulkPlan:
    """The plan of a bulk operation on ``rt``'s state now (nothing moves)."""
    chosen = Selector._of(selector)
    target = _check_to(to, optional=action == "update")
    moves: list[BulkMove] = []
    blocked: list[BulkBlocked] = []
    for inst in rt.installations(project=chosen.project):
        res = rt._cells[inst.id].value
        if not chosen._matches(
            inst, None if res is None else res.entry.version, None if res is None else res.channel
        ):
            continue
        step = _plan_one(rt, action, inst, target, acknowledge_breaking)
        (moves if isinstance(step, BulkMove) else blocked).append(step)  # type: ignore[arg-type]
    return BulkPlan(action, chosen, target, True, tuple(moves), tuple(blocked))


def _plan_one(
    rt: Runtime, action: BulkAction, inst: Installation, to: str | None, acknowledge: bool
) -> BulkMove | BulkBlocked:
    res = rt._cells[inst.id].value

    def blocked(kind: BlockedKind, reason: str, to_version: str | None = None) -> BulkBlocked:
        current = None if res is None else res.version
        return BulkBlocked(inst.id, inst.pack_id, current, to_version, kind, reason)

    if res is None:
        return blocked("unresolved", f"nothing satisfies its pin {inst.pin}")
    if inst.pin in DYNAMIC_PINS or inst.pin.startswith("@"):
        return blocked(
            "dynamic_pin",
            f"pin {inst.pin} moves with {'its alias' if inst.pin.startswith('@') else 'new versions'}; "
            "set an exact pin to move it on its own",
        )
    try:
        review, row = rt._review(inst.id, to, inst.project)
    except NotFound as exc:
        if to is None:
            return blocked("up_to_date", f"no newer live version on the {res.channel} channel")
        return blocked("no_version", str(exc), to)
    if review.bump == "none":
        return blocked("up_to_date", f"already on {review.to_version}", review.to_version)
    down = review.bump == "downgrade"
    if action == "update" and down:
        return blocked(
            "not_above", f"{review.to_version} is below {res.version}", review.to_version
        )
    if action == "rollback" and not down:
        return blocked(
            "not_below", f"{review.to_version} is not below {res.version}", review.to_version
        )
    if action == "update" and review.acknowledge and not acknowledge:
        return blocked(
            "breaking",
            "needs acknowledge_breaking=True: " + "; ".join(review.acknowledge),
            review.to_version,
        )
    if row.contract is not None:
        try:
            check_generation(row.pack_id, str(row.version), row.contract, rt.generations)
        except PackrunError as exc:
            return blocked("refused", str(exc), review.to_version)
    return BulkMove(
        inst.id,
        inst.project,
        inst.pack_id,
        inst.pin,
        exact_pin(row, rt._resolver.custom_keys(inst.pack_id, inst.project)),
        review.from_version,
        review.to_version,
        review.bump,
        review.runs_in_flight,
        review.affected_workflows,
    )


async def bulk_apply(rt: Runtime, plan: BulkPlan, actor: str) -> BulkPlan:
    """Apply ``plan``: each move in its own transaction, only if the pin is still the one the plan
    saw; what moved and what did not (``moved_meanwhile``, or refused by the store) is reported."""
    moves: list[BulkMove] = []
    blocked = list(plan.blocked)
    for move in plan.moves:
        try:
            event = await rt._move_pin(
                move.installation_id,
                move.to_pin,
                actor=actor,
                origin="bulk",
                expect_pin=move.from_pin,
            )
        except PackrunError as exc:  # one installation must not hold back the others
            event, reason = None, str(exc)
            kind: BlockedKind = "refused"
        else:
            kind = "moved_meanwhile"
            reason = "its pin changed after the plan was made; left as it is"
        if event is None:
            blocked.append(
                BulkBlocked(
                    move.installation_id,
                    move.pack_id,
                    move.from_version,
                    move.to_version,
                    kind,
                    reason,
                )
            )
        else:
            moves.append(move)
    blocked.sort(key=lambda b: b.installation_id)
    return replace(plan, dry_run=False, moves=tuple(moves), blocked=tuple(blocked))


async def wait_drained(rt: Runtime, plan: BulkPlan, timeout: float) -> BulkPlan:
    """Wait up to ``timeout`` seconds for the runs of the moved installations on the versions
    they left to end (in every process on the store); ``plan`` with what was seen."""
    deadline = anyio.current_time() + timeout
    while True:
        await rt._refresh_remote_runs()
        still = tuple(
            run
            for m in plan.moves
            for run in rt._runs_of(m.installation_id, version_key(Version.parse(m.from_version)))
        )
        left = deadline - anyio.current_time()
        if not still or left <= 0:
            return replace(plan, drained=not still, still_in_flight=still)
        await anyio.sleep(min(0.05, left))
