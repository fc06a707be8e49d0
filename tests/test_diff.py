"""Breaking-change detection and the semver-honesty verdict (``packrun._diff``).

The core of this file is a table: one old/new manifest pair per rule, each made by applying one
change to a base manifest, and each checked to produce *exactly* its expected findings (rule id and
path), so a rule that fires where it should not is caught as surely as one that does not fire.
"""

from __future__ import annotations

import copy
import doctest
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import packrun._diff
from packrun._bundle import Bundle, build_bundle, read_bundle
from packrun._diff import (
    LEVELS,
    RULES,
    DiffFinding,
    DiffReport,
    diff,
    load_profile,
    rules_markdown,
)
from packrun._manifest import decode_manifest
from packrun.errors import InvalidBundle, InvalidManifest, NotFound, PackrunError

ROOT = Path(__file__).parents[1]
ACME = ROOT / "bundles" / "acme"


def bundle_path(version: str) -> Path:
    return ACME / version / "dist" / f"acme-{version}.bundle.tar.gz"


# --- the base manifest and one change per rule ---------------------------------------------------

Doc = dict[str, Any]


def base() -> Doc:
    """A manifest with something of every kind: nested input, filters, nested output, events,
    auth with scopes and credentials, connection properties, groups, pagination."""
    return {
        "id": "x",
        "version": "1.0.0",
        "name": "X",
        "description": "An integration.",
        "category": "crm",
        "auth": {
            "mode": "oauth2",
            "scopes": ["read"],
            "credential_fields": [
                {"name": "token", "required": True, "display_name": "Token"},
                {"name": "tenant", "required": False},
            ],
        },
        "connection_properties": [{"name": "host", "type": "string", "required": True}],
        "events": [
            {
                "id": "created",
                "name": "Created",
                "payload": [
                    {"name": "id", "type": "string", "required": True},
                    {"name": "state", "type": "string", "required": True, "enum": ["new", "old"]},
                ],
            }
        ],
        "groups": [{"id": "g", "name": "G"}, {"id": "h", "name": "H"}],
        "tools": [
            {
                "id": "t",
                "name": "T",
                "summary": "Lists things.",
                "group": "g",
                "method": "GET",
                "action_type": "read",
                "endpoint_api_version": "v1",
                "pagination": {"style": "cursor", "page_size": 50},
                "input": [
                    {"name": "limit", "type": "integer", "default": 10},
                    {"name": "q", "type": "string", "required": True},
                    {"name": "mode", "type": "string", "enum": ["fast", "slow"]},
                    {"name": "ratio", "type": "number", "default": 1.5, "enum": [1, 1.5]},
                    {
                        "name": "opts",
                        "type": "object",
                        "fields": [
                            {
                                "name": "sort",
                                "type": "object",
                                "fields": [{"name": "key", "type": "string", "required": True}],
                            }
                        ],
                    },
                ],
                "filters": [{"name": "status", "type": "string", "enum": ["open", "closed"]}],
                "output": [
                    {
                        "name": "items",
                        "type": "array",
                        "required": True,
                        "items": {
                            "name": "item",
                            "type": "object",
                            "required": True,
                            "fields": [
                                {"name": "id", "type": "string", "required": True},
                                {
                                    "name": "kind",
                                    "type": "string",
                                    "required": True,
                                    "enum": ["p", "q"],
                                },
                                {"name": "note", "type": "string", "description": "A note."},
                                {
                                    "name": "tags",
                                    "type": "array",
                                    "items": {
                                        "name": "tag",
                                        "type": "object",
                                        "fields": [
                                            {"name": "label", "type": "string", "required": True}
                                        ],
                                    },
                                },
                            ],
                        },
                    },
                    {"name": "total", "type": "integer", "required": True},
                ],
            },
            {"id": "u", "name": "U"},
        ],
    }


def tool(m: Doc, tool_id: str) -> Doc:
    return next(t for t in m["tools"] if t["id"] == tool_id)


def named(items: list[Doc], name: str) -> Doc:
    """The element of ``items`` with that id (tools, groups, events) or name (fields)."""
    return next(i for i in items if i.get("id", i.get("name")) == name)


def drop(items: list[Doc], name: str) -> None:
    items.remove(named(items, name))


def inputs(m: Doc) -> list[Doc]:
    return tool(m, "t")["input"]  # type: ignore[no-any-return]


def item(m: Doc) -> list[Doc]:
    """The fields of the elements of the output array ``items``."""
    return tool(m, "t")["output"][0]["items"]["fields"]  # type: ignore[no-any-return]


def rename(items: list[Doc], old: str, new: str) -> None:
    entry = named(items, old)
    entry["id" if "id" in entry else "name"] = new


T = "$.tools[t]"
ITEMS = f"{T}.output[items].items.fields"
SORT = f"{T}.input[opts].fields[sort].fields"
PAYLOAD = "$.events[created].payload"
CREDS = "$.auth.credential_fields"
DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[Doc], object]
    expected: frozenset[tuple[str, str]]
    digests: tuple[str, str] | None = None  # compare as two bundles with these digests


def case(
    id: str,
    change: Callable[[Doc], object],
    *expected: tuple[str, str],
    digests: tuple[str, str] | None = None,
) -> Case:
    return Case(id, change, frozenset(expected), digests)


def _no_change(m: Doc) -> None:
    pass


