"""Breaking-change detection and the semver-honesty verdict (``packrun._diff``).

The core of this file is a table: one old/new manifest pair per rule, each made by applying one
change to a base manifest, and each checked to produce *exactly* its expected findings (rule id and
path), so a rule that fires where it should not is caught as surely as one that does not fire.
"""

from __future__ import annotations

import copy
import dataclasses
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
    before: Callable[[Doc], object] | None = None  # applied to both sides first


def case(
    id: str,
    change: Callable[[Doc], object],
    *expected: tuple[str, str],
    digests: tuple[str, str] | None = None,
    before: Callable[[Doc], object] | None = None,
) -> Case:
    return Case(id, change, frozenset(expected), digests, before)


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
        lambda m: named(tool(m, "t")["output"], "total").update(type="string"),
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
        "output required -> optional (may now be absent)",
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
        "input default value changed",
        lambda m: named(inputs(m), "limit").update(default=20),
        ("input.default_changed", f"{T}.input[limit].default"),
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
        ("group.name_changed", "$.groups[g].name"),
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


# --- the richer manifest: nullability, constraints, maps, unions, deprecation, errors -----------

PAST, FUTURE = "2020-01-31", "2999-12-31"


def rich(m: Doc) -> None:
    """Adds to both sides what the cases below change: every kind of constraint on each side, a
    map, a union, deprecated tools and fields, declared errors and a timeout."""
    inputs(m).extend(
        [
            {"name": "score", "type": "number", "minimum": 0, "maximum": 100},
            {"name": "code", "type": "string", "min_length": 2, "max_length": 10,
             "pattern": "^[a-z]+$"},
            {"name": "since", "type": "string", "format": "date"},
            {"name": "ids", "type": "array", "max_items": 50,
             "items": {"name": "id", "type": "string"}},
            {"name": "labels", "type": "map", "values": {"name": "label", "type": "string"}},
            {"name": "target", "type": "union", "discriminator": "kind", "one_of": [
                {"name": "email", "type": "object",
                 "fields": [{"name": "address", "type": "string", "required": True}]},
                {"name": "user", "type": "object",
                 "fields": [{"name": "id", "type": "integer", "required": True}]},
            ]},
            {"name": "memo", "type": "string", "nullable": True},
            {"name": "legacy", "type": "string", "deprecated": True, "sunset": PAST},
            {"name": "later", "type": "string", "deprecated": True, "sunset": FUTURE},
            {"name": "old_flag", "type": "boolean", "deprecated": True},
        ]
    )  # fmt: skip
    outputs(m).extend(
        [
            {"name": "score", "type": "number", "required": True, "minimum": 0, "maximum": 100},
            {"name": "code", "type": "string", "required": True, "max_length": 10,
             "pattern": "^[a-z]+$"},
            {"name": "at", "type": "string", "required": True, "format": "date-time"},
            {"name": "email", "type": "string", "required": True},
            {"name": "nick", "type": "string", "nullable": True},
            {"name": "meta", "type": "map", "max_items": 20,
             "values": {"name": "value", "type": "string"}},
            {"name": "owner", "type": "union", "discriminator": "kind", "one_of": [
                {"name": "person", "type": "object"}, {"name": "team", "type": "object"}]},
            {"name": "legacy", "type": "string", "deprecated": True, "sunset": PAST},
        ]
    )  # fmt: skip
    tool(m, "t").update(
        errors=[{"code": "rate_limited", "retryable": True}, {"code": "not_found"}], timeout_s=30
    )
    m["tools"].append({"id": "old", "deprecated": True, "sunset": PAST})
    m["tools"].append({"id": "soon", "deprecated": True, "sunset": FUTURE})


def outputs(m: Doc) -> list[Doc]:
    return tool(m, "t")["output"]  # type: ignore[no-any-return]


def target(m: Doc) -> list[Doc]:
    return named(inputs(m), "target")["one_of"]  # type: ignore[no-any-return]


def owner(m: Doc) -> list[Doc]:
    return named(outputs(m), "owner")["one_of"]  # type: ignore[no-any-return]


IN, OUT = f"{T}.input", f"{T}.output"

