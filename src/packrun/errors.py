"""Every error packrun raises.

One root, :class:`PackrunError`; a family per subject beneath it; a concrete class per stable ``code``::

    PackrunError
    ├── VersionError
    │   ├── InvalidVersion ·················· invalid_version
    │   └── DowngradeNotAllowed ············· downgrade_not_allowed
    ├── ArtifactError
    │   ├── InvalidManifest ················· invalid_manifest
    │   ├── InvalidBundle ··················· invalid_bundle
    │   └── ArtifactMismatch ················ artifact_mismatch
    ├── CatalogError
    │   ├── VersionExists ··················· version_exists
    │   ├── InstallationExists ·············· installation_exists
    │   ├── NotFound ························ not_found
    │   └── InvalidArgument ················· invalid_argument
    ├── ContractError
    │   ├── IntegrationContractIncompatible · integration_contract_incompatible
    │   └── BundleContractIncompatible ······ BUNDLE_CONTRACT_INCOMPATIBLE
    ├── UpdateError
    │   ├── BreakingDiff ···················· breaking_diff
    │   ├── DrainTimeout ···················· drain_timeout
    │   └── RolloutInProgress ··············· rollout_in_progress
    ├── SyncError
    │   ├── SourceError ····················· source_error
    │   └── UntrustedSource ················· untrusted_source
    ├── CallRefused
    │   ├── InvalidInput ···················· invalid_input
    │   ├── InvalidOutput ··················· invalid_output
    │   └── NeedsReauth ····················· needs_reauth
    ├── ToolFailed ·························· tool_error
    ├── SandboxError
    │   ├── ToolTimeout ····················· tool_timeout
    │   ├── SandboxCrashed ·················· sandbox_crashed
    │   └── SandboxUnavailable ·············· sandbox_unavailable
    └── StoreError ·························· store_error

``code`` is stable: match on it (or on the class), never on the message. Every message starts with its
code in brackets and says what was given and what was expected. Structured attributes (``pack``,
``version``, ``path``, ...) carry the same facts for programs.

Credentials never appear in a message: callers pass them per run and packrun does not put them here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ArtifactError",
    "ArtifactMismatch",
    "BreakingDiff",
    "BundleContractIncompatible",
    "CallRefused",
    "CatalogError",
    "ContractError",
    "DowngradeNotAllowed",
    "DrainTimeout",
    "IntegrationContractIncompatible",
    "InstallationExists",
    "InvalidArgument",
    "InvalidBundle",
    "InvalidInput",
    "InvalidManifest",
    "InvalidOutput",
    "InvalidVersion",
    "LayerValue",
    "NeedsReauth",
    "NotFound",
    "PackrunError",
    "Problem",
    "RolloutInProgress",
    "SandboxCrashed",
    "SandboxError",
    "SandboxUnavailable",
    "SourceError",
    "StoreError",
    "SyncError",
    "ToolFailed",
    "ToolTimeout",
    "UntrustedSource",
    "UpdateError",
    "VersionError",
    "VersionExists",
]


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut in the middle when it is longer than ``limit``."""
    text = repr(value)
    if len(text) > limit:
        if isinstance(value, str | bytes):
            size = f"{len(value):,} {'characters' if isinstance(value, str) else 'bytes'}"
        else:
            size = f"{len(text):,} characters shown"
        text = f"{text[: limit - 20]}...{text[-8:]} ({size})"
    return text


class PackrunError(Exception):
    """Root of every packrun error. ``code`` is a stable string; the message is for people."""

    code: str = "packrun_error"

    def __init__(self, message: str) -> None:
        super().__init__(f"[{self.code}] {message}")
        self.detail = message


# --- versions ---------------------------------------------------------------------------------


class VersionError(PackrunError):
    """A version string or a version order is wrong."""


class InvalidVersion(VersionError):
    """The string is not a version packrun accepts (strict Semantic Versioning 2.0)."""

    code = "invalid_version"

    def __init__(self, given: object, expected: str) -> None:
        self.given = given
        self.expected = expected
        super().__init__(f"{shown(given)} is not a valid version: expected {expected}")


class DowngradeNotAllowed(VersionError):
    """A new version is not above every existing version of its release line."""

    code = "downgrade_not_allowed"

    def __init__(self, pack: str, version: str, highest: str, line: str) -> None:
        self.pack = pack
        self.version = version
        self.highest = highest
        self.line = line
        super().__init__(
            f"{pack} {version} is below {highest}, the highest published version of the {line} line: "
            f"a new version must be above every existing version of its line (minor and patch never "
            f"go down); publish a version above {highest}, or start a new release line"
        )