CASES = [
    # -- structure
    case("tool removed", lambda m: drop(m["tools"], "u"), ("tool.removed", "$.tools[u]")),
    case("tool added", lambda m: m["tools"].append({"id": "v"}), ("tool.added", "$.tools[v]")),
    case(
        "tool id changed = removed + added",
        lambda m: rename(m["tools"], "u", "w"),
        ("tool.removed", "$.tools[u]"),
        ("tool.added", "$.tools[w]"),
    ),
    case("group removed", lambda m: drop(m["groups"], "h"), ("group.removed", "$.groups[h]")),
    case("group added", lambda m: m["groups"].append({"id": "k"}), ("group.added", "$.groups[k]")),
    case(
        "group id changed = removed + added",
        lambda m: rename(m["groups"], "h", "k"),
        ("group.removed", "$.groups[h]"),
        ("group.added", "$.groups[k]"),
    ),
    case("event removed", lambda m: m.update(events=[]), ("event.removed", "$.events[created]")),
    case(
        "event added",
        lambda m: m["events"].append({"id": "deleted"}),
        ("event.added", "$.events[deleted]"),
    ),
    case(
        "event id changed = removed + added",
        lambda m: rename(m["events"], "created", "made"),
        ("event.removed", "$.events[created]"),
        ("event.added", "$.events[made]"),
    ),
    case("integration id changed", lambda m: m.update(id="y"), ("connector.id_changed", "$.id")),
    # -- input fields
    case(
        "required input field added",
        lambda m: inputs(m).append({"name": "account", "type": "string", "required": True}),
        ("input.required_field_added", f"{T}.input[account]"),
    ),
    case(
        "optional input field added",
        lambda m: inputs(m).append({"name": "company", "type": "string"}),
        ("input.optional_field_added", f"{T}.input[company]"),
    ),
    case(
        "input field removed",
        lambda m: drop(inputs(m), "limit"),
        ("input.field_removed", f"{T}.input[limit]"),
    ),
    case(
        "input field renamed = removed + added",
        lambda m: rename(inputs(m), "q", "query"),
        ("input.field_removed", f"{T}.input[q]"),
        ("input.required_field_added", f"{T}.input[query]"),
    ),
    case(
        "input type changed",
        lambda m: named(inputs(m), "q").update(type="integer"),
        ("input.type_changed", f"{T}.input[q].type"),
    ),
    case(
        "input object restructured into an array: one finding, nothing inside",
        lambda m: named(inputs(m), "opts").update(
            type="array", fields=None, items={"name": "opt", "type": "string"}
        ),
        ("input.type_changed", f"{T}.input[opts].type"),
    ),
    case(
        "input optional -> required",
        lambda m: named(inputs(m), "limit").update(required=True),
        ("input.became_required", f"{T}.input[limit].required"),
    ),
    case(
        "input required -> optional",
        lambda m: named(inputs(m), "q").update(required=False),
        ("input.became_optional", f"{T}.input[q].required"),
    ),
    case(
        "input enum value removed",
        lambda m: named(inputs(m), "mode").update(enum=["fast"]),
        ("input.enum_value_removed", f"{T}.input[mode].enum"),
    ),
    case(
        "input enum value added",
        lambda m: named(inputs(m), "mode").update(enum=["fast", "slow", "auto"]),
        ("input.enum_value_added", f"{T}.input[mode].enum"),
    ),
    case(
        "input enum introduced",
        lambda m: named(inputs(m), "q").update(enum=["a", "b"]),
        ("input.enum_introduced", f"{T}.input[q].enum"),
    ),
    case(
        "input enum dropped",
        lambda m: named(inputs(m), "mode").pop("enum"),
        ("input.enum_dropped", f"{T}.input[mode].enum"),
    ),
    case(
        "input enum reordered and 1 written as 1.0: no change",
        lambda m: named(inputs(m), "ratio").update(enum=[1.5, 1.0]),
    ),
    case(
        "nested input (depth 3) field removed",
        lambda m: named(inputs(m), "opts")["fields"][0].update(fields=[]),
        ("input.field_removed", f"{SORT}[key]"),
    ),
    case(
        "nested input (depth 3) required field added",
        lambda m: named(inputs(m), "opts")["fields"][0]["fields"].append(
            {"name": "dir", "type": "string", "required": True}
        ),
        ("input.required_field_added", f"{SORT}[dir]"),
    ),
    case(
        "nested input (depth 3) type changed",
        lambda m: named(inputs(m), "opts")["fields"][0]["fields"][0].update(type="boolean"),
        ("input.type_changed", f"{SORT}[key].type"),
    ),
    # -- filter fields follow the input rules
    case(
        "required filter field added",
        lambda m: tool(m, "t")["filters"].append(
            {"name": "owner", "type": "string", "required": True}
        ),
        ("input.required_field_added", f"{T}.filters[owner]"),
    ),
    case(
        "filter field removed",
        lambda m: tool(m, "t").update(filters=[]),
        ("input.field_removed", f"{T}.filters[status]"),
    ),
    case(
        "filter enum value removed",
        lambda m: tool(m, "t")["filters"][0].update(enum=["open"]),
        ("input.enum_value_removed", f"{T}.filters[status].enum"),
    ),
    # -- output fields
    case(
        "required output field added",
        lambda m: tool(m, "t")["output"].append(
            {"name": "count", "type": "integer", "required": True}
        ),
        ("output.required_field_added", f"{T}.output[count]"),
    ),
    case(
        "optional output field added",
        lambda m: item(m).append({"name": "phone", "type": "string"}),
        ("output.optional_field_added", f"{ITEMS}[phone]"),
    ),
    case(
        "output field removed",
        lambda m: drop(tool(m, "t")["output"], "total"),
        ("output.field_removed", f"{T}.output[total]"),
    ),
    case(
        "nested output (depth 3) field removed",
        lambda m: drop(item(m), "note"),
        ("output.field_removed", f"{ITEMS}[note]"),
    ),
    case(
        "output type changed",
        lambda m: named(tool(m, "t")["output"], "total").update(type="number"),
        ("output.type_changed", f"{T}.output[total].type"),
    ),
    case(
        "deeply nested output (depth 5) type changed",
        lambda m: named(item(m), "tags")["items"]["fields"][0].update(type="integer"),
        ("output.type_changed", f"{ITEMS}[tags].items.fields[label].type"),
    ),
    case(
        "output array restructured into an object",
        lambda m: named(tool(m, "t")["output"], "items").update(
            type="object", items=None, fields=[{"name": "id", "type": "string"}]
        ),
        ("output.type_changed", f"{T}.output[items].type"),
    ),
    case(
        "array items change type",
        lambda m: named(item(m), "tags").update(items={"name": "tag", "type": "string"}),
        ("output.type_changed", f"{ITEMS}[tags].items.type"),
    ),
    case(
        "output required -> optional (may now be null)",
        lambda m: named(tool(m, "t")["output"], "total").update(required=False),
        ("output.became_optional", f"{T}.output[total].required"),
    ),
    case(
        "output optional -> required",
        lambda m: named(item(m), "note").update(required=True),
        ("output.became_required", f"{ITEMS}[note].required"),
    ),
    case(
        "output enum value added",
        lambda m: named(item(m), "kind").update(enum=["p", "q", "r"]),
        ("output.enum_value_added", f"{ITEMS}[kind].enum"),
    ),
    case(
        "output enum value removed",
        lambda m: named(item(m), "kind").update(enum=["p"]),
        ("output.enum_value_removed", f"{ITEMS}[kind].enum"),
    ),
    case(
        "output enum introduced",
        lambda m: named(item(m), "note").update(enum=["a"]),
        ("output.enum_introduced", f"{ITEMS}[note].enum"),
    ),
    case(
        "output enum dropped",
        lambda m: named(item(m), "kind").pop("enum"),
        ("output.enum_dropped", f"{ITEMS}[kind].enum"),
    ),
    # -- event payloads follow the output rules
    case(
        "payload field removed",
        lambda m: drop(m["events"][0]["payload"], "id"),
        ("output.field_removed", f"{PAYLOAD}[id]"),
    ),
    case(
        "payload field added",
        lambda m: m["events"][0]["payload"].append({"name": "at", "type": "string"}),
        ("output.optional_field_added", f"{PAYLOAD}[at]"),
    ),
    case(
        "payload enum value added",
        lambda m: named(m["events"][0]["payload"], "state").update(enum=["new", "old", "gone"]),
        ("output.enum_value_added", f"{PAYLOAD}[state].enum"),
    ),
    case(
        "payload field required -> optional",
        lambda m: named(m["events"][0]["payload"], "id").update(required=False),
        ("output.became_optional", f"{PAYLOAD}[id].required"),
    ),
    # -- tools
    case(
        "HTTP method changed",
        lambda m: tool(m, "t").update(method="POST"),
        ("tool.method_changed", f"{T}.method"),
    ),
    case(
        "action type changed",
        lambda m: tool(m, "t").update(action_type="write"),
        ("tool.action_type_changed", f"{T}.action_type"),
    ),
    case(
        "group of a tool changed",
        lambda m: tool(m, "t").update(group="h"),
        ("tool.group_changed", f"{T}.group"),
    ),
    case(
        "group of a tool set",
        lambda m: tool(m, "u").update(group="g"),
        ("tool.group_changed", "$.tools[u].group"),
    ),
    case(
        "page size changed",
        lambda m: tool(m, "t")["pagination"].update(page_size=100),
        ("tool.pagination_changed", f"{T}.pagination.page_size"),
    ),
    case(
        "pagination style changed",
        lambda m: tool(m, "t")["pagination"].update(style="offset"),
        ("tool.pagination_changed", f"{T}.pagination.style"),
    ),
    case(
        "pagination removed",
        lambda m: tool(m, "t").update(pagination=None),
        ("tool.pagination_changed", f"{T}.pagination.style"),
        ("tool.pagination_changed", f"{T}.pagination.page_size"),
    ),
    case(
        "pagination style none where there was none: no change",
        lambda m: tool(m, "u").update(pagination={"style": "none"}),
    ),
    case(
        "endpoint API version changed",
        lambda m: tool(m, "t").update(endpoint_api_version="v2"),
        ("tool.endpoint_api_version_changed", f"{T}.endpoint_api_version"),
    ),
    # -- auth
    case(
        "auth mode changed",
        lambda m: m["auth"].update(mode="api_key"),
        ("auth.mode_changed", "$.auth.mode"),
    ),
    case(
        "scope added",
        lambda m: m["auth"]["scopes"].append("write"),
        ("auth.scope_added", "$.auth.scopes[write]"),
    ),
    case(
        "scope removed",
        lambda m: m["auth"].update(scopes=[]),
        ("auth.scope_removed", "$.auth.scopes[read]"),
    ),
    case(
        "required credential field added",
        lambda m: m["auth"]["credential_fields"].append({"name": "secret"}),
        ("auth.required_credential_added", f"{CREDS}[secret]"),
    ),
    case(
        "optional credential field added",
        lambda m: m["auth"]["credential_fields"].append({"name": "region", "required": False}),
        ("auth.optional_credential_added", f"{CREDS}[region]"),
    ),
    case(
        "credential field removed",
        lambda m: drop(m["auth"]["credential_fields"], "tenant"),
        ("auth.credential_removed", f"{CREDS}[tenant]"),
    ),
    case(
        "credential field optional -> required",
        lambda m: named(m["auth"]["credential_fields"], "tenant").update(required=True),
        ("auth.credential_became_required", f"{CREDS}[tenant].required"),
    ),
    case(
        "credential field required -> optional",
        lambda m: named(m["auth"]["credential_fields"], "token").update(required=False),
        ("auth.credential_became_optional", f"{CREDS}[token].required"),
    ),
    # -- connection properties
    case(
        "connection property added",
        lambda m: m["connection_properties"].append({"name": "port", "type": "integer"}),
        ("connection.property_added", "$.connection_properties[port]"),
    ),
    case(
        "connection property removed",
        lambda m: m.update(connection_properties=[]),
        ("connection.property_removed", "$.connection_properties[host]"),
    ),
    case(
        "connection property type changed",
        lambda m: m["connection_properties"][0].update(type="integer"),
        ("connection.property_changed", "$.connection_properties[host].type"),
    ),
    case(
        "connection property required -> optional",
        lambda m: m["connection_properties"][0].update(required=False),
        ("connection.property_changed", "$.connection_properties[host].required"),
    ),
    case(
        "connection property enum introduced",
        lambda m: m["connection_properties"][0].update(enum=["eu.example.com"]),
        ("connection.property_changed", "$.connection_properties[host].enum"),
    ),
    # -- patch level: defaults, text, metadata, contract
    case(
        "default value changed",
        lambda m: named(inputs(m), "limit").update(default=20),
        ("field.default_changed", f"{T}.input[limit].default"),
    ),
    case(
        "default value 1.5 written as 1.50: no change",
        lambda m: named(inputs(m), "ratio").update(default=1.50),
    ),
    case(
        "connection property default set",
        lambda m: m["connection_properties"][0].update(default="example.com"),
        ("field.default_changed", "$.connection_properties[host].default"),
    ),
    case("connector name changed", lambda m: m.update(name="X CRM"), ("text.changed", "$.name")),
    case(
        "connector description changed",
        lambda m: m.update(description="An integration!"),
        ("text.changed", "$.description"),
    ),
    case(
        "tool summary and name changed",
        lambda m: tool(m, "t").update(summary="Lists.", name="T2"),
        ("text.changed", f"{T}.summary"),
        ("text.changed", f"{T}.name"),
    ),
    case(
        "nested field description and display name changed",
        lambda m: named(item(m), "note").update(description="", display_name="Note"),
        ("text.changed", f"{ITEMS}[note].description"),
        ("text.changed", f"{ITEMS}[note].display_name"),
    ),
    case(
        "group and event names changed",
        lambda m: (m["groups"][0].update(name="G2"), m["events"][0].update(description="New.")),
        ("text.changed", "$.groups[g].name"),
        ("text.changed", "$.events[created].description"),
    ),
    case(
        "credential display name changed",
        lambda m: named(m["auth"]["credential_fields"], "token").update(display_name="API token"),
        ("text.changed", f"{CREDS}[token].display_name"),
    ),
    case(
        "connection property description changed",
        lambda m: m["connection_properties"][0].update(description="The host."),
        ("text.changed", "$.connection_properties[host].description"),
    ),
    case(
        "category, secondary category, family and icon changed",
        lambda m: m.update(category="sales", secondary_category="b2b", family="acme", icon="x.svg"),
        ("connector.metadata_changed", "$.category"),
        ("connector.metadata_changed", "$.secondary_category"),
        ("connector.metadata_changed", "$.family"),
        ("connector.metadata_changed", "$.icon"),
    ),
    case(
        "contract generation changed",
        lambda m: m.update(contract=3),
        ("artifact.contract_changed", "$.contract"),
    ),
    # -- artifacts
    case(
        "same version, other bytes",
        _no_change,
        ("artifact.content_changed", "$"),
        digests=(DIGEST_A, DIGEST_B),
    ),
    case("same version, same bytes: no change", _no_change, digests=(DIGEST_A, DIGEST_A)),
    case("nothing changed", _no_change),
]