RICH_CASES = [
    case("rich: nothing changed", _no_change),
    # -- type widening and narrowing, by direction
    case("input integer -> number (widened)", lambda m: named(inputs(m), "limit").update(type="number"),
         ("input.type_widened", f"{IN}[limit].type")),
    case("input number -> integer (narrowed)", lambda m: named(inputs(m), "score").update(type="integer"),
         ("input.type_narrowed", f"{IN}[score].type")),
    case("output integer -> number (widened)", lambda m: named(outputs(m), "total").update(type="number"),
         ("output.type_widened", f"{OUT}[total].type")),
    case("output number -> integer (narrowed)", lambda m: named(outputs(m), "score").update(type="integer"),
         ("output.type_narrowed", f"{OUT}[score].type")),
    case("widened and a bound moved: both reported",
         lambda m: named(inputs(m), "score").update(type="integer", maximum=50),
         ("input.type_narrowed", f"{IN}[score].type"), ("input.range_tightened", f"{IN}[score].maximum")),
    # -- nullability, by direction
    case("input may now be null", lambda m: named(inputs(m), "q").update(nullable=True),
         ("input.became_nullable", f"{IN}[q].nullable")),
    case("input may no longer be null", lambda m: named(inputs(m), "memo").update(nullable=False),
         ("input.became_non_nullable", f"{IN}[memo].nullable")),
    case("output may now be null", lambda m: named(outputs(m), "total").update(nullable=True),
         ("output.became_nullable", f"{OUT}[total].nullable")),
    case("output may no longer be null", lambda m: named(outputs(m), "nick").update(nullable=False),
         ("output.became_non_nullable", f"{OUT}[nick].nullable")),
    case("nested output may now be null", lambda m: named(item(m), "id").update(nullable=True),
         ("output.became_nullable", f"{ITEMS}[id].nullable")),
    case("payload field may now be null",
         lambda m: named(m["events"][0]["payload"], "id").update(nullable=True),
         ("output.became_nullable", f"{PAYLOAD}[id].nullable")),
    # -- defaults, by direction
    case("input default set", lambda m: named(inputs(m), "memo").update(default="x"),
         ("input.default_changed", f"{IN}[memo].default")),
    case("default of a required input set: no caller relies on it",
         lambda m: named(inputs(m), "q").update(default="x"),
         ("field.default_changed", f"{IN}[q].default")),
    case("default set on an input made optional: both reported",
         lambda m: named(inputs(m), "q").update(default="x", required=False),
         ("input.default_changed", f"{IN}[q].default"),
         ("input.became_optional", f"{IN}[q].required")),
    case("input default removed", lambda m: named(inputs(m), "limit").pop("default"),
         ("input.default_changed", f"{IN}[limit].default")),
    case("output default changed: nothing callers see",
         lambda m: named(outputs(m), "total").update(default=0)),
    # -- ranges
    case("input maximum lowered", lambda m: named(inputs(m), "score").update(maximum=50),
         ("input.range_tightened", f"{IN}[score].maximum")),
    case("input minimum set", lambda m: named(inputs(m), "limit").update(minimum=1),
         ("input.range_tightened", f"{IN}[limit].minimum")),
    case("input maximum made exclusive", lambda m: named(inputs(m), "score").update(exclusive_maximum=100),
         ("input.range_tightened", f"{IN}[score].exclusive_maximum")),
    case("input exclusive maximum above the maximum: no change",
         lambda m: named(inputs(m), "score").update(exclusive_maximum=200)),
    case("input maximum 100 written as 100.0: no change",
         lambda m: named(inputs(m), "score").update(maximum=100.0)),
    case("input maximum dropped", lambda m: named(inputs(m), "score").pop("maximum"),
         ("input.range_loosened", f"{IN}[score].maximum")),
    case("input range shifted up: one bound tighter, one looser",
         lambda m: named(inputs(m), "score").update(minimum=10, maximum=200),
         ("input.range_tightened", f"{IN}[score].minimum"), ("input.range_loosened", f"{IN}[score].maximum")),
    case("output maximum raised", lambda m: named(outputs(m), "score").update(maximum=1000),
         ("output.range_loosened", f"{OUT}[score].maximum")),
    case("output minimum dropped", lambda m: named(outputs(m), "score").pop("minimum"),
         ("output.range_loosened", f"{OUT}[score].minimum")),
    case("output minimum raised", lambda m: named(outputs(m), "score").update(minimum=10),
         ("output.range_tightened", f"{OUT}[score].minimum")),
    case("output maximum set", lambda m: named(outputs(m), "total").update(maximum=10),
         ("output.range_tightened", f"{OUT}[total].maximum")),
    # -- lengths
    case("input max length shortened", lambda m: named(inputs(m), "code").update(max_length=5),
         ("input.length_tightened", f"{IN}[code].max_length")),
    case("input min length set", lambda m: named(inputs(m), "q").update(min_length=1),
         ("input.length_tightened", f"{IN}[q].min_length")),
    case("input min length lowered", lambda m: named(inputs(m), "code").update(min_length=1),
         ("input.length_loosened", f"{IN}[code].min_length")),
    case("input max length raised", lambda m: named(inputs(m), "code").update(max_length=64),
         ("input.length_loosened", f"{IN}[code].max_length")),
    case("output max length raised", lambda m: named(outputs(m), "code").update(max_length=20),
         ("output.length_loosened", f"{OUT}[code].max_length")),
    case("output max length dropped", lambda m: named(outputs(m), "code").pop("max_length"),
         ("output.length_loosened", f"{OUT}[code].max_length")),
    case("output min length set", lambda m: named(outputs(m), "code").update(min_length=1),
         ("output.length_tightened", f"{OUT}[code].min_length")),
    # -- item counts (arrays and maps)
    case("input max items lowered", lambda m: named(inputs(m), "ids").update(max_items=10),
         ("input.items_tightened", f"{IN}[ids].max_items")),
    case("input min items set", lambda m: named(inputs(m), "ids").update(min_items=1),
         ("input.items_tightened", f"{IN}[ids].min_items")),
    case("input max items dropped", lambda m: named(inputs(m), "ids").pop("max_items"),
         ("input.items_loosened", f"{IN}[ids].max_items")),
    case("output map may hold more entries", lambda m: named(outputs(m), "meta").update(max_items=100),
         ("output.items_loosened", f"{OUT}[meta].max_items")),
    case("output map holds at least one entry", lambda m: named(outputs(m), "meta").update(min_items=1),
         ("output.items_tightened", f"{OUT}[meta].min_items")),
    # -- patterns
    case("input pattern added", lambda m: named(inputs(m), "q").update(pattern="^a"),
         ("input.pattern_added", f"{IN}[q].pattern")),
    case("input pattern changed", lambda m: named(inputs(m), "code").update(pattern="^[a-z0-9]+$"),
         ("input.pattern_changed", f"{IN}[code].pattern")),
    case("input pattern removed", lambda m: named(inputs(m), "code").pop("pattern"),
         ("input.pattern_removed", f"{IN}[code].pattern")),
    case("output pattern added", lambda m: named(outputs(m), "email").update(pattern="@"),
         ("output.pattern_added", f"{OUT}[email].pattern")),
    case("output pattern changed", lambda m: named(outputs(m), "code").update(pattern="^[a-z]*$"),
         ("output.pattern_changed", f"{OUT}[code].pattern")),
    case("output pattern removed", lambda m: named(outputs(m), "code").pop("pattern"),
         ("output.pattern_removed", f"{OUT}[code].pattern")),
    # -- formats
    case("input format added", lambda m: named(inputs(m), "q").update(format="email"),
         ("input.format_added", f"{IN}[q].format")),
    case("input format changed", lambda m: named(inputs(m), "since").update(format="date-time"),
         ("input.format_changed", f"{IN}[since].format")),
    case("input format removed", lambda m: named(inputs(m), "since").pop("format"),
         ("input.format_removed", f"{IN}[since].format")),
    case("output format added", lambda m: named(outputs(m), "email").update(format="email"),
         ("output.format_added", f"{OUT}[email].format")),
    case("output format changed", lambda m: named(outputs(m), "at").update(format="date"),
         ("output.format_changed", f"{OUT}[at].format")),
    case("output format removed", lambda m: named(outputs(m), "at").pop("format"),
         ("output.format_removed", f"{OUT}[at].format")),
    # -- maps
    case("input map values change type",
         lambda m: named(inputs(m), "labels")["values"].update(type="integer"),
         ("input.type_changed", f"{IN}[labels].values.type")),
    case("input map restructured into an object",
         lambda m: named(inputs(m), "labels").update(type="object", values=None, fields=[]),
         ("input.type_changed", f"{IN}[labels].type")),
    case("output map values may now be null",
         lambda m: named(outputs(m), "meta")["values"].update(nullable=True),
         ("output.became_nullable", f"{OUT}[meta].values.nullable")),
    # -- unions
    case("input union takes a new variant",
         lambda m: target(m).append({"name": "team", "type": "object"}),
         ("input.variant_added", f"{IN}[target].one_of[team]")),
    case("input union no longer takes a variant", lambda m: drop(target(m), "user"),
         ("input.variant_removed", f"{IN}[target].one_of[user]")),
    case("input union discriminator changed",
         lambda m: named(inputs(m), "target").update(discriminator="type"),
         ("input.discriminator_changed", f"{IN}[target].discriminator")),
    case("input union variant gains a required field",
         lambda m: named(target(m), "email")["fields"].append(
             {"name": "name", "type": "string", "required": True}),
         ("input.required_field_added", f"{IN}[target].one_of[email].fields[name]")),
    case("output union may hold a new variant",
         lambda m: owner(m).append({"name": "bot", "type": "object"}),
         ("output.variant_added", f"{OUT}[owner].one_of[bot]")),
    case("output union no longer holds a variant", lambda m: drop(owner(m), "team"),
         ("output.variant_removed", f"{OUT}[owner].one_of[team]")),
    case("output union discriminator changed",
         lambda m: named(outputs(m), "owner").update(discriminator="type"),
         ("output.discriminator_changed", f"{OUT}[owner].discriminator")),
    case("an object input that is one of its variants takes one more",
         lambda m: named(inputs(m), "opts").update(
             one_of=[{"name": "a", "type": "object"}, {"name": "b", "type": "object"}]),
         ("input.variant_added", f"{IN}[opts].one_of[b]"),
         before=lambda m: named(inputs(m), "opts").update(one_of=[{"name": "a", "type": "object"}])),
    case("a string input becomes a union", lambda m: named(inputs(m), "q").update(
             type="union", one_of=[{"name": "text", "type": "string"}]),
         ("input.type_changed", f"{IN}[q].type")),
    # -- deprecation and planned removals
    case("tool deprecated with a sunset", lambda m: tool(m, "t").update(deprecated=True, sunset=FUTURE),
         ("tool.deprecation_changed", f"{T}.deprecated"), ("tool.deprecation_changed", f"{T}.sunset")),
    case("tool sunset moved", lambda m: tool(m, "soon").update(sunset="2998-01-01"),
         ("tool.deprecation_changed", "$.tools[soon].sunset")),
    case("tool no longer deprecated", lambda m: tool(m, "soon").update(deprecated=False, sunset=None),
         ("tool.deprecation_changed", "$.tools[soon].deprecated"),
         ("tool.deprecation_changed", "$.tools[soon].sunset")),
    case("field deprecated", lambda m: named(inputs(m), "limit").update(deprecated=True),
         ("field.deprecation_changed", f"{IN}[limit].deprecated")),
    case("tool removed after its sunset: planned", lambda m: drop(m["tools"], "old"),
         ("tool.removed_after_sunset", "$.tools[old]")),
    case("tool removed before its sunset: breaking", lambda m: drop(m["tools"], "soon"),
         ("tool.removed", "$.tools[soon]")),
    case("input removed after its sunset: planned", lambda m: drop(inputs(m), "legacy"),
         ("input.field_removed_after_sunset", f"{IN}[legacy]")),
    case("input removed before its sunset: breaking", lambda m: drop(inputs(m), "later"),
         ("input.field_removed", f"{IN}[later]")),
    case("deprecated input without a sunset removed: breaking", lambda m: drop(inputs(m), "old_flag"),
         ("input.field_removed", f"{IN}[old_flag]")),
    case("output removed after its sunset: planned", lambda m: drop(outputs(m), "legacy"),
         ("output.field_removed_after_sunset", f"{OUT}[legacy]")),
    # -- declared errors follow the output rules
    case("error code added", lambda m: tool(m, "t")["errors"].append({"code": "conflict"}),
         ("tool.error_added", f"{T}.errors[conflict]")),
    case("error code removed", lambda m: drop_code(tool(m, "t")["errors"], "not_found"),
         ("tool.error_removed", f"{T}.errors[not_found]")),
    case("error no longer retryable", lambda m: tool(m, "t")["errors"][0].update(retryable=False),
         ("tool.error_changed", f"{T}.errors[rate_limited].retryable")),
    case("error description changed", lambda m: tool(m, "t")["errors"][1].update(description="Gone."),
         ("text.changed", f"{T}.errors[not_found].description")),
    # -- operational declarations
    case("tool timeout lowered", lambda m: tool(m, "t").update(timeout_s=10),
         ("tool.timeout_lowered", f"{T}.timeout_s")),
    case("tool timeout raised", lambda m: tool(m, "t").update(timeout_s=60),
         ("tool.timeout_changed", f"{T}.timeout_s")),
    case("tool timeout dropped (the runtime's default then)", lambda m: tool(m, "t").pop("timeout_s"),
         ("tool.timeout_changed", f"{T}.timeout_s")),
    case("network no longer needed", lambda m: m.update(network=False),
         ("connector.network_changed", "$.network")),
    case("network declared true where it was unset (unset means true)",
         lambda m: m.update(network=True)),
    case("tool timeout set where it was not declared", lambda m: tool(m, "u").update(timeout_s=5),
         ("tool.timeout_changed", "$.tools[u].timeout_s")),
    case("connection property may now be null",
         lambda m: m["connection_properties"][0].update(nullable=True),
         ("connection.property_changed", "$.connection_properties[host].nullable")),
]  # fmt: skip