# --- manifests, bundles and the three version layers --------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a document: where (a ``$.path``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"at {self.path}: {self.message}"


class ArtifactError(PackrunError):
    """A manifest, a bundle or a pack source is not what it must be."""


class InvalidManifest(ArtifactError):
    """A manifest, ``pack.json`` or index document is malformed. Lists every problem found."""

    code = "invalid_manifest"

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{source} has {count} problem{'s' if count != 1 else ''}:\n{lines}")


class InvalidBundle(ArtifactError):
    """A bundle file is corrupt, hostile, incomplete, or its code does not match its manifest."""

    code = "invalid_bundle"

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True, slots=True)
class LayerValue:
    """What one version layer says: ``layer`` names it, ``where`` is the file, ``value`` the version."""

    layer: str
    where: str
    value: str

    def __str__(self) -> str:
        return f"{self.layer} ({self.where}) = {self.value}"


class ArtifactMismatch(ArtifactError):
    """The layers that carry a version (pack, content entry, artifact) disagree."""

    code = "artifact_mismatch"

    def __init__(self, subject: str, layers: Sequence[LayerValue], hint: str = "") -> None:
        self.subject = subject
        self.layers = tuple(layers)
        said = "; ".join(str(layer) for layer in self.layers)
        tail = f" — {hint}" if hint else ""
        super().__init__(f"{subject}: version layers disagree: {said}{tail}")


# --- catalog ------------------------------------------------------------------------------------


class CatalogError(PackrunError):
    """A catalog or installation operation was refused."""


class VersionExists(CatalogError):
    """The version is already published and may not be published again."""

    code = "version_exists"

    def __init__(self, pack: str, version: str, reason: str) -> None:
        self.pack = pack
        self.version = version
        super().__init__(f"{pack} {version} is already published: {reason}")


class InstallationExists(CatalogError):
    """An installation with that id exists already."""

    code = "installation_exists"

    def __init__(self, installation: str, pack: str | None = None, pin: str | None = None) -> None:
        self.installation = installation
        self.pack = pack
        if pack is None:  # another project's: nothing about it is told
            super().__init__(
                f"installation id {installation!r} is taken (installation ids are unique across "
                "projects); pick another id"
            )
            return
        super().__init__(
            f"installation {installation!r} exists already ({pack}, pinned to {pin}); "
            "change it with set_pin or set_policy (packrun pin, packrun policy), or pick another id"
        )


class InvalidArgument(CatalogError):
    """An argument is not of a kind or value allowed (an id, a channel, a pin, a policy, a flag, a
    number of seconds, a store setting). ``what`` names the argument, ``given`` is the value (its
    ``repr`` in the message, cut short when long), ``allowed`` says what was expected."""

    code = "invalid_argument"

    def __init__(self, what: str, given: object, allowed: Sequence[str]) -> None:
        self.what = what
        self.given = given
        self.allowed = tuple(allowed)
        expected = (
            self.allowed[0] if len(self.allowed) == 1 else "one of " + ", ".join(self.allowed)
        )
        super().__init__(f"{shown(given, 120)} is not a valid {what}: expected {expected}")


class NotFound(CatalogError):
    """A pack, version, installation, run or tool does not exist."""

    code = "not_found"

    def __init__(self, kind: str, name: str, known: Sequence[str] = ()) -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(known)
        tail = ""
        if self.known:
            listed = ", ".join(self.known[:10]) + (", ..." if len(self.known) > 10 else "")
            tail = f"; known: {listed}"
        super().__init__(f"no {kind} {shown(name, 300)}{tail}")


# --- contract generations -----------------------------------------------------------------------


class ContractError(PackrunError):
    """A bundle's contract generation is outside what this runtime supports.

    ``direction`` is ``"too_old"`` (rebuild the bundle) or ``"too_new"`` (upgrade the runtime).
    """

    _ADVICE: Final = {
        "too_old": "rebuild it with a current SDK (packrun build); a patch release is enough",
        "too_new": "upgrade packrun on this executor, or pin a version built for a supported generation",
    }

    def __init__(
        self, bundle: str, version: str, generation: int, supported: Collection[int]
    ) -> None:
        self.bundle = bundle
        self.version = version
        self.generation = generation
        self.supported = tuple(sorted(supported))
        too_old = not self.supported or generation < self.supported[0]
        self.direction: Literal["too_old", "too_new"] = "too_old" if too_old else "too_new"
        listed = ", ".join(str(g) for g in self.supported) or "no generation"
        relation = "older than" if too_old else "newer than"
        super().__init__(
            f"{bundle} {version} was built against contract generation {generation}, {relation} "
            f"this runtime supports; this runtime supports {listed} — {self._ADVICE[self.direction]}"
        )