def pair(c: Case) -> tuple[Any, Any]:
    """The old and new side of a case: manifests, or bundles when the case gives digests."""
    old, new = base(), base()
    if c.id == "contract generation changed":
        old["contract"] = 2
    c.change(new)
    a, b = decode_manifest(old, source="old"), decode_manifest(new, source="new")
    if c.digests is None:
        return a, b
    return Bundle(a, {}, c.digests[0], b""), Bundle(b, {}, c.digests[1], b"")


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_rule_pair__produces_exactly_its_findings(c: Case) -> None:
    report = diff(*pair(c))
    assert {(f.rule_id, f.path) for f in report.findings} == c.expected
    assert len(report.findings) == len(c.expected), report


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_rule_pair__levels_and_required_bump_follow_the_rules(c: Case) -> None:
    report = diff(*pair(c))
    for f in report.findings:
        assert f.level == RULES[f.rule_id].level
        assert f.message
        assert f.path.startswith("$")
    levels = {RULES[rule].level for rule, _ in c.expected}
    expected = (
        "major"
        if "breaking" in levels
        else "minor"
        if levels & {"compatible", "dangerous"}
        else "patch"
        if levels
        else "none"
    )
    assert report.required_bump == expected


def test_every_rule__has_a_pair_in_the_table() -> None:
    covered = {rule for c in CASES for rule, _ in c.expected}
    assert set(RULES) - covered == set()
    assert covered - set(RULES) == set()