def _and_rich(c: Case) -> Case:
    """``c`` on the richer manifest (its own ``before`` applied after it)."""
    own = c.before
    if own is None:
        return dataclasses.replace(c, before=rich)

    def both(m: Doc) -> None:
        rich(m)
        own(m)

    return dataclasses.replace(c, before=both)


CASES += [_and_rich(c) for c in RICH_CASES]


def drop_code(errors: list[Doc], code: str) -> None:
    errors.remove(next(e for e in errors if e["code"] == code))


def pair(c: Case) -> tuple[Any, Any]:
    """The old and new side of a case: manifests, or bundles when the case gives digests."""
    old, new = base(), base()
    if c.id == "contract generation changed":
        old["contract"] = 2
    if c.before is not None:
        c.before(old)
        c.before(new)
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
    "input.default_changed": "an output's default is nothing callers see: no output rule",
}
# Counterparts that both break or are both safe: the change narrows or widens neither side.
SAME_LEVEL_BOTH_WAYS = {
    "field_removed": "a caller still sends the field, or still reads it",
    "field_removed_after_sunset": "a planned removal, announced either way",
    "type_changed": "values of the old type are refused, or arrive as something else",
    "optional_field_added": "callers may leave it out, or ignore it",
    "discriminator_changed": "a variant is told by another field, sent or read",
    "format_changed": "no one can tell a wider format from a narrower one",
    "pattern_changed": "no one can tell a wider pattern from a narrower one",
}