class IntegrationContractIncompatible(ContractError):
    """Refused at publish or install: the bundle's generation is outside the supported window."""

    code = "integration_contract_incompatible"


class BundleContractIncompatible(ContractError):
    """Refused at run time: the pinned bundle's generation is no longer (or not yet) supported."""

    code = "BUNDLE_CONTRACT_INCOMPATIBLE"


# --- updates ------------------------------------------------------------------------------------


class UpdateError(PackrunError):
    """An update, rollback or drain did not go through."""


class BreakingDiff(UpdateError):
    """The update target has breaking findings (or is a major) and was not acknowledged."""

    code = "breaking_diff"

    moves: tuple[tuple[str, str, str | None, str], ...] = ()
    """For a retirement: every installation it would move that needs the acknowledgement, as
    ``(installation, from_version, to_version, reason)`` (``to_version`` ``None``: nothing left)."""

    def __init__(self, installation: str, from_version: str, to_version: str, reason: str) -> None:
        self.installation = installation
        self.from_version = from_version
        self.to_version = to_version
        super().__init__(
            f"updating {installation} from {from_version} to {to_version} needs "
            f"acknowledge_breaking=True: {reason}"
        )

    @classmethod
    def retiring(
        cls, pack: str, version: str, moves: Sequence[tuple[str, str, str | None, str]]
    ) -> BreakingDiff:
        """The refusal of a retirement that would move installations across a major or breaking
        findings; ``installation``, ``from_version`` and ``to_version`` name the first of them."""
        first, *_ = moves
        error = cls(first[0], first[1], first[2] or "nothing", first[3])
        shown = "; ".join(f"{i} {f} -> {t or 'nothing'} ({r})" for i, f, t, r in moves[:10])
        PackrunError.__init__(
            error,
            f"retiring {pack} {version} needs acknowledge_breaking=True: it would move "
            f"{len(moves)} installation(s) across a major or breaking findings: {shown}"
            + ("; ..." if len(moves) > 10 else ""),
        )
        error.moves = tuple(moves)
        return error


class DrainTimeout(UpdateError):
    """Runs were still in flight on a version when the drain timeout ran out."""

    code = "drain_timeout"

    def __init__(self, pack: str, version: str, timeout: float, run_ids: Sequence[str]) -> None:
        self.pack = pack
        self.version = version
        self.timeout = timeout
        self.run_ids = tuple(run_ids)
        shown = ", ".join(self.run_ids[:10]) + (", ..." if len(self.run_ids) > 10 else "")
        super().__init__(
            f"{pack} {version} still has {len(self.run_ids)} run(s) in flight after {timeout:g}s: {shown}"
        )


class RolloutInProgress(UpdateError):
    """A rollout of the pack is already running in the project: one at a time."""

    code = "rollout_in_progress"

    def __init__(self, pack: str, project: str, rollout_id: str, version: str) -> None:
        self.pack = pack
        self.project = project
        self.rollout_id = rollout_id
        self.version = version
        super().__init__(
            f"{pack} already has rollout {rollout_id} (to {version}) running in project "
            f"{project}: expected no running rollout; promote or abort it first"
        )


# --- pack sources -------------------------------------------------------------------------------


class SyncError(PackrunError):
    """A pack source could not be read, or failed its trust policy."""


class SourceError(SyncError):
    """A pack source is malformed, unknown, or cannot be fetched (``source`` names it)."""

    code = "source_error"

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"source {source!r}: {message}")


class UntrustedSource(SyncError):
    """A pack source failed its trust policy: ``revision`` (a commit or digest) and why."""

    code = "untrusted_source"

    def __init__(self, source: str, revision: str, reason: str) -> None:
        self.source = source
        self.revision = revision
        self.reason = reason
        super().__init__(f"source {source!r} at {revision} is not trusted: {reason}")


# --- tools and stores ---------------------------------------------------------------------------


