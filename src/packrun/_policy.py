"""Update policies, the update review, and the rules an update or a rollback follows.

``auto_patch`` and ``auto_minor`` installations move, after a publish, to the highest eligible
version whose diff from their current version has no breaking finding: same channel, live, a patch
(or patch and minor) step, pre-releases only when the installation allows them. Majors and versions
with breaking findings (or a ``red`` verdict) wait; the installation shows the update as blocked.

:func:`available_update` is the one answer to "which update is available" that ``explain``,
``packrun status``, ``review_update`` and ``update`` (without a target) give, and policies choose
among the same candidates (:func:`newer_rows`). A manual move down (an update or a rollback)
*holds* the policy: it moves the installation again only to a version above the one the move left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

from packrun._catalog import CatalogEntry
from packrun._diff import DiffFinding, DiffReport
from packrun._reauth import reauth_reasons
from packrun._soak import Soak
from packrun._stores import Policy, WorkflowTools
from packrun._versions import BumpKind, Version, bump_kind
from packrun._views import ReleaseNotice

__all__ = [
    "AffectedWorkflow",
    "Blocked",
    "DiffOf",
    "Retirement",
    "RetirementMove",
    "Rollback",
    "UpdateReview",
    "affected_workflows",
    "available_update",
    "changed_tools",
    "newer_rows",
    "policy_target",
    "retirement_move",
    "why_acknowledge",
]

DiffOf: TypeAlias = Callable[[CatalogEntry, CatalogEntry], DiffReport]
"""The diff between two catalog rows (cached by the runtime: each pair is computed once)."""

_STEPS: Final[Mapping[str, tuple[BumpKind, ...]]] = {
    "auto_patch": ("patch",),
    "auto_minor": ("patch", "minor"),
}


@dataclass(frozen=True, slots=True)
class Blocked:
    """A newer version an update policy did not move to, and why.

    ``kind`` is ``major``, ``breaking``, ``red`` or ``needs_reauth`` (the update would change the
    auth the linked account holds credentials for) when the update waits for a review (the
    installation shows ``update blocked: breaking_diff``), ``outside_policy`` for a step the policy
    does not take (a minor under ``auto_patch``, a pre-release step), ``held`` for a version at or
    below the one a manual move took the installation down from, ``soaking`` for a version younger
    than the installation's ``min_release_age`` (``until`` says when it is old enough), ``window``
    when the policy waits for its update window (``until`` says when it opens).
    """

    version: str
    reason: str
    kind: Literal[
        "major", "breaking", "red", "needs_reauth", "outside_policy", "held", "soaking", "window"
    ] = "breaking"
    until: datetime | None = None
    """For ``soaking`` and ``window``: when the policy may take the version."""

    @property
    def waits_for_review(self) -> bool:
        """True when the update waits for a review, not merely outside the policy, held or
        waiting for time to pass."""
        return self.kind not in ("outside_policy", "held", "soaking", "window")

    def __str__(self) -> str:
        return f"{self.version}: {self.reason}"


def newer_rows(
    current: CatalogEntry, rows: Iterable[CatalogEntry], allow_prerelease: bool
) -> list[CatalogEntry]:
    """The live rows above ``current`` on its channel, ascending (pre-releases if allowed)."""
    return sorted(
        (
            r
            for r in rows
            if r.is_live
            and r.channel == current.channel
            and r.version > current.version
            and (allow_prerelease or not r.version.is_prerelease)
        ),
        key=lambda r: r.version,
    )


def available_update(
    current: CatalogEntry, rows: Iterable[CatalogEntry], allow_prerelease: bool
) -> CatalogEntry | None:
    """The update available to an installation on ``current``: the newest live row above it on
    its channel (pre-releases if allowed), or ``None``. What ``explain`` and ``packrun status``
    show, and what ``review_update``/``update`` take without a target."""
    newer = newer_rows(current, rows, allow_prerelease)
    return newer[-1] if newer else None


def policy_target(
    policy: Policy,
    current: CatalogEntry,
    rows: Iterable[CatalogEntry],
    allow_prerelease: bool,
    diff_of: DiffOf,
    hold: Version | None = None,
    soak: Soak | None = None,
    now: datetime | None = None,
) -> tuple[CatalogEntry | None, tuple[Blocked, ...]]:
    """Where ``policy`` moves an installation on ``current`` now, and the newer versions it did not
    move to (above the target), each with its reason. ``(None, ())`` for ``manual``.

    With ``hold`` (the version a manual move took the installation down from), only versions
    above it are targets. With ``soak`` (and ``now``), a version younger than its
    ``min_release_age`` is passed over for an older one (Renovate's minimum release age), and
    outside the update window nothing is a target."""
    steps = _STEPS.get(policy)
    if steps is None:
        return None, ()
    blocked: list[Blocked] = []
    for row in reversed(newer_rows(current, rows, allow_prerelease)):
        if hold is not None and row.version <= hold:
            reason = f"at or below {hold}, which a manual move left: the policy holds"
            blocked.append(Blocked(str(row.version), reason, "held"))
            continue
        kind = bump_kind(current.version, row.version)
        if kind == "prerelease":
            kind = "patch"  # 1.1.0-rc.1 -> 1.1.0 (or -rc.2): the release it was a candidate for
        if kind not in steps:
            reason = f"a {kind} update, which {policy} does not take"
            blocked.append(
                Blocked(str(row.version), reason, "major" if kind == "major" else "outside_policy")
            )
            continue
        report = diff_of(current, row)
        reauth = reauth_reasons(report)
        if reauth:  # never moved into needs_reauth silently, whatever a profile made of it
            reason = f"needs re-authentication ({'; '.join(reauth)})"
            blocked.append(Blocked(str(row.version), reason, "needs_reauth"))
            continue
        if report.breaking:
            rules = ", ".join(sorted({f.rule_id for f in report.breaking}))
            blocked.append(Blocked(str(row.version), f"breaking findings ({rules})", "breaking"))
            continue
        if report.verdict == "red":
            blocked.append(Blocked(str(row.version), "a red verdict", "red"))
            continue
        if soak is not None and now is not None:
            until = soak._soaks_until(row.published_at)
            if until is not None and until > now:
                reason = f"soaking until {_when(until)} ({soak.describe()})"
                blocked.append(Blocked(str(row.version), reason, "soaking", until))
                continue
            if soak.window is not None and not soak.window._contains(now):
                opens = soak.window._next_open(now)
                reason = f"outside the update window {soak.window} (UTC); it opens {_when(opens)}"
                blocked.append(Blocked(str(row.version), reason, "window", opens))
                return None, tuple(blocked)
        return row, tuple(blocked)
    return None, tuple(blocked)


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def changed_tools(findings: Iterable[DiffFinding], tools: Iterable[str]) -> frozenset[str]:
    """The tools a diff touches: those its findings name, and every tool when a finding that is
    not about one tool (auth, connection properties, the artifact) may break callers."""
    named: set[str] = set()
    every = False
    for finding in findings:
        if finding.path.startswith("$.tools["):
            named.add(finding.path[len("$.tools[") :].split("]", 1)[0])
        elif finding.level in ("breaking", "dangerous"):
            every = True
    return frozenset(tools) if every else frozenset(named)


@dataclass(frozen=True, slots=True)
class AffectedWorkflow:
    """A workflow that uses a tool the update changes: how it is known to use it, and which."""

    workflow_id: str
    source: Literal["declared", "observed", "declared and observed"]
    tools: tuple[str, ...]


def affected_workflows(
    usage: WorkflowTools, changed: frozenset[str]
) -> tuple[AffectedWorkflow, ...]:
    """The workflows of an installation that use a changed tool, by what was declared and what
    runs were seen calling."""
    out = []
    for workflow in sorted(set(usage.declared) | set(usage.observed)):
        declared = usage.declared.get(workflow, frozenset()) & changed
        observed = usage.observed.get(workflow, frozenset()) & changed
        if not declared and not observed:
            continue
        source: Literal["declared", "observed", "declared and observed"] = (
            "declared and observed"
            if declared and observed
            else "declared"
            if declared
            else "observed"
        )
        out.append(AffectedWorkflow(workflow, source, tuple(sorted(declared | observed))))
    return tuple(out)


def why_acknowledge(report: DiffReport) -> tuple[str, ...]:
    """Why an update to this target needs ``acknowledge_breaking=True``: a major, breaking
    findings, a red verdict. Empty when it does not."""
    reasons = []
    if report.declared_bump == "major":
        reasons.append(f"{report.new_version} is a major update from {report.old_version}")
    if report.breaking:
        rules = ", ".join(sorted({f.rule_id for f in report.breaking}))
        reasons.append(f"{len(report.breaking)} breaking finding(s): {rules}")
    if report.verdict == "red":
        reasons.append("the verdict is red (semver dishonesty)")
    return tuple(reasons)


@dataclass(frozen=True, slots=True)
class UpdateReview:
    """What an update of one installation would do, before it is done.

    ``str()`` gives a readable review: versions, bump, verdict, findings by level, affected
    workflows, runs in flight, and whether the update needs ``acknowledge_breaking=True``.
    """

    installation_id: str
    from_version: str
    to_version: str
    bump: BumpKind
    """The declared step (section 2's reading of 0.x and pre-releases)."""
    required_bump: str
    verdict: str
    findings: tuple[DiffFinding, ...]
    affected_workflows: tuple[AffectedWorkflow, ...]
    runs_in_flight: tuple[str, ...]
    """Runs of this installation in flight on its current version: they finish on it."""
    acknowledge: tuple[str, ...]
    """Why the update needs ``acknowledge_breaking=True``; empty when it does not."""
    report: DiffReport
    needs_reauth: tuple[str, ...] = ()
    """What the linked account must re-authenticate with after this update (the auth mode, a
    required scope or credential field changed); empty when nothing."""
    notices: tuple[ReleaseNotice, ...] = ()
    """The notices of the releases the update crosses (a breaking change, an upgrade deadline,
    a migration guide)."""
    soaking_until: datetime | None = None
    """For an installation with an auto policy: until when the target is younger than its
    ``min_release_age`` (the policy does not take it before then); ``None`` otherwise."""

    @property
    def needs_acknowledgement(self) -> bool:
        """True for a major, a target with breaking findings, or a red verdict."""
        return bool(self.acknowledge)

    def __str__(self) -> str:
        lines = [
            f"update {self.installation_id}: {self.from_version} -> {self.to_version} "
            f"({self.bump}; the changes need a {self.required_bump}); verdict {self.verdict}",
        ]
        lines += [f"  {line}" for line in str(self.report).splitlines()[1:]]
        if self.affected_workflows:
            lines.append("affected workflows:")
            lines += [
                f"  {w.workflow_id} ({w.source}): {', '.join(w.tools)}"
                for w in self.affected_workflows
            ]
        else:
            lines.append("affected workflows: none known")
        lines.append(
            f"runs in flight on {self.from_version}: {len(self.runs_in_flight)}"
            + (f" ({', '.join(self.runs_in_flight[:10])})" if self.runs_in_flight else "")
        )
        if self.needs_reauth:
            lines.append(
                "needs re-authentication after the update: " + "; ".join(self.needs_reauth)
            )
        lines.extend(f"notice: {n}" for n in self.notices)
        if self.soaking_until is not None:
            lines.append(
                f"soaking until {_when(self.soaking_until)}: the update policy takes it from then"
            )
        if self.acknowledge:
            lines.append("needs acknowledge_breaking=True: " + "; ".join(self.acknowledge))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Rollback:
    """What a rollback did: the pin's move, and whether the version left behind drained."""

    installation_id: str
    from_version: str
    to_version: str
    drained: bool | None
    """``None`` when the rollback did not wait; else whether this installation's runs on
    ``from_version`` all ended within ``drain_timeout``."""
    still_in_flight: tuple[str, ...]
    """The runs of this installation still in flight on ``from_version`` when it stopped waiting."""


@dataclass(frozen=True, slots=True)
class RetirementMove:
    """An installation whose resolution a retirement changes: a dynamic pin (``latest``,
    ``latest-vendor``, ``latest-custom``) that resolved to the retired version."""

    installation_id: str
    pin: str
    from_version: str
    to_version: str | None
    """What the pin resolves to once the version is retired; ``None`` when nothing is left."""
    to_channel: str | None
    bump: BumpKind | None
    """``bump_kind(from_version, to_version)``: ``downgrade`` for a move down; ``None`` when
    nothing is left."""
    step: BumpKind | None
    """The size of the step whichever its direction (``major`` for 2.0.0 -> 1.1.0)."""
    acknowledge: tuple[str, ...]
    """Why this move needs ``acknowledge_breaking=True`` (a major step, breaking findings); empty
    when it does not."""

    def __str__(self) -> str:
        to = (
            f"{self.to_version} ({self.to_channel}; {self.bump}, a {self.step} step)"
            if self.to_version is not None
            else "nothing"
        )
        text = f"{self.installation_id} (pin {self.pin}): {self.from_version} -> {to}"
        # A retirement with such a move happened only with acknowledge_breaking=True.
        return text + (f"; acknowledged: {'; '.join(self.acknowledge)}" if self.acknowledge else "")


@dataclass(frozen=True, slots=True)
class Retirement:
    """What ``retire`` did: the retired row, every installation whose resolution moved with it,
    and the installations pinned to it exactly (they keep running it)."""

    entry: CatalogEntry
    moves: tuple[RetirementMove, ...]
    pinned: tuple[str, ...]

    @property
    def needs_acknowledgement(self) -> bool:
        """True when a move crosses a major or breaking findings."""
        return any(m.acknowledge for m in self.moves)

    def __str__(self) -> str:
        e = self.entry
        lines = [
            f"retired {e.pack_id} {e.version}: out of latest pins and update targets; "
            "exact pins keep it"
        ]
        lines += [f"moved {m}" for m in self.moves]
        if self.pinned:
            lines.append(f"still pinned to it ({len(self.pinned)}): {', '.join(self.pinned)}")
        return "\n".join(lines)


def retirement_move(
    installation_id: str,
    pin: str,
    current: CatalogEntry,
    after: CatalogEntry | None,
    diff_of: DiffOf,
) -> RetirementMove:
    """How retiring ``current`` moves an installation whose pin ``pin`` resolved to it and will
    resolve to ``after``, and why that needs an acknowledgement."""
    if after is None:  # reported; runs of it are then refused with not_found, as explain says
        return RetirementMove(
            installation_id, pin, str(current.version), None, None, None, None, ()
        )
    low, high = sorted((current.version, after.version))
    step = bump_kind(low, high)
    reasons = []
    if step == "major":
        way = "down" if after.version < current.version else "up"
        reasons.append(f"a major step {way} from {current.version} to {after.version}")
    report = diff_of(current, after)
    if report.breaking:
        rules = ", ".join(sorted({f.rule_id for f in report.breaking}))
        reasons.append(f"{len(report.breaking)} breaking finding(s): {rules}")
    return RetirementMove(
        installation_id,
        pin,
        str(current.version),
        str(after.version),
        after.channel,
        bump_kind(current.version, after.version),
        step,
        tuple(reasons),
    )