def test_direction__every_input_rule_has_an_output_counterpart_or_a_reason() -> None:
    for rule in RULES.values():
        if rule.direction != "input":
            continue
        counterpart = RULES.get("output." + rule.id.removeprefix("input."))
        if rule.id in NO_OUTPUT_COUNTERPART:
            assert not rule.id.startswith("input.") or counterpart is None
            continue
        assert counterpart is not None, f"{rule.id} has no output counterpart and no reason"
        assert counterpart.direction == "output"
    for rule in RULES.values():
        if rule.id.startswith("output."):
            assert "input." + rule.id.removeprefix("output.") in RULES
        elif rule.direction == "output":  # declared errors: only ever received
            assert rule.id.startswith("tool.error_")


def test_direction__what_breaks_an_input_is_safe_in_an_output_and_the_reverse() -> None:
    for rule in RULES.values():
        if not rule.id.startswith("input.") or rule.id in NO_OUTPUT_COUNTERPART:
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


def test_acme_1_1_0_to_1_1_1__an_input_default_change_is_breaking() -> None:
    report = diff(ACME / "1.1.0", ACME / "1.1.1")
    assert report.verdict == "red"
    defaults = [f for f in report.findings if f.rule_id == "input.default_changed"]
    assert [(f.level, f.old, f.new) for f in defaults] == [("breaking", 10, 20)] * 2


