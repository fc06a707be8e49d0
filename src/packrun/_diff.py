"""Breaking-change detection between two manifests, and the semver-honesty verdict.

:func:`diff` compares an old and a new integration manifest and reports every change as a
:class:`DiffFinding`: a stable rule id (see :data:`RULES`), a ``$.path`` that names elements by id
(``$.tools[list_contacts].output[contacts].items.fields[id].type``), a message saying what changed
from what to what, the old and new values, and a level:

* ``breaking`` -- needs a major release;
* ``dangerous`` -- may break some consumers (an output that may now be null, a new output enum
  value); needs a minor, shown loudly;
* ``compatible`` -- an addition: needs a minor;
* ``patch`` -- text, defaults: a patch is enough.

Direction decides most levels. Inputs and filters are what callers *send*: widening them is safe,
narrowing breaks. Outputs and event payloads are what callers *receive*: narrowing is safe,
widening (or a new possible value) may break.

The :class:`DiffReport` derives the required bump from the findings, reads the declared bump from
the two versions (:func:`~packrun._versions.bump_kind`, with its reading of 0.x and pre-releases)
and gives a verdict: ``ok``, ``amber`` or ``red``. A *profile* (``rule_id = level`` lines) can
reclassify any rule before the verdict is made.

Every list is indexed by id or name before it is compared, and nested fields are walked with an
explicit stack, so the cost is linear in the size of the manifests and no nesting depth overflows.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeVar

import msgspec

from packrun._bundle import BUNDLE_SUFFIX, Bundle, read_bundle
from packrun._manifest import (
    AuthSpec,
    CredentialField,
    DeclaredError,
    Event,
    Field,
    Group,
    Manifest,
    Pagination,
    Tool,
    decode_manifest,
    read_document,
)
from packrun._versions import (
    BumpKind,
    Version,
    allowed_change,
    bump_kind,
    bump_problem,
)
from packrun.errors import InvalidArgument, InvalidBundle, InvalidManifest, NotFound, Problem

__all__ = [
    "LEVELS",
    "RULES",
    "Direction",
    "DiffFinding",
    "DiffReport",
    "Level",
    "Profile",
    "Rule",
    "Side",
    "Verdict",
    "diff",
    "load_profile",
    "rules_markdown",
]

Level: TypeAlias = Literal["breaking", "dangerous", "compatible", "patch"]
"""How much a change matters: see the module docstring."""
Direction: TypeAlias = Literal["input", "output", "none"]
"""What a rule is about: what callers send (``input``), what they receive (``output``), or neither."""
Verdict: TypeAlias = Literal["ok", "amber", "red"]
"""The semver-honesty verdict of a :class:`DiffReport`."""
RequiredBump: TypeAlias = Literal["major", "minor", "patch", "none"]

LEVELS: Final[tuple[Level, ...]] = ("breaking", "dangerous", "compatible", "patch")
"""Every level, most serious first (the order of a report)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of change: its stable ``id``, default ``level``, ``direction`` and an example."""

    id: str
    level: Level
    direction: Direction
    summary: str
    example: str


_BASE_RULES: Final[tuple[Rule, ...]] = (
    Rule("artifact.content_changed", "breaking", "none",
         "two bundles of the same version have different bytes", "acme 1.2.0 published twice, other digest"),
    Rule("artifact.contract_changed", "patch", "none",
         "the bundle was built against another contract generation", "contract 1 -> 2 (a rebuild)"),
    Rule("auth.credential_became_optional", "compatible", "input", "a credential field is no longer required",
         "`secret` required -> optional"),
    Rule("auth.credential_became_required", "breaking", "input", "a credential field became required",
         "`secret` optional -> required"),
    Rule("auth.credential_removed", "compatible", "input", "a credential field is no longer read",
         "credential field `key` removed"),
    Rule("auth.mode_changed", "breaking", "none", "the auth mode changed",
         "api_key -> oauth2"),
    Rule("auth.optional_credential_added", "compatible", "input", "a new optional credential field",
         "optional `region` added"),
    Rule("auth.required_credential_added", "breaking", "input", "a new required credential field",
         "required `access_token` added"),
    Rule("auth.scope_added", "breaking", "input", "a new scope must be granted",
         "scope `contacts.read` added"),
    Rule("auth.scope_removed", "compatible", "input", "a scope is no longer needed",
         "scope `contacts.write` removed"),
    Rule("connection.property_added", "breaking", "none", "a connection property was added",
         "`region` added"),
    Rule("connection.property_changed", "breaking", "none",
         "a connection property changed type, requiredness or allowed values", "`port` string -> integer"),
    Rule("connection.property_removed", "breaking", "none", "a connection property was removed",
         "`host` removed"),
    Rule("connector.id_changed", "breaking", "none", "the two manifests are of different integrations",
         "`acme` -> `acme2`"),
    Rule("connector.metadata_changed", "patch", "none",
         "category, secondary category, family or icon changed", "category `crm` -> `sales`"),
    Rule("connector.network_changed", "patch", "none",
         "whether the tools need the network changed", "`network` true -> false"),
    Rule("event.added", "compatible", "none", "a new event",
         "event `contact.deleted` added"),
    Rule("event.removed", "breaking", "none", "an event was removed (or its id changed)",
         "event `contact.created` removed"),
    Rule("field.default_changed", "patch", "none",
         "a default no caller relies on changed: a connection property's, or a required input's",
         "`host` default `eu` -> `us`"),
    Rule("field.deprecation_changed", "compatible", "none",
         "a field was deprecated (or no longer is), or its sunset date changed",
         "`cursor` deprecated, sunset 2026-06-30"),
    Rule("group.added", "compatible", "none", "a new group",
         "group `deals` added"),
    Rule("group.name_changed", "patch", "none", "a group's display name changed",
         "group `contacts` named `People`"),
    Rule("group.removed", "breaking", "none", "a group was removed (or its id changed)",
         "group `contacts` removed"),
    Rule("text.changed", "patch", "none", "a name, summary, description or display name changed",
         "summary typo fixed"),
    Rule("tool.action_type_changed", "breaking", "none", "a tool's action type changed",
         "read -> write"),
    Rule("tool.added", "compatible", "none", "a new tool",
         "tool `count_contacts` added"),
    Rule("tool.deprecation_changed", "compatible", "none",
         "a tool was deprecated (or no longer is), or its sunset date changed",
         "`list_contacts` deprecated, sunset 2026-06-30"),
    Rule("tool.endpoint_api_version_changed", "breaking", "none", "a tool's endpoint API version changed",
         "v1 -> v2"),
    Rule("tool.error_added", "dangerous", "output", "a tool may fail with a new declared error code",
         "`rate_limited` added"),
    Rule("tool.error_changed", "breaking", "output", "a declared error changed whether it is retryable",
         "`rate_limited` retryable true -> false"),
    Rule("tool.error_removed", "compatible", "output", "a tool no longer declares an error code",
         "`quota_exceeded` removed"),
    Rule("tool.group_changed", "patch", "none", "a tool moved to another group (display only)",
         "`contacts` -> `people`"),
    Rule("tool.method_changed", "breaking", "none", "a tool's HTTP method changed",
         "GET -> POST"),
    Rule("tool.pagination_changed", "breaking", "none", "a tool's pagination style or page size changed",
         "page size 50 -> 100"),
    Rule("tool.removed", "breaking", "none", "a tool was removed (or its id changed)",
         "tool `get_contact` removed"),
    Rule("tool.removed_after_sunset", "dangerous", "none",
         "a deprecated tool was removed after its sunset date (a planned removal)",
         "tool `get_contact` (sunset 2025-01-31) removed"),
    Rule("tool.timeout_changed", "patch", "none",
         "a tool's declared timeout was raised, set or dropped", "`timeout_s` 10 -> 30"),
    Rule("tool.timeout_lowered", "dangerous", "none",
         "a tool's declared timeout was lowered: calls that took longer now fail", "`timeout_s` 30 -> 10"),
)  # fmt: skip

# Field rules come in pairs: what callers send (input and filter fields) and what they receive
# (output and payload fields). Each row: the change, the input level, the output level, what
# changed, and an example.
_FIELD_RULE_ROWS: Final[tuple[tuple[str, Level, Level | None, str, str], ...]] = (
    ("became_nullable", "compatible", "breaking",
     "a field may now be null", "`email` nullable false -> true"),
    ("became_non_nullable", "breaking", "compatible",
     "a field may no longer be null", "`email` nullable true -> false"),
    ("became_optional", "compatible", "breaking",
     "a field is no longer required (may be absent)", "`account_id` required -> optional"),
    ("became_required", "breaking", "compatible",
     "a field became required (always present)", "`company` optional -> required"),
    ("default_changed", "breaking", None,
     "a field's default value changed (what the tool does when it is left out)",
     "`limit` default 10 -> 20"),
    ("discriminator_changed", "breaking", "breaking",
     "a union's discriminator field changed", "`kind` -> `type`"),
    ("enum_dropped", "compatible", "dangerous",
     "a field takes any value, not only its enum", "`status` enum dropped"),
    ("enum_introduced", "breaking", "compatible",
     "a field takes only enum values now", "`status` now one of open, closed"),
    ("enum_value_added", "compatible", "dangerous",
     "a field takes one more enum value", "`status` may be `archived`"),
    ("enum_value_removed", "breaking", "compatible",
     "a field no longer takes an enum value", "`status` no longer `open`"),
    ("field_removed", "breaking", "breaking",
     "a field was removed (or renamed)", "`cursor` removed"),
    ("field_removed_after_sunset", "dangerous", "dangerous",
     "a deprecated field was removed after its sunset date (a planned removal)",
     "`cursor` (sunset 2025-01-31) removed"),
    ("format_added", "breaking", "compatible",
     "a string field must now have a format", "`since` now a `date-time`"),
    ("format_changed", "breaking", "breaking",
     "a string field's format changed", "`since` `date` -> `date-time`"),
    ("format_removed", "compatible", "breaking",
     "a string field no longer has a format", "`since` no longer a `date-time`"),
    ("items_loosened", "compatible", "breaking",
     "an array or map may hold fewer or more entries (`min_items` lowered, `max_items` raised)",
     "`ids` max_items 100 -> 500"),
    ("items_tightened", "breaking", "compatible",
     "an array or map must hold fewer or more entries (`min_items` raised, `max_items` lowered)",
     "`ids` max_items 500 -> 100"),
    ("length_loosened", "compatible", "breaking",
     "a string may be shorter or longer (`min_length` lowered, `max_length` raised)",
     "`name` max_length 64 -> 255"),
    ("length_tightened", "breaking", "compatible",
     "a string must be shorter or longer (`min_length` raised, `max_length` lowered)",
     "`name` max_length 255 -> 64"),
    ("optional_field_added", "compatible", "compatible",
     "a new field that may be absent", "optional `company` added"),
    ("pattern_added", "breaking", "compatible",
     "a string field must now match a pattern", "`code` now `^[A-Z]{3}$`"),
    ("pattern_changed", "breaking", "breaking",
     "a string field's pattern changed (no one can tell wider from narrower)",
     "`code` `^[A-Z]{3}$` -> `^[A-Z]{2,4}$`"),
    ("pattern_removed", "compatible", "breaking",
     "a string field no longer has to match a pattern", "`code` pattern dropped"),
    ("range_loosened", "compatible", "breaking",
     "a number may be lower or higher (a minimum lowered or dropped, a maximum raised or dropped)",
     "`limit` maximum 100 -> 1000"),
    ("range_tightened", "breaking", "compatible",
     "a number must be lower or higher (a minimum raised or set, a maximum lowered or set)",
     "`limit` maximum 1000 -> 100"),
    ("required_field_added", "breaking", "compatible",
     "a new field that is always there", "required `account_id` added"),
    ("type_changed", "breaking", "breaking",
     "a field changed type (or was restructured)", "`limit` integer -> string"),
    ("type_narrowed", "breaking", "compatible",
     "a number field became an integer field", "`ratio` number -> integer"),
    ("type_widened", "compatible", "breaking",
     "an integer field became a number field", "`count` integer -> number"),
    ("variant_added", "compatible", "dangerous",
     "a union takes one more variant", "`target` may be an `email`"),
    ("variant_removed", "breaking", "compatible",
     "a union no longer takes a variant", "`target` no longer an `email`"),
)  # fmt: skip
_SIDES: Final[tuple[tuple[Direction, str], ...]] = (
    ("input", "an input or filter field: "),
    ("output", "an output or payload field: "),
)
_RULE_LIST: Final[tuple[Rule, ...]] = tuple(
    sorted(
        (
            *_BASE_RULES,
            *(
                Rule(f"{side}.{change}", level, side, prefix + summary, example)
                for change, input_level, output_level, summary, example in _FIELD_RULE_ROWS
                for (side, prefix), level in zip(_SIDES, (input_level, output_level), strict=True)
                if level is not None  # an output's default is nothing callers see
            ),
        ),
        key=lambda r: r.id,
    )
)

RULES: Final[Mapping[str, Rule]] = MappingProxyType({r.id: r for r in _RULE_LIST})
"""Every rule, by id. Ids are stable: profiles and consumers of ``--json`` match on them."""


@dataclass(frozen=True, slots=True)
class DiffFinding:
    """One change between two manifests.

    ``old`` and ``new`` are the values before and after (JSON-ready; ``None`` when absent).
    """

    rule_id: str
    level: Level
    path: str
    message: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for ``--json``)."""
        return {
            "rule_id": self.rule_id,
            "level": self.level,
            "path": self.path,
            "message": self.message,
            "old": self.old,
            "new": self.new,
        }

    def __str__(self) -> str:
        return f"{self.level} {self.rule_id} at {self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class DiffReport:
    """What :func:`diff` found, the bump it requires, the bump declared and the verdict.

    ``verdict`` is ``ok``, ``amber`` or ``red``; ``reason`` says why in one sentence and ``notes``
    list what else a reviewer should know (a minor-level change shipped as a patch, dangerous
    findings, a version that goes down).
    """

    pack_id: str
    old_version: str
    new_version: str
    findings: tuple[DiffFinding, ...]
    required_bump: RequiredBump
    declared_bump: BumpKind
    verdict: Verdict
    reason: str
    notes: tuple[str, ...] = ()
    old_digest: str | None = None
    new_digest: str | None = None

    @property
    def breaking(self) -> tuple[DiffFinding, ...]:
        """The breaking findings."""
        return tuple(f for f in self.findings if f.level == "breaking")

    def by_level(self) -> Mapping[Level, tuple[DiffFinding, ...]]:
        """The findings of each level, every level present, most serious first."""
        groups: dict[Level, list[DiffFinding]] = {level: [] for level in LEVELS}
        for finding in self.findings:
            groups[finding.level].append(finding)
        return MappingProxyType({level: tuple(found) for level, found in groups.items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for ``--json``)."""
        return {
            "pack_id": self.pack_id,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "required_bump": self.required_bump,
            "declared_bump": self.declared_bump,
            "verdict": self.verdict,
            "reason": self.reason,
            "notes": list(self.notes),
            "counts": {level: len(found) for level, found in self.by_level().items()},
            "findings": [f.to_dict() for f in self.findings],
        }

    def __str__(self) -> str:
        lines = [
            f"{self.pack_id} {self.old_version} -> {self.new_version}",
            f"verdict: {self.verdict} ({self.reason})",
            f"required bump: {self.required_bump}; declared bump: {self.declared_bump}",
        ]
        if not self.findings:
            lines.append("no changes found")
        for level, found in self.by_level().items():
            if found:
                lines.append(f"{level} ({len(found)}):")
                for f in found:
                    lines.append(f"  {f.path}  [{f.rule_id}]")
                    lines.append(f"    {f.message}")
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  - {note}" for note in self.notes)
        return "\n".join(lines)


# --- comparing --------------------------------------------------------------------------------

_FieldKind: TypeAlias = Literal["input", "output", "connection"]
_CHANGES: Final[tuple[str, ...]] = tuple(row[0] for row in _FIELD_RULE_ROWS)
_ALIASES: Final = {
    "added_required": "required_field_added",
    "added_optional": "optional_field_added",
    "removed": "field_removed",
    "removed_after_sunset": "field_removed_after_sunset",
}


def _side_rules(side: str) -> dict[str, str | None]:
    rules: dict[str, str | None] = {c: f"{side}.{c}" for c in _CHANGES}
    rules.update({alias: f"{side}.{c}" for alias, c in _ALIASES.items()})
    return {c: (rule if rule in RULES else None) for c, rule in rules.items()}


_FIELD_RULES: Final[Mapping[_FieldKind, Mapping[str, str | None]]] = {
    "input": _side_rules("input"),
    "output": _side_rules("output"),
    "connection": {
        **dict.fromkeys((*_CHANGES, *_ALIASES), "connection.property_changed"),
        "added_required": "connection.property_added",
        "added_optional": "connection.property_added",
        "removed": "connection.property_removed",
        "removed_after_sunset": "connection.property_removed",
        "default_changed": "field.default_changed",
    },
}
"""The rule of each change to a field, by the side the field is on (``None``: not reported)."""

_T = TypeVar("_T")


def _normal(value: Any) -> Any:
    """``value`` with integral floats as ints: 10 and 10.0 are one JSON number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    return value


_SCALARS: Final = (str, int, float, bool, type(None))


def _key(value: Any) -> str:
    # Python says 1 == True; JSON does not (true is no number), so values compare by their JSON.
    return json.dumps(_normal(value), sort_keys=True, ensure_ascii=False, default=repr)


def _network(manifest: Manifest) -> bool:
    """Whether the tools need the network: an unset ``network`` means true."""
    return True if manifest.network is msgspec.UNSET else bool(manifest.network)


def _declared(value: float | msgspec.UnsetType) -> float | None:
    """A declared number, ``None`` when unset ("not declared")."""
    return None if isinstance(value, msgspec.UnsetType) else value


def _show(value: Any) -> str:
    """A value as a message shows it: JSON (``null``, ``"text"``, ``10``), long ones shortened;
    the finding's ``old`` and ``new`` keep the whole value."""
    shown = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return shown if len(shown) <= 72 else f"{shown[:56]}...{shown[-12:]}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _name(item: Field | CredentialField) -> str:
    return item.name


def _index(items: Iterable[_T], key: Callable[[_T], str]) -> dict[str, _T]:
    return {key(item): item for item in items}


class _Differ:
    """Collects the findings of one comparison."""

    def __init__(self, today: datetime.date) -> None:
        self.findings: list[DiffFinding] = []
        self.today = today

    def past_sunset(self, item: Field | Tool) -> bool:
        """Whether removing ``item`` now is the planned removal it announced."""
        return item.deprecated and item.sunset is not None and item.sunset <= self.today

    def add(self, rule_id: str, path: str, message: str, old: Any = None, new: Any = None) -> None:
        level = RULES[rule_id].level
        self.findings.append(
            DiffFinding(rule_id, level, path, message, _jsonable(old), _jsonable(new))
        )

    def changed(self, rule_id: str, path: str, what: str, old: Any, new: Any) -> None:
        """A finding when a value changed: "``what`` changed from ``old`` to ``new``"."""
        if type(old) is type(new) and type(old) in _SCALARS and old == new:
            return  # most values compared are equal strings: skip their JSON
        if _key(old) != _key(new):
            self.add(rule_id, path, f"{what} changed from {_show(old)} to {_show(new)}", old, new)

    def keyed(
        self,
        old: Iterable[_T],
        new: Iterable[_T],
        key: Callable[[_T], str],
        base: str,
        on_removed: Callable[[str, _T], None],
        on_added: Callable[[str, _T], None],
        on_both: Callable[[str, _T, _T], None],
    ) -> None:
        """Match two lists by id or name: each element is removed, added or compared."""
        old_by, new_by = _index(old, key), _index(new, key)
        for name, item in old_by.items():
            other = new_by.get(name)
            if other is None:
                on_removed(f"{base}[{name}]", item)
            else:
                on_both(f"{base}[{name}]", item, other)
        for name, item in new_by.items():
            if name not in old_by:
                on_added(f"{base}[{name}]", item)

    def named(
        self,
        kind: str,
        old: Iterable[_T],
        new: Iterable[_T],
        key: Callable[[_T], str],
        base: str,
        on_both: Callable[[str, _T, _T], None],
    ) -> None:
        """Tools, groups and events: ``{kind}.removed``, ``{kind}.added``, or compared."""

        def removed(path: str, item: _T) -> None:
            self.add(f"{kind}.removed", path, f"{kind} {_show(key(item))} removed", key(item))

        def added(path: str, item: _T) -> None:
            self.add(f"{kind}.added", path, f"{kind} {_show(key(item))} added", None, key(item))

        self.keyed(old, new, key, base, removed, added, on_both)

    def texts(self, path: str, what: str, old: object, new: object, attrs: Sequence[str]) -> None:
        """``text.changed`` for each of ``attrs`` that differs between ``old`` and ``new``."""
        for attr in attrs:
            was, now = getattr(old, attr), getattr(new, attr)
            self.changed("text.changed", f"{path}.{attr}", f"{_words(attr)} of {what}", was, now)

    # -- the manifest ----------------------------------------------------------------------------

    def manifest(self, old: Manifest, new: Manifest) -> None:
        self.changed("connector.id_changed", "$.id", "integration id", old.id, new.id)
        if old.contract is not None and new.contract is not None:  # a source has none yet
            what = "contract generation"
            self.changed(
                "artifact.contract_changed", "$.contract", what, old.contract, new.contract
            )
        self.texts("$", "the connector", old, new, ("name", "description"))
        for attr in ("category", "secondary_category", "family", "icon"):
            was, now = getattr(old, attr), getattr(new, attr)
            self.changed("connector.metadata_changed", f"$.{attr}", _words(attr), was, now)
        self.auth(old.auth, new.auth)
        self.fields(
            old.connection_properties,
            new.connection_properties,
            "$.connection_properties",
            "connection",
            "connection property",
        )
        self.named("group", old.groups, new.groups, lambda g: g.id, "$.groups", self.group)
        self.named("event", old.events, new.events, lambda e: e.id, "$.events", self.event)
        self.changed(
            "connector.network_changed", "$.network", "network", _network(old), _network(new)
        )

        def tool_removed(path: str, t: Tool) -> None:
            if self.past_sunset(t):
                message = f"tool {_show(t.id)} removed after its sunset date {t.sunset}"
                self.add("tool.removed_after_sunset", path, message, t.id)
            else:
                self.add("tool.removed", path, f"tool {_show(t.id)} removed", t.id)

        def tool_added(path: str, t: Tool) -> None:
            self.add("tool.added", path, f"tool {_show(t.id)} added", None, t.id)

        self.keyed(
            old.tools, new.tools, lambda t: t.id, "$.tools", tool_removed, tool_added, self.tool
        )

    def auth(self, a: AuthSpec, b: AuthSpec) -> None:
        self.changed("auth.mode_changed", "$.auth.mode", "auth mode", a.mode, b.mode)
        old_scopes, new_scopes = dict.fromkeys(a.scopes), dict.fromkeys(b.scopes)
        for scope in old_scopes.keys() - new_scopes.keys():
            path = f"$.auth.scopes[{scope}]"
            self.add("auth.scope_removed", path, f"scope {_show(scope)} no longer needed", scope)
        for scope in new_scopes.keys() - old_scopes.keys():
            path = f"$.auth.scopes[{scope}]"
            self.add("auth.scope_added", path, f"scope {_show(scope)} now needed", None, scope)

        def removed(path: str, c: CredentialField) -> None:
            message = f"credential field {_show(c.name)} removed"
            self.add("auth.credential_removed", path, message, c.name)

        def added(path: str, c: CredentialField) -> None:
            kind = "required" if c.required else "optional"
            message = f"{kind} credential field {_show(c.name)} added"
            self.add(f"auth.{kind}_credential_added", path, message, None, c.name)

        def both(path: str, c: CredentialField, d: CredentialField) -> None:
            if c.required != d.required:
                now = "required" if d.required else "optional"
                message = f"credential field {_show(c.name)} became {now}"
                rule = f"auth.credential_became_{now}"
                self.add(rule, f"{path}.required", message, c.required, d.required)
            what = f"credential field {_show(c.name)}"
            self.texts(path, what, c, d, ("display_name", "description"))

        creds = "$.auth.credential_fields"
        self.keyed(a.credential_fields, b.credential_fields, _name, creds, removed, added, both)

    def group(self, path: str, old: Group, new: Group) -> None:
        what = f"group {_show(old.id)}"
        self.changed("group.name_changed", f"{path}.name", f"name of {what}", old.name, new.name)
        self.texts(path, what, old, new, ("description",))

    def event(self, path: str, old: Event, new: Event) -> None:
        self.texts(path, f"event {_show(old.id)}", old, new, ("name", "description"))
        self.fields(old.payload, new.payload, f"{path}.payload", "output", "payload field")

    def tool(self, path: str, old: Tool, new: Tool) -> None:
        what = f"tool {_show(old.id)}"
        self.texts(path, what, old, new, ("name", "summary", "description"))
        for attr in ("method", "action_type", "group", "endpoint_api_version"):
            was, now = getattr(old, attr), getattr(new, attr)
            self.changed(
                f"tool.{attr}_changed", f"{path}.{attr}", f"{_words(attr)} of {what}", was, now
            )
        # No pagination and {"style": "none"} say the same thing.
        a, b = old.pagination or Pagination(), new.pagination or Pagination()
        for attr in ("style", "page_size"):
            was, now = getattr(a, attr), getattr(b, attr)
            where = f"{path}.pagination.{attr}"
            self.changed(
                "tool.pagination_changed", where, f"pagination {_words(attr)} of {what}", was, now
            )
        self.fields(old.input, new.input, f"{path}.input", "input", "input field")
        self.fields(old.filters, new.filters, f"{path}.filters", "input", "filter field")
        self.fields(old.output, new.output, f"{path}.output", "output", "output field")
        where = f"{path}.timeout_s"
        was, now = _declared(old.timeout_s), _declared(new.timeout_s)
        lowered = was is not None and now is not None and now < was
        rule = "tool.timeout_lowered" if lowered else "tool.timeout_changed"
        self.changed(rule, where, f"timeout of {what}", was, now)
        self.deprecation("tool.deprecation_changed", path, what, old, new)
        self.errors(path, what, old, new)

    def deprecation(
        self, rule: str, path: str, what: str, old: Field | Tool, new: Field | Tool
    ) -> None:
        if old.deprecated != new.deprecated:
            message = f"{what} {'is now' if new.deprecated else 'is no longer'} deprecated"
            self.add(rule, f"{path}.deprecated", message, old.deprecated, new.deprecated)
        was = None if old.sunset is None else old.sunset.isoformat()
        now = None if new.sunset is None else new.sunset.isoformat()
        self.changed(rule, f"{path}.sunset", f"sunset date of {what}", was, now)

    def errors(self, path: str, what: str, old: Tool, new: Tool) -> None:
        def removed(where: str, e: DeclaredError) -> None:
            message = f"{what} no longer declares error {_show(e.code)}"
            self.add("tool.error_removed", where, message, e.code)

        def added(where: str, e: DeclaredError) -> None:
            message = f"{what} may now fail with error {_show(e.code)}"
            self.add("tool.error_added", where, message, None, e.code)

        def both(where: str, e: DeclaredError, d: DeclaredError) -> None:
            if e.retryable != d.retryable:
                message = (
                    f"error {_show(e.code)} of {what} is "
                    f"{'now' if d.retryable else 'no longer'} retryable"
                )
                self.add(
                    "tool.error_changed", f"{where}.retryable", message, e.retryable, d.retryable
                )
            self.texts(where, f"error {_show(e.code)} of {what}", e, d, ("description",))

        self.keyed(old.errors, new.errors, lambda e: e.code, f"{path}.errors", removed, added, both)

    # -- fields, at any depth --------------------------------------------------------------------

    def fields(
        self, old: Sequence[Field], new: Sequence[Field], base: str, kind: _FieldKind, label: str
    ) -> None:
        """Compare two field lists and everything nested in them, with a stack (no recursion)."""
        rules = _FIELD_RULES[kind]
        pairs: list[tuple[str, Field, Field]] = []
        lists: list[tuple[Sequence[Field], Sequence[Field], str, str]] = [(old, new, base, "")]

        def removed(path: str, f: Field, change: str = "removed") -> None:
            if self.past_sunset(f):
                message = f"{label} {_show(f.name)} removed after its sunset date {f.sunset}"
                self.rule(rules["removed_after_sunset"], path, message, f.name)
                return
            message = f"{label} {_show(f.name)} ({_describe(f)}) {change}"
            self.rule(rules["removed"], path, message, f.name)

        def added(path: str, f: Field, change: str = "added") -> None:
            rule = rules["added_required" if f.required else "added_optional"]
            message = f"{label} {_show(f.name)} ({_describe(f)}) {change}"
            self.rule(rule, path, message, None, f.name)

        def variant_removed(path: str, f: Field) -> None:
            message = f"variant {_show(f.name)} ({f.type}) of a union removed"
            self.rule(rules["variant_removed"], path, message, f.name)

        def variant_added(path: str, f: Field) -> None:
            message = f"variant {_show(f.name)} ({f.type}) of a union added"
            self.rule(rules["variant_added"], path, message, None, f.name)

        def both(path: str, f: Field, g: Field) -> None:
            pairs.append((path, f, g))

        while lists or pairs:
            if lists:
                a, b, where, of = lists.pop()
                if of == "one_of":
                    self.keyed(a, b, _name, where, variant_removed, variant_added, both)
                else:
                    self.keyed(a, b, _name, where, removed, added, both)
                continue
            path, f, g = pairs.pop()
            self.field(path, f, g, rules, f"{label} {_show(f.name)}")
            if f.type != g.type and {f.type, g.type} != {"integer", "number"}:
                continue  # a field that changed type is not compared inside
            lists.append((f.fields or (), g.fields or (), f"{path}.fields", ""))
            lists.append((f.one_of or (), g.one_of or (), f"{path}.one_of", "one_of"))
            for part in ("items", "values"):
                was, now = getattr(f, part), getattr(g, part)
                if was is not None and now is not None:
                    pairs.append((f"{path}.{part}", was, now))
                elif was is not None:  # only a hand-built Manifest has an array without items
                    removed(f"{path}.{part}", was)
                elif now is not None:
                    added(f"{path}.{part}", now)

    def rule(
        self, rule_id: str | None, path: str, message: str, old: Any = None, new: Any = None
    ) -> None:
        """A finding of ``rule_id``, unless the change is not reported on this side (``None``)."""
        if rule_id is not None:
            self.add(rule_id, path, message, old, new)

    def field(
        self, path: str, f: Field, g: Field, rules: Mapping[str, str | None], what: str
    ) -> None:
        """Compare one field with its new self, not what is nested in it."""
        if f.type != g.type:
            step = (f.type, g.type)
            change = {("integer", "number"): "type_widened", ("number", "integer"): "type_narrowed"}
            how = "restructured" if "array" in step or "map" in step else "changed type"
            message = f"{what} {how}: {f.type} -> {g.type}"
            self.rule(rules[change.get(step, "type_changed")], f"{path}.type", message, *step)
        if f.required != g.required:
            now, was = ("required", "optional") if g.required else ("optional", "required")
            message = f"{what} became {now} (was {was})"
            rule = rules["became_required" if g.required else "became_optional"]
            self.rule(rule, f"{path}.required", message, f.required, g.required)
        if f.nullable != g.nullable:
            now = "may now be null" if g.nullable else "may no longer be null"
            rule = rules["became_nullable" if g.nullable else "became_non_nullable"]
            self.rule(rule, f"{path}.nullable", f"{what} {now}", f.nullable, g.nullable)
        self.texts(path, what, f, g, ("display_name", "description"))
        self.deprecation("field.deprecation_changed", path, what, f, g)
        if f.type != g.type and {f.type, g.type} != {"integer", "number"}:
            return  # enum values, defaults and constraints of another type say nothing more
        if _key(f.default) != _key(g.default):
            message = f"default of {what} changed from {_show(f.default)} to {_show(g.default)}"
            rule = rules["default_changed"]
            if rule is not None and rule.startswith("input.") and g.required:
                rule = "field.default_changed"  # a required input is always sent: never used
            self.rule(rule, f"{path}.default", message, f.default, g.default)
        self.enum(f"{path}.enum", f, g, rules, what)
        self.constraints(path, f, g, rules, what)
        if f.discriminator != g.discriminator:
            was, now = _show(f.discriminator), _show(g.discriminator)
            message = f"discriminator of {what} changed from {was} to {now}"
            self.rule(
                rules["discriminator_changed"],
                f"{path}.discriminator",
                message,
                f.discriminator,
                g.discriminator,
            )

    def constraints(
        self, path: str, f: Field, g: Field, rules: Mapping[str, str | None], what: str
    ) -> None:
        """Value constraints: each bound that moved is a tightening or a loosening."""
        for family, low, high in (
            ("range", "minimum", "maximum"),
            ("length", "min_length", "max_length"),
            ("items", "min_items", "max_items"),
        ):
            for attr, upper in ((low, False), (high, True)):
                was, now = _bound(f, attr, upper), _bound(g, attr, upper)
                if was == now:
                    continue
                tighter = _tighter(now, was, upper)
                where = attr if now is None or not now[1] else f"exclusive_{attr}"
                how = "tightened" if tighter else "loosened"
                shown = f"{_bound_text(was, upper)} -> {_bound_text(now, upper)}"
                message = f"{_words(attr)} of {what} {how}: {shown}"
                change = f"{family}_{'tightened' if tighter else 'loosened'}"
                self.rule(
                    rules[change], f"{path}.{where}", message, _bound_value(was), _bound_value(now)
                )
        for attr in ("pattern", "format"):
            was, now = getattr(f, attr), getattr(g, attr)
            if was == now:
                continue
            change = "added" if was is None else "removed" if now is None else "changed"
            message = f"{attr} of {what} {change}: {_show(was)} -> {_show(now)}"
            self.rule(rules[f"{attr}_{change}"], f"{path}.{attr}", message, was, now)

    def enum(
        self, path: str, f: Field, g: Field, rules: Mapping[str, str | None], what: str
    ) -> None:
        if f.enum is None and g.enum is not None:
            message = f"{what} is now limited to {_values(g.enum)} (was any value)"
            self.rule(rules["enum_introduced"], path, message, None, g.enum)
        if f.enum is not None and g.enum is None:
            message = f"{what} is no longer limited to {_values(f.enum)} (now any value)"
            self.rule(rules["enum_dropped"], path, message, f.enum, None)
        if f.enum is None or g.enum is None:
            return
        was, now = {_key(v): v for v in f.enum}, {_key(v): v for v in g.enum}
        for key in was.keys() - now.keys():
            message = f"enum value {_show(was[key])} of {what} removed"
            self.rule(rules["enum_value_removed"], path, message, was[key])
        for key in now.keys() - was.keys():
            message = f"enum value {_show(now[key])} of {what} added"
            self.rule(rules["enum_value_added"], path, message, None, now[key])


def _bound(f: Field, attr: str, upper: bool) -> tuple[float, bool] | None:
    """The bound ``attr`` of ``f`` as ``(value, exclusive)``: for a range, the tighter of the
    inclusive and the exclusive form."""
    value = getattr(f, attr)
    inclusive = None if value is None else (value, False)
    if attr not in ("minimum", "maximum"):
        return inclusive
    excl = getattr(f, f"exclusive_{attr}")
    exclusive = None if excl is None else (excl, True)
    if inclusive is None or exclusive is None:
        return inclusive or exclusive
    return exclusive if _tighter(exclusive, inclusive, upper) else inclusive


def _tighter(a: tuple[float, bool] | None, b: tuple[float, bool] | None, upper: bool) -> bool:
    """Whether bound ``a`` admits fewer values than bound ``b`` (``None``: no bound)."""
    if a is None:
        return False
    if b is None:
        return True
    if a[0] != b[0]:
        return a[0] < b[0] if upper else a[0] > b[0]
    return a[1] and not b[1]


def _bound_value(bound: tuple[float, bool] | None) -> Any:
    return None if bound is None else bound[0]


def _bound_text(bound: tuple[float, bool] | None, upper: bool) -> str:
    if bound is None:
        return "none"
    sign = ("<" if bound[1] else "<=") if upper else (">" if bound[1] else ">=")
    return f"{sign} {_show(bound[0])}"


def _words(attr: str) -> str:
    return {"method": "HTTP method", "endpoint_api_version": "endpoint API version"}.get(
        attr, attr.replace("_", " ")
    )


def _values(values: Iterable[Any]) -> str:
    return ", ".join(_show(v) for v in values)


def _describe(f: Field) -> str:
    return f"{f.type}, {'required' if f.required else 'optional'}"


# --- inputs -------------------------------------------------------------------------------------

Side: TypeAlias = Manifest | Mapping[str, Any] | Bundle | str | os.PathLike[str]
"""What :func:`diff` compares: a manifest, its JSON as a dict, a bundle, or a path to one of these
(a ``*.bundle.tar.gz``, a ``manifest.json``, or an integration source folder)."""

_GZIP_MAGIC: Final = b"\x1f\x8b"


def _load(side: object, label: str) -> tuple[Manifest, str | None]:
    """The manifest of one side, and the bundle digest when the side is a bundle."""
    if isinstance(side, Manifest):
        return side, None
    if isinstance(side, Bundle):
        return side.manifest, side.digest
    if isinstance(side, Mapping):
        return decode_manifest(dict(side), source=label), None
    if isinstance(side, str | os.PathLike):
        try:
            path = Path(side)
        except TypeError:  # an os.PathLike whose path is bytes
            pass
        else:
            return _load_path(path)
    raise InvalidManifest(
        label,
        [
            Problem(
                "$",
                "expected a Manifest, a manifest dict, a Bundle, or the path of a bundle, "
                f"a manifest.json or a source folder; got {type(side).__name__}",
            )
        ],
    )


def _load_path(path: Path) -> tuple[Manifest, str | None]:
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long, an embedded NUL byte
        is_dir = is_file = False
    if is_dir:
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise InvalidBundle(str(path), "an integration source folder needs manifest.json")
        return decode_manifest(read_document(manifest_path), source=str(manifest_path)), None
    if not is_file:
        raise NotFound("bundle, manifest or source folder", str(path))
    if path.name.endswith(BUNDLE_SUFFIX):
        bundle = read_bundle(path)
        return bundle.manifest, bundle.digest
    data = read_document(path)
    if data.startswith(_GZIP_MAGIC):  # a bundle under another name
        bundle = read_bundle(data, source=str(path))
        return bundle.manifest, bundle.digest
    return decode_manifest(data, source=str(path)), None


# --- profiles -----------------------------------------------------------------------------------

Profile: TypeAlias = Mapping[str, Level]
"""Levels by rule id that replace the rules' own (see :func:`load_profile`)."""


def _rule_problem(rule_id: str) -> str:
    close = difflib.get_close_matches(rule_id, list(RULES), n=1)
    hint = (
        f" (did you mean {close[0]!r}?)" if close else "; the rule ids are listed in docs/rules.md"
    )
    return f"unknown rule id {rule_id!r}{hint}"


def _level_problem(level: str) -> str:
    return f"unknown level {level!r}: expected one of {', '.join(LEVELS)}"


def load_profile(source: str | os.PathLike[str]) -> Profile:
    """Read a profile: ``rule_id = level`` lines; ``#`` starts a comment; blank lines are ignored.

    ``source`` is the text itself when it holds a ``=`` or a line break (or is blank), else the path
    of the file (a :class:`~pathlib.Path` is always a path). Every problem (a line without ``=``, an
    unknown rule id or level, a rule given twice) is reported at once with its line, as ``$.line[N]``,
    in one :class:`~packrun.errors.InvalidManifest`.

    >>> load_profile("input.default_changed = patch  # a default is not behaviour here")
    mappingproxy({'input.default_changed': 'patch'})
    """
    if isinstance(source, str) and ("=" in source or "\n" in source or not source.strip()):
        text, label = source, "<profile>"
    else:
        try:
            path = Path(source)
            label = str(path)
            exists = path.is_file()
        except TypeError:
            problem = f"expected the text or the path of a profile, got {type(source).__name__}"
            raise InvalidManifest("<profile>", [Problem("$", problem)]) from None
        except (OSError, ValueError):  # a name too long, an embedded NUL byte
            exists = False
        if not exists:
            raise NotFound("profile", label)
        try:
            text = read_document(path).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidManifest(label, [Problem("$", "not UTF-8 text")]) from None
    levels: dict[str, Level] = {}
    seen_at: dict[str, int] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"$.line[{number}]"
        rule_id, sep, level = (part.strip() for part in line.partition("="))
        if not sep or not rule_id:
            problems.append(Problem(where, f"{line!r} is not of the form 'rule_id = level'"))
            continue
        bad = False
        if rule_id not in RULES:
            problems.append(Problem(where, _rule_problem(rule_id)))
            bad = True
        if level not in LEVELS:
            problems.append(Problem(where, _level_problem(level)))
            bad = True
        if rule_id in seen_at:
            problems.append(
                Problem(where, f"{rule_id!r} is given twice (first on line {seen_at[rule_id]})")
            )
            bad = True
        seen_at.setdefault(rule_id, number)
        if not bad:
            levels[rule_id] = level  # type: ignore[assignment]
    if problems:
        raise InvalidManifest(label, problems)
    return MappingProxyType(levels)


def _profile(profile: Profile | str | os.PathLike[str] | None) -> Profile:
    if profile is None:
        return {}
    if not isinstance(profile, Mapping):
        return load_profile(profile)
    problems = []
    for rule_id, level in profile.items():
        if rule_id not in RULES:
            problems.append(Problem(f"$[{rule_id}]", _rule_problem(str(rule_id))))
        if level not in LEVELS:
            problems.append(Problem(f"$[{rule_id}]", _level_problem(str(level))))
    if problems:
        raise InvalidManifest("<profile>", problems)
    return profile


# --- the verdict --------------------------------------------------------------------------------


def _required(findings: Sequence[DiffFinding]) -> RequiredBump:
    levels = {f.level for f in findings}
    if "breaking" in levels:
        return "major"
    if levels & {"compatible", "dangerous"}:
        return "minor"
    return "patch" if levels else "none"


def _next_major(version: Version) -> str:
    """The smallest release that permits a breaking change after ``version``."""
    if version.major:
        return f"{version.major + 1}.0.0"
    if version.minor:
        return f"0.{version.minor + 1}.0"
    return f"0.0.{version.patch + 1}"


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _judge(
    old: Version, new: Version, findings: Sequence[DiffFinding], required: RequiredBump
) -> tuple[Verdict, str, list[str]]:
    """The verdict of DESIGN section 8, its reason, and notes for the reviewer."""
    declared = bump_kind(old, new)
    breaking = sum(f.level == "breaking" for f in findings)
    dangerous = sum(f.level == "dangerous" for f in findings)
    step = f"{old} -> {new}"
    notes: list[str] = []
    if dangerous:
        notes.append(
            f"{_plural(dangerous, 'dangerous finding')}: no major is needed, but consumers that "
            "rely on the old outputs may break; review them"
        )
    if declared == "none":
        if findings:
            return "red", f"different content under the same version {new}", notes
        return "ok", f"same version {new}, same content", notes
    if declared == "downgrade":
        notes.append(f"the version goes down ({step})")
        if breaking:
            return "red", f"{_plural(breaking, 'breaking change')} in a downgrade ({step})", notes
        return "amber", f"a downgrade ({step}) without breaking changes", notes
    if breaking and bump_problem(old, new, "major") is not None:
        below_one = (
            " (below 1.0.0 the left-most non-zero number is the major)" if not old.major else ""
        )
        return (
            "red",
            f"{_plural(breaking, 'breaking change')} shipped as a {declared} release ({step}): "
            f"a major step is needed, e.g. {_next_major(old)}{below_one}",
            notes,
        )
    if allowed_change(old, new) == "major":
        what = "a pre-release step" if declared == "prerelease" else "a major release"
        found = _plural(breaking, "breaking change") if breaking else "no breaking change"
        return "amber", f"{what} ({step}) with {found}: updating needs a review", notes
    if required != "none" and bump_problem(old, new, required) == "minor_not_bumped":
        notes.append(f"a minor-level change shipped as a {declared} release ({step})")
    return "ok", f"no breaking change in a {declared} release ({step})", notes


# --- the entry point ----------------------------------------------------------------------------


def diff(
    old: Side,
    new: Side,
    *,
    profile: Profile | str | os.PathLike[str] | None = None,
    today: datetime.date | None = None,
) -> DiffReport:
    """Compare two manifests and judge whether the version step is honest.

    ``old`` and ``new`` are each a :class:`~packrun.Manifest`, its JSON decoded into a dict, a
    :class:`~packrun.Bundle`, or a path: a ``*.bundle.tar.gz``, a ``manifest.json`` or an
    integration source folder. Two bundles of the same version whose digests differ are different
    content under one version: an ``artifact.content_changed`` finding and a ``red`` verdict.
    ``profile`` (a mapping of rule id to level, or what :func:`load_profile` reads) reclassifies
    findings before the required bump and the verdict are derived. ``today`` (default: the UTC
    date now) decides whether a deprecated tool or field removed was past its ``sunset`` date.

    Bad input raises :class:`~packrun.errors.InvalidManifest`, :class:`~packrun.errors.InvalidBundle`
    or :class:`~packrun.errors.NotFound`; a bad profile :class:`~packrun.errors.InvalidManifest`.
    """
    if today is not None and (
        not isinstance(today, datetime.date) or isinstance(today, datetime.datetime)
    ):
        raise InvalidArgument(
            "today", today, ["None or a datetime.date, such as date(2027, 1, 31)"]
        )
    levels = _profile(profile)
    old_manifest, old_digest = _load(old, "<old manifest>")
    new_manifest, new_digest = _load(new, "<new manifest>")
    differ = _Differ(today or datetime.datetime.now(datetime.UTC).date())
    differ.manifest(old_manifest, new_manifest)
    if (
        old_digest is not None
        and new_digest is not None
        and old_digest != new_digest
        and old_manifest.version == new_manifest.version
    ):
        differ.add(
            "artifact.content_changed",
            "$",
            f"the bundle's bytes changed under version {new_manifest.version}: "
            f"{old_digest} -> {new_digest}",
            old_digest,
            new_digest,
        )
    findings = differ.findings
    if levels:
        findings = [
            dataclasses.replace(f, level=levels[f.rule_id]) if f.rule_id in levels else f
            for f in findings
        ]
    findings.sort(key=lambda f: (f.path, f.rule_id, f.message))
    required = _required(findings)
    verdict, reason, notes = _judge(old_manifest.version, new_manifest.version, findings, required)
    return DiffReport(
        pack_id=new_manifest.id,
        old_version=str(old_manifest.version),
        new_version=str(new_manifest.version),
        findings=tuple(findings),
        required_bump=required,
        declared_bump=bump_kind(old_manifest.version, new_manifest.version),
        verdict=verdict,
        reason=reason,
        notes=tuple(notes),
        old_digest=old_digest,
        new_digest=new_digest,
    )


def rules_markdown() -> str:
    """The rule table of ``docs/rules.md``, generated from :data:`RULES` (a test keeps them equal)."""
    lines = ["| rule id | level | direction | what changed | example |", "|---|---|---|---|---|"]
    lines.extend(
        f"| `{r.id}` | {r.level} | {r.direction} | {r.summary} | {r.example} |"
        for r in RULES.values()
    )
    return "\n".join(lines) + "\n"