def test_rules__are_data_with_an_id_level_direction_and_example() -> None:
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", rule_id)
        assert rule.level in LEVELS
        assert rule.direction in ("input", "output", "none")
        assert rule.summary
        assert rule.example
    assert list(RULES) == sorted(RULES)


# Input rules whose output counterpart is not "output." + the same name, and why.
NO_OUTPUT_COUNTERPART = {
    "auth.credential_became_optional": "credentials are sent by the installation, never received",
    "auth.credential_became_required": "credentials are sent by the installation, never received",
    "auth.credential_removed": "credentials are sent by the installation, never received",
    "auth.optional_credential_added": "credentials are sent by the installation, never received",
    "auth.required_credential_added": "credentials are sent by the installation, never received",
    "auth.scope_added": "scopes are granted by the installation, never received",
    "auth.scope_removed": "scopes are granted by the installation, never received",
}
# Counterparts that both break or are both safe: the change narrows or widens neither side.
SAME_LEVEL_BOTH_WAYS = {
    "field_removed": "a caller still sends the field, or still reads it",
    "type_changed": "values of the old type are refused, or arrive as something else",
    "optional_field_added": "callers may leave it out, or ignore it",
}


def test_direction__every_input_rule_has_an_output_counterpart_or_a_reason() -> None:
    for rule in RULES.values():
        if rule.direction != "input":
            continue
        if rule.id in NO_OUTPUT_COUNTERPART:
            assert not rule.id.startswith("input.")
            continue
        counterpart = RULES.get("output." + rule.id.removeprefix("input."))
        assert counterpart is not None, f"{rule.id} has no output counterpart and no reason"
        assert counterpart.direction == "output"
    for rule in RULES.values():
        if rule.direction == "output":
            assert "input." + rule.id.removeprefix("output.") in RULES


