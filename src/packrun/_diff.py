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
import difflib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeVar, get_args

from packrun._bundle import BUNDLE_SUFFIX, Bundle, read_bundle
from packrun._manifest import (
    AuthSpec,
    CredentialField,
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
from packrun.errors import InvalidBundle, InvalidManifest, NotFound, Problem

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


_RULE_LIST: Final[tuple[Rule, ...]] = (
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
    Rule("event.added", "compatible", "none", "a new event",
         "event `contact.deleted` added"),
    Rule("event.removed", "breaking", "none", "an event was removed (or its id changed)",
         "event `contact.created` removed"),
    Rule("field.default_changed", "patch", "none", "a field's default value changed",
         "`limit` default 10 -> 20"),
    Rule("group.added", "compatible", "none", "a new group",
         "group `deals` added"),
    Rule("group.removed", "breaking", "none", "a group was removed (or its id changed)",
         "group `contacts` removed"),
    Rule("input.became_optional", "compatible", "input", "an input or filter field is no longer required",
         "`account_id` required -> optional"),
    Rule("input.became_required", "breaking", "input", "an input or filter field became required",
         "`company` optional -> required"),
    Rule("input.enum_dropped", "compatible", "input",
         "an input or filter field accepts any value, not only its enum", "`status` enum dropped"),
    Rule("input.enum_introduced", "breaking", "input", "an input or filter field accepts only an enum now",
         "`status` now one of open, closed"),
    Rule("input.enum_value_added", "compatible", "input",
         "an input or filter field accepts one more enum value", "`status` accepts `archived`"),
    Rule("input.enum_value_removed", "breaking", "input",
         "an input or filter field no longer accepts an enum value", "`status` no longer accepts `open`"),
    Rule("input.field_removed", "breaking", "input", "an input or filter field was removed (or renamed)",
         "input `cursor` removed"),
    Rule("input.optional_field_added", "compatible", "input", "a new optional input or filter field",
         "optional input `company` added"),
    Rule("input.required_field_added", "breaking", "input", "a new required input or filter field",
         "required input `account_id` added"),
    Rule("input.type_changed", "breaking", "input",
         "an input or filter field changed type (or was restructured)", "`limit` integer -> string"),
    Rule("output.became_optional", "dangerous", "output",
         "an output or payload field may now be missing or null", "`email` required -> optional"),
    Rule("output.became_required", "compatible", "output", "an output or payload field is now always present",
         "`company` optional -> required"),
    Rule("output.enum_dropped", "dangerous", "output",
         "an output or payload field may hold any value, not only its enum", "`status` enum dropped"),
    Rule("output.enum_introduced", "compatible", "output",
         "an output or payload field holds only enum values now", "`status` now one of open, closed"),
    Rule("output.enum_value_added", "dangerous", "output",
         "an output or payload field may hold a new enum value", "`status` may be `archived`"),
    Rule("output.enum_value_removed", "compatible", "output",
         "an output or payload field no longer holds an enum value", "`status` no longer `open`"),
    Rule("output.field_removed", "breaking", "output", "an output or payload field was removed (or renamed)",
         "output `email` removed"),
    Rule("output.optional_field_added", "compatible", "output",
         "a new output or payload field that may be null", "optional output `phone` added"),
    Rule("output.required_field_added", "compatible", "output",
         "a new output or payload field that is always present", "output `created_at` added"),
    Rule("output.type_changed", "breaking", "output",
         "an output or payload field changed type (or was restructured)", "`contacts` object -> array"),
    Rule("text.changed", "patch", "none", "a name, summary, description or display name changed",
         "summary typo fixed"),
    Rule("tool.action_type_changed", "breaking", "none", "a tool's action type changed",
         "read -> write"),
    Rule("tool.added", "compatible", "none", "a new tool",
         "tool `count_contacts` added"),
    Rule("tool.endpoint_api_version_changed", "breaking", "none", "a tool's endpoint API version changed",
         "v1 -> v2"),
    Rule("tool.group_changed", "breaking", "none", "a tool moved to another group",
         "`contacts` -> `people`"),
    Rule("tool.method_changed", "breaking", "none", "a tool's HTTP method changed",
         "GET -> POST"),
    Rule("tool.pagination_changed", "breaking", "none", "a tool's pagination style or page size changed",
         "page size 50 -> 100"),
    Rule("tool.removed", "breaking", "none", "a tool was removed (or its id changed)",
         "tool `get_contact` removed"),
)  # fmt: skip

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
_Change: TypeAlias = Literal[
    "added_required",
    "added_optional",
    "removed",
    "type_changed",
    "became_required",
    "became_optional",
    "enum_value_added",
    "enum_value_removed",
    "enum_introduced",
    "enum_dropped",
]
_CHANGES: Final[tuple[_Change, ...]] = get_args(_Change)
_FIELD_RULES: Final[Mapping[_FieldKind, Mapping[_Change, str]]] = {
    "input": {
        **{c: f"input.{c}" for c in _CHANGES},
        "added_required": "input.required_field_added",
        "added_optional": "input.optional_field_added",
        "removed": "input.field_removed",
    },
    "output": {
        **{c: f"output.{c}" for c in _CHANGES},
        "added_required": "output.required_field_added",
        "added_optional": "output.optional_field_added",
        "removed": "output.field_removed",
    },
    "connection": {
        **dict.fromkeys(_CHANGES, "connection.property_changed"),
        "added_required": "connection.property_added",
        "added_optional": "connection.property_added",
        "removed": "connection.property_removed",
    },
}

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

    def __init__(self) -> None:
        self.findings: list[DiffFinding] = []

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
        self.named("tool", old.tools, new.tools, lambda t: t.id, "$.tools", self.tool)

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
        self.texts(path, f"group {_show(old.id)}", old, new, ("name", "description"))

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

    # -- fields, at any depth --------------------------------------------------------------------

    def fields(
        self, old: Sequence[Field], new: Sequence[Field], base: str, kind: _FieldKind, label: str
    ) -> None:
        """Compare two field lists and everything nested in them, with a stack (no recursion)."""
        rules = _FIELD_RULES[kind]
        pairs: list[tuple[str, Field, Field]] = []
        lists: list[tuple[Sequence[Field], Sequence[Field], str]] = [(old, new, base)]

        def removed(path: str, f: Field) -> None:
            message = f"{label} {_show(f.name)} ({_describe(f)}) removed"
            self.add(rules["removed"], path, message, f.name)

        def added(path: str, f: Field) -> None:
            change: _Change = "added_required" if f.required else "added_optional"
            message = f"{label} {_show(f.name)} ({_describe(f)}) added"
            self.add(rules[change], path, message, None, f.name)

        def both(path: str, f: Field, g: Field) -> None:
            pairs.append((path, f, g))

        while lists or pairs:
            if lists:
                a, b, where = lists.pop()
                self.keyed(a, b, _name, where, removed, added, both)
                continue
            path, f, g = pairs.pop()
            self.field(path, f, g, rules, f"{label} {_show(f.name)}")
            if f.type != g.type:
                continue  # a field that changed type is not compared inside
            lists.append((f.fields or (), g.fields or (), f"{path}.fields"))
            if f.items is not None and g.items is not None:
                pairs.append((f"{path}.items", f.items, g.items))
            elif f.items is not None:  # only a hand-built Manifest has an array without items
                removed(f"{path}.items", f.items)
            elif g.items is not None:
                added(f"{path}.items", g.items)

    def field(self, path: str, f: Field, g: Field, rules: Mapping[_Change, str], what: str) -> None:
        """Compare one field with its new self, not what is nested in it."""
        if f.type != g.type:
            how = "restructured" if "array" in (f.type, g.type) else "changed type"
            message = f"{what} {how}: {f.type} -> {g.type}"
            self.add(rules["type_changed"], f"{path}.type", message, f.type, g.type)
        if f.required != g.required:
            now, was = ("required", "optional") if g.required else ("optional", "required")
            change: _Change = "became_required" if g.required else "became_optional"
            message = f"{what} became {now} (was {was})"
            self.add(rules[change], f"{path}.required", message, f.required, g.required)
        self.texts(path, what, f, g, ("display_name", "description"))
        if f.type != g.type:
            return  # enum values and defaults of another type say nothing more
        where, was, now = f"{path}.default", f.default, g.default
        self.changed("field.default_changed", where, f"default of {what}", was, now)
        self.enum(f"{path}.enum", f, g, rules, what)

    def enum(self, path: str, f: Field, g: Field, rules: Mapping[_Change, str], what: str) -> None:
        if f.enum is None and g.enum is not None:
            message = f"{what} is now limited to {_values(g.enum)} (was any value)"
            self.add(rules["enum_introduced"], path, message, None, g.enum)
        if f.enum is not None and g.enum is None:
            message = f"{what} is no longer limited to {_values(f.enum)} (now any value)"
            self.add(rules["enum_dropped"], path, message, f.enum, None)
        if f.enum is None or g.enum is None:
            return
        was, now = {_key(v): v for v in f.enum}, {_key(v): v for v in g.enum}
        for key in was.keys() - now.keys():
            message = f"enum value {_show(was[key])} of {what} removed"
            self.add(rules["enum_value_removed"], path, message, was[key])
        for key in now.keys() - was.keys():
            message = f"enum value {_show(now[key])} of {what} added"
            self.add(rules["enum_value_added"], path, message, None, now[key])


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

    >>> load_profile("field.default_changed = breaking  # a default is behaviour")
    mappingproxy({'field.default_changed': 'breaking'})
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
    old: Side, new: Side, *, profile: Profile | str | os.PathLike[str] | None = None
) -> DiffReport:
    """Compare two manifests and judge whether the version step is honest.

    ``old`` and ``new`` are each a :class:`~packrun.Manifest`, its JSON decoded into a dict, a
    :class:`~packrun.Bundle`, or a path: a ``*.bundle.tar.gz``, a ``manifest.json`` or an
    integration source folder. Two bundles of the same version whose digests differ are different
    content under one version: an ``artifact.content_changed`` finding and a ``red`` verdict.
    ``profile`` (a mapping of rule id to level, or what :func:`load_profile` reads) reclassifies
    findings before the required bump and the verdict are derived.

    Bad input raises :class:`~packrun.errors.InvalidManifest`, :class:`~packrun.errors.InvalidBundle`
    or :class:`~packrun.errors.NotFound`; a bad profile :class:`~packrun.errors.InvalidManifest`.
    """
    levels = _profile(profile)
    old_manifest, old_digest = _load(old, "<old manifest>")
    new_manifest, new_digest = _load(new, "<new manifest>")
    differ = _Differ()
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
