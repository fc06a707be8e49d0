"""Laws of ``packrun._diff.diff``, checked on generated manifests.

The generator draws small valid manifests from small pools of names (so two independent draws share
tools, fields and events and differ in interesting ways): nested object and array fields up to
depth 3, enums and defaults that match their types, auth with scopes and credentials, events with
payloads, groups that the tools name, connection properties and pagination.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from packrun._diff import LEVELS, RULES, DiffReport, diff
from packrun._manifest import Manifest, decode_manifest

SETTINGS = settings(max_examples=100, deadline=None)
FEWER = settings(max_examples=50, deadline=None)

Doc = dict[str, Any]

SCALARS = ("string", "integer", "number", "boolean")
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.sampled_from(["x", "y", "z"]),
    "integer": st.integers(0, 3),
    "number": st.sampled_from([0, 1, 1.0, 1.5, 2.5]),
    "boolean": st.booleans(),
}
TEXT = st.sampled_from(["", "A thing.", "Another thing."])


@st.composite
def fields(draw: st.DrawFn, depth: int = 0) -> list[Doc]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=3))
    return [draw(field(name, depth)) for name in names]


@st.composite
def field(draw: st.DrawFn, name: str, depth: int) -> Doc:
    kinds = SCALARS + (("object", "array") if depth < 2 else ())
    kind = draw(st.sampled_from(kinds))
    doc: Doc = {"name": name, "type": kind, "required": draw(st.booleans())}
    if draw(st.booleans()):
        doc["description"] = draw(TEXT)
    if kind in SCALARS:
        values = VALUES[kind]
        enum = draw(st.none() | st.lists(values, min_size=1, max_size=3))
        if enum is not None:
            doc["enum"] = enum
            values = st.sampled_from(enum)
        if draw(st.booleans()):
            doc["default"] = draw(values)
    elif kind == "object":
        doc["fields"] = draw(fields(depth + 1))
    else:
        doc["items"] = draw(field("item", depth + 1))
    return doc


@st.composite
def manifests(draw: st.DrawFn, version: str = "1.0.0") -> Doc:
    groups = draw(st.lists(st.sampled_from(["g", "h", "k"]), unique=True, max_size=3))
    tool_ids = draw(st.lists(st.sampled_from(["t", "u"]), unique=True, min_size=1))
    tools = [
        {
            "id": tool_id,
            "name": draw(TEXT),
            "summary": draw(TEXT),
            "group": draw(st.sampled_from([None, *groups])),
            "method": draw(st.sampled_from(["GET", "POST"])),
            "action_type": draw(st.sampled_from(["read", "write"])),
            "endpoint_api_version": draw(st.sampled_from([None, "v1", "v2"])),
            "pagination": draw(
                st.none()
                | st.fixed_dictionaries(
                    {
                        "style": st.sampled_from(["none", "cursor", "page"]),
                        "page_size": st.sampled_from([None, 10, 50]),
                    }
                )
            ),
            "input": draw(fields()),
            "filters": draw(fields()),
            "output": draw(fields()),
        }
        for tool_id in tool_ids
    ]
    mode = draw(st.sampled_from(["none", "api_key", "basic", "oauth2"]))
    credentials = (
        []
        if mode == "none"
        else [
            {"name": name, "required": draw(st.booleans()), "description": draw(TEXT)}
            for name in draw(st.lists(st.sampled_from(["key", "token"]), unique=True, max_size=2))
        ]
    )
    events = [
        {"id": event_id, "name": draw(TEXT), "payload": draw(fields())}
        for event_id in draw(st.lists(st.sampled_from(["e.made", "e.gone"]), unique=True))
    ]
    return {
        "id": "x",
        "version": version,
        "name": draw(TEXT),
        "description": draw(TEXT),
        "category": draw(st.sampled_from(["", "crm"])),
        "icon": draw(st.sampled_from([None, "x.svg"])),
        "contract": draw(st.sampled_from([None, 1, 2])),
        "auth": {
            "mode": mode,
            "scopes": draw(st.lists(st.sampled_from(["r", "w", "admin"]), unique=True)),
            "credential_fields": credentials,
        },
        "connection_properties": draw(fields(depth=1)),
        "groups": [{"id": group, "name": draw(TEXT)} for group in groups],
        "events": events,
        "tools": tools,
    }


def decoded(doc: Doc) -> Manifest:
    return decode_manifest(doc, source="generated")


# Each rule and the rule its change shows as when the two sides are swapped.
_PAIRS = [
    ("tool.added", "tool.removed"),
    ("group.added", "group.removed"),
    ("event.added", "event.removed"),
    ("input.required_field_added", "input.field_removed"),
    ("input.optional_field_added", "input.field_removed"),
    ("output.required_field_added", "output.field_removed"),
    ("output.optional_field_added", "output.field_removed"),
    ("connection.property_added", "connection.property_removed"),
    ("input.became_required", "input.became_optional"),
    ("output.became_required", "output.became_optional"),
    ("input.enum_value_added", "input.enum_value_removed"),
    ("output.enum_value_added", "output.enum_value_removed"),
    ("input.enum_introduced", "input.enum_dropped"),
    ("output.enum_introduced", "output.enum_dropped"),
    ("auth.scope_added", "auth.scope_removed"),
    ("auth.required_credential_added", "auth.credential_removed"),
    ("auth.optional_credential_added", "auth.credential_removed"),
    ("auth.credential_became_required", "auth.credential_became_optional"),
    ("input.type_widened", "input.type_narrowed"),
    ("output.type_widened", "output.type_narrowed"),
    ("input.became_nullable", "input.became_non_nullable"),
    ("output.became_nullable", "output.became_non_nullable"),
    ("input.range_tightened", "input.range_loosened"),
    ("output.range_tightened", "output.range_loosened"),
    ("input.length_tightened", "input.length_loosened"),
    ("output.length_tightened", "output.length_loosened"),
    ("input.items_tightened", "input.items_loosened"),
    ("output.items_tightened", "output.items_loosened"),
    ("input.pattern_added", "input.pattern_removed"),
    ("output.pattern_added", "output.pattern_removed"),
    ("input.format_added", "input.format_removed"),
    ("output.format_added", "output.format_removed"),
    ("input.variant_added", "input.variant_removed"),
    ("output.variant_added", "output.variant_removed"),
    ("tool.error_added", "tool.error_removed"),
    # A default on an input that is required on one side only: used on one side, not the other.
    ("field.default_changed", "input.default_changed"),
    ("field.default_changed", "field.default_changed"),
    ("input.default_changed", "input.default_changed"),
]
MIRROR: dict[str, set[str]] = {}
for _one, _other in _PAIRS:
    MIRROR.setdefault(_one, set()).add(_other)
    MIRROR.setdefault(_other, set()).add(_one)


def mirror(rule_id: str) -> set[str]:
    """The rules a change may show as in the reverse diff: its partner, or itself."""
    return MIRROR.get(rule_id, {rule_id})


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_report(report: DiffReport) -> None:
    assert {f.rule_id for f in report.findings} <= set(RULES)
    for f in report.findings:
        assert f.level == RULES[f.rule_id].level
        assert f.path.startswith("$")
    keys = [(f.path, f.rule_id, f.message) for f in report.findings]
    assert keys == sorted(keys)
    levels = {f.level for f in report.findings}
    assert levels <= set(LEVELS)
    assert report.verdict in ("ok", "amber", "red")
    json.dumps(report.to_dict())
    assert f"verdict: {report.verdict}" in str(report)


@SETTINGS
@given(manifests())
def test_diff_of_a_manifest_with_itself__finds_nothing_and_is_ok(doc: Doc) -> None:
    report = diff(decoded(doc), json.loads(json.dumps(doc)))
    assert report.findings == ()
    assert (report.verdict, report.required_bump, report.declared_bump) == ("ok", "none", "none")


@SETTINGS
@given(manifests(), manifests())
def test_diff_both_ways__findings_mirror_each_other(a: Doc, b: Doc) -> None:
    forward, backward = diff(decoded(a), decoded(b)), diff(decoded(b), decoded(a))
    assert len(forward.findings) == len(backward.findings)
    # A change from a to b is the same change from b to a with old and new swapped, and an
    # addition one way is a removal the other way.
    back = Counter((f.path, _json(f.new), _json(f.old), f.rule_id) for f in backward.findings)
    for f in forward.findings:
        options = [(f.path, _json(f.old), _json(f.new), r) for r in mirror(f.rule_id)]
        found = next((o for o in options if back[o]), None)
        assert found is not None, f"{f} has no mirror in the reverse diff"
        back[found] -= 1


@SETTINGS
@given(manifests(), manifests())
def test_diff_of_random_manifests__never_fails_and_uses_known_rules(a: Doc, b: Doc) -> None:
    report = diff(decoded(a), decoded(b))
    check_report(report)
    breaking = any(f.level == "breaking" for f in report.findings)
    assert (report.required_bump == "major") == breaking


VERSIONS = st.sampled_from(
    ["0.0.1", "0.1.0", "0.1.1", "0.2.0", "1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "2.0.0"]
)


@FEWER
@given(VERSIONS, VERSIONS, st.data())
def test_verdict__follows_the_declared_step(old: str, new: str, data: st.DataObject) -> None:
    a, b = data.draw(manifests(old)), data.draw(manifests(new))
    report = diff(a, b)
    check_report(report)
    breaking = bool(report.breaking)
    declared = report.declared_bump
    if declared == "none":
        assert report.verdict == ("red" if report.findings else "ok")
    elif breaking and declared in ("minor", "patch"):
        assert report.verdict == "red"
    elif declared in ("major", "prerelease"):
        assert report.verdict == "amber"
    elif declared == "downgrade":
        assert report.verdict == ("red" if breaking else "amber")
    else:
        assert report.verdict == "ok"


@FEWER
@given(manifests(), manifests(), st.sampled_from(LEVELS))
def test_profile__every_rule_at_one_level__moves_every_finding_there(
    a: Doc, b: Doc, level: str
) -> None:
    profile = dict.fromkeys(RULES, level)
    report = diff(a, b, profile=profile)  # type: ignore[arg-type]
    assert {f.level for f in report.findings} <= {level}
    plain = diff(a, b)
    assert [(f.rule_id, f.path) for f in report.findings] == [
        (f.rule_id, f.path) for f in plain.findings
    ]