def test_direction__what_breaks_an_input_is_safe_in_an_output_and_the_reverse() -> None:
    for rule in RULES.values():
        if not rule.id.startswith("input."):
            continue
        change = rule.id.removeprefix("input.")
        out = RULES[f"output.{change}"]
        if change in SAME_LEVEL_BOTH_WAYS:
            assert rule.level == out.level
        else:
            # Exactly one side is a plain addition or narrowing; the other breaks or may break.
            assert (rule.level == "compatible") != (out.level == "compatible"), change


# --- the acme samples ----------------------------------------------------------------------------


def test_acme_1_0_0_to_1_0_1__is_ok_with_patch_findings_only() -> None:
    report = diff(bundle_path("1.0.0"), bundle_path("1.0.1"))
    assert report.verdict == "ok"
    assert (report.required_bump, report.declared_bump) == ("patch", "patch")
    assert {f.level for f in report.findings} == {"patch"}
    assert {f.path for f in report.findings} == {"$.description", "$.tools[get_contact].summary"}
    assert report.notes == ()


def test_acme_1_0_1_to_1_1_0__is_ok_as_a_minor() -> None:
    report = diff(bundle_path("1.0.1"), bundle_path("1.1.0"))
    assert report.verdict == "ok"
    assert (report.required_bump, report.declared_bump) == ("minor", "minor")
    assert {(f.rule_id, f.path) for f in report.findings if f.level != "patch"} == {
        ("tool.added", "$.tools[search_contacts]"),
        ("input.optional_field_added", "$.tools[list_contacts].input[company]"),
    }


def test_acme_1_1_0_to_2_0_0__is_amber_with_breaking_findings() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("2.0.0"))
    assert report.verdict == "amber"
    assert (report.required_bump, report.declared_bump) == ("major", "major")
    breaking = {(f.rule_id, f.path) for f in report.breaking}
    assert ("auth.mode_changed", "$.auth.mode") in breaking
    assert (
        "output.field_removed",
        "$.tools[list_contacts].output[contacts].items.fields[email]",
    ) in (breaking)
    assert ("output.field_removed", "$.events[contact.created].payload[email]") in breaking
    assert ("auth.scope_added", "$.auth.scopes[contacts.read]") in breaking
    mode = next(f for f in report.breaking if f.rule_id == "auth.mode_changed")
    assert (mode.old, mode.new) == ("api_key", "oauth2")


def test_acme_1_1_0_to_1_2_0__is_red_a_required_input_shipped_as_a_minor() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("1.2.0"))
    assert report.verdict == "red"
    assert (report.required_bump, report.declared_bump) == ("major", "minor")
    assert [(f.rule_id, f.path) for f in report.breaking] == [
        ("input.required_field_added", "$.tools[list_contacts].input[account_id]")
    ]
    assert "minor" in report.reason
    assert "2.0.0" in report.reason


