"""packrun: run versioned integration bundles safely.

Per request, packrun answers *which artifact of this integration runs now?* and runs it: a contract
gate admits bundles of the current and the previous runtime-contract generation, and every run keeps
the version it started with while pins move underneath.

The names below are the public surface; everything in a module whose name starts with ``_`` is
private and may change.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from packrun import blocking as blocking
from packrun._aliases import AliasChange
from packrun._auth import Auth
from packrun._bulk import BulkBlocked, BulkMove, BulkPlan, Selector
from packrun._bundle import (
    Bundle,
    BundleLimits,
    LoadedBundle,
    build_bundle,
    bundle_filename,
    load_bundle,
    read_bundle,
)
from packrun._catalog import CatalogEntry, Channel, ContentEntry
from packrun._checks import CheckMode, VersionHealth
from packrun._contract import CURRENT_GENERATION, DEFAULT_GENERATIONS, check_generation
from packrun._diff import LEVELS, RULES, DiffFinding, DiffReport, diff, load_profile
from packrun._dispatch import SandboxLimits, SandboxMode
from packrun._events import Event, EventKind
from packrun._manifest import (
    EntryManifest,
    Manifest,
    Notice,
    PackIndex,
    PackManifest,
    decode_entry_manifest,
    decode_index,
    decode_manifest,
    decode_pack_manifest,
    manifest_schema,
)
from packrun._openapi import import_openapi
from packrun._policy import AffectedWorkflow, Retirement, RetirementMove, Rollback, UpdateReview
from packrun._resolver import Explanation, Resolution
from packrun._retention import HistoryPage, Retention
from packrun._rollouts import RolloutState, RolloutStatus
from packrun._runs import Run, RuntimeStats
from packrun._runtime import Runtime, open_runtime
from packrun._soak import Soak, UpdateWindow
from packrun._source import CheckReport, Finding, check, verify
from packrun._sources import SourceSpec, SourceStatus, SyncItem, SyncReport, Trust
from packrun._stores import Alias, GcReport, Installation, Origin, PinEvent, Policy, Settings
from packrun._versions import (
    BumpKind,
    BumpProblem,
    ChangeLevel,
    Version,
    allowed_change,
    bump_kind,
    bump_problem,
    check_publish_order,
    release_line,
)
from packrun._views import (
    ContentState,
    LiveVersion,
    PackUpdates,
    ReleaseNotice,
    UpdateAvailable,
)
from packrun.errors import (
    ArtifactMismatch,
    BreakingDiff,
    BundleContractIncompatible,
    CallRefused,
    DowngradeNotAllowed,
    DrainTimeout,
    InstallationExists,
    IntegrationContractIncompatible,
    InvalidArgument,
    InvalidBundle,
    InvalidInput,
    InvalidManifest,
    InvalidOutput,
    InvalidVersion,
    NeedsReauth,
    NotFound,
    PackrunError,
    RolloutInProgress,
    SandboxCrashed,
    SandboxError,
    SandboxUnavailable,
    SourceError,
    StoreError,
    ToolFailed,
    ToolTimeout,
    UntrustedSource,
    VersionExists,
)

__version__: str = _metadata.version("packrun")
"""The version of the installed distribution: pyproject.toml's ``project.version``, read from its
metadata, so the two never disagree."""

__all__ = [
    "AffectedWorkflow",
    "Alias",
    "AliasChange",
    "ArtifactMismatch",
    "Auth",
    "BreakingDiff",
    "BulkBlocked",
    "BulkMove",
    "BulkPlan",
    "BumpKind",
    "BumpProblem",
    "Bundle",
    "BundleContractIncompatible",
    "BundleLimits",
    "CURRENT_GENERATION",
    "CallRefused",
    "CatalogEntry",
    "ChangeLevel",
    "Channel",
    "CheckMode",
    "CheckReport",
    "ContentEntry",
    "ContentState",
    "DEFAULT_GENERATIONS",
    "DiffFinding",
    "DiffReport",
    "DowngradeNotAllowed",
    "DrainTimeout",
    "EntryManifest",
    "Event",
    "EventKind",
    "Explanation",
    "Finding",
    "GcReport",
    "HistoryPage",
    "Installation",
    "InstallationExists",
    "IntegrationContractIncompatible",
    "InvalidArgument",
    "InvalidBundle",
    "InvalidInput",
    "InvalidManifest",
    "InvalidOutput",
    "InvalidVersion",
    "LEVELS",
    "LiveVersion",
    "LoadedBundle",
    "Manifest",
    "NeedsReauth",
    "NotFound",
    "Notice",
    "Origin",
    "PackIndex",
    "PackManifest",
    "PackUpdates",
    "PackrunError",
    "PinEvent",
    "Policy",
    "RULES",
    "ReleaseNotice",
    "Resolution",
    "Retention",
    "Retirement",
    "RetirementMove",
    "Rollback",
    "RolloutInProgress",
    "RolloutState",
    "RolloutStatus",
    "Run",
    "Runtime",
    "RuntimeStats",
    "SandboxCrashed",
    "SandboxError",
    "SandboxLimits",
    "SandboxMode",
    "SandboxUnavailable",
    "Selector",
    "Settings",
    "Soak",
    "SourceError",
    "SourceSpec",
    "SourceStatus",
    "StoreError",
    "SyncItem",
    "SyncReport",
    "ToolFailed",
    "ToolTimeout",
    "Trust",
    "UntrustedSource",
    "UpdateAvailable",
    "UpdateReview",
    "UpdateWindow",
    "Version",
    "VersionExists",
    "VersionHealth",
    "allowed_change",
    "build_bundle",
    "bump_kind",
    "bump_problem",
    "bundle_filename",
    "check",
    "check_generation",
    "check_publish_order",
    "decode_entry_manifest",
    "decode_index",
    "decode_manifest",
    "decode_pack_manifest",
    "diff",
    "import_openapi",
    "load_bundle",
    "load_profile",
    "manifest_schema",
    "open_runtime",
    "read_bundle",
    "release_line",
    "verify",
]