class CallRefused(PackrunError):
    """A tool call broke the contract its manifest declares, or its run's credentials do not
    satisfy the bound version's auth."""


def _problem_lines(problems: Sequence[Problem]) -> str:
    shown = [f"  - {p}" for p in problems[:20]]
    if len(problems) > 20:
        shown.append(f"  - ... and {len(problems) - 20} more")
    return "\n".join(shown)


class InvalidInput(CallRefused):
    """A call's input does not match the tool's declared input; the tool did not run.

    ``problems`` lists every bad path (``$.limit``, ``$.filters.status``) with what was expected.
    """

    code = "invalid_input"

    def __init__(self, pack: str, version: str, tool: str, problems: Sequence[Problem]) -> None:
        self.pack = pack
        self.version = version
        self.tool = tool
        self.problems = tuple(problems)
        n = len(self.problems)
        super().__init__(
            f"the input of {pack} {version} tool {tool!r} does not match its declared input "
            f"({n} problem{'' if n == 1 else 's'}); the tool did not run:\n"
            + _problem_lines(self.problems)
        )


class InvalidOutput(CallRefused):
    """A tool returned an output that does not match its declared output (its release breaks
    its own contract). ``problems`` lists every bad path."""

    code = "invalid_output"

    def __init__(self, pack: str, version: str, tool: str, problems: Sequence[Problem]) -> None:
        self.pack = pack
        self.version = version
        self.tool = tool
        self.problems = tuple(problems)
        n = len(self.problems)
        super().__init__(
            f"the output of {pack} {version} tool {tool!r} does not match its declared output "
            f"({n} problem{'' if n == 1 else 's'}):\n" + _problem_lines(self.problems)
        )


class NeedsReauth(CallRefused):
    """The run's credentials do not satisfy the auth of the version it is bound to: the linked
    account must re-authenticate. ``missing`` names what is missing (never a credential value)."""

    code = "needs_reauth"

    def __init__(self, installation: str, pack: str, version: str, missing: Sequence[str]) -> None:
        self.installation = installation
        self.pack = pack
        self.version = version
        self.missing = tuple(missing)
        super().__init__(
            f"installation {installation!r} runs {pack} {version}, whose auth the run's "
            f"credentials do not satisfy: {'; '.join(self.missing)}; re-authenticate the "
            f"linked account with what {pack} {version} needs"
        )


class ToolFailed(PackrunError):
    """A tool reported a failure. ``tool_code`` is the tool's own code, ``tool`` its id."""

    code = "tool_error"

    def __init__(self, tool: str, tool_code: str, message: str) -> None:
        self.tool = tool
        self.tool_code = tool_code
        self.tool_message = message
        super().__init__(f"tool {tool!r} failed with {tool_code!r}: {message}")


class SandboxError(PackrunError):
    """Bundle code in a sandbox worker could not finish its call: the worker was stopped or died."""


class ToolTimeout(SandboxError):
    """A tool ran past its deadline; its worker was killed (the run and the executor go on)."""

    code = "tool_timeout"

    def __init__(self, pack: str, version: str, tool: str, timeout: float) -> None:
        self.pack = pack
        self.version = version
        self.tool = tool
        self.timeout = timeout
        super().__init__(
            f"tool {tool!r} of {pack} {version} did not answer within its deadline of "
            f"{timeout:g}s; its worker was killed (set timeout_s on the tool in the manifest, "
            "or the runtime's call_timeout, to allow longer)"
        )


class SandboxCrashed(SandboxError):
    """The worker running a tool died: it exited, was killed by a signal or reached a limit.
    ``cause`` says which."""

    code = "sandbox_crashed"

    def __init__(self, pack: str, version: str, tool: str, cause: str) -> None:
        self.pack = pack
        self.version = version
        self.tool = tool
        self.cause = cause
        super().__init__(
            f"the sandbox worker running tool {tool!r} of {pack} {version} died: {cause}; "
            "the call failed, the executor and other runs go on"
        )


class SandboxUnavailable(SandboxError):
    """A sandbox worker could not be started (the interpreter or bubblewrap is missing or fails)."""

    code = "sandbox_unavailable"

    def __init__(self, mode: str, reason: str) -> None:
        self.mode = mode
        self.reason = reason
        super().__init__(f"cannot start a sandbox worker (mode {mode!r}): {reason}")


class StoreError(PackrunError):
    """The store is unreachable, unknown, corrupt, or was written by a newer packrun."""

    code = "store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