def test_acme_1_1_0_to_1_1_1__default_change_is_a_patch() -> None:
    report = diff(ACME / "1.1.0", ACME / "1.1.1")
    assert report.verdict == "ok"
    defaults = [f for f in report.findings if f.rule_id == "field.default_changed"]
    assert [(f.old, f.new) for f in defaults] == [(10, 20), (10, 20)]


def _rebuilt_with_other_code(tmp_path: Path, version: str) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ACME / version, src, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    with (src / "code" / "__init__.py").open("a") as handle:
        handle.write("\n# a change to the code only\n")
    return build_bundle(src, tmp_path / "dist").path


def test_same_version_different_digest__is_red(tmp_path: Path) -> None:
    other = _rebuilt_with_other_code(tmp_path, "1.1.0")
    report = diff(bundle_path("1.1.0"), other)
    assert report.verdict == "red"
    assert report.declared_bump == "none"
    assert [(f.rule_id, f.level, f.path) for f in report.findings] == [
        ("artifact.content_changed", "breaking", "$")
    ]
    finding = report.findings[0]
    assert (finding.old, finding.new) == (report.old_digest, report.new_digest)
    assert report.old_digest != report.new_digest
    assert "same version" in report.reason


def test_same_bundle__is_ok() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("1.1.0"))
    assert (report.verdict, report.findings, report.required_bump) == ("ok", (), "none")


def test_other_version_different_digest__is_no_content_change() -> None:
    report = diff(bundle_path("1.0.0"), bundle_path("1.0.1"))
    assert "artifact.content_changed" not in {f.rule_id for f in report.findings}


# --- the verdict table ---------------------------------------------------------------------------


def _add_tool(m: Doc) -> None:
    m["tools"].append({"id": "v"})


def _remove_tool(m: Doc) -> None:
    drop(m["tools"], "u")


def _retitle(m: Doc) -> None:
    m["name"] = "Y"


def _may_be_null(m: Doc) -> None:
    named(tool(m, "t")["output"], "total")["required"] = False


VERDICTS = [
    # change, old, new, verdict, declared
    (_no_change, "1.0.0", "1.0.0", "ok", "none"),
    (_retitle, "1.0.0", "1.0.0", "red", "none"),
    (_add_tool, "1.0.0+build.1", "1.0.0+build.2", "red", "none"),
    (_retitle, "1.0.0", "1.0.1", "ok", "patch"),
    (_add_tool, "1.0.0", "1.0.1", "ok", "patch"),  # noted, not refused
    (_may_be_null, "1.0.0", "1.0.1", "ok", "patch"),  # dangerous: noted
    (_add_tool, "1.0.0", "1.1.0", "ok", "minor"),
    (_remove_tool, "1.0.0", "1.0.1", "red", "patch"),
    (_remove_tool, "1.0.0", "1.1.0", "red", "minor"),
    (_remove_tool, "1.0.0", "2.0.0", "amber", "major"),
    (_retitle, "1.0.0", "2.0.0", "amber", "major"),
    (_no_change, "1.0.0", "2.0.0", "amber", "major"),
    # 0.x: the left-most non-zero number is the major
    (_remove_tool, "0.1.0", "0.2.0", "amber", "major"),
    (_remove_tool, "0.1.0", "0.1.1", "red", "minor"),
    (_add_tool, "0.1.0", "0.1.1", "ok", "minor"),
    (_remove_tool, "0.0.1", "0.0.2", "amber", "major"),
    (_remove_tool, "0.1.0", "1.0.0", "amber", "major"),
    # pre-releases: a change of pre-release permits anything
    (_remove_tool, "1.0.0", "2.0.0-rc.1", "amber", "major"),
    (_remove_tool, "2.0.0-rc.1", "2.0.0-rc.2", "amber", "prerelease"),
    (_remove_tool, "2.0.0-rc.2", "2.0.0", "amber", "prerelease"),
    (_remove_tool, "1.0.0", "1.1.0-beta.1", "red", "minor"),
    # downgrades
    (_remove_tool, "1.1.0", "1.0.0", "red", "downgrade"),
    (_add_tool, "1.1.0", "1.0.0", "amber", "downgrade"),
    (_no_change, "2.0.0", "2.0.0-rc.1", "amber", "downgrade"),
]


@pytest.mark.parametrize(
    ("change", "old", "new", "verdict", "declared"),
    VERDICTS,
    ids=[f"{c.__name__}:{o}->{n}" for c, o, n, _, _ in VERDICTS],
)
def test_verdict__follows_the_table(
    change: Callable[[Doc], None], old: str, new: str, verdict: str, declared: str
) -> None:
    a, b = base(), base()
    change(b)
    a["version"], b["version"] = old, new
    report = diff(a, b)
    assert (report.verdict, report.declared_bump) == (verdict, declared), report
    assert report.reason


def test_verdict__a_minor_change_shipped_as_a_patch_is_noted() -> None:
    a, b = base(), base()
    _add_tool(b)
    b["version"] = "1.0.1"
    report = diff(a, b)
    assert report.verdict == "ok"
    assert any("minor-level change shipped as a patch" in note for note in report.notes)