def test_acme_1_1_0_to_1_1_1__with_the_patch_profile__a_default_change_is_a_patch() -> None:
    report = diff(ACME / "1.1.0", ACME / "1.1.1", profile="input.default_changed = patch")
    assert (report.verdict, report.required_bump) == ("ok", "patch")


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


def _new_output_value(m: Doc) -> None:
    named(item(m), "kind")["enum"] = ["p", "q", "r"]


VERDICTS = [
    # change, old, new, verdict, declared
    (_no_change, "1.0.0", "1.0.0", "ok", "none"),
    (_retitle, "1.0.0", "1.0.0", "red", "none"),
    (_add_tool, "1.0.0+build.1", "1.0.0+build.2", "red", "none"),
    (_retitle, "1.0.0", "1.0.1", "ok", "patch"),
    (_add_tool, "1.0.0", "1.0.1", "ok", "patch"),  # noted, not refused
    (_new_output_value, "1.0.0", "1.0.1", "ok", "patch"),  # dangerous: noted
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
    _new_output_value(b)
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
    strict = diff(ACME / "1.0.0", ACME / "1.0.1", profile="text.changed = breaking")
    assert strict.verdict == "red"
    assert {f.level for f in strict.findings if f.rule_id == "text.changed"} == {"breaking"}
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
        "# defaults are a new feature here\n\n"
        "input.default_changed = compatible   # not a major\n"
        "  output.enum_value_added=breaking\n"
    )
    expected = {"input.default_changed": "compatible", "output.enum_value_added": "breaking"}
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
        messages["input.default_changed"] == 'default of input field "limit" changed from 10 to 20'
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