def test_verdict__dangerous_findings_are_noted_and_need_a_minor() -> None:
    a, b = base(), base()
    _may_be_null(b)
    b["version"] = "1.1.0"
    report = diff(a, b)
    assert (report.verdict, report.required_bump) == ("ok", "minor")
    assert any("dangerous" in note for note in report.notes)
    assert report.by_level()["dangerous"] == report.findings


def test_verdict__a_downgrade_is_noted() -> None:
    a, b = base(), base()
    a["version"] = "1.1.0"
    report = diff(a, b)
    assert report.verdict == "amber"
    assert any("goes down" in note for note in report.notes)


def test_verdict__red_for_0x_names_the_next_0x_major() -> None:
    a, b = base(), base()
    _remove_tool(b)
    a["version"], b["version"] = "0.3.1", "0.3.2"
    report = diff(a, b)
    assert report.verdict == "red"
    assert "0.4.0" in report.reason


# --- profiles ------------------------------------------------------------------------------------


def test_profile__reclassifies_a_rule_and_the_verdict_follows() -> None:
    strict = diff(ACME / "1.1.0", ACME / "1.1.1", profile="field.default_changed = breaking")
    assert strict.verdict == "red"
    assert {f.level for f in strict.findings if f.rule_id == "field.default_changed"} == {
        "breaking"
    }
    lenient = diff(
        bundle_path("1.1.0"),
        bundle_path("1.2.0"),
        profile={"input.required_field_added": "compatible"},
    )
    assert (lenient.verdict, lenient.required_bump) == ("ok", "minor")
    assert lenient.breaking == ()


def test_profile__from_a_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "strict.profile"
    path.write_text(
        "# defaults are behaviour here\n\n"
        "field.default_changed = compatible   # not a patch\n"
        "  output.enum_value_added=breaking\n"
    )
    expected = {"field.default_changed": "compatible", "output.enum_value_added": "breaking"}
    assert dict(load_profile(path)) == expected
    assert dict(load_profile(str(path))) == expected
    report = diff(ACME / "1.1.0", ACME / "1.1.1", profile=path)
    assert (report.required_bump, report.declared_bump, report.verdict) == ("minor", "patch", "ok")
    assert report.notes


def test_profile__every_problem_is_reported_with_its_line() -> None:
    text = (
        "# a profile with four problems\n"
        "field.default_chnaged = compatible\n"
        "text.changed = minor\n"
        "tool.removed breaking\n"
        "tool.added = patch\n"
        "tool.added = compatible\n"
    )
    with pytest.raises(InvalidManifest) as info:
        load_profile(text)
    problems = {(p.path, p.message) for p in info.value.problems}
    paths = sorted(p for p, _ in problems)
    assert paths == ["$.line[2]", "$.line[3]", "$.line[4]", "$.line[6]"]
    text_of = dict(problems)
    assert "field.default_changed" in text_of["$.line[2]"]  # a close id is suggested
    assert "breaking, dangerous, compatible, patch" in text_of["$.line[3]"]
    assert "rule_id = level" in text_of["$.line[4]"]
    assert "line 5" in text_of["$.line[6]"]


def test_profile__bad_mapping_or_missing_file__is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidManifest) as info:
        diff(base(), base(), profile={"no.such_rule": "breaking", "tool.added": "huge"})  # type: ignore[dict-item]
    assert len(info.value.problems) == 2
    with pytest.raises(NotFound):
        load_profile(tmp_path / "missing.profile")
    with pytest.raises(NotFound):
        diff(base(), base(), profile=str(tmp_path / "missing.profile"))
    with pytest.raises(InvalidManifest):
        load_profile(42)  # type: ignore[arg-type]


def test_profile__empty_changes_nothing() -> None:
    assert dict(load_profile("# nothing\n\n")) == {}
    assert diff(bundle_path("1.1.0"), bundle_path("1.2.0"), profile="").verdict == "red"


# --- input forms ---------------------------------------------------------------------------------


def _rules(report: DiffReport) -> set[tuple[str, str]]:
    return {(f.rule_id, f.path) for f in report.findings}


def test_inputs__every_form_gives_the_same_findings() -> None:
    forms: list[Callable[[str], Any]] = [
        lambda v: decode_manifest((ACME / v / "manifest.json").read_bytes()),
        lambda v: json.loads((ACME / v / "manifest.json").read_text()),
        lambda v: bundle_path(v),
        lambda v: str(bundle_path(v)),
        lambda v: read_bundle(bundle_path(v)),
        lambda v: ACME / v / "manifest.json",
        lambda v: str(ACME / v),
    ]
    expected = _rules(diff(ACME / "1.0.1", ACME / "1.1.0"))
    assert expected
    for old in forms:
        for new in forms:
            report = diff(old("1.0.1"), new("1.1.0"))
            assert _rules(report) == expected
            assert (report.old_version, report.new_version) == ("1.0.1", "1.1.0")


def test_inputs__a_bundle_under_another_name_is_read_as_a_bundle(tmp_path: Path) -> None:
    renamed = tmp_path / "acme.tgz"
    renamed.write_bytes(bundle_path("1.2.0").read_bytes())
    report = diff(bundle_path("1.1.0"), renamed)
    assert report.verdict == "red"
    assert report.new_digest == read_bundle(bundle_path("1.2.0")).digest


def _bad_inputs(tmp_path: Path) -> list[tuple[object, type[PackrunError]]]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text('{"id": "x", "version": "1.0", "tools": []}')
    (tmp_path / "acme-1.0.0.bundle.tar.gz").write_bytes(b"\x1f\x8b garbage")
    return [
        (tmp_path / "missing.json", NotFound),
        ("no/such/path", NotFound),
        ("bad\0path", NotFound),
        ("x" * 5000, NotFound),
        (tmp_path / "empty", InvalidBundle),
        (tmp_path / "bad.json", InvalidManifest),
        (tmp_path / "wrong.json", InvalidManifest),
        (tmp_path / "acme-1.0.0.bundle.tar.gz", InvalidBundle),
        ({"id": "x"}, InvalidManifest),
        (
            {"id": "x", "version": "1.0.0", "tools": [{"id": "t", "input": [{"name": 1}]}]},
            InvalidManifest,
        ),
        (42, InvalidManifest),
        (None, InvalidManifest),
        (b"{}", InvalidManifest),
    ]


def test_inputs__bad_ones_raise_packrun_errors(tmp_path: Path) -> None:
    for given, error in _bad_inputs(tmp_path):
        for args in ((given, base()), (base(), given)):
            with pytest.raises(error):
                diff(*args)


def test_inputs__every_problem_of_a_bad_manifest_is_reported() -> None:
    bad = {"id": "x", "version": "v1", "tools": [{"id": "t", "method": "FETCH"}]}
    with pytest.raises(InvalidManifest) as info:
        diff(base(), bad)
    assert {p.path for p in info.value.problems} >= {"$.version", "$.tools[0].method"}


# --- the report ----------------------------------------------------------------------------------


def test_report__str_groups_findings_by_level_and_names_the_verdict() -> None:
    text = str(diff(bundle_path("1.1.0"), bundle_path("2.0.0")))
    assert text.startswith("acme 1.1.0 -> 2.0.0\nverdict: amber (")
    assert "required bump: major; declared bump: major" in text
    positions = [text.index(f"\n{level} (") for level in ("breaking", "compatible", "patch")]
    assert positions == sorted(positions)
    assert "\ndangerous (" not in text  # empty levels are left out
    assert "$.tools[list_contacts].output[contacts].items.fields[email]" in text


def test_report__str_with_no_change() -> None:
    text = str(diff(base(), base()))
    assert "verdict: ok" in text
    assert "no changes found" in text


def test_report__to_dict_is_json_and_complete() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("1.2.0"))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verdict"] == "red"
    assert (data["required_bump"], data["declared_bump"]) == ("major", "minor")
    assert data["counts"] == {"breaking": 1, "dangerous": 0, "compatible": 1, "patch": 1}
    assert [f["rule_id"] for f in data["findings"]] == [f.rule_id for f in report.findings]
    assert set(data["findings"][0]) == {"rule_id", "level", "path", "message", "old", "new"}
    assert data["old_digest"].startswith("sha256:")


def test_report__findings_are_ordered_by_path_then_rule() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("2.0.0"))
    keys = [(f.path, f.rule_id) for f in report.findings]
    assert keys == sorted(keys)


def test_report__values_are_json_ready() -> None:
    a, b = base(), base()
    named(inputs(b), "mode")["enum"] = None
    named(inputs(b), "q")["enum"] = ["a", "b"]
    report = diff(a, b)
    dropped = next(f for f in report.findings if f.rule_id == "input.enum_dropped")
    assert (dropped.old, dropped.new) == (["fast", "slow"], None)
    json.dumps([f.to_dict() for f in report.findings])


def test_finding__is_frozen() -> None:
    finding = DiffFinding("tool.added", "compatible", "$.tools[v]", "tool v added", None, "v")
    with pytest.raises(AttributeError):
        finding.level = "breaking"  # type: ignore[misc]
    assert str(finding) == "compatible tool.added at $.tools[v]: tool v added"


def test_report__messages_say_from_what_to_what() -> None:
    a, b = base(), base()
    named(inputs(b), "limit").update(default=20, type="integer")
    named(inputs(b), "q")["type"] = "integer"
    messages = {f.rule_id: f.message for f in diff(a, b).findings}
    assert (
        messages["field.default_changed"] == 'default of input field "limit" changed from 10 to 20'
    )
    assert messages["input.type_changed"] == 'input field "q" changed type: string -> integer'


# --- the docs match the data ---------------------------------------------------------------------

DOC = ROOT / "docs" / "rules.md"


def test_docs__the_rule_table_is_generated_from_rules() -> None:
    text = DOC.read_text()
    table = text.split("<!-- begin rules table -->\n", 1)[1].split("<!-- end rules table -->")[0]
    assert table == rules_markdown()
    for rule in RULES.values():
        assert f"| `{rule.id}` | {rule.level} | {rule.direction} |" in text


def test_docs__the_report_shown_is_what_diff_prints() -> None:
    report = diff(bundle_path("1.1.0"), bundle_path("1.2.0"))
    assert f"```text\n{report}\n```" in DOC.read_text()


def test_doctests__in_the_module_pass() -> None:
    result = doctest.testmod(packrun._diff, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_base_manifest__is_valid_and_diff_does_not_modify_its_inputs() -> None:
    a, b = base(), base()
    _remove_tool(b)
    before = copy.deepcopy((a, b))
    diff(a, b)
    assert (a, b) == before
